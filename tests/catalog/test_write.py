"""The catalog contract: schema and metadata, atomic resumable partitions, HATS/lsdb readable."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raycat import schema as S
from raycat.catalog import info as I
from raycat.catalog import read as R
from raycat.catalog import write as C
from raycat.errors import RaycatError
from raycat.healpix import healpix29
from raycat.photoz.pdf import bin_centres, bin_edges

EDGES = bin_edges(0.0, 1.6, 32)
BANDS = ["g", "r", "i"]
ORDER = 5


def make_schema(model_id: str = "model-a", **options) -> pa.Schema:
    return I.catalog_schema(EDGES, BANDS, model_id=model_id, config_hash="cfg-1", **options)


@pytest.fixture(scope="module")
def objects() -> dict[str, np.ndarray]:
    """300 objects in a few degrees, with PDFs peaked at their redshift; some without PDF."""
    rng = np.random.default_rng(7)
    n = 300
    z = rng.uniform(0.1, 1.4, n)
    pdf = np.exp(-0.5 * ((bin_centres(EDGES)[None, :] - z[:, None]) / 0.08) ** 2)
    pdf /= pdf.sum(axis=1, keepdims=True)
    pdf[::25] = np.nan  # no prediction for these
    ra, dec = rng.uniform(150, 154, n), rng.uniform(1, 5, n)
    pixel = healpix29(ra, dec) >> (2 * (29 - ORDER))
    return {
        "id": rng.permutation(10 * n)[:n].astype(np.int64),
        "ra": ra,
        "dec": dec,
        "z": z,
        "pdf": pdf,
        "pixel": pixel,
    }


def tables_by_pixel(objects, schema) -> dict[int, pa.Table]:
    tables = {}
    for pixel in np.unique(objects["pixel"]):
        rows = objects["pixel"] == pixel
        tables[int(pixel)] = C.partition_table(
            schema,
            ids=objects["id"][rows],
            ra=objects["ra"][rows],
            dec=objects["dec"][rows],
            flags=np.zeros(rows.sum(), np.int32),
            pdf=objects["pdf"][rows],
            extra={S.Z_SPEC: objects["z"][rows]},
        )
    return tables


def write_catalog(root: str, objects, *, mode="new", storage_options=None) -> C.CatalogWriter:
    schema = make_schema(has_z_spec=True)
    writer = C.CatalogWriter(root, schema, ORDER, mode=mode, storage_options=storage_options)
    for pixel, table in tables_by_pixel(objects, schema).items():
        writer.write_partition(pixel, table)
    return writer


def test_schema_has_the_contract_columns_and_metadata():
    schema = make_schema(
        pdf_dtype="float16", attr_players=BANDS, has_z_spec=True, has_epistemic=True
    )
    for name in (
        S.ID,
        S.RA,
        S.DEC,
        S.HEALPIX_29,
        *S.POINT_ESTIMATES,
        S.PDF,
        S.FLAGS,
        S.Z_SPEC,
        S.Z_STD_EPISTEMIC,
        S.ATTR_BASELINE,
        *map(S.attr_column, BANDS),
    ):
        assert name in schema.names, name
    assert schema.field(S.ID).type == pa.int64() and schema.field(S.HEALPIX_29).type == pa.int64()
    assert schema.field(S.RA).type == pa.float64() and schema.field(S.Z_MEAN).type == pa.float32()
    assert schema.field(S.PDF).type == pa.list_(pa.float16(), 32) and schema.field(S.PDF).nullable
    info = I.CatalogInfo.from_schema(schema)
    np.testing.assert_array_equal(info.bin_edges, EDGES)
    assert (info.bands, info.model_id, info.config_hash) == (BANDS, "model-a", "cfg-1")
    assert json.loads(schema.metadata[S.META_BIN_EDGES]) == EDGES.tolist()
    assert S.META_VERSION in schema.metadata
    plain = make_schema()
    assert S.Z_SPEC not in plain.names and S.ATTR_BASELINE not in plain.names


def test_partition_rows_null_pdf_flags_and_healpix(objects):
    import cdshealpix
    from astropy.coordinates import Latitude, Longitude

    table = tables_by_pixel(objects, make_schema(has_z_spec=True))
    table = pa.concat_tables(table.values())
    missing = np.asarray(table[S.PDF].is_null())
    assert missing.sum() == 12
    flags = table[S.FLAGS].to_numpy()
    assert np.all((flags[missing] & S.Flag.NO_PREDICTION) != 0)
    assert np.all((flags[~missing] & S.Flag.NO_PREDICTION) == 0)
    assert table[S.Z_MEAN].null_count == 12
    z_mean = table[S.Z_MEAN].to_numpy(zero_copy_only=False)[~missing]
    np.testing.assert_allclose(z_mean, table[S.Z_SPEC].to_numpy()[~missing], atol=0.06)
    ra, dec = table[S.RA].to_numpy(), table[S.DEC].to_numpy()
    expected = cdshealpix.nested.lonlat_to_healpix(Longitude(ra, "deg"), Latitude(dec, "deg"), 29)
    np.testing.assert_array_equal(table[S.HEALPIX_29].to_numpy(), expected)
    np.testing.assert_allclose(R.pdf_matrix(table[S.PDF])[~missing].sum(axis=1), 1, rtol=1e-5)


def test_partitions_are_sorted_and_at_the_hats_paths(tmp_path, objects):
    writer = write_catalog(str(tmp_path / "cat"), objects)
    from hats.io import pixel_catalog_file
    from hats.pixel_math import HealpixPixel

    for pixel in writer.done_pixels():
        ours = tmp_path / "cat" / S.partition_relpath(ORDER, pixel)
        assert str(ours) == str(pixel_catalog_file(tmp_path / "cat", HealpixPixel(ORDER, pixel)))
        index = pq.read_table(ours, columns=[S.HEALPIX_29])[S.HEALPIX_29].to_numpy()
        assert np.all(np.diff(index) >= 0)


def test_crash_then_resume_gives_every_id_once_and_keeps_done_partitions(tmp_path, objects):
    root = str(tmp_path / "cat")
    schema = make_schema(has_z_spec=True)
    tables = tables_by_pixel(objects, schema)
    pixels = sorted(tables)
    first = C.CatalogWriter(root, schema, ORDER, mode="new")
    for pixel in pixels[:3]:
        first.write_partition(pixel, tables[pixel])
    # the crash: one partition written but not marked, one temp file left half-written
    interrupted = tmp_path / "cat" / S.partition_relpath(ORDER, pixels[3])
    interrupted.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(tables[pixels[3]].slice(0, 2), interrupted)
    (interrupted.parent / f".{interrupted.name}.dead.tmp").write_bytes(b"PAR1 half")
    with pytest.raises(RaycatError, match="not marked done"):
        first.finalize()

    done_files = [tmp_path / "cat" / S.partition_relpath(ORDER, p) for p in pixels[:3]]
    stamps = [(f.stat().st_ino, f.stat().st_mtime_ns) for f in done_files]
    rerun = C.CatalogWriter(root, schema, ORDER, mode="resume")
    assert rerun.done_pixels() == set(pixels[:3])
    written = [rerun.write_partition(p, tables[p]) is not None for p in pixels]
    assert written == [False] * 3 + [True] * (len(pixels) - 3)
    assert [(f.stat().st_ino, f.stat().st_mtime_ns) for f in done_files] == stamps
    assert not list((tmp_path / "cat").rglob("*.tmp"))
    assert rerun.finalize() == {"rows": len(objects["id"]), "partitions": len(pixels)}
    ids = R.read_catalog_ids(root)
    assert len(ids) == len(objects["id"]) and set(ids) == set(objects["id"].tolist())


def test_modes_new_and_mixed_models(tmp_path, objects):
    root = str(tmp_path / "cat")
    write_catalog(root, objects).finalize()
    with pytest.raises(RaycatError, match="already exists"):
        C.CatalogWriter(root, make_schema(has_z_spec=True), ORDER, mode="new")
    with pytest.raises(RaycatError, match="new catalog version"):
        C.CatalogWriter(root, make_schema("model-b", has_z_spec=True), ORDER, mode="resume")
    with pytest.raises(RaycatError, match="other columns"):
        C.CatalogWriter(root, make_schema(has_z_spec=True, pdf_dtype="float16"), ORDER)


def test_rows_of_another_pixel_are_refused(tmp_path, objects):
    schema = make_schema(has_z_spec=True)
    tables = tables_by_pixel(objects, schema)
    first, second = sorted(tables)[:2]
    writer = C.CatalogWriter(str(tmp_path / "cat"), schema, ORDER)
    with pytest.raises(RaycatError, match="lie in other pixels"):
        writer.write_partition(first, pa.concat_tables([tables[first], tables[second]]))
    assert not writer.is_done(first)


def test_hats_and_lsdb_read_every_row(tmp_path, objects):
    import hats
    import lsdb

    root = str(tmp_path / "cat")
    write_catalog(root, objects).finalize()
    catalog = hats.read_hats(root)
    assert catalog.catalog_info.total_rows == len(objects["id"])
    assert catalog.catalog_info.healpix_column == S.HEALPIX_29
    pixels = {p.pixel for p in catalog.get_healpix_pixels()}
    assert pixels == set(np.unique(objects["pixel"]).tolist())
    assert S.META_MODEL_ID in catalog.schema.metadata  # raycat metadata in _common_metadata

    frame = lsdb.open_catalog(root).compute()
    assert frame.index.name == S.HEALPIX_29
    assert sorted(frame[S.ID]) == sorted(objects["id"].tolist())
    assert frame[S.PDF].isna().sum() == 12


def test_s3_catalog_write_finalize_and_read_back(s3_bucket, objects):
    import hats
    from upath import UPath

    url, options = s3_bucket
    root = f"{url}/catalogs/v1"
    assert write_catalog(root, objects, storage_options=options).finalize()["rows"] == 300
    ids = R.read_catalog_ids(root, storage_options=options)
    assert sorted(ids) == sorted(objects["id"].tolist())
    assert R.read_catalog_info(root, options).model_id == "model-a"
    catalog = hats.read_hats(UPath(root, **options))
    assert catalog.catalog_info.total_rows == 300
    resumed = C.CatalogWriter(root, make_schema(has_z_spec=True), ORDER, storage_options=options)
    assert resumed.done_pixels() == set(np.unique(objects["pixel"]).tolist())
