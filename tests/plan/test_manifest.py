import numpy as np
import pandas as pd
import pytest
from planindex import tan_tile_row

from raycat import schema
from raycat.errors import RaycatError
from raycat.plan.manifest import spatial_index


@pytest.fixture
def index():
    # two 100" tiles overlapping by 40" in RA; the second is rotated 30 deg; band b only on t1
    step = 60 / 3600 / np.cos(np.radians(2.0))
    return pd.DataFrame(
        [
            tan_tile_row("t1", "a", 150.0, 2.0),
            tan_tile_row("t2", "a", 150.0 + step, 2.0, rotation_deg=30.0),
            tan_tile_row("t1", "b", 150.0, 2.0),
        ]
    )


def _finder(index, tmp_path):
    """The planner's TileFinder over ``index`` written as a single-file tile index."""
    from raycat.plan.tiles import TileFinder
    from raycat.surveys.tile_index import open_tile_index

    index.to_parquet(tmp_path / "tiles.parquet")
    return TileFinder(
        open_tile_index(str(tmp_path / "tiles.parquet"), None, ["a", "b"]), ["a", "b"]
    )


def test_object_in_overlap_is_cut_from_the_tile_where_it_is_most_interior(index, tmp_path):
    finder = _finder(index, tmp_path)
    dra = 1 / 3600 / np.cos(np.radians(2.0))
    ra = np.array([150.0, 150.0 + 25 * dra, 150.0 + 35 * dra, 150.0 + 60 * dra])
    tiles = finder.assign(ra, np.full(4, 2.0))
    assert list(tiles["a"]) == [
        "tiles/t1.a.fits",
        "tiles/t1.a.fits",
        "tiles/t2.a.fits",
        "tiles/t2.a.fits",
    ]
    assert list(tiles["b"]) == ["tiles/t1.b.fits", "tiles/t1.b.fits", "tiles/t1.b.fits", ""]


def test_object_off_every_tile_gets_no_tile(index, tmp_path):
    tiles = _finder(index, tmp_path).assign(np.array([151.0]), np.array([2.0]))
    assert tiles["a"][0] == "" and tiles["b"][0] == ""


def test_invalid_coordinates_are_a_clear_error():
    with pytest.raises(RaycatError, match="invalid ra/dec"):
        spatial_index(np.array([1.0, np.nan]), np.array([0.0, 0.0]))


def _write_store(tmp_path, index, ids):
    index.to_parquet(tmp_path / "tiles.parquet")
    dra = 1 / 3600 / np.cos(np.radians(2.0))
    offsets = np.linspace(-40, 160, len(ids))
    pd.DataFrame(
        {
            "ID": ids,
            "RA": 150.0 + offsets * dra,
            "DEC": np.full(len(ids), 2.0),
            "Z": np.linspace(0.1, 1, len(ids)),
        }
    ).to_parquet(tmp_path / "objs.parquet")


def _config(tmp_path, **data):
    from raycat.config import parse_config

    return parse_config(
        {
            "data": {
                "store": str(tmp_path),
                "objects": "objs.parquet",
                "id_column": "ID",
                "ra_column": "RA",
                "dec_column": "DEC",
                "z_column": "Z",
                **data,
            },
            "cutouts": {"healpix_order": 13},
        }
    )  # ~25" units: several here


@pytest.fixture(params=["driver", "ray"])
def planned_in(request, monkeypatch):
    """Plan small lists in the driver (the default) or force the streaming Ray Data path."""
    from raycat.plan import manifest

    if request.param == "ray":
        monkeypatch.setattr(manifest, "DRIVER_PLAN_MAX_BYTES", -1)
    return request.param


@pytest.mark.slow
def test_plan_gives_every_object_once_with_tiles_and_flags(
    tmp_path, index, ray_local, monkeypatch, planned_in
):
    from raycat.plan import manifest

    _write_store(tmp_path, index, list(range(40)))
    cfg = _config(tmp_path)
    cfg.cutouts.bands = ["a", "b"]
    plan = manifest.plan(cfg)
    rows = plan.rows().to_pandas()
    assert sorted(rows[schema.ID]) == list(range(40)) and plan.n_objects == 40
    assert len(plan.units) > 2 and set(rows[schema.WORK_UNIT]) == set(plan.units)
    assert rows.groupby(schema.WORK_UNIT).size().to_dict() == plan.unit_counts
    assert (np.diff(rows[schema.HEALPIX_29]) >= 0).all()  # grouped by unit, along the curve
    off = rows[schema.tile_column("a")] == ""
    assert off.any() and (rows.loc[off, schema.FLAGS] & int(schema.Flag.OFF_FOOTPRINT)).all()
    assert rows[schema.Z_SPEC].notna().all()
    skipped = plan.rows(skip_units={plan.units[0]}).to_pandas()
    assert plan.units[0] not in set(skipped[schema.WORK_UNIT])
    assert len(skipped) + (rows[schema.WORK_UNIT] == plan.units[0]).sum() == 40


@pytest.mark.slow
def test_duplicate_ids_are_named_or_kept_once(tmp_path, index, ray_local, monkeypatch, planned_in):
    from raycat.plan import manifest

    _write_store(tmp_path, index, [1, 2, 3, 3, 4, 7, 7, 7])
    cfg = _config(tmp_path)
    cfg.cutouts.bands = ["a", "b"]
    with pytest.raises(RaycatError, match="duplicate object ids: 3, 7"):
        manifest.plan(cfg)
    cfg.data.duplicate_ids = "keep_one"
    rows = manifest.plan(cfg).rows().to_pandas()
    assert sorted(rows[schema.ID]) == [1, 2, 3, 4, 7]
    dup = rows.set_index(schema.ID)[schema.FLAGS] & int(schema.Flag.DUPLICATE_ID)
    assert dup[3] and dup[7] and not dup[1]


# text ids as given: a survey's name, digits with leading zeros, dots and slashes, a
# backslash, quotes and a comma, padding, non-ASCII
TEXT_IDS = ["Gaia DR3 4295806720", "00123", "../..", "x\\y, 'z'", " padded "]
TEXT_IDS += [f"星系/{i} ✓" for i in range(35)]


@pytest.mark.slow
def test_text_ids_are_planned_intact(tmp_path, index, ray_local, monkeypatch, planned_in):
    import pyarrow as pa

    from raycat.plan import manifest
    from raycat.plan.idhash import id_set_hash

    _write_store(tmp_path, index, TEXT_IDS)
    cfg = _config(tmp_path)
    cfg.cutouts.bands = ["a", "b"]
    plan = manifest.plan(cfg)
    assert plan.id_type == pa.string() and len(plan.units) > 2
    rows = plan.rows().to_pandas()
    assert sorted(rows[schema.ID].tolist()) == sorted(TEXT_IDS)
    assert all(isinstance(i, str) for i in rows[schema.ID])
    for unit, ids in rows.groupby(schema.WORK_UNIT)[schema.ID]:  # what the markers will hold
        assert plan.unit_hashes[unit] == id_set_hash(ids.to_numpy())


@pytest.mark.slow
def test_duplicate_text_ids_are_named_quoted(tmp_path, index, ray_local, monkeypatch, planned_in):
    from raycat.plan import manifest

    _write_store(tmp_path, index, ["a, b", "a, b", "c/d", "e"])
    cfg = _config(tmp_path)
    cfg.cutouts.bands = ["a", "b"]
    with pytest.raises(RaycatError, match=r"duplicate object ids: 'a, b' \("):
        manifest.plan(cfg)
    cfg.data.duplicate_ids = "keep_one"
    assert sorted(manifest.plan(cfg).rows().to_pandas()[schema.ID]) == ["a, b", "c/d", "e"]


@pytest.mark.slow
@pytest.mark.parametrize("suffix", ["csv", "fits", "parquet"])
def test_object_lists_in_any_format_get_canonical_columns(tmp_path, ray_local, suffix):
    from astropy.table import Table

    from raycat.config import DataConfig
    from raycat.plan.objects import read_objects, read_small_objects

    table = Table(
        {
            "OBJID": [5, 6, 7],
            "RAdeg": [10.0, 10.1, 10.2],
            "DEdeg": [-5.0, -5.1, -5.2],
            "ZSPEC": [0.1, 0.2, 0.3],
        }
    )
    path = tmp_path / f"objects.{suffix}"
    table.write(path, format={"csv": "ascii.csv", "fits": "fits", "parquet": "parquet"}[suffix])
    data = DataConfig(
        store=str(tmp_path),
        objects=path.name,
        id_column="OBJID",
        ra_column="RAdeg",
        dec_column="DEdeg",
        z_column="ZSPEC",
    )
    for reader in (lambda d: read_objects(d).to_pandas(), read_small_objects):
        rows = reader(data).sort_values(schema.ID)
        assert list(rows.columns) == [schema.ID, schema.RA, schema.DEC, schema.Z_SPEC]
        assert rows[schema.ID].tolist() == [5, 6, 7]
        assert rows[schema.Z_SPEC].tolist() == [0.1, 0.2, 0.3]
        assert pd.api.types.is_integer_dtype(rows[schema.ID])
        assert pd.api.types.is_float_dtype(rows[schema.RA])
        with pytest.raises(RaycatError, match="no column"):
            reader(data.model_copy(update={"ra_column": "RA"}))
    with pytest.raises(RaycatError, match="not found"):
        read_objects(data.model_copy(update={"objects": "missing.csv"}))


def test_frame_blocks_hand_out_every_row_once_in_small_ordered_blocks():
    from raycat.plan.frame_source import FrameBlocks

    frame = pd.DataFrame({"id": np.arange(1000), "x": np.linspace(0, 1, 1000)})
    tasks = FrameBlocks(frame, 256).get_read_tasks(parallelism=1)
    blocks = [block for task in tasks for block in task()]
    assert [len(b) for b in blocks] == [256, 256, 256, 232]
    assert [t.metadata.num_rows for t in tasks] == [256, 256, 256, 232]
    pd.testing.assert_frame_equal(pd.concat(blocks), frame)
    empty = FrameBlocks(frame.iloc[:0], 256).get_read_tasks(parallelism=4)
    assert sum(len(b) for t in empty for b in t()) == 0
