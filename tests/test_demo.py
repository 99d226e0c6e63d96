"""`raycat demo` deletes only what it made: its marker claims the workdir (issue 14, item 5)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from raycat import schema
from raycat.demo import claim_workdir
from raycat.errors import RaycatError


def _foreign(root):
    """A user's directory that happens to hold names the demo uses."""
    for name in (schema.DEMO_CUTOUTS_DIR, schema.DEMO_CATALOG_DIR, schema.DEMO_MODEL_DIR):
        (root / name).mkdir(parents=True)
        (root / name / "precious.txt").write_text("the user's")
    return sorted(p.relative_to(root) for p in root.rglob("*"))


def test_a_foreign_directory_is_refused_untouched(tmp_path):
    before = _foreign(tmp_path)
    with pytest.raises(RaycatError, match=f"not empty.*no {schema.DEMO_MARKER_FILE}"):
        claim_workdir(tmp_path)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_a_new_or_empty_directory_is_claimed_and_a_rerun_cleans_only_demo_entries(tmp_path):
    root = tmp_path / "new"
    claim_workdir(root)
    assert (root / schema.DEMO_MARKER_FILE).exists()
    for name in schema.DEMO_ENTRIES:
        if "." in name:
            (root / name).write_text("old run")
        else:
            (root / name).mkdir()
            (root / name / "old.bin").write_text("old run")
    (root / "notes.txt").write_text("the user's, beside the demo")
    claim_workdir(root)  # a rerun
    assert sorted(p.name for p in root.iterdir()) == sorted([schema.DEMO_MARKER_FILE, "notes.txt"])
    empty = tmp_path / "empty"
    empty.mkdir()
    claim_workdir(empty)
    assert (empty / schema.DEMO_MARKER_FILE).exists()


def test_the_cli_refuses_a_foreign_workdir_in_one_line(tmp_path):
    before = _foreign(tmp_path)
    out = subprocess.run(
        [sys.executable, "-m", "raycat", "demo", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,  # the old demo deleted these and went on simulating
    )
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and "not made by `raycat demo`" in lines[0]
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
