"""The catalog's contract with its plan, piece by piece: id hashes, done markers, the
comparison a resume makes, regions. Pure functions: no Ray, no inference."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from raycat import schema as S
from raycat.catalog.keys import disjoint_keys, label, overlapping_pair
from raycat.catalog.markers import DoneMarker, read_markers, write_marker
from raycat.catalog.region import Region
from raycat.catalog.resume import UnitPlan, existing_partitioning, reconcile
from raycat.config import parse_config
from raycat.errors import RaycatError
from raycat.fsutil import filesystem
from raycat.healpix import unit_key
from raycat.plan.idhash import id_set_hash


def test_id_set_hash_is_exact_order_free_and_additive():
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 2**62, 1000)
    whole = id_set_hash(ids)
    assert whole == id_set_hash(rng.permutation(ids))
    assert whole == (id_set_hash(ids[:300]) + id_set_hash(ids[300:])) % 2**64
    assert whole != id_set_hash(ids[1:]) and whole != id_set_hash(np.append(ids[1:], 2**62 + 5))
    assert id_set_hash(np.array(["a", "b"], dtype=object)) == id_set_hash(np.array(["b", "a"]))
    assert id_set_hash(np.array([7], np.int32)) == id_set_hash(np.array([7], np.int64))


def _marker(key, ids, model="m", config="c", flags=None):
    table = pa.table(
        {S.ID: np.asarray(ids, np.int64), S.FLAGS: np.asarray(flags or [0] * len(ids), np.int32)}
    )
    return DoneMarker.of_table(key, table, model_id=model, config_hash=config)


def test_marker_round_trip_and_an_old_marker_never_matches(tmp_path):
    fs, root = filesystem(str(tmp_path))
    marker = _marker(unit_key(5, 3), [1, 2, 3], flags=[0, int(S.Flag.READ_ERROR), 0])
    assert (marker.order, marker.pixel, marker.key) == (5, 3, unit_key(5, 3))
    write_marker(fs, root, marker)
    (tmp_path / S.DONE_DIR / "Norder=5_Npix=4.done").write_text(
        json.dumps({"rows": 2, "model_id": "m", "flags": {}})  # what raycat 0.1 wrote
    )
    (tmp_path / S.DONE_DIR / "Norder=5_Npix=6.done").write_bytes(b'{"rows": 2, "mod')
    (tmp_path / S.DONE_DIR / "Norder=7_Npix=70.done").write_bytes(marker.to_json())
    found = read_markers(fs, root)  # by NUNIQ key, every order; the file name says which
    assert set(found) == {unit_key(5, 3), unit_key(5, 4), unit_key(5, 6), unit_key(7, 70)}
    assert found[unit_key(5, 3)] == marker and found[unit_key(5, 3)].read_errors == 1
    assert (found[unit_key(7, 70)].order, found[unit_key(7, 70)].pixel) == (7, 70)
    assert found[unit_key(5, 4)] is not None and not found[unit_key(5, 4)].matches(2, 0, "m", "c")
    assert found[unit_key(5, 6)] is None  # truncated: treated as not done
    assert marker.matches(3, id_set_hash([3, 1, 2]), "m", "c")
    assert not marker.matches(3, id_set_hash([1, 2, 4]), "m", "c")
    assert not marker.matches(3, id_set_hash([1, 2, 3]), "m", "other-config")


def test_reconcile_sorts_every_partition_into_its_kind():
    k = {n: unit_key(order, n) for n, order in {1: 5, 2: 6, 3: 4, 4: 5, 5: 7, 8: 5, 9: 6}.items()}
    plan = UnitPlan(
        counts={k[1]: 2, k[2]: 2, k[3]: 1, k[4]: 1, k[5]: 3},
        hashes={
            k[1]: id_set_hash([1, 2]),
            k[2]: id_set_hash([3, 4]),
            k[3]: id_set_hash([5]),
            k[4]: id_set_hash([6]),
            k[5]: id_set_hash([7, 8, 9]),
        },
        model_id="m",
        config_hash="c",
    )
    markers = {
        k[1]: _marker(k[1], [1, 2]),  # unchanged
        k[2]: _marker(k[2], [3, 99]),  # other objects
        k[3]: _marker(k[3], [5], flags=[int(S.Flag.READ_ERROR)]),  # retried
        k[4]: _marker(k[4], [6], config="old"),  # other settings
        k[8]: _marker(k[8], [10]),  # no longer planned
        unit_key(4, 1): _marker(unit_key(4, 1), [1, 2]),  # the same pixel number, other order
    }
    files = {k[1], k[2], k[3], k[4], k[8], unit_key(4, 1), k[9]}
    rec = reconcile(plan, markers, files)
    assert (rec.unchanged, rec.changed, rec.retried, rec.new) == (
        {k[1]},
        {k[2], k[4]},
        {k[3]},
        {k[5]},
    )
    assert rec.vanished == {k[8], unit_key(4, 1), k[9]}
    assert rec.todo == {k[2], k[3], k[4], k[5]} and rec.rewrite == {k[2], k[3], k[4]}
    assert rec.counts()["removed"] == 3
    assert reconcile(plan, markers, files, retry_read_errors=False).unchanged == {k[1], k[3]}
    files.discard(k[1])  # a marker whose file is gone is not a finished partition
    assert k[1] in reconcile(plan, markers, files).changed
    region = reconcile(plan, markers, files, region={k[1], k[2], k[8]})
    assert region.reprocessed == {k[1], k[2]} and region.vanished == {k[8]} and region.outside == 3


def test_a_catalogs_partitioning_keeps_its_mixed_orders_and_drops_overlaps():
    mixed = [unit_key(2, 7), unit_key(3, 4 * 9 + 1), unit_key(4, 16 * 10 + 5)]  # disjoint
    assert existing_partitioning({}, set()) is None
    assert existing_partitioning(dict.fromkeys(mixed[:2]), {mixed[2]}) == sorted(mixed)
    assert overlapping_pair(mixed) is None
    # a second set an older raycat left: 3 partitions at order 5, 2 at order 4 inside them
    fives = [unit_key(5, p) for p in (64, 65, 66)]
    fours = [unit_key(4, 16), unit_key(4, 17)]  # 16 is the parent of 64-67
    assert overlapping_pair(fives + fours) == (unit_key(4, 16), unit_key(5, 64))
    assert disjoint_keys(fives + fours) == sorted([*fives, unit_key(4, 17)])
    assert existing_partitioning(dict.fromkeys(fives), set(fours)) == disjoint_keys(fives + fours)
    assert label(unit_key(11, 12345)) == "11/12345"
    for not_a_key in (0, 3, -1, 16 << 58):
        with pytest.raises(RaycatError, match="not a work unit"):
            label(not_a_key)


def test_regions_cones_and_pixels_at_any_order():
    from raycat.healpix import healpix29

    cone = Region.parse("150.0, 2.0, 0.01")
    h29 = healpix29([150.0, 151.0], [2.0, 2.0])
    centre = [unit_key(o, int(h29[0] >> (2 * (29 - o)))) for o in (10, 12)]
    far = [unit_key(o, int(h29[1] >> (2 * (29 - o)))) for o in (11, 12)]
    assert cone.select([centre[0], far[0]]) == {centre[0]}  # partitions of mixed orders
    assert cone.select([centre[1], far[1]]) == {centre[1]}
    assert cone.select([]) == set()
    pixels = Region.parse(f"10/5,14/{(77 << 4) + 9}")  # a parent and a grandchild
    at12 = [unit_key(12, p) for p in (5 << 4, (5 << 4) + 3, 6 << 4, 77, 78)]
    assert pixels.select(at12) == {at12[0], at12[1], at12[3]}
    mixed = [(9, 1), (9, 2), (11, 22), (13, (77 << 2) + 1), (13, 78 << 2), (14, (77 << 4) + 8)]
    # 10/5 lies in 9/1 and holds 11/22; 14/(77<<4)+9 lies in 13/(77<<2)+2, not in +1
    assert pixels.select([unit_key(*m) for m in mixed]) == {unit_key(9, 1), unit_key(11, 22)}
    assert Region.parse(f"13/{(77 << 2) + 2}").select([unit_key(12, 77)]) == {unit_key(12, 77)}
    for bad in ("1,2", "91x", "3/1000", "10,95,1"):
        with pytest.raises(RaycatError, match="region"):
            Region.parse(bad)
    with pytest.raises(ValueError, match=r"infer\.region"):
        parse_config({"infer": {"region": "north"}})


def test_config_hash_ignores_how_the_work_is_cut_up():
    base = parse_config({})
    for cutouts in (
        {"objects_per_unit": 7},
        {"healpix_order": 11},
        {"actors": 4},
        {"read_mode": "sparse"},
        {"output": "elsewhere"},
    ):
        assert parse_config({"cutouts": cutouts}).config_hash() == base.config_hash()
    assert parse_config({"cutouts": {"pixel_scale": 0.5}}).config_hash() != base.config_hash()
