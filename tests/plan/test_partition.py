"""Adaptive work units: split until a pixel holds at most the target, keep existing
partitions, nest inside input partitions, and the same units on Ray as in the driver."""

import numpy as np
import pandas as pd
import pytest

from raycat import schema
from raycat.healpix import Partitioning, healpix29, unit_key, unit_orders_pixels
from raycat.plan.idhash import id_set_hash
from raycat.plan.partition import MIN_ORDER, Rules, split, summary_of, units_of_frame


def _frame(n_sparse=3000, n_dense=6000, seed=1) -> pd.DataFrame:
    """Objects over a 20 x 20 deg field with a dense 0.5 deg patch: density varies >100x."""
    rng = np.random.default_rng(seed)
    ra = np.concatenate([rng.uniform(100, 120, n_sparse), rng.uniform(110, 110.5, n_dense)])
    dec = np.concatenate([rng.uniform(-10, 10, n_sparse), rng.uniform(0, 0.5, n_dense)])
    return pd.DataFrame(
        {schema.ID: np.arange(len(ra)), schema.HEALPIX_29: healpix29(ra, dec), "ra": ra}
    )


def _check_cover(frame, keys, counts, hashes):
    """The units are disjoint, hold every row once, and their counts/hashes are the rows'."""
    units = Partitioning(keys).unit_of(frame[schema.HEALPIX_29].to_numpy())
    assert (units >= 0).all()
    for key, count, value in zip(keys, counts, hashes):
        ids = frame[schema.ID].to_numpy()[units == key]
        assert len(ids) == count and id_set_hash(ids) == int(value)


def test_dense_regions_get_finer_units_and_none_exceeds_the_target():
    frame = _frame()
    keys, counts, hashes = units_of_frame(frame, Rules(threshold=500))
    _check_cover(frame, keys, counts, hashes)
    orders, _ = unit_orders_pixels(keys)
    assert counts.max() <= 500 and counts.sum() == len(frame)
    assert orders.min() >= MIN_ORDER and len(set(orders.tolist())) >= 3  # mixed orders
    dense = Partitioning(keys).unit_of(healpix29([110.25], [0.25]))[0]
    sparse = Partitioning(keys).unit_of(healpix29([102.0], [-8.0]))[0]
    assert unit_orders_pixels([dense])[0][0] > unit_orders_pixels([sparse])[0][0]
    shape = summary_of(keys, counts)
    assert shape["objects_per_partition"]["max"] <= 500 and shape["partitions"] == len(keys)


def test_a_fixed_order_gives_units_of_that_order_only():
    frame = _frame()
    keys, counts, hashes = units_of_frame(frame, Rules(threshold=10, fixed=6))
    _check_cover(frame, keys, counts, hashes)
    assert set(unit_orders_pixels(keys)[0].tolist()) == {6}


def test_kept_partitions_are_reused_and_new_units_overlap_none():
    frame = _frame()
    first, _, _ = units_of_frame(frame, Rules(threshold=500))
    kept = first[::2]
    more = pd.concat([frame, _frame(4000, 0, seed=9).assign(**{schema.ID: lambda f: f.id + 10**6})])
    keys, counts, hashes = units_of_frame(more, Rules(threshold=500, keep=tuple(kept.tolist())))
    _check_cover(more, keys, counts, hashes)
    inside = np.isin(Partitioning(kept).unit_of(more[schema.HEALPIX_29].to_numpy()), kept)
    assert set(kept.tolist()) >= set(keys[np.isin(keys, kept)].tolist())
    assert set(Partitioning(keys).unit_of(more[schema.HEALPIX_29][inside].to_numpy())) <= set(
        kept.tolist()
    )
    Partitioning(keys)  # no new unit overlaps a kept one (overlaps raise)


def test_units_nest_inside_the_input_partitions():
    """A HATS catalog as input: its partitions tile the sky (here order-0 pixels, one of them
    split at order 1); no unit may straddle two of them, however few objects it holds."""
    frame = _frame()
    floor = np.concatenate(
        [unit_key(np.zeros(11, int), np.arange(1, 12)), unit_key(np.ones(4, int), np.arange(4))]
    )
    keys, counts, hashes = units_of_frame(
        frame, Rules(threshold=10**9, floor=tuple(floor.tolist()))
    )
    _check_cover(frame, keys, counts, hashes)
    starts, ends = (np.asarray(v) for v in zip(*[_range(k) for k in keys]))
    outer = Partitioning(floor)
    assert (outer.unit_of(starts) >= 0).all()
    assert (outer.unit_of(starts) == outer.unit_of(ends - 1)).all()


def _range(key):
    from raycat.healpix import unit_ranges

    start, end = unit_ranges(np.array([key]))
    return int(start[0]), int(end[0])


def test_repeated_histogram_rows_from_several_blocks_add_up():
    pixels = (5 << 2 * (10 - MIN_ORDER)) + np.array([0, 0, 1, 2, 2, 2])  # fine pixels of one
    counts = np.array([1, 2, 3, 1, 1, 1])
    hashes = np.array([1, 2, 3, 4, 5, 2**64 - 1], dtype=np.uint64)
    keys, got, sums = split(pixels, counts, hashes, Rules(threshold=100))
    assert got.sum() == 9 and len(keys) == 1  # one MIN_ORDER pixel holds them all
    assert int(sums[0]) == (1 + 2 + 3 + 4 + 5 + 2**64 - 1) % 2**64


@pytest.mark.usefixtures("ray_local")
def test_units_on_ray_equal_the_units_planned_in_the_driver():
    import ray.data

    from raycat.plan.partition import units_on_ray

    frame = _frame()
    for rules in (Rules(threshold=500), Rules(threshold=10, fixed=2)):
        ds = ray.data.from_pandas([frame.iloc[:4000], frame.iloc[4000:]])
        on_ray, in_driver = units_on_ray(ds, rules), units_of_frame(frame, rules)
        for a, b in zip(on_ray, in_driver):
            np.testing.assert_array_equal(a, b)
