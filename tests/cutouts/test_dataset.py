"""Materialised cutouts on disk: a part per work unit, rewritten by name, cleared by name."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raycat import schema
from raycat.cutouts.dataset import clear_dataset, write_parts


def _batch(ids, units) -> pa.Table:
    ids = np.asarray(ids, dtype=np.int64)
    return pa.table(
        {
            schema.ID: ids,
            schema.HEALPIX_29: ids * 10,
            schema.WORK_UNIT: np.asarray(units, dtype=np.int64),
            schema.FLAGS: np.zeros(len(ids), np.int32),
        }
    )


def test_parts_are_named_by_unit_and_first_object_and_rewritten(tmp_path):
    root = str(tmp_path / "cutouts")
    report = write_parts(_batch([1, 2, 3], [7, 7, 9]), root, {})
    assert dict(zip(report[schema.WORK_UNIT], report["rows"])) == {7: 2, 9: 1}
    first = sorted(p.relative_to(tmp_path / "cutouts") for p in (tmp_path / "cutouts").rglob("*"))
    write_parts(_batch([1, 2, 3], [7, 7, 9]), root, {})  # a rerun of the same rows
    again = sorted(p.relative_to(tmp_path / "cutouts") for p in (tmp_path / "cutouts").rglob("*"))
    assert again == first  # the same files, overwritten: nothing appended
    part = tmp_path / "cutouts" / schema.cutout_part_relpath(7, 10, 1)
    assert pq.read_table(part)[schema.ID].to_pylist() == [1, 2]


def test_clear_removes_the_plan_and_units_and_nothing_else(tmp_path):
    root = tmp_path / "cutouts"
    write_parts(_batch([1, 2], [7, 8]), str(root), {})
    (root / schema.CUTOUTS_PLAN_FILE).write_text("{}")
    (root / "notes.txt").write_text("the user's")
    clear_dataset(str(root))
    assert sorted(p.name for p in root.iterdir()) == ["notes.txt"]
    clear_dataset(str(tmp_path / "never-made"))  # nothing there: nothing to do
