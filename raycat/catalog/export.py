"""`raycat export --format qp`: the catalog as a qp ensemble (DESC's qp-prob), for RAIL.

The ensemble is qp's ``hist`` parameterisation on the catalog's own bin edges: each object's
PDF becomes its histogram density (bin probability / bin width), so qp's CDF, PIT and
moments are those of the catalog (uniform inside a bin). The ancillary table carries what
RAIL's estimators write: ``id``, the point estimates ``zmode``, ``zmean``, ``zmedian``,
``redshift`` (the catalog's ``z_spec``, when it has one), plus raycat's ``flags``.

Objects without a PDF (flag NO_PREDICTION and friends) are kept, as the catalog keeps them:
their row is NaN and their flags say why, so a count of the file is a count of the catalog;
select ``ens.ancil["flags"] == 0`` (or finite ``zmode``) before stacking.

The catalog is read one partition at a time (``raycat.catalog.read``) and written with qp's
chunked HDF5 writes (``initializeHdf5Write`` / ``writeHdf5Chunk`` / ``finalizeHdf5Write``):
memory holds one partition. The file is allocated for every row up front (counted from the
Parquet footers); text ids are stored as fixed-width UTF-8 of the longest id, found by a first
pass over the id column. The file is written under a temporary name and renamed (or uploaded,
for an object store) when complete.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raycat import fsutil
from raycat import schema as S
from raycat.catalog.read import iter_partitions, partition_paths, read_catalog_info
from raycat.errors import RaycatError
from raycat.extras import optional

# catalog column -> RAIL's ancillary name (rail_base CatEstimator / PointEstimationMixin)
ANCIL_NAMES = {
    S.ID: "id",
    S.Z_MODE: "zmode",
    S.Z_MEAN: "zmean",
    S.Z_MEDIAN: "zmedian",
    S.Z_SPEC: "redshift",
    S.FLAGS: "flags",
}


def export_qp(catalog_url: str, out: str, storage_options: dict | None = None) -> dict:
    """Write the catalog to ``out`` (an HDF5 file, path or URL) as a qp ensemble; returns a
    summary: objects, objects without a PDF, partitions, the file."""
    qp = optional("qp", "rail", "raycat export --format qp")
    optional("h5py", "rail", "raycat export --format qp")
    out_fs, out_path = fsutil.filesystem(out, storage_options)
    if out_fs.exists(out_path):  # never replace a file raycat may not have written
        raise RaycatError(f"export: {out} already exists; remove it or choose another --out")
    edges = read_catalog_info(catalog_url, storage_options).bin_edges
    fs, root = fsutil.filesystem(catalog_url, storage_options)
    partitions = partition_paths(fs, root.rstrip("/"))
    names = pq.read_schema(partitions[0], filesystem=fs).names
    columns = [c for c in ANCIL_NAMES if c in names] + [S.PDF]
    total = sum(pq.read_metadata(p, filesystem=fs).num_rows for p in partitions)
    if total == 0:
        raise RaycatError(f"catalog {catalog_url} has no objects to export")
    id_width = _text_id_width(catalog_url, storage_options)
    tables = iter_partitions(catalog_url, columns, storage_options)
    with _local_target(out, storage_options) as local:
        written, no_pdf = _write(qp, tables, edges, id_width, local, total)
        if written != total:  # raised before the file is put in place
            raise RaycatError(
                f"catalog {catalog_url} changed while it was exported ({written}+ objects "
                f"read, {total} counted): export it again once its job has finished"
            )
    return {"objects": total, "no_pdf": no_pdf, "partitions": len(partitions), "out": out}


def _write(qp, tables: Iterator[pa.Table], edges, id_width, path: str, total: int):
    """Write each partition as one chunk, into a file allocated for ``total`` rows; (objects
    read, objects without a PDF). Stops at the first partition beyond ``total``."""
    start, no_pdf, ensemble, group, handle = 0, 0, None, None, None
    try:
        for table in tables:
            if table.num_rows == 0:
                continue
            end = start + table.num_rows
            if end > total:
                return end, no_pdf  # more rows than counted: the caller says so
            ensemble = partition_ensemble(qp, table, edges, id_width)
            if handle is None:
                group, handle = ensemble.initializeHdf5Write(path, total)
            ensemble.writeHdf5Chunk(group, start, end)
            no_pdf += table[S.PDF].null_count
            start = end
        if ensemble is not None:
            ensemble.finalizeHdf5Write(handle)  # the metadata, then it closes the file
            handle = None
        return start, no_pdf
    finally:
        if handle is not None:
            handle.close()


def partition_ensemble(qp, table: pa.Table, edges: np.ndarray, id_width: int | None):
    """One partition as a qp ``hist`` ensemble with RAIL's ancillary columns."""
    from raycat.catalog.read import pdf_matrix

    widths = np.diff(np.asarray(edges, np.float64))
    density = (pdf_matrix(table[S.PDF]) / widths).astype(np.float32)
    ancil = {
        rail: _ancil_values(table[column], id_width if column == S.ID else None)
        for column, rail in ANCIL_NAMES.items()
        if column in table.column_names
    }
    data = {"bins": np.asarray(edges, np.float64), "pdfs": density, "norm": False, "warn": False}
    return qp.Ensemble(qp.hist, data=data, ancil=ancil)


def _ancil_values(column: pa.ChunkedArray, text_width: int | None) -> np.ndarray:
    if text_width is not None:
        # HDF5 holds fixed-width bytes: every chunk must have the file's one width
        encoded = [s.encode("utf-8") for s in column.to_pylist()]
        return np.array(encoded, dtype=f"S{max(text_width or 1, 1)}")
    values = column.to_numpy(zero_copy_only=False)
    return values if values.dtype.kind in "iub" else np.asarray(values, np.float32)


def _text_id_width(catalog_url: str, storage_options: dict | None) -> int | None:
    """Bytes of the longest id (UTF-8) when the ids are text; None for integer ids."""
    width = None
    for table in iter_partitions(catalog_url, [S.ID], storage_options):
        ids = table[S.ID]
        if not (pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type)):
            return None
        longest = pc.max(pc.binary_length(ids)).as_py() or 0
        width = max(width or 1, longest)
    return width


class _local_target:
    """A local temporary path for ``out``: renamed over ``out`` (local) or uploaded to it (a
    store) on success, removed on failure, so ``out`` is never a half-written file."""

    def __init__(self, out: str, storage_options: dict | None):
        self.fs, self.path = fsutil.filesystem(out, storage_options)
        self.local = fsutil.is_local(self.fs)

    def __enter__(self) -> str:
        if self.local:
            folder, name = os.path.split(os.path.abspath(self.path))
            os.makedirs(folder, exist_ok=True)
            handle, self.temp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
        else:
            handle, self.temp = tempfile.mkstemp(suffix=".hdf5")
        os.close(handle)
        os.remove(self.temp)  # h5py creates it
        return self.temp

    def __exit__(self, kind, error, trace) -> None:
        try:
            if kind is None and self.local:
                os.replace(self.temp, self.path)
            elif kind is None:
                self.fs.put_file(self.temp, self.path)
        finally:
            if os.path.exists(self.temp):
                os.remove(self.temp)
