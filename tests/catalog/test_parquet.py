"""raycat's Parquet write settings are HATS' own, worked out without importing hats."""

import pyarrow as pa
import pytest
from hats.io.file_io.file_io import get_parquet_write_table_kwargs

from raycat.catalog.info import catalog_schema
from raycat.catalog.parquet import parquet_settings
from raycat.photoz.pdf import bin_edges


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"pdf_dtype": "float16", "id_type": pa.string()},
        {"attr_players": ["g", "r"], "has_z_spec": True, "has_epistemic": True},
    ],
)
def test_settings_equal_hats_for_every_catalog_column(options):
    table_schema = catalog_schema(
        bin_edges(0.0, 1.6, 16), ["g", "r"], model_id="m", config_hash="c", **options
    )
    assert parquet_settings(table_schema) == get_parquet_write_table_kwargs(table_schema)


def test_settings_equal_hats_for_nested_columns():
    nested = pa.schema(
        [
            ("s", pa.struct([("a", pa.float64()), ("b", pa.list_(pa.int32()))])),
            ("m", pa.map_(pa.string(), pa.float32())),
            ("big", pa.large_list(pa.float64())),
            ("_healpix_29", pa.int64()),
        ]
    )
    assert parquet_settings(nested) == get_parquet_write_table_kwargs(nested)
