"""Text ids end to end on the tiny sky: planned, cut out (materialised), inferred and written
as a string ``id`` column holding every input string exactly once; a resume keeps every
partition (the done markers' id hashes match the plan's); evaluation joins on the text."""

from __future__ import annotations

import re

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tinysky import catalog_ids

from raycat import schema
from raycat.errors import RaycatError

pytestmark = pytest.mark.slow


def text_id(number: int) -> str:
    """An awkward text id per truth id: survey names, digits with leading zeros, spaces,
    slashes and dots, non-ASCII."""
    forms = (f"Gaia DR3 {number}", f"{number:019d}", f"../{number}/x y", f"星系 ü{number} ✓")
    return forms[number % len(forms)]


@pytest.fixture(scope="module")
def text_run(tiny_sky, tmp_path_factory, ray_module):
    """The tiny sky's 60 objects with text ids: cutouts materialised, then inferred once."""
    from raycat.pipeline import materialise_cutouts, run_infer

    root = tmp_path_factory.mktemp("text_ids")
    truth = tiny_sky.truth.assign(**{schema.ID: tiny_sky.truth[schema.ID].map(text_id)})
    objects = tiny_sky.objects(truth, "text_ids")
    cfg = tiny_sky.config(root / "catalog", objects, mc_dropout_passes=2)  # ids seed dropout
    cfg.cutouts.output = str(root / "cutouts")
    materialise_cutouts(cfg)
    return cfg, root, truth, run_infer(cfg)


def test_every_text_id_once_in_a_string_id_column(text_run):
    import hats

    cfg, root, truth, first = text_run
    ids = catalog_ids(cfg.infer.catalog)
    assert sorted(ids) == sorted(truth[schema.ID]) and len(ids) == len(set(ids)) == 60
    for path in (root / "catalog").glob(schema.PARTITION_GLOB):
        assert pq.read_schema(path).field(schema.ID).type in (pa.string(), pa.large_string())
    catalog = hats.read_hats(cfg.infer.catalog)
    assert isinstance(catalog, hats.catalog.Catalog) and catalog.catalog_info.total_rows == 60
    assert first["partitions_written"] > 1
    # cutout parts are named by a hash of a text id: never a path the id spells
    parts = sorted((root / "cutouts").rglob("*.parquet"))
    assert parts and all(p.parent.parent == root / "cutouts" for p in parts)
    assert all(re.fullmatch(r"part-\d{19}-h[0-9a-f]{16}\.parquet", p.name) for p in parts)


def test_a_resume_keeps_every_partition(text_run):
    from raycat.pipeline import run_infer

    cfg, _root, _truth, first = text_run
    again = run_infer(cfg)
    assert again["partitions_written"] == 0
    assert again["partitions_skipped"] == first["partitions_written"]


def test_evaluation_joins_the_truth_on_text_ids(text_run):
    from raycat.quality.evaluate import evaluate_catalog

    cfg, root, truth, _ = text_run
    truth_url = str(root / "truth_text.parquet")
    truth.to_parquet(truth_url)
    metrics = evaluate_catalog(cfg.infer.catalog, truth_url, str(root / "eval"))
    assert metrics["n_objects"] == 60 and metrics["n_no_truth"] == 0
    numbered = str(root / "truth_int.parquet")
    pd.DataFrame({schema.ID: range(60), schema.TRUTH_Z: 0.5}).to_parquet(numbered)
    with pytest.raises(RaycatError, match="integer ids, the catalog text ids") as info:
        evaluate_catalog(cfg.infer.catalog, numbered, str(root / "eval_int"))
    assert "\n" not in str(info.value)
