"""Object ids: integers (never truncated or wrapped) and text, kept exactly as given; anything
else is one line at read time."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raycat import schema
from raycat.config import DataConfig
from raycat.errors import RaycatError
from raycat.plan.objects import _canonical, id_arrow_type, read_objects, read_small_objects

BIG = 2**63 + 5  # a uint64 id beyond int64
BAD_IDS = {  # name -> (id values, what the one-line error must say)
    "fractional": ([1.5, 2.0], r"id column 'OBJID' holds double values \(e\.g\. 1\.5\)"),
    "integral_float": ([3.0, 4.0], r"'OBJID' holds double values \(e\.g\. 3\.0\); ids must be"),
    "uint64_beyond_int64": (
        np.array([3, BIG], dtype=np.uint64),
        rf"'OBJID' holds ids above 2\^63-1 \(e\.g\. {BIG}\)",
    ),
    "boolean": ([True, False], r"'OBJID' holds bool values \(e\.g\. True\); ids must be"),
}
# text ids as surveys give them, and the awkward ones: digits with leading zeros (not 123),
# spaces, slashes, dots, backslashes, quotes and commas, non-ASCII
TEXT_IDS = [
    "Gaia DR3 4295806720",
    "1237648720693755918",
    "00123",
    "a/b c",
    "../..",
    "x\\y, 'z'",
    " padded ",
    "Ünïcødé ✓ 星系",
]


def _write(tmp_path, ids, suffix: str = "parquet") -> DataConfig:
    n = len(ids)
    columns = {"OBJID": ids, "RA": np.linspace(10.0, 10.1, n), "DEC": np.linspace(-5.0, -5.1, n)}
    path = tmp_path / f"objects.{suffix}"
    if suffix == "parquet":
        pq.write_table(pa.table(columns), path)
    elif suffix == "csv":
        pd.DataFrame(columns).to_csv(path, index=False)
    else:
        from astropy.table import Table

        Table(columns).write(path, format="fits", overwrite=True)
    return DataConfig(
        store=str(tmp_path),
        objects=path.name,
        id_column="OBJID",
        ra_column="RA",
        dec_column="DEC",
        z_column=None,
    )


def _one_line_error(read, data, pattern: str) -> None:
    with pytest.raises(RaycatError, match=pattern) as info:
        read(data)
    assert type(info.value) is RaycatError and "\n" not in str(info.value)
    assert data.objects in str(info.value)  # names the list too


@pytest.mark.parametrize("case", list(BAD_IDS))
def test_bad_ids_are_one_line_errors_when_planned_in_the_driver(tmp_path, case):
    ids, pattern = BAD_IDS[case]
    _one_line_error(read_small_objects, _write(tmp_path, ids), pattern)


def test_missing_ids_are_one_line_errors(tmp_path):
    data = _write(tmp_path, pa.array([7, None], type=pa.int64()))
    _one_line_error(read_small_objects, data, r"'OBJID' has missing ids")


def test_missing_text_ids_are_one_line_errors(tmp_path):
    data = _write(tmp_path, pa.array(["a", None], type=pa.string()))
    _one_line_error(read_small_objects, data, r"'OBJID' has missing ids")


def test_text_ids_are_kept_exactly_as_given(tmp_path):
    rows = read_small_objects(_write(tmp_path, TEXT_IDS))
    assert id_arrow_type(rows[schema.ID].dtype) == pa.string()
    assert rows[schema.ID].tolist() == TEXT_IDS
    large = read_small_objects(_write(tmp_path, pa.array(TEXT_IDS, type=pa.large_string())))
    assert large[schema.ID].tolist() == TEXT_IDS


def test_text_and_integer_ids_in_one_list_are_refused_not_converted():
    # a CSV's types are inferred per file: digits in a later file read as integers
    mapping = {"OBJID": schema.ID, "RA": schema.RA, "DEC": schema.DEC}
    batch = pd.DataFrame({"OBJID": [123, 7], "RA": [1.0, 2.0], "DEC": [0.0, 0.0]})
    with pytest.raises(RaycatError, match="int64 ids in one file and string ids") as info:
        _canonical(batch, mapping, "objs/", pa.string())
    assert "\n" not in str(info.value)
    text = batch.assign(OBJID=["a", "b"])
    with pytest.raises(RaycatError, match="string ids in one file and int64 ids"):
        _canonical(text, mapping, "objs/", pa.int64())


@pytest.mark.parametrize(
    "ids",
    [
        np.array([3, 2**63 - 1], dtype=np.uint64),
        np.array([3, 4], dtype=np.int32),
        np.array([-3, 2**62], dtype=np.int64),
    ],
)
def test_integer_ids_that_fit_int64_are_kept_exactly(tmp_path, ids):
    rows = read_small_objects(_write(tmp_path, ids))
    assert rows[schema.ID].dtype == np.int64
    assert rows[schema.ID].tolist() == [int(i) for i in ids]


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BAD_IDS))
def test_bad_ids_are_one_line_errors_when_streamed_through_ray(tmp_path, ray_local, case):
    ids, pattern = BAD_IDS[case]
    _one_line_error(read_objects, _write(tmp_path, ids), pattern)
    # the read of the whole list never starts: checked from the schema in the driver


@pytest.mark.slow
@pytest.mark.parametrize("suffix", ["csv", "fits"])
def test_bad_ids_in_csv_and_fits_lists_are_one_line_errors(tmp_path, ray_local, suffix):
    ids, _ = BAD_IDS["fractional"]
    # a CSV or FITS list goes through Ray Data on both planning paths
    for read in (read_objects, read_small_objects):
        _one_line_error(read, _write(tmp_path, ids, suffix), "ids must be integers or text")


@pytest.mark.slow
@pytest.mark.parametrize("suffix", ["csv", "fits", "parquet"])
def test_text_ids_stream_through_ray_exactly_as_given(tmp_path, ray_local, suffix):
    # digits stay text in a column that holds text; FITS text is ASCII
    ids = ["Gaia DR3 4295806720", "1237648720693755918", "a/b c", "../..", "x, 'z'"]
    if suffix != "fits":
        ids.append("Ünïcødé ✓ 星系")
    rows = read_objects(_write(tmp_path, ids, suffix)).to_pandas()
    assert sorted(rows[schema.ID].tolist()) == sorted(ids)
    assert all(isinstance(i, str) for i in rows[schema.ID])


@pytest.mark.slow
def test_a_uint64_id_list_that_fits_streams_through_ray(tmp_path, ray_local):
    ids = np.array([3, 2**63 - 1], dtype=np.uint64)
    rows = read_objects(_write(tmp_path, ids)).to_pandas().sort_values(schema.ID)
    assert str(rows[schema.ID].dtype).startswith("int64")  # NumPy's or Arrow's int64
    assert rows[schema.ID].tolist() == [3, 2**63 - 1]


@pytest.mark.slow
@pytest.mark.parametrize("path", ["driver", "ray"])
def test_plan_refuses_float_ids_on_both_planning_paths(tmp_path, ray_local, monkeypatch, path):
    from raycat.config import parse_config
    from raycat.plan import manifest

    if path == "ray":
        monkeypatch.setattr(manifest, "DRIVER_PLAN_MAX_BYTES", -1)
    from raycat.surveys import tile_index

    monkeypatch.setattr(tile_index, "open_tile_index", lambda url, options, bands: None)
    data = _write(tmp_path, [1.5, 2.0])
    cfg = parse_config({"data": data.model_dump()})
    with pytest.raises(RaycatError, match=r"'OBJID' holds double values \(e\.g\. 1\.5\)") as info:
        manifest.plan(cfg)
    assert "\n" not in str(info.value)
