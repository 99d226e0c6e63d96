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
from raycat.catalog.keys import label
from raycat.errors import RaycatError
from raycat.healpix import Partitioning, healpix29, pixel_at_order, unit_key, unit_order_pixel
from raycat.photoz.pdf import bin_centres, bin_edges

EDGES = bin_edges(0.0, 1.6, 32)
BANDS = ["g", "r", "i"]
ORDER = 5


def make_schema(model_id: str = "model-a", **options) -> pa.Schema:
    return I.catalog_schema(EDGES, BANDS, model_id=model_id, config_hash="cfg-1", **options)


def make_objects(ra: np.ndarray, dec: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Objects at these positions, with PDFs peaked at their redshift; 1 in 25 without PDF."""
    rng = np.random.default_rng(seed)
    n = len(ra)
    z = rng.uniform(0.1, 1.4, n)
    pdf = np.exp(-0.5 * ((bin_centres(EDGES)[None, :] - z[:, None]) / 0.08) ** 2)
    pdf /= pdf.sum(axis=1, keepdims=True)
    pdf[::25] = np.nan  # no prediction for these
    return {
        "id": rng.permutation(10 * n)[:n].astype(np.int64),
        "ra": ra,
        "dec": dec,
        "z": z,
        "pdf": pdf,
        "pixel": healpix29(ra, dec) >> (2 * (29 - ORDER)),
    }


@pytest.fixture(scope="module")
def objects() -> dict[str, np.ndarray]:
    """300 objects in a few degrees."""
    rng = np.random.default_rng(7)
    return make_objects(rng.uniform(150, 154, 300), rng.uniform(1, 5, 300), seed=7)


def adaptive_keys(healpix_29: np.ndarray, threshold: int, orders=(2, 4)) -> list[int]:
    """HATS-style partitions: a pixel split into its children until it holds at most
    ``threshold`` objects (or reaches the deepest order)."""
    keys: list[int] = []

    def visit(order: int, pixel: int) -> None:
        n = int(np.sum(pixel_at_order(healpix_29, order) == pixel))
        if n and order < orders[1] and n > threshold:
            for child in range(4 * pixel, 4 * pixel + 4):
                visit(order + 1, child)
        elif n:
            keys.append(unit_key(order, pixel))

    for pixel in np.unique(pixel_at_order(healpix_29, orders[0])).tolist():
        visit(orders[0], pixel)
    return keys


@pytest.fixture(scope="module")
def mixed() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """280 objects, a dense patch among sparse ones, and each one's partition key: 20
    partitions at orders 2, 3 and 4."""
    rng = np.random.default_rng(11)
    ra = np.concatenate([rng.uniform(150, 151.5, 150), rng.uniform(140, 170, 100)])
    dec = np.concatenate([rng.uniform(1, 2.5, 150), rng.uniform(-10, 20, 100)])
    ra = np.concatenate([ra, rng.uniform(250, 290, 30)])
    dec = np.concatenate([dec, rng.uniform(30, 60, 30)])
    mixed = make_objects(ra, dec, seed=11)
    h29 = healpix29(ra, dec)
    return mixed, Partitioning(adaptive_keys(h29, 40)).unit_of(h29)


def tables_by_key(objects, schema, keys=None) -> dict[int, pa.Table]:
    """One partition table per key (NUNIQ; ``keys``: each object's, else its pixel at ORDER)."""
    keys = unit_key(ORDER, objects["pixel"]) if keys is None else keys
    tables = {}
    for key in np.unique(keys):
        rows = keys == key
        tables[int(key)] = C.partition_table(
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
    writer = C.CatalogWriter(root, schema, mode=mode, storage_options=storage_options)
    for key, table in tables_by_key(objects, schema).items():
        writer.write_partition(key, table)
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

    table = tables_by_key(objects, make_schema(has_z_spec=True))
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

    assert writer.done_units() == set(unit_key(ORDER, np.unique(objects["pixel"])).tolist())
    for pixel in np.unique(objects["pixel"]).tolist():
        ours = tmp_path / "cat" / S.partition_relpath(ORDER, pixel)
        assert str(ours) == str(pixel_catalog_file(tmp_path / "cat", HealpixPixel(ORDER, pixel)))
        index = pq.read_table(ours, columns=[S.HEALPIX_29])[S.HEALPIX_29].to_numpy()
        assert np.all(np.diff(index) >= 0)


def test_crash_then_resume_gives_every_id_once_and_keeps_done_partitions(tmp_path, objects):
    root = str(tmp_path / "cat")
    schema = make_schema(has_z_spec=True)
    tables = tables_by_key(objects, schema)
    keys = sorted(tables)  # all at ORDER: a catalog as raycat wrote them at one order
    first = C.CatalogWriter(root, schema, mode="new")
    for key in keys[:3]:
        first.write_partition(key, tables[key])
    # the crash: one partition written but not marked, one temp file left half-written
    interrupted = tmp_path / "cat" / S.partition_relpath(*unit_order_pixel(keys[3]))
    interrupted.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(tables[keys[3]].slice(0, 2), interrupted)
    (interrupted.parent / f".{interrupted.name}.dead.tmp").write_bytes(b"PAR1 half")
    with pytest.raises(RaycatError, match="not marked done"):
        first.finalize()

    done_files = [tmp_path / "cat" / S.partition_relpath(*unit_order_pixel(k)) for k in keys[:3]]
    stamps = [(f.stat().st_ino, f.stat().st_mtime_ns) for f in done_files]
    rerun = C.CatalogWriter(root, schema, mode="resume")
    assert rerun.done_units() == set(keys[:3])
    written = [rerun.write_partition(k, tables[k]) is not None for k in keys]
    assert written == [False] * 3 + [True] * (len(keys) - 3)
    assert [(f.stat().st_ino, f.stat().st_mtime_ns) for f in done_files] == stamps
    assert not list((tmp_path / "cat").rglob("*.tmp"))
    assert rerun.finalize() == {"rows": len(objects["id"]), "partitions": len(keys)}
    ids = R.read_catalog_ids(root)
    assert len(ids) == len(objects["id"]) and set(ids) == set(objects["id"].tolist())


def test_modes_new_and_mixed_models(tmp_path, objects):
    root = str(tmp_path / "cat")
    write_catalog(root, objects).finalize()
    with pytest.raises(RaycatError, match="already exists"):
        C.CatalogWriter(root, make_schema(has_z_spec=True), mode="new")
    with pytest.raises(RaycatError, match="new catalog version"):
        C.CatalogWriter(root, make_schema("model-b", has_z_spec=True), mode="resume")
    with pytest.raises(RaycatError, match="other columns"):
        C.CatalogWriter(root, make_schema(has_z_spec=True, pdf_dtype="float16"))


def test_rows_of_another_pixel_are_refused(tmp_path, objects):
    schema = make_schema(has_z_spec=True)
    tables = tables_by_key(objects, schema)
    first, second = sorted(tables)[:2]
    writer = C.CatalogWriter(str(tmp_path / "cat"), schema)
    with pytest.raises(RaycatError, match="lie in other pixels"):
        writer.write_partition(first, pa.concat_tables([tables[first], tables[second]]))
    assert not writer.is_done(first)
    h29 = tables[first][S.HEALPIX_29].to_numpy()
    child = first * 4 + (int(pixel_at_order(h29[0], ORDER + 1)) + 1) % 4  # not row 0's child
    with pytest.raises(RaycatError, match=rf"order {ORDER + 1}\) lie in other pixels"):
        writer.write_partition(child, tables[first])
    for not_a_key in (3, unit_key(30, 0)):
        with pytest.raises(RaycatError, match="not a work unit"):
            writer.write_partition(not_a_key, tables[first])


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

    frame = lsdb.open_catalog(root, columns="all").compute()
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
    resumed = C.CatalogWriter(root, make_schema(has_z_spec=True), storage_options=options)
    assert resumed.done_units() == set(unit_key(ORDER, np.unique(objects["pixel"])).tolist())


def test_a_catalog_of_mixed_orders_is_read_by_hats_and_lsdb(tmp_path, mixed):
    import hats
    import lsdb
    from hats.pixel_math import HealpixPixel

    objects, keys = mixed
    root = str(tmp_path / "cat")
    writer = C.CatalogWriter(root, make_schema(has_z_spec=True), mode="new")
    tables = tables_by_key(objects, writer.schema, keys)
    for key, table in tables.items():
        writer.write_partition(key, table)
    assert writer.done_units() == set(tables)
    assert writer.finalize() == {"rows": 280, "partitions": len(tables)}

    expected = {HealpixPixel(*unit_order_pixel(k)) for k in tables}
    assert {p.order for p in expected} == {2, 3, 4}
    catalog = hats.read_hats(root)
    assert set(catalog.get_healpix_pixels()) == expected
    info = catalog.catalog_info
    assert (info.total_rows, int(info.hats_order)) == (280, 4)  # as hats writes: the deepest
    assert info.hats_max_rows == max(t.num_rows for t in tables.values())
    lazy = lsdb.open_catalog(root)
    assert set(lazy.get_healpix_pixels()) == expected
    frame = lazy.compute()
    assert sorted(frame[S.ID]) == sorted(objects["id"].tolist())  # every row exactly once
    for pixel in expected:  # each row in the partition of its own pixel
        rows = lazy.get_partition(pixel.order, pixel.pixel).compute()
        assert len(rows) == tables[unit_key(pixel.order, pixel.pixel)].num_rows
        np.testing.assert_array_equal(pixel_at_order(rows.index, pixel.order), pixel.pixel)


def test_overlapping_partitions_are_refused_in_one_line(tmp_path, mixed):
    objects, keys = mixed
    root = str(tmp_path / "cat")
    writer = C.CatalogWriter(root, make_schema(has_z_spec=True), mode="new")
    tables = tables_by_key(objects, writer.schema, keys)
    parent = max(tables, key=lambda k: tables[k].num_rows)  # an order-4 pixel
    cells = pixel_at_order(tables[parent][S.HEALPIX_29].to_numpy(), 5)
    child = unit_key(5, int(cells[0]))  # the order-5 child holding the parent's first row
    child_rows = cells == cells[0]
    assert unit_order_pixel(parent)[0] == 4 and 0 < child_rows.sum() < len(cells)
    writer.write_partition(parent, tables[parent])
    writer.write_partition(child, tables[parent].filter(pa.array(child_rows)))
    with pytest.raises(RaycatError, match="partitions overlap") as refused:
        writer.finalize()
    message = str(refused.value)
    assert (
        "\n" not in message
        and f"pixel {label(child)} lies inside partition {label(parent)}" in message
    )
    assert not (tmp_path / "cat" / S.PROPERTIES_FILES[0]).exists()
