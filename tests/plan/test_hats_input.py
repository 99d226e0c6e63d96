"""A HATS catalog as the object list (what lsdb publishes): its partitions and _healpix_29
are used as they are, units nest inside its partitions, and no global sort is needed."""

import numpy as np
import pandas as pd
import pytest

from raycat import schema
from raycat.healpix import Partitioning, healpix29, unit_ranges


@pytest.fixture(scope="module")
def hats_objects(tmp_path_factory):
    """3000 objects (Gaia-like column names) written by lsdb as a HATS collection."""
    import lsdb

    rng = np.random.default_rng(4)
    n = 3000
    frame = pd.DataFrame(
        {
            "source_id": np.arange(n, dtype=np.int64) * 7 + 3,
            "RA_ICRS": rng.uniform(150, 152, n),
            "DE_ICRS": rng.uniform(1, 3, n),
            "z": rng.uniform(0.1, 1.0, n),
        }
    )
    root = tmp_path_factory.mktemp("hats")
    catalog = lsdb.from_dataframe(
        frame,
        ra_column="RA_ICRS",
        dec_column="DE_ICRS",
        catalog_name="objs",
        lowest_order=2,
        highest_order=8,
        partition_rows=700,
    )
    catalog.write_catalog(root / "objs")
    return root, frame


def _config(root, tiles, **cutouts):
    from raycat.config import parse_config

    return parse_config(
        {
            "data": {
                "store": str(root),
                "tile_index": str(tiles),
                "objects": str(root / "objs"),
                "id_column": "source_id",
                "ra_column": "RA_ICRS",
                "dec_column": "DE_ICRS",
                "z_column": "z",
            },
            "cutouts": {"bands": ["ps1_g"], "objects_per_unit": 200, **cutouts},
        }
    )


@pytest.fixture(scope="module")
def tiles(hats_objects):
    from planindex import one_tile_index

    root, _ = hats_objects
    return one_tile_index(root / "tiles.parquet", ra=151.0, dec=2.0, size_deg=1.0, bands=("ps1_g",))


def test_hats_catalog_is_planned_inside_its_own_partitions(hats_objects, tiles, ray_local):
    from raycat.plan.manifest import plan
    from raycat.plan.objects import hats_input

    root, frame = hats_objects
    cfg = _config(root, tiles)
    source = hats_input(cfg.data)
    assert source is not None and len(source.partitions) > 2
    manifest = plan(cfg)
    assert manifest.grouped  # no global sort for a HATS input
    outer = Partitioning(source.partitions)
    starts, ends = unit_ranges(np.array(manifest.units))
    assert (outer.unit_of(starts) >= 0).all()
    assert (outer.unit_of(starts) == outer.unit_of(ends - 1)).all()  # nested, never straddling
    assert max(manifest.unit_counts.values()) <= 200
    rows = manifest.rows().to_pandas()
    assert sorted(rows[schema.ID]) == sorted(frame["source_id"])  # every id once
    np.testing.assert_array_equal(  # its own _healpix_29, kept as given
        rows.set_index(schema.ID)[schema.HEALPIX_29].sort_index(),
        healpix29(*frame.sort_values("source_id")[["RA_ICRS", "DE_ICRS"]].to_numpy().T),
    )
    assert rows.groupby(schema.WORK_UNIT).size().to_dict() == manifest.unit_counts
    on_tile = rows[schema.tile_column("ps1_g")] != ""
    assert on_tile.any() and (~on_tile).any()
    assert (rows.loc[~on_tile, schema.FLAGS] & int(schema.Flag.OFF_FOOTPRINT)).all()


def test_a_flat_directory_of_parquet_files_is_not_taken_for_hats(hats_objects, tmp_path):
    from raycat.config import DataConfig
    from raycat.plan.objects import hats_input

    _, frame = hats_objects
    frame.to_parquet(tmp_path / "part-0.parquet")
    assert hats_input(DataConfig(store=str(tmp_path), objects=str(tmp_path))) is None
