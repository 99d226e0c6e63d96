"""Reading object lists (Parquet, CSV, FITS tables) into a Ray Dataset with canonical columns.

Whatever the user's column names, rows leave here as ``id`` (int64), ``ra``/``dec`` (float64,
deg) and, when the list has redshifts, ``z_spec`` (float64).

Ids must be integers: a column of any integer type is taken (uint64 only while every id fits
int64). Strings and floats are refused with one line, even integral floats such as 3.0: a
float64 holds every integer only up to 2^53, so a float id column may already have merged
distinct ids, and refusing it by type decides on both planning paths before any row streams.
"""

from __future__ import annotations

from typing import Any

import numpy as np
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
        ds = ray.data.read_parquet(papath, filesystem=pafs, columns=list(mapping), **READ_ARGS)
    ds_schema = ds.schema()
    _check_columns(ds_schema.names, mapping, url)
    id_type = ds_schema.types[ds_schema.names.index(data.id_column)]
    # Checked here, in the driver: an error raised in a Ray Data task reaches the caller
    # wrapped in a traceback. A rejected type fetches a few rows only to show an example.
    _check_id_type(
        data.id_column,
        id_type,
        url,
        lambda: [r[data.id_column] for r in ds.select_columns([data.id_column]).take(5)],
    )
    if _is_uint64(id_type):  # one pass over the id column (Ray's max() has no uint64)
        tops = (
            ds.select_columns([data.id_column])
            .map_batches(_largest_id, fn_kwargs={"column": data.id_column}, batch_format="pyarrow")
            .take_all()
        )
        _check_id_range(data.id_column, max((int(r["largest"]) for r in tops), default=None), url)
    return ds.map_batches(
        _canonical, fn_kwargs={"mapping": mapping, "url": url}, batch_format="pandas"
    )


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
    id_type = table.schema_arrow.field(data.id_column).type
    _check_id_type(data.id_column, id_type, url, lambda: frame[data.id_column].head(5).tolist())
    return _canonical(frame, mapping, url)


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
        raise RaycatError(
            f"object list {url} has no column(s) {', '.join(missing)}; "
            f"columns are: {', '.join(names[:20])} (set data.*_column)"
        )


def _is_uint64(column_type: Any) -> bool:
    import pyarrow as pa

    return isinstance(column_type, pa.DataType) and column_type == pa.uint64()


def _check_id_type(column: str, column_type: Any, url: str, examples) -> None:
    """Refuse an id column whose type is not an integer type (Arrow type, NumPy dtype, or
    ``object`` where Ray Data has no Arrow type); ``examples()`` gives a few of its values."""
    import pyarrow as pa

    if isinstance(column_type, pa.DataType):
        integral, name = pa.types.is_integer(column_type), str(column_type)
    elif isinstance(column_type, np.dtype):
        integral, name = column_type.kind in "iu", str(column_type)
    else:
        integral, name = False, getattr(column_type, "__name__", str(column_type))
    if not integral:
        raise _id_error(column, name, list(examples()), url)


def _id_error(column: str, type_name: str, values: list, url: str) -> RaycatError:
    def fractional(v: Any) -> bool:
        return isinstance(v, (float, np.floating)) and not float(v).is_integer()

    example = next((v for v in values if fractional(v)), values[0] if values else None)
    if isinstance(example, np.generic):
        example = example.item()
    return RaycatError(
        f"object list {url}: id column {column!r} holds {type_name} values "
        f"(e.g. {example!r}); ids must be integers: store the column as int64 "
        "(or set data.id_column)"
    )


def _largest_id(batch, column: str) -> dict[str, np.ndarray]:
    import pyarrow.compute as pc

    return {"largest": np.array([pc.max(batch[column]).as_py() or 0], dtype=np.uint64)}


def _check_id_range(column: str, largest: Any, url: str) -> None:
    if largest is not None and int(largest) > np.iinfo(np.int64).max:
        raise RaycatError(
            f"object list {url}: id column {column!r} holds ids above 2^63-1 "
            f"(e.g. {int(largest)}), which do not fit the catalog's int64 ids"
        )


def _canonical(batch: pd.DataFrame, mapping: dict[str, str], url: str = "") -> pd.DataFrame:
    out = batch[list(mapping)].rename(columns=mapping)
    id_column = next(name for name, canonical in mapping.items() if canonical == schema.ID)
    out[schema.ID] = _int64_ids(batch, id_column, url)
    for column in (schema.RA, schema.DEC, schema.Z_SPEC):
        if column in out:
            out[column] = out[column].astype("float64")
    return out


def _int64_ids(batch: pd.DataFrame, column: str, url: str) -> pd.Series:
    """The id column as int64, never truncated or wrapped: the types were checked from the
    schema already; this is the check of each batch's values (a CSV's types are inferred
    per file, so a later file can differ from the schema the driver saw)."""
    ids = batch[column]
    if ids.isna().any():
        raise RaycatError(
            f"object list {url}: id column {column!r} has missing ids "
            f"({int(ids.isna().sum())} in one block)"
        )
    if ids.dtype.kind not in "iu":
        raise _id_error(column, str(ids.dtype), ids.head(5).tolist(), url)
    if ids.dtype.kind == "u" and len(ids):
        _check_id_range(column, ids.max(), url)
    return ids.astype("int64")
