"""Figures are written as PNG files of the requested resolution, one per name."""

from __future__ import annotations

import struct

from matplotlib.figure import Figure

from raycat.quality.plots import save_figures


def test_figures_are_written_as_png_at_their_dpi(tmp_path):
    figure = Figure(figsize=(2, 1))
    figure.subplots().plot([0, 1], [1, 0])
    save_figures({"a.png": figure}, str(tmp_path), None, dpi=50)
    blob = (tmp_path / "a.png").read_bytes()
    assert blob.startswith(b"\x89PNG\r\n\x1a\n")
    assert struct.unpack(">II", blob[16:24]) == (100, 50)  # IHDR width, height
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]
