"""Materialised cutouts on disk: one directory of Parquet parts per work unit, never appended.

``cutouts.output`` holds ``unit=<pixel>/part-<first object>.parquet`` files and, written last,
the plan file (``raycat.plan.fingerprint``). A rebuild first removes the plan file (so an
interrupted rebuild is never read) and every unit directory, then writes each part whole:
a temp file renamed into place locally, one PUT on an object store. Parts are written by
Ray Data tasks as the cutouts stream past (no process holds more than one batch), and each
task reports the rows it wrote per unit, so the driver can check every unit is complete
before it writes the plan file.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np

from raycat import schema
from raycat.fsutil import filesystem, put_atomic
from raycat.runtime import READ_ARGS

ROWS = "rows"  # column of the writer's report: rows written for the unit


def clear_dataset(url: str, storage_options: dict | None = None) -> None:
    """Remove the plan file and every unit directory under ``url`` (nothing else)."""
    fs, root = filesystem(url, storage_options)
    root = root.rstrip("/")
    plan_file = f"{root}/{schema.CUTOUTS_PLAN_FILE}"
    if fs.exists(plan_file):
        fs.rm(plan_file)
    units = fs.glob(f"{root}/{schema.CUTOUT_UNIT_PREFIX}*") if fs.exists(root) else []
    if units:
        fs.rm(units, recursive=True)


def write_parts(batch, root: str, storage_options: dict) -> dict[str, np.ndarray]:
    """Ray Data task: write a batch of cutout rows (a pyarrow Table) as one part per work unit
    it touches; returns the rows written per unit."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    fs, path = filesystem(root, storage_options)
    units = np.unique(batch[schema.WORK_UNIT].to_numpy())
    counts = []
    for unit in units.tolist():
        part = batch.filter(pc.equal(batch[schema.WORK_UNIT], unit))
        first_hp, first_id = part[schema.HEALPIX_29][0].as_py(), part[schema.ID][0].as_py()
        buffer = pa.BufferOutputStream()
        pq.write_table(part, buffer)
        relpath = schema.cutout_part_relpath(unit, first_hp, first_id)
        put_atomic(fs, f"{path.rstrip('/')}/{relpath}", buffer.getvalue().to_pybytes())
        counts.append(part.num_rows)
    return {schema.WORK_UNIT: units.astype(np.int64), ROWS: np.array(counts, dtype=np.int64)}


def write_units(
    cutouts, url: str, storage_options: dict, on_rows: Callable[[int], None] | None = None
) -> Counter:
    """Stream the cutout dataset into unit parts at ``url``; rows written per work unit.

    ``on_rows`` is told the rows of each report as it comes back (the stage's progress).
    """
    written = cutouts.map_batches(
        write_parts,
        batch_size=None,  # a block at a time: the cutout stage's batches, as they come
        batch_format="pyarrow",
        fn_kwargs={"root": url, "storage_options": storage_options},
        **READ_ARGS,  # I/O bound
    )
    counts: Counter = Counter()
    for report in written.iter_batches(batch_format="numpy", batch_size=None):
        counts.update(dict(zip(report[schema.WORK_UNIT].tolist(), report[ROWS].tolist())))
        if on_rows is not None:
            on_rows(int(report[ROWS].sum()))
    return counts


def read_units(url: str, storage_options: dict | None = None):
    """The cutout rows of every unit part at ``url`` (a lazy Ray Dataset)."""
    import ray.data

    from raycat.fsutil import arrow_filesystem

    pafs, path = arrow_filesystem(url, storage_options)
    return ray.data.read_parquet(
        path,
        filesystem=pafs,
        file_extensions=["parquet"],
        partitioning=None,  # unit=<pixel> is a directory name, not a column
        **READ_ARGS,
    )
