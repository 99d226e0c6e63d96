"""`raycat plan`: the planning stage alone, on Ray, with every id checked through it."""

import json

import numpy as np
import pandas as pd
import pytest

from raycat.surveys.tan import tan_project


def _objects(path, n, seed=0):
    """``n`` objects over 4 x 4 deg about (150, 2), one deep corner: density varies ~30x."""
    rng = np.random.default_rng(seed)
    deep = n // 3
    ra = np.concatenate([rng.uniform(148, 152, n - deep), rng.uniform(148, 148.6, deep)])
    dec = np.concatenate([rng.uniform(0, 4, n - deep), rng.uniform(0, 0.6, deep)])
    ids = rng.permutation(n).astype(np.int64) * 3 + 11
    pd.DataFrame({"id": ids, "ra": ra, "dec": dec}).to_parquet(path, row_group_size=100_000)
    return ids, ra, dec


def _config(tmp_path, tiles, objects, per_unit):
    from raycat.config import parse_config

    return parse_config(
        {
            "data": {
                "store": str(tmp_path),
                "tile_index": str(tiles),
                "objects": str(objects),
                "z_column": None,
            },
            "cutouts": {"bands": ["ps1_g", "ps1_r"], "objects_per_unit": per_unit},
            "ray": {"num_cpus": 2},
        }
    )


@pytest.mark.slow
def test_a_million_objects_are_planned_once_each(tmp_path, ray_local):
    from planindex import one_tile_index

    from raycat.plan.dryrun import dry_run

    ids, ra, dec = _objects(tmp_path / "objects.parquet", 1_000_000)
    tiles = one_tile_index(tmp_path / "tiles.parquet", 150.0, 2.0, 2.0, bands=("ps1_g", "ps1_r"))
    out = dry_run(_config(tmp_path, tiles, tmp_path / "objects.parquet", 20_000))
    assert out["objects"] == len(ids) and out["every_id_once"]
    xi, eta = tan_project(ra, dec, 150.0, 2.0)
    inside = (np.abs(xi) < 1.0) & (np.abs(eta) < 1.0)  # the 2 deg tile, to 1e-9 deg
    assert out["off_footprint"] == int((~inside).sum())
    assert out["objects_with_tile"] == {"ps1_g": int(inside.sum()), "ps1_r": int(inside.sum())}
    sizes = out["objects_per_partition"]
    assert sizes["max"] <= 20_000 and len(out["partitions_by_order"]) >= 2  # adaptive
    assert sum(out["partitions_by_order"].values()) == out["partitions"]


def test_raycat_plan_prints_the_plan_as_json(tmp_path, capsys, ray_local):
    from planindex import one_tile_index

    from raycat.cli import main

    _objects(tmp_path / "objects.parquet", 3000)
    tiles = one_tile_index(tmp_path / "tiles.parquet", 150.0, 2.0, 2.0, bands=("ps1_g",))
    config = tmp_path / "raycat.yaml"
    config.write_text(
        json.dumps(
            {
                "data": {
                    "store": str(tmp_path),
                    "tile_index": str(tiles),
                    "objects": "objects.parquet",
                    "z_column": None,
                },
                "cutouts": {"bands": ["ps1_g"], "objects_per_unit": 300},
            }
        )
    )
    assert main(["plan", "--config", str(config)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["objects"] == 3000 and out["every_id_once"]
    assert out["objects_per_partition"]["max"] <= 300
    assert set(out) >= {"partitions_by_order", "tiles_per_band", "off_footprint", "wall_s"}
