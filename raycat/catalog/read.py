"""Reading a raycat catalog partition by partition: ids, PDFs and its raycat metadata.

Nothing here loads a whole catalog: callers stream partitions (of whatever orders the
catalog holds, in path order) and read only the columns they need.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raycat import fsutil
from raycat import schema as S
from raycat.catalog.info import CatalogInfo
from raycat.catalog.keys import key_of_partition
from raycat.errors import RaycatError


def partition_keys(fs, root: str) -> set[int]:
    """NUNIQ key of each partition file under ``root`` (partitions of any order)."""
    return set(filter(None, map(key_of_partition, partition_paths(fs, root))))


def partition_paths(fs, root: str) -> list[str]:
    """Every partition file under ``root``, sorted (the listing is not cached: writers add)."""
    fs.invalidate_cache()
    return sorted(fs.glob(f"{root}/{S.PARTITION_GLOB}"))


def existing_schema(fs, root: str) -> pa.Schema | None:
    """The catalog's schema, from _common_metadata or else its first partition; None if empty.

    An unreadable _common_metadata (truncated by a crash of an older raycat, which wrote it in
    place) is passed over for the partitions: a resume then rewrites it.
    """
    common = f"{root}/{S.COMMON_METADATA_RELPATH}"
    if fs.exists(common):
        try:
            return pq.read_schema(common, filesystem=fs)
        except (OSError, pa.ArrowInvalid):
            pass
    for path in partition_paths(fs, root)[:1]:
        try:
            return pq.read_schema(path, filesystem=fs)
        except (OSError, pa.ArrowInvalid) as err:
            raise RaycatError(f"catalog partition {path} is unreadable ({err})") from None
    return None


def read_catalog_info(root: str, storage_options: dict | None = None) -> CatalogInfo:
    """Bin edges, bands, model id, config hash and version of a catalog."""
    fs, path = fsutil.filesystem(root, storage_options)

    schema = existing_schema(fs, path.rstrip("/"))
    if schema is None:
        raise RaycatError(f"catalog not found (no partitions): {root}")
    return CatalogInfo.from_schema(schema)


def iter_partitions(
    root: str, columns: Sequence[str] | None = None, storage_options: dict | None = None
) -> Iterator[pa.Table]:
    """Yield the catalog one partition at a time, reading only ``columns``."""
    fs, path = fsutil.filesystem(root, storage_options)
    paths = partition_paths(fs, path.rstrip("/"))
    if not paths:
        raise RaycatError(f"catalog not found (no partitions): {root}")
    for partition in paths:
        yield pq.read_table(partition, columns=list(columns) if columns else None, filesystem=fs)


def pdf_matrix(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """The ``pdf`` column as a float64 array ``[n, n_bins]``; null PDFs become NaN rows."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n_bins = array.type.list_size
    values = array.values.slice(array.offset * n_bins, len(array) * n_bins)
    matrix = np.asarray(values.to_numpy(zero_copy_only=False), np.float64).reshape(-1, n_bins)
    matrix[np.asarray(array.is_null())] = np.nan
    return matrix


def read_catalog_ids(root: str, storage_options: dict | None = None) -> np.ndarray:
    """Every object id in the catalog (in partition order), reading only the id column."""
    parts = [t[S.ID].to_numpy() for t in iter_partitions(root, [S.ID], storage_options)]
    return np.concatenate(parts)
