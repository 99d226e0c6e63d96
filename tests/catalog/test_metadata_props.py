"""What users of lsdb expect of a finished catalog: the light columns by default, the catalog's
name from the config, and a margin that makes crossmatches right at partition edges."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raycat import schema as S
from raycat.catalog.info import catalog_schema
from raycat.catalog.job import CatalogJob
from raycat.catalog.write import partition_table
from raycat.config import ConfigError, parse_config
from raycat.errors import RaycatError
from raycat.healpix import healpix29, unit_key
from raycat.photoz.pdf import bin_edges
from raycat.plan.idhash import id_set_hash

ORDER = 10  # partitions ~3.4 arcmin across
SHIFT = 2 * (29 - ORDER)  # _healpix_29 -> pixel at ORDER
SCHEMA = catalog_schema(
    bin_edges(0.0, 1.6, 8), ["ps1_g"], model_id="m", config_hash="c", attr_players=["ps1_g"]
)
LIGHT = ["id", "ra", "dec", *S.POINT_ESTIMATES, "flags"]


def _edge_pair(ra: float = 150.0, dec: float = 2.0) -> tuple[tuple, tuple]:
    """Two positions 0.5 arcsec apart on either side of a partition border (scanning in ra)."""
    step = 0.5 / 3600 / np.cos(np.radians(dec))
    ras = ra + step * np.arange(2000)
    pixels = healpix29(ras, np.full(len(ras), dec)) >> SHIFT
    first = int(np.flatnonzero(pixels != pixels[0])[0])
    return (ras[first - 1], dec), (ras[first], dec)


def _sky() -> pd.DataFrame:
    """Object B just across a border from position A, and filler objects in A's partition
    at least 20 arcsec from A (so only B can match A within a few arcsec)."""
    a, b = _edge_pair()
    rng = np.random.default_rng(5)
    ra = a[0] - rng.uniform(20, 60, 40) / 3600
    dec = a[1] + rng.uniform(-60, 60, 40) / 3600
    frame = pd.DataFrame({"ra": [b[0], *ra], "dec": [b[1], *dec]})
    frame["id"] = np.arange(len(frame))
    frame["key"] = [unit_key(ORDER, int(p)) for p in healpix29(frame.ra, frame.dec) >> SHIFT]
    return frame


def _write(root: str, sky: pd.DataFrame, options: dict | None = None, **job) -> dict:
    """One job as run_infer drives it, over ``sky``; returns the catalog's totals."""
    groups = dict(list(sky.groupby("key")))
    with CatalogJob(
        root, options, model_id="m", config_hash="c", mode="resume", lease_seconds=60, **job
    ) as catalog:
        counts = {k: len(g) for k, g in groups.items()}
        hashes = {k: id_set_hash(g["id"].to_numpy()) for k, g in groups.items()}
        rec = catalog.reconcile(SCHEMA, counts, hashes, retry_read_errors=True)
        catalog.begin(rec)
        writer = catalog.writer(SCHEMA)
        for key in sorted(rec.todo):
            rows, n = groups[key], len(groups[key])
            attrs = {c: np.full(n, 0.1) for c in ("attr_ps1_g", S.ATTR_BASELINE)}
            table = partition_table(
                SCHEMA,
                ids=rows["id"].to_numpy(),
                ra=rows["ra"].to_numpy(),
                dec=rows["dec"].to_numpy(),
                flags=np.zeros(n, np.int32),
                pdf=np.ones((n, 8)),
                extra=attrs,
            )
            writer.write_partition(key, table)
        return catalog.finish(rec, max_error_fraction=0.0)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("cats") / "dr1")
    _write(root, _sky(), margin_arcsec=5.0)
    return root


def test_lsdb_reads_the_light_columns_by_default_and_the_pdf_when_asked(catalog):
    import lsdb

    assert lsdb.open_catalog(catalog).columns.tolist() == LIGHT
    everything = lsdb.open_catalog(catalog, columns="all")
    assert {S.PDF, "attr_ps1_g", S.ATTR_BASELINE} <= set(everything.columns)
    frame = lsdb.open_catalog(catalog, columns=[S.ID, S.PDF]).compute()
    assert len(frame) == 41 and len(frame[S.PDF].iloc[0]) == 8


def test_the_catalog_is_named_by_the_config_or_its_path(catalog, tmp_path):
    import hats

    assert hats.read_hats(catalog).catalog_name == "dr1"  # the last path component
    named = str(tmp_path / "v2")
    _write(named, _sky(), catalog_name="photoz_dr1")
    assert hats.read_hats(named).catalog_name == "photoz_dr1"
    assert parse_config({"infer": {"catalog": "s3://b/dr1/"}}).infer.hats_name == "dr1"


@pytest.mark.parametrize("infer", [{"catalog_name": "my catalog"}, {"catalog": "out/-x"}])
def test_an_unsafe_catalog_name_is_one_line(infer):
    with pytest.raises(ConfigError, match=r"not a safe name.*infer\.catalog_name") as err:
        parse_config({"infer": infer})
    assert "\n" not in str(err.value)


@pytest.mark.slow  # ~15 s on 2 busy cores, most of it lsdb's import and dask
@pytest.mark.filterwarnings("ignore:Right catalog does not have a margin cache")
def test_a_crossmatch_finds_the_neighbour_across_an_edge_only_with_the_margin(catalog):
    import lsdb

    a, _ = _edge_pair()
    left = lsdb.from_dataframe(
        pd.DataFrame({"name": ["A"], "ra": [a[0]], "dec": [a[1]]}),
        margin_threshold=None,
    )
    plain = lsdb.open_catalog(catalog)
    assert plain.margin is None
    with_margin = lsdb.open_catalog(f"{catalog}/{S.HATS_COLLECTION_FILE}")
    assert with_margin.margin is not None
    assert with_margin.margin.hc_structure.catalog_info.margin_threshold == 5.0
    found = {}
    for name, right in (("plain", plain), ("margin", with_margin)):
        match = left.crossmatch(
            right,
            radius_arcsec=2.0,
            n_neighbors=1,
            suffixes=("_l", "_r"),
            suffix_method="all_columns",
        )
        found[name] = match.compute()["id_r"].tolist()
    assert found == {"plain": [], "margin": [0]}  # B, 0.5 arcsec away in the next partition


def test_a_rerun_rebuilds_the_margin_and_none_removes_only_what_raycat_wrote(tmp_path):
    import hats

    root = tmp_path / "dr1"
    sky = _sky()
    first = _write(str(root), sky, margin_arcsec=5.0)["margin_rows"]
    assert first > 0
    again = _write(str(root), sky, margin_arcsec=5.0)  # resume, nothing to write
    assert again["margin_rows"] == first  # rebuilt, never appended to
    margin = hats.read_hats(root / S.MARGIN_DIR)
    assert margin.catalog_info.total_rows == first
    mine = root / S.MARGIN_DIR / "notes.txt"
    mine.write_text("a user's file")
    _write(str(root), sky, margin_arcsec=None)
    assert not (root / S.HATS_COLLECTION_FILE).exists()
    left = [p.relative_to(root) for p in (root / S.MARGIN_DIR).rglob("*") if p.is_file()]
    assert left == [Path(S.MARGIN_DIR, "notes.txt")]


def test_a_job_removes_the_margin_before_it_changes_a_partition(tmp_path):
    root = tmp_path / "dr1"
    sky = _sky()
    _write(str(root), sky, margin_arcsec=5.0)
    job = CatalogJob(
        str(root), None, model_id="m", config_hash="c", mode="resume", lease_seconds=60
    )
    with job:  # a job that dies after begin: no margin of the old partitions is left
        counts = {k: len(g) for k, g in sky.groupby("key")}
        hashes = {k: id_set_hash(g["id"].to_numpy()) for k, g in sky.groupby("key")}
        job.begin(job.reconcile(SCHEMA, counts, hashes, retry_read_errors=True))
    assert not (root / S.HATS_COLLECTION_FILE).exists()
    assert not list((root / S.MARGIN_DIR).rglob("*.parquet"))


def test_the_collection_and_its_margin_read_from_an_object_store(s3_bucket):
    import hats
    import ray

    # margins are written in Ray tasks when Ray is up; an embedded Ray started by an earlier
    # test has workers without the moto credentials this fixture put in the environment
    ray.shutdown()

    url, options = f"{s3_bucket[0]}/dr1", s3_bucket[1]
    rows = _write(url, _sky(), options, margin_arcsec=5.0)["margin_rows"]
    signed = {**options, "anon": False}  # hats reads s3:// anonymously unless told
    collection = hats.read_hats(f"{url}/{S.HATS_COLLECTION_FILE}", storage_options=signed)
    assert collection.main_catalog.catalog_info.total_rows == 41
    margin = hats.read_hats(collection.default_margin_catalog_dir, storage_options=signed)
    assert margin.catalog_info.total_rows == rows > 0


def test_a_margin_wider_than_the_partitions_is_one_line(tmp_path):
    with pytest.raises(RaycatError, match=r"margin_arcsec 600 is wider .*\(order 10\)") as err:
        _write(str(tmp_path / "dr1"), _sky(), margin_arcsec=600.0)
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_margin_partitions_written_in_ray_tasks_are_the_same(catalog, ray_local):
    import hats

    from raycat import fsutil
    from raycat.catalog.margin import sync_margin

    before = hats.read_hats(f"{catalog}/{S.MARGIN_DIR}")
    fs, root = fsutil.filesystem(catalog, None)
    again = sync_margin(fs, root, catalog, {}, "dr1", 5.0)  # Ray is up: written in tasks
    assert again == {
        "rows": before.catalog_info.total_rows,
        "partitions": len(before.get_healpix_pixels()),
    }
