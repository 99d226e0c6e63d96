"""Writing figures: each matplotlib figure as one PNG file in an output folder (or bucket).

The evaluation plots and the report's own plots land side by side and are shown by the
same HTML page, so they are written by one function.
"""

from __future__ import annotations

import io

from raycat import fsutil
from raycat.extras import optional

PLOTS = "plots (raycat evaluate --out, raycat report, raycat demo)"


def figure_class() -> type:
    """matplotlib's Figure, from the [report] extra (a one-line error when it is missing).

    Its object API needs no pyplot and no global backend: safe in any process.
    """
    return optional("matplotlib.figure", "report", PLOTS).Figure


def save_figures(figures: dict, out_dir: str, storage_options: dict | None, dpi: int = 100) -> None:
    """Write each figure (name -> matplotlib figure) as the PNG ``<out_dir>/<name>``.

    Rendered in memory and written in one piece: an object store takes whole files.
    """
    fs, out = fsutil.filesystem(out_dir, storage_options)
    for name, figure in figures.items():
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=dpi)
        fs.pipe_file(f"{out.rstrip('/')}/{name}", buffer.getvalue())
