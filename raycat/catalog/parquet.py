"""The catalog's Parquet write settings: HATS' (``hats.io.file_io.file_io.
get_parquet_write_table_kwargs``, hats 0.11), worked out without importing hats.

Importing hats takes about a second of CPU; the driver needs the settings for the sink before
the stream starts, when every core is busy starting the actors, so paying that import there
delayed the first partition. ``tests/catalog/test_parquet.py`` checks these settings against
the installed hats for every column the catalog can have, so an upgrade that changes them
fails there rather than drifting silently.
"""

from __future__ import annotations

import pyarrow as pa

from raycat import schema

# hats' defaults: zstd level 15, 100k-row groups, 128 KiB pages, statistics and page index
HATS_WRITE = {
    "row_group_size": 100_000,
    "compression": "zstd",
    "compression_level": 15,
    "data_page_size": 131_072,
    "dictionary_pagesize_limit": 131_072,
    "write_statistics": True,
    "write_page_index": True,
}


def parquet_settings(table_schema: pa.Schema) -> dict:
    """``pyarrow.parquet.write_table`` keyword arguments for tables of ``table_schema``:
    floats byte-stream-split, the spatial index delta-coded, dictionaries for the rest."""
    leaves = leaf_columns(table_schema)
    encoding = {path: "BYTE_STREAM_SPLIT" for path, kind in leaves if pa.types.is_floating(kind)}
    if any(path == schema.HEALPIX_29 for path, _ in leaves):
        encoding[schema.HEALPIX_29] = "DELTA_BINARY_PACKED"  # sorted: small deltas
    dictionary = [path for path, _ in leaves if path not in encoding]
    return {**HATS_WRITE, "column_encoding": encoding, "use_dictionary": dictionary}


def leaf_columns(table_schema: pa.Schema) -> list[tuple[str, pa.DataType]]:
    """(dotted Parquet path, type) of every leaf column: a list column's values are
    ``<name>.list.element``, a struct's fields ``<name>.<field>``."""
    leaves: list[tuple[str, pa.DataType]] = []

    def walk(kind: pa.DataType, path: str) -> None:
        if isinstance(kind, pa.BaseExtensionType):
            walk(kind.storage_type, path)
        elif pa.types.is_struct(kind):
            for field in kind:
                walk(field.type, f"{path}.{field.name}")
        elif any(
            test(kind)
            for test in (pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list)
        ):
            walk(kind.value_type, f"{path}.list.element")
        elif pa.types.is_map(kind):
            walk(kind.key_type, f"{path}.key_value.key")
            walk(kind.item_type, f"{path}.key_value.value")
        else:
            leaves.append((path, kind))

    for field in table_schema:
        walk(field.type, field.name)
    return leaves
