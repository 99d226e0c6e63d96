"""Resume as a contract with the plan, end to end (run_infer on a tiny sky): a changed object
list, another work-unit size, a truncated metadata file, a second job, a region."""

from __future__ import annotations

import shutil
from collections import Counter

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from tinysky import ORDER, catalog_ids, partition_files, tree

from raycat import schema
from raycat.errors import RaycatError
from raycat.healpix import healpix29

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base(tiny_sky, tmp_path_factory, ray_module):
    """The first 40 objects inferred once (11 partitions); each test works on a copy."""
    from raycat.pipeline import run_infer

    root = tmp_path_factory.mktemp("resume")
    first40 = tiny_sky.objects(tiny_sky.truth.iloc[:40], "first40")
    run_infer(tiny_sky.config(root / "base", first40))
    return root / "base", first40


def _copy(base, tmp_path):
    shutil.copytree(base[0], tmp_path / "cat")
    return tmp_path / "cat"


def _pixels(frame) -> np.ndarray:
    return healpix29(frame[schema.RA], frame[schema.DEC]) >> (2 * (29 - ORDER))


def test_resume_with_a_longer_object_list_has_every_id_once(tiny_sky, base, tmp_path):
    from raycat.pipeline import run_infer

    catalog = _copy(base, tmp_path)
    all60 = tiny_sky.objects(tiny_sky.truth, "all60")
    result = run_infer(tiny_sky.config(catalog, all60))
    ids = catalog_ids(catalog)
    assert sorted(ids) == sorted(tiny_sky.truth[schema.ID]) and len(ids) == 60
    assert result["rows"] == 60 and result["partitions_changed"] + result["partitions_new"] > 0


def test_resume_at_another_work_unit_size_keeps_the_partitioning(tiny_sky, base, tmp_path):
    import hats

    from raycat.pipeline import run_infer

    catalog = _copy(base, tmp_path)
    cfg = tiny_sky.config(catalog, base[1])
    cfg.cutouts.healpix_order, cfg.cutouts.objects_per_unit = None, 5  # would choose order 9
    result = run_infer(cfg)
    assert (result["orders"], result["passes"], result["partitions_unchanged"]) == (
        {ORDER: 11},
        0,
        11,
    )
    assert {p.parts[-3] for p in catalog.glob(schema.PARTITION_GLOB)} == {f"Norder={ORDER}"}
    assert sorted(catalog_ids(catalog)) == sorted(tiny_sky.truth[schema.ID][:40])
    assert hats.read_hats(str(catalog)).catalog_info.total_rows == 40


def test_changed_input_rewrites_only_the_partitions_that_changed(tiny_sky, base, tmp_path):
    from raycat.pipeline import run_infer

    catalog = _copy(base, tmp_path)
    before = partition_files(catalog)
    first40 = tiny_sky.truth.iloc[:40]
    per_pixel = Counter(_pixels(first40).tolist())
    alone = [i for i, p in enumerate(_pixels(first40)) if per_pixel[p] == 1]
    crowded = [i for i, p in enumerate(_pixels(first40)) if per_pixel[p] > 2]
    removed = first40.iloc[[alone[0], crowded[0]]]  # 5%: one partition vanishes, one changes
    added = tiny_sky.truth.iloc[40:44]  # 10%
    current = pd.concat([first40.drop(removed.index), added])
    result = run_infer(tiny_sky.config(catalog, tiny_sky.objects(current, "changed")))

    ids = catalog_ids(catalog)
    assert sorted(ids) == sorted(current[schema.ID]) and len(ids) == len(set(ids))
    assert not set(ids) & set(removed[schema.ID])
    old, new = set(_pixels(first40).tolist()), set(_pixels(current).tolist())
    touched = set(_pixels(removed).tolist()) | set(_pixels(added).tolist())
    assert result["partitions_new"] == len(new - old)
    assert result["partitions_removed"] == len(old - new) == 1
    assert result["partitions_changed"] == len(touched & old & new)
    assert result["partitions_unchanged"] == len(new - touched)
    after = partition_files(catalog)
    untouched = [f for f in before if int(f.rsplit("=", 1)[1].split(".")[0]) not in touched]
    assert len(untouched) == result["partitions_unchanged"]
    assert all(after[f] == before[f] for f in untouched)  # same mtime, same bytes


def test_a_truncated_common_metadata_is_rewritten_by_a_resume(tiny_sky, base, tmp_path):
    from raycat.pipeline import run_infer

    catalog = _copy(base, tmp_path)
    common = catalog / schema.COMMON_METADATA_RELPATH
    common.write_bytes(common.read_bytes()[: common.stat().st_size // 2])
    result = run_infer(tiny_sky.config(catalog, base[1]))
    assert result["rows"] == 40 and result["passes"] == 0
    assert schema.META_MODEL_ID in pq.read_schema(common).metadata


def test_a_second_job_is_refused_and_an_expired_lease_taken_over(tiny_sky, base, tmp_path):
    import json
    import os
    import socket
    import time

    from raycat.pipeline import run_infer

    catalog = _copy(base, tmp_path)
    cfg = tiny_sky.config(catalog, base[1])
    in_flight = catalog / "dataset" / f"Norder={ORDER}" / "Dir=0" / ".Npix=1.parquet.job1.tmp"
    in_flight.parent.mkdir(parents=True, exist_ok=True)
    in_flight.write_bytes(b"PAR1 being written by the first job")
    holder = {"job_id": "first-job", "host": socket.gethostname(), "pid": os.getpid()}
    lease = catalog / schema.LEASE_FILE
    lease.write_text(json.dumps({**holder, "started": time.time(), "expires": time.time() + 600}))
    files = tree(catalog)
    with pytest.raises(RaycatError) as refused:
        run_infer(cfg)
    assert tree(catalog) == files  # the first job's files, its write in flight included
    message = str(refused.value)
    assert "\n" not in message and f"job first-job on {holder['host']}" in message

    lease.write_text(json.dumps({**holder, "host": "gone-node", "started": 0, "expires": 1}))
    result = run_infer(cfg)  # nothing changed: no inference, the lease taken over at once
    assert (result["rows"], result["passes"]) == (40, 0)
    assert not lease.exists() and not in_flight.exists()


def test_region_rewrites_only_the_partitions_it_touches(tiny_sky, base, tmp_path):
    from raycat.photoz.model import ArtifactMeta, build_model, save_artifact
    from raycat.pipeline import run_infer

    catalog = _copy(base, tmp_path)
    before = partition_files(catalog)
    pixels = sorted(set(_pixels(tiny_sky.truth.iloc[:40]).tolist()))[:2]
    region = ",".join(f"{ORDER}/{p}" for p in pixels)
    result = run_infer(tiny_sky.config(catalog, base[1], region=region))
    assert (result["partitions_reprocessed"], result["partitions_outside_region"]) == (2, 9)
    after = partition_files(catalog)
    rewritten = {f for f in before if after[f][0] != before[f][0]}
    assert {int(f.rsplit("=", 1)[1].split(".")[0]) for f in rewritten} == set(pixels)
    assert sorted(catalog_ids(catalog)) == sorted(tiny_sky.truth[schema.ID][:40])

    other = tiny_sky.config(catalog, base[1], region=region, model=str(tmp_path / "model2"))
    save_artifact(build_model(other.model, 9), other.infer.model, ArtifactMeta.from_config(other))
    with pytest.raises(RaycatError, match="new catalog version") as refused:
        run_infer(other)
    assert "\n" not in str(refused.value) and partition_files(catalog) == after


def test_materialised_cutouts_cut_otherwise_are_regrouped_into_the_catalogs_partitions(
    monkeypatch, ray_module
):
    """Cutouts cut into other units by an older raycat (no id hashes), a catalog whose
    partitions are of orders 10 and 11: counts and id hashes come from the rows, and rows are
    re-keyed to the catalog's own partitions."""
    import ray.data

    import raycat.pipeline as P
    from raycat.config import parse_config
    from raycat.healpix import unit_key
    from raycat.plan.idhash import id_set_hash

    rng = np.random.default_rng(5)
    coarse = rng.integers(0, 64, 200)  # a few order-3 pixels, a row at the start of each
    healpix = coarse << (2 * (29 - 3))
    rows = [
        {schema.ID: i, schema.HEALPIX_29: int(h), schema.WORK_UNIT: -1}
        for i, h in enumerate(healpix)
    ]
    summary = P.PlanSummary({-1: 200}, ["ps1_g"], False)
    monkeypatch.setattr(
        P,
        "cutout_source",
        lambda cfg, keep=(): (summary, lambda skip=frozenset(): ray.data.from_items(rows)),
    )
    keys = np.where(
        coarse % 2 == 0, unit_key(10, healpix >> (2 * 19)), unit_key(11, healpix >> (2 * 18))
    )
    regrouped, make = P._plan_at(parse_config({}), sorted(set(keys.tolist())))
    assert regrouped.unit_counts == dict(Counter(keys.tolist()))
    for unit, value in regrouped.unit_hashes.items():
        assert value == id_set_hash(np.flatnonzero(keys == unit))
    last = sorted(regrouped.unit_counts)[-1]
    kept = make(frozenset(sorted(regrouped.unit_counts)[:-1])).take_all()
    assert {r[schema.WORK_UNIT] for r in kept} == {last}
    assert len(kept) == regrouped.unit_counts[last]
