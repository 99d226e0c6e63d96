"""The planner's all-to-all exchange: every row reaches the share its cut names, once, in
block order; and shares of consecutive work units are balanced."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from raycat.healpix import Partitioning, unit_key
from raycat.plan.exchange import exchange, map_blocks
from raycat.plan.manifest import share_edges


def _by_value(block: pa.Table, shares: int):
    return block, block["x"].to_numpy() % shares


def _values(rows: pa.Table) -> list[int]:
    return rows["x"].to_pylist()


def test_every_row_reaches_its_share_once_in_block_order(ray_local):
    import ray

    blocks = [ray.put(pa.table({"x": np.arange(s, s + 50)})) for s in (0, 50, 100)]
    blocks.append(ray.put(pa.table({"x": np.zeros(0, dtype=np.int64)})))  # an empty block
    for shares in (1, 3):
        found = ray.get(exchange(blocks, _by_value, _values, shares, (shares,)))
        assert found == [[x for x in range(150) if x % shares == s] for s in range(shares)]


def test_int32_and_int64_blocks_meet_in_one_share(ray_local):
    import ray

    blocks = [ray.put(pa.table({"x": pa.array([1, 2], t)})) for t in (pa.int32(), pa.int64())]
    assert ray.get(exchange(blocks, _by_value, _values, 1, (1,))) == [[1, 2, 1, 2]]


def test_map_blocks_hands_each_block_to_one_task(ray_local):
    import ray

    blocks = [ray.put(pa.table({"x": [1, 2]})), ray.put(pa.table({"x": [3]}))]
    assert ray.get(map_blocks(blocks, _values)) == [[1, 2], [3]]


def test_shares_are_runs_of_consecutive_units_of_about_equal_objects():
    units = Partitioning([unit_key(3, p) for p in range(8)])
    counts = np.array([10, 10, 10, 10, 10, 10, 10, 10])
    edges = share_edges(units, counts, 4)
    assert edges.tolist() == units.starts[[2, 4, 6]].tolist()
    # an empty run (skipped units) gives no share of its own; all skipped: one share
    counts[:4] = 0
    assert share_edges(units, counts, 4).tolist() == units.starts[[5, 6, 7]].tolist()
    assert share_edges(units, np.zeros(8, np.int64), 4).tolist() == []
