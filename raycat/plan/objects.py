"""Reading object lists (Parquet, CSV, FITS tables) into a Ray Dataset with canonical columns.

Whatever the user's column names, rows leave here as ``id`` (int64), ``ra``/``dec`` (float64,
deg) and, when the list has redshifts, ``z_spec`` (float64).
"""

from __future__ import annotations

import pandas as pd

from raycat import schema
from raycat.config import DataConfig
from raycat.errors import RaycatError
from raycat.fsutil import arrow_filesystem, filesystem, join
from raycat.runtime import READ_ARGS

PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv", ".csv.gz")
FITS_SUFFIXES = (".fits", ".fit", ".fits.gz")


def objects_url(data: DataConfig) -> str:
    return join(data.store, data.objects)


def column_map(data: DataConfig) -> dict[str, str]:
    """User column name -> canonical name."""
    mapping = {data.id_column: schema.ID, data.ra_column: schema.RA, data.dec_column: schema.DEC}
    if data.z_column:
        mapping[data.z_column] = schema.Z_SPEC
    return mapping


def read_objects(data: DataConfig):
    """A Ray Dataset of the objects with canonical columns (streamed, never collected)."""
    import ray.data

    url = objects_url(data)
    fs, path = filesystem(url, data.storage_options)
    if not fs.exists(path):
        raise RaycatError(f"object list not found: {url}")
    mapping = column_map(data)
    lower = url.lower()
    if lower.endswith(CSV_SUFFIXES):
        pafs, papath = arrow_filesystem(url, data.storage_options)
        ds = ray.data.read_csv(papath, filesystem=pafs, **READ_ARGS)
    elif lower.endswith(FITS_SUFFIXES):
        # FITS tables have no row-group structure to split on: read in one task.
        ds = ray.data.from_pandas(_read_fits_table(url, data.storage_options))
    else:  # Parquet file or directory of Parquet files
        pafs, papath = arrow_filesystem(url, data.storage_options)
        ds = ray.data.read_parquet(papath, filesystem=pafs, columns=list(mapping),
                                   **READ_ARGS)
    _check_columns(ds.schema().names, mapping, url)
    return ds.map_batches(_canonical, fn_kwargs={"mapping": mapping}, batch_format="pandas")


def read_small_objects(data: DataConfig) -> pd.DataFrame:
    """The whole object list in this process, canonical columns: for lists small enough to
    plan in the driver (Ray Data's read tasks would cost more to start than to read).
    A Parquet file is read here directly; other forms go through ``read_objects``."""
    import pyarrow.parquet as pq

    url = objects_url(data)
    fs, path = filesystem(url, data.storage_options)
    if not url.lower().endswith(PARQUET_SUFFIXES) or not fs.isfile(path):
        return read_objects(data).to_pandas()
    mapping = column_map(data)
    with fs.open(path, "rb") as f:
        table = pq.ParquetFile(f)
        _check_columns(table.schema_arrow.names, mapping, url)
        frame = table.read(columns=list(mapping)).to_pandas()
    return _canonical(frame, mapping)


def _read_fits_table(url: str, storage_options: dict) -> pd.DataFrame:
    from astropy.table import Table

    fs, path = filesystem(url, storage_options)
    with fs.open(path, "rb") as f:
        table = Table.read(f, format="fits")
    names = [n for n in table.colnames if len(table[n].shape) <= 1]
    return table[names].to_pandas()


def _check_columns(names: list[str], mapping: dict[str, str], url: str) -> None:
    missing = [c for c in mapping if c not in names]
    if missing:
        raise RaycatError(f"object list {url} has no column(s) {', '.join(missing)}; "
                          f"columns are: {', '.join(names[:20])} (set data.*_column)")


def _canonical(batch: pd.DataFrame, mapping: dict[str, str]) -> pd.DataFrame:
    out = batch[list(mapping)].rename(columns=mapping)
    out[schema.ID] = out[schema.ID].astype("int64")
    for column in (schema.RA, schema.DEC, schema.Z_SPEC):
        if column in out:
            out[column] = out[column].astype("float64")
    return out
