"""`pip install raycat` without extras runs `raycat infer`: checked by imports, not by installs.

The optional packages ([sim], [report], [gcs] extras, and lsdb which only the tests use) must
stay out of the command and the whole infer path, and a feature whose extra is missing must
say in one line which extra to install.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

OPTIONAL = ("galsim", "speclite", "matplotlib", "sklearn", "lsdb", "gcsfs", "qp", "h5py")

# The infer path, and every module of the rooms it runs through (planning, cutouts, the model,
# the catalog, the survey definitions and stores).
INFER_PATH = """
import importlib, pkgutil, sys
import raycat
for name in ("raycat.cli", "raycat.pipeline", "raycat.photoz.infer", "raycat.catalog.write",
             "raycat.plan.manifest", "raycat.cutouts.actor", "raycat.runtime", "raycat.config"):
    importlib.import_module(name)
for room in ("plan", "cutouts", "photoz", "catalog", "surveys"):
    package = importlib.import_module(f"raycat.{room}")
    for info in pkgutil.iter_modules(package.__path__, f"raycat.{room}."):
        importlib.import_module(info.name)
import raycat.cli
raycat.cli.build_parser()
print(",".join(sorted(name for name in OPTIONAL if name in sys.modules)))
"""


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)


@pytest.mark.slow  # imports torch, Ray and every module of five rooms: ~5 s, more on a busy machine
def test_cli_and_infer_path_import_no_optional_package():
    out = _python(f"OPTIONAL = {OPTIONAL!r}\n{INFER_PATH}")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "", f"imported at module level: {out.stdout.strip()}"


def test_missing_sim_extra_is_one_line_naming_it(tmp_path):
    code = (
        "import sys; sys.modules['galsim'] = None\n"
        "from raycat.cli import main\n"
        f"sys.exit(main(['simulate', '--out', {str(tmp_path / 'sky')!r}, '--n-galaxies', '5']))"
    )
    out = _python(code)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr
    assert "[sim] extra" in lines[0] and "pip install 'raycat[sim]'" in lines[0]
    assert "galsim" in lines[0]


@pytest.mark.parametrize(
    ("missing", "call", "extra"),
    [
        ("matplotlib", "from raycat.quality.plots import figure_class; figure_class()", "report"),
        ("sklearn", "import raycat.quality.baseline as b; b._regressor('knn', 0)", "report"),
        ("speclite", "import raycat.sky.sed", "sim"),
        ("qp", "from raycat.catalog.export import export_qp; export_qp('c', 'o.hdf5')", "rail"),
    ],
)
def test_missing_optional_package_is_a_raycat_error(missing, call, extra):
    code = (
        f"import sys; sys.modules[{missing!r}] = None\n"
        "from raycat.errors import RaycatError\n"
        f"try:\n    {call}\nexcept RaycatError as err:\n    print(err)\n"
    )
    out = _python(code)
    assert out.returncode == 0, out.stderr[-2000:]
    message = out.stdout.strip()
    assert f"pip install 'raycat[{extra}]'" in message and missing in message
    assert "\n" not in message
