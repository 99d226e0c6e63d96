"""The catalog's contract with its plan, piece by piece: id hashes, done markers, the
comparison a resume makes, regions. Pure functions: no Ray, no inference."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from raycat import schema as S
from raycat.catalog.markers import DoneMarker, read_markers, write_marker
from raycat.catalog.region import Region
from raycat.catalog.resume import UnitPlan, existing_order, reconcile
from raycat.config import parse_config
from raycat.errors import RaycatError
from raycat.fsutil import filesystem
from raycat.plan.idhash import PixelTally, id_set_hash, pixel_summary


def test_id_set_hash_is_exact_order_free_and_additive():
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 2**62, 1000)
    whole = id_set_hash(ids)
    assert whole == id_set_hash(rng.permutation(ids))
    assert whole == (id_set_hash(ids[:300]) + id_set_hash(ids[300:])) % 2**64
    assert whole != id_set_hash(ids[1:]) and whole != id_set_hash(np.append(ids[1:], 2**62 + 5))
    assert id_set_hash(np.array(["a", "b"], dtype=object)) == id_set_hash(np.array(["b", "a"]))
    assert id_set_hash(np.array([7], np.int32)) == id_set_hash(np.array([7], np.int64))


def test_pixel_tally_combines_blocks_and_orders():
    rng = np.random.default_rng(2)
    healpix_29 = rng.integers(0, 12 * 4**29, 500, dtype=np.int64)
    ids = np.arange(500)
    shift = 2 * (29 - 9)
    tally = PixelTally()
    for block in np.array_split(np.arange(500), 7):
        tally.add(*pixel_summary(healpix_29[block], ids[block], shift))
    coarse = tally.coarser(9)  # order 0
    for pixel in range(12):
        mine = (healpix_29 >> (2 * 29)) == pixel
        assert coarse.counts.get(pixel, 0) == mine.sum()
        if mine.any():
            assert coarse.hashes[pixel] == id_set_hash(ids[mine])


def _marker(pixel, ids, model="m", config="c", flags=None, order=5):
    table = pa.table(
        {S.ID: np.asarray(ids, np.int64), S.FLAGS: np.asarray(flags or [0] * len(ids), np.int32)}
    )
    return DoneMarker.of_table(order, pixel, table, model_id=model, config_hash=config)


def test_marker_round_trip_and_an_old_marker_never_matches(tmp_path):
    fs, root = filesystem(str(tmp_path))
    marker = _marker(3, [1, 2, 3], flags=[0, int(S.Flag.READ_ERROR), 0])
    write_marker(fs, root, marker)
    (tmp_path / S.DONE_DIR / "Norder=5_Npix=4.done").write_text(
        json.dumps({"rows": 2, "model_id": "m", "flags": {}})  # what raycat 0.1 wrote
    )
    (tmp_path / S.DONE_DIR / "Norder=5_Npix=6.done").write_bytes(b'{"rows": 2, "mod')
    found = read_markers(fs, root)
    assert found[(5, 3)] == marker and found[(5, 3)].read_errors == 1
    assert found[(5, 4)] is not None and not found[(5, 4)].matches(2, 0, "m", "c")
    assert found[(5, 6)] is None  # truncated: treated as not done
    assert marker.matches(3, id_set_hash([3, 1, 2]), "m", "c")
    assert not marker.matches(3, id_set_hash([1, 2, 4]), "m", "c")
    assert not marker.matches(3, id_set_hash([1, 2, 3]), "m", "other-config")


def test_reconcile_sorts_every_partition_into_its_kind():
    plan = UnitPlan(
        5,
        counts={1: 2, 2: 2, 3: 1, 4: 1, 5: 3},
        hashes={
            1: id_set_hash([1, 2]),
            2: id_set_hash([3, 4]),
            3: id_set_hash([5]),
            4: id_set_hash([6]),
            5: id_set_hash([7, 8, 9]),
        },
        model_id="m",
        config_hash="c",
    )
    markers = {
        (5, 1): _marker(1, [1, 2]),  # unchanged
        (5, 2): _marker(2, [3, 99]),  # other objects
        (5, 3): _marker(3, [5], flags=[int(S.Flag.READ_ERROR)]),  # retried
        (5, 4): _marker(4, [6], config="old"),  # other settings
        (5, 8): _marker(8, [10]),  # no longer planned
        (4, 0): _marker(0, [1, 2], order=4),  # a second set at another order
    }
    files = {(5, 1), (5, 2), (5, 3), (5, 4), (5, 8), (4, 0), (5, 9)}
    rec = reconcile(plan, markers, files)
    assert (rec.unchanged, rec.changed, rec.retried, rec.new) == ({1}, {2, 4}, {3}, {5})
    assert rec.vanished == {(5, 8), (4, 0), (5, 9)}
    assert rec.todo == {2, 3, 4, 5}
    assert rec.counts()["removed"] == 3
    assert reconcile(plan, markers, files, retry_read_errors=False).unchanged == {1, 3}
    files.discard((5, 1))  # a marker whose file is gone is not a finished partition
    assert 1 in reconcile(plan, markers, files).changed
    region = reconcile(plan, markers, files, region={1, 2, 8})
    assert region.reprocessed == {1, 2} and region.vanished == {(5, 8)} and region.outside == 3
    assert existing_order(markers, files) == 5 and existing_order({}, set()) is None


def test_regions_cones_and_pixels_at_any_order():
    cone = Region.parse("150.0, 2.0, 0.01")
    from raycat.healpix import healpix29

    centre = int(healpix29([150.0], [2.0])[0] >> (2 * (29 - 12)))
    far = int(healpix29([151.0], [2.0])[0] >> (2 * (29 - 12)))
    assert cone.select([centre, far], 12) == {centre}
    pixels = Region.parse(f"10/5,14/{(77 << 4) + 9}")  # a parent and a grandchild
    assert pixels.select([5 << 4, (5 << 4) + 3, 6 << 4, 77, 78], 12) == {5 << 4, (5 << 4) + 3, 77}
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
