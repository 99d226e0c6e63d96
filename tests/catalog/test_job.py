"""A job's hold on a catalog of mixed HEALPix orders, without Ray: the partitioning it hands the
planner, what a resume rewrites, removes and keeps, and regions over partitions of any order."""

from __future__ import annotations

import numpy as np
import pytest
from tinysky import partition_files

from raycat import schema as S
from raycat.catalog.info import catalog_schema
from raycat.catalog.job import CatalogJob
from raycat.catalog.keys import partition_relpath
from raycat.catalog.write import partition_table
from raycat.healpix import unit_key, unit_ranges
from raycat.photoz.pdf import bin_edges
from raycat.plan.idhash import id_set_hash

SCHEMA = catalog_schema(bin_edges(0.0, 1.6, 8), ["g"], model_id="m", config_hash="c")
# disjoint partitions at orders 2, 3 and 4: 2/5; 3/30 and 3/31 in 2/7; 4/147 and 4/148 in 2/9
KEYS = [unit_key(2, 5), unit_key(3, 30), unit_key(3, 31), unit_key(4, 147), unit_key(4, 148)]


def _positions(key: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(ra, dec) of ``n`` random order-29 cell centres inside the pixel ``key``."""
    from cdshealpix.nested import healpix_to_lonlat

    start, end = (int(v[0]) for v in unit_ranges([key]))
    cells = np.random.default_rng(seed).integers(start, end, n, dtype=np.int64)
    lon, lat = healpix_to_lonlat(cells, 29)
    return lon.deg, lat.deg


def _sky(sizes: dict[int, int], seed: int = 0) -> dict[int, dict[str, np.ndarray]]:
    """Objects per partition key: ids numbered across partitions, positions inside each."""
    sky, first = {}, 0
    for i, (key, n) in enumerate(sorted(sizes.items())):
        ra, dec = _positions(key, n, seed + i)
        sky[key] = {"ids": np.arange(first, first + n), "ra": ra, "dec": dec}
        first += n
    return sky


def _table(rows: dict[str, np.ndarray]):
    """A partition of these objects, flat PDFs."""
    n = len(rows["ids"])
    return partition_table(SCHEMA, flags=np.zeros(n, np.int32), pdf=np.ones((n, 8)), **rows)


def _run(root: str, sky: dict, region: str | None = None):
    """One job as run_infer drives it, writing what it must; returns (the partitioning it
    found, its reconciliation, the catalog's totals)."""
    with CatalogJob(
        root, None, model_id="m", config_hash="c", mode="resume", lease_seconds=60, region=region
    ) as job:
        found = job.partitioning
        counts = {k: len(o["ids"]) for k, o in sky.items()}
        hashes = {k: id_set_hash(o["ids"]) for k, o in sky.items()}
        rec = job.reconcile(SCHEMA, counts, hashes, retry_read_errors=True)
        job.begin(rec)
        writer = job.writer(SCHEMA)
        for key in sorted(rec.todo):
            writer.write_partition(key, _table(sky[key]))
        totals = job.finish(rec, max_error_fraction=0.0)
    return found, rec, totals


def test_a_resume_of_mixed_orders_rewrites_only_the_changed_partition(tmp_path):
    import hats

    root = str(tmp_path / "cat")
    sky = _sky(dict.fromkeys(KEYS, 6))
    found, rec, totals = _run(root, sky)
    assert found is None and rec.new == set(KEYS)
    assert totals == {"rows": 30, "partitions": 5}
    before = partition_files(root)

    changed = {**sky, KEYS[1]: {k: v[1:] for k, v in sky[KEYS[1]].items()}}  # one object less
    del changed[KEYS[4]]  # every object of 4/148 gone
    found, rec, totals = _run(root, changed)
    assert found == sorted(KEYS)  # the catalog's own partitions, every order, for the planner
    assert (rec.changed, rec.vanished, rec.unchanged) == (
        {KEYS[1]},
        {KEYS[4]},
        {KEYS[0], KEYS[2], KEYS[3]},
    )
    assert totals == {"rows": 23, "partitions": 4}
    after = partition_files(root)
    assert set(before) - set(after) == {partition_relpath(KEYS[4])}
    rewritten = {f for f in after if after[f] != before[f]}
    assert rewritten == {partition_relpath(KEYS[1])}  # the others: same bytes, same mtime
    catalog = hats.read_hats(root)
    assert {(p.order, p.pixel) for p in catalog.get_healpix_pixels()} == {
        (2, 5),
        (3, 30),
        (3, 31),
        (4, 147),
    }
    assert catalog.catalog_info.total_rows == 23

    found, rec, _ = _run(root, changed)  # nothing changed: nothing written
    assert rec.todo == set() and rec.unchanged == set(changed)


@pytest.mark.parametrize(
    ("region", "touched"),
    [
        ("2/9", {KEYS[3], KEYS[4]}),  # an ancestor of two order-4 partitions
        (f"5/{147 * 4 + 2},4/30", {KEYS[3]}),  # a child of 4/147; 4/30 lies in 2/1: nothing
        ("3/30", {KEYS[1]}),
    ],
)
def test_a_region_over_mixed_orders_reprocesses_what_it_touches(tmp_path, region, touched):
    root = str(tmp_path / "cat")
    sky = _sky(dict.fromkeys(KEYS, 3))
    _run(root, sky)
    before = partition_files(root)
    _, rec, _ = _run(root, sky, region=region)
    assert rec.reprocessed == touched and rec.outside == 5 - len(touched)
    after = partition_files(root)
    assert {f for f in after if after[f][0] != before[f][0]} == {
        partition_relpath(k) for k in touched
    }


def test_a_cone_touches_partitions_of_every_order_it_overlaps(tmp_path):
    root = str(tmp_path / "cat")
    sky = _sky(dict.fromkeys(KEYS, 3))
    _run(root, sky)
    ra, dec = sky[KEYS[3]]["ra"][0], sky[KEYS[3]]["dec"][0]
    _, rec, _ = _run(root, sky, region=f"{ra},{dec},0.01")
    assert rec.reprocessed == {KEYS[3]}
    ra, dec = sky[KEYS[0]]["ra"][0], sky[KEYS[0]]["dec"][0]
    _, rec, _ = _run(root, sky, region=f"{ra},{dec},0.01")
    assert rec.reprocessed == {KEYS[0]}


def test_a_second_partitioning_left_by_an_older_raycat_is_removed(tmp_path):
    """Today's single-order catalog (one order, file names as ever) plus a stray set at the
    next order inside it: the planner is handed the main set; the stray vanishes."""
    root = str(tmp_path / "cat")
    main = [unit_key(4, p) for p in (144, 145, 146, 147)]
    _run(root, _sky(dict.fromkeys(main, 4)))
    stray = [unit_key(5, 147 * 4 + c) for c in (0, 1)]  # inside 4/147
    job_sky = _sky(dict.fromkeys(stray, 2), seed=9)
    for rows in job_sky.values():
        rows["ids"] = rows["ids"] + 1000
    (tmp_path / "cat" / S.PROPERTIES_FILES[0]).unlink()  # as if that job crashed
    _run_stray(root, job_sky)
    assert set(partition_files(root)) >= {partition_relpath(k) for k in stray}

    sky = _sky(dict.fromkeys(main, 4))
    found, rec, totals = _run(root, sky)
    assert found == sorted(main) and rec.vanished == set(stray) and rec.unchanged == set(main)
    assert totals == {"rows": 16, "partitions": 4}
    assert set(partition_files(root)) == {partition_relpath(k) for k in main}


def _run_stray(root: str, sky: dict) -> None:
    """Write partitions without finishing (no metadata), as a crashed job of another order."""
    from raycat.catalog.write import CatalogWriter

    writer = CatalogWriter(root, SCHEMA)
    for key, rows in sky.items():
        writer.write_partition(key, _table(rows))
