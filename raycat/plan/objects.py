"""Reading object lists (Parquet, CSV, FITS tables) into a Ray Dataset with canonical columns.

Whatever the user's column names, rows leave here as ``id``, ``ra``/``dec`` (float64, deg)
and, when the list has redshifts, ``z_spec`` (float64).

Ids are kept exactly as given: a column of any integer type becomes int64 (uint64 only while
every id fits int64), a text column stays text (``"Gaia DR3 4295806720"``, or an SDSS objid
stored as text, leading zeros and all); ``id_arrow_type`` says which (the plan's
``Manifest.id_type``), and the catalog's ``id`` column takes that type. Floats are refused
with one line, even integral floats such as 3.0: a float64 holds every integer only up to
2^53, so a float id column may already have merged distinct ids, and refusing it by type
decides on both planning paths before any row streams. Missing ids are refused too. A CSV
column of digits is read as integers (its text is not kept): store text ids in Parquet or
FITS to keep them as text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from raycat import schema
from raycat.config import DataConfig
from raycat.errors import RaycatError
from raycat.fsutil import arrow_filesystem, filesystem, join, storage_errors
from raycat.healpix import unit_key
from raycat.runtime import READ_ARGS

PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv", ".csv.gz")
FITS_SUFFIXES = (".fits", ".fit", ".fits.gz")
# Rows per batch of the per-row steps after the read (canonical columns, _healpix_29): a
# read block holds up to 128 MiB of rows (3.3 M at 10 M objects in 10 files), and converting
# a whole one to pandas took 628 MiB in one worker against 287 MiB for 1 M objects
READ_BATCH_ROWS = 100_000


def objects_url(data: DataConfig) -> str:
    return join(data.store, data.objects)


def column_map(data: DataConfig) -> dict[str, str]:
    """User column name -> canonical name."""
    mapping = {data.id_column: schema.ID, data.ra_column: schema.RA, data.dec_column: schema.DEC}
    if data.z_column:
        mapping[data.z_column] = schema.Z_SPEC
    if data.ebv_column:
        mapping[data.ebv_column] = schema.EBV
    return mapping


def read_objects(data: DataConfig, hats: HatsInput | None = None):
    """A Ray Dataset of the objects with canonical columns (streamed, never collected);
    a HATS catalog (``hats``) keeps its ``_healpix_29`` column."""
    import ray.data

    url = objects_url(data)
    fs, path = filesystem(url, data.storage_options)
    if not fs.exists(path):
        raise RaycatError(f"object list not found: {url}")
    mapping = column_map(data)
    lower = url.lower()
    if hats is not None:
        pafs, _ = arrow_filesystem(url, data.storage_options)
        ds = ray.data.read_parquet(
            hats.files, filesystem=pafs, columns=[*mapping, *hats.extra], **READ_ARGS
        )
    elif lower.endswith(CSV_SUFFIXES):
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
    canonical = _check_id_type(
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
        _canonical,
        fn_kwargs={"mapping": mapping, "url": url, "id_type": canonical},
        batch_format="pandas",
        batch_size=READ_BATCH_ROWS,
    )


@dataclass(frozen=True)
class HatsInput:
    """A HATS catalog given as the object list: its partitions (NUNIQ keys) and their files.

    Its rows are already partitioned and carry ``_healpix_29``: the planner nests its work
    units inside these partitions, so each unit's rows come from one file and need no sort.
    """

    partitions: tuple[int, ...]
    files: list[str]  # paths on the catalog's Arrow filesystem, one per partition
    extra: tuple[str, ...]  # columns read beside the mapped ones (its _healpix_29)


def hats_input(data: DataConfig) -> HatsInput | None:
    """The HATS catalog at ``data.objects``, or None when it is a flat list (a file, or a
    directory of files without HATS properties)."""
    url = objects_url(data)
    with storage_errors(f"cannot read the object list {url}"):
        fs, path = filesystem(url, data.storage_options)
        marks = (*schema.PROPERTIES_FILES, schema.HATS_COLLECTION_FILE)
        if not fs.isdir(path) or not any(fs.exists(f"{path.rstrip('/')}/{m}") for m in marks):
            return None
        import hats
        from hats.io.paths import pixel_catalog_file

        found: Any = hats.read_hats(url)
        catalog = getattr(found, "main_catalog", found)  # a collection: its catalog
        pixels = catalog.get_healpix_pixels()
        suffix = getattr(catalog.catalog_info, "npix_suffix", ".parquet")
        base = catalog.catalog_base_dir
        files = [pixel_catalog_file(base, p, npix_suffix=suffix).path for p in pixels]
        names = set(catalog.schema.names) if catalog.schema is not None else set()
    keys = tuple(unit_key(p.order, p.pixel) for p in pixels)
    extra = (schema.HEALPIX_29,) if schema.HEALPIX_29 in names else ()
    return HatsInput(keys, files, extra)


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
    canonical = _check_id_type(
        data.id_column, id_type, url, lambda: frame[data.id_column].head(5).tolist()
    )
    return _canonical(frame, mapping, url, canonical)


def _read_fits_table(url: str, storage_options: dict) -> pd.DataFrame:
    from astropy.table import Table

    fs, path = filesystem(url, storage_options)
    with fs.open(path, "rb") as f:
        table = Table.read(f, format="fits")
    table.convert_bytestring_to_unicode()  # FITS text is ASCII bytes: ids as text, not bytes
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
    return isinstance(column_type, pa.DataType) and column_type == pa.uint64()


def id_arrow_type(column_type: Any) -> pa.DataType | None:
    """The catalog's id type for an id column of this type (an Arrow type, a NumPy or pandas
    dtype): int64 for integers, string for text, None for anything else (floats, objects)."""
    if isinstance(column_type, pd.ArrowDtype):
        column_type = column_type.pyarrow_dtype
    if isinstance(column_type, pa.DataType):
        if pa.types.is_integer(column_type):
            return pa.int64()
        text = (pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view)
        return pa.string() if any(is_text(column_type) for is_text in text) else None
    if isinstance(column_type, pd.StringDtype):
        return pa.string()
    kind = getattr(column_type, "kind", None)  # NumPy dtypes, pandas' nullable integers
    if kind in ("i", "u"):
        return pa.int64()
    return pa.string() if isinstance(column_type, np.dtype) and kind in ("U", "T") else None


def _check_id_type(column: str, column_type: Any, url: str, examples) -> pa.DataType:
    """The catalog's id type for this id column (``id_arrow_type``); a one-line error for any
    other type (``object`` too, where Ray Data has no Arrow type); ``examples()`` gives a few
    of its values for the message."""
    canonical = id_arrow_type(column_type)
    if canonical is None:
        if isinstance(column_type, (pa.DataType, np.dtype)):
            name = str(column_type)
        else:
            name = getattr(column_type, "__name__", str(column_type))
        raise _id_error(column, name, list(examples()), url)
    return canonical


def _id_error(column: str, type_name: str, values: list, url: str) -> RaycatError:
    def fractional(v: Any) -> bool:
        return isinstance(v, (float, np.floating)) and not float(v).is_integer()

    example = next((v for v in values if fractional(v)), values[0] if values else None)
    if isinstance(example, np.generic):
        example = example.item()
    return RaycatError(
        f"object list {url}: id column {column!r} holds {type_name} values "
        f"(e.g. {example!r}); ids must be integers or text: store the column as int64 "
        "or string (or set data.id_column)"
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


def _canonical(
    batch: pd.DataFrame, mapping: dict[str, str], url: str, id_type: pa.DataType
) -> pd.DataFrame:
    kept = [schema.HEALPIX_29] if schema.HEALPIX_29 in batch else []  # a HATS catalog's own
    out = batch[[*mapping, *kept]].rename(columns=mapping)
    id_column = next(name for name, canonical in mapping.items() if canonical == schema.ID)
    out[schema.ID] = _canonical_ids(batch, id_column, url, id_type)
    for column in (schema.RA, schema.DEC, schema.Z_SPEC, schema.EBV):
        if column in out:
            out[column] = out[column].astype("float64")
    if schema.EBV in out:
        _check_ebv(out[schema.EBV], url)
    return out


def _check_ebv(ebv: pd.Series, url: str) -> None:
    """E(B-V) is a network input: a missing or negative value has no right answer."""
    bad = ~(ebv >= 0) | ~np.isfinite(ebv)
    if bad.any():
        raise RaycatError(
            f"object list {url}: the E(B-V) column has {int(bad.sum())} missing, negative or "
            f"infinite values in one block (e.g. {ebv[bad].iloc[0]}); give every object one"
        )


def _canonical_ids(batch: pd.DataFrame, column: str, url: str, id_type: pa.DataType) -> pd.Series:
    """The id column as ``id_type``: int64, or the text as given (never truncated, wrapped or
    reformatted). The type was checked from the schema already; this checks each batch's
    values: a CSV's types are inferred per file, so a later file can differ from the schema
    the driver saw, and text in one file with digits read as integers in another is refused,
    not turned into one another."""
    ids = batch[column]
    if ids.isna().any():
        raise RaycatError(
            f"object list {url}: id column {column!r} has missing ids "
            f"({int(ids.isna().sum())} in one block)"
        )
    found = series_id_type(ids)
    if found is None:
        raise _id_error(column, str(ids.dtype), ids.head(5).tolist(), url)
    if found != id_type:
        raise RaycatError(
            f"object list {url}: id column {column!r} holds {found} ids in one file and "
            f"{id_type} ids in another (e.g. {ids.iloc[0]!r}); store every id as {id_type}"
        )
    if found != pa.int64():
        return ids
    if ids.dtype.kind == "u" and len(ids):
        _check_id_range(column, ids.max(), url)
    return ids.astype("int64")


def series_id_type(ids: pd.Series) -> pa.DataType | None:
    """``id_arrow_type`` of an id column held in pandas; text held as Python objects (an
    ``object`` column) counts as text."""
    if ids.dtype == object:
        return pa.string() if pd.api.types.infer_dtype(ids, skipna=False) == "string" else None
    return id_arrow_type(ids.dtype)
