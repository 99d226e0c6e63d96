"""The warm training ingest: the next epoch starts while the last one ends, and every epoch
still reads every row once."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from raycat.photoz.train import WarmEpochs


def test_next_epoch_starts_before_it_is_asked_for():
    started: list[int] = []
    first_read = threading.Event()

    def batches(epoch: int):
        started.append(epoch)

        def rows():
            first_read.set()
            yield from (10 * epoch + i for i in range(3))

        return rows()

    ingest = WarmEpochs(batches, epochs=3)
    assert list(ingest.epoch(0)) == [0, 1, 2]
    # drained: epoch 1's stream is started and its first batch read, before the loop asks
    assert started == [0, 1] and first_read.wait(5)
    assert list(ingest.epoch(1)) == [10, 11, 12]
    assert list(ingest.epoch(2)) == [20, 21, 22]
    assert started == [0, 1, 2]  # nothing started past the last epoch


def test_an_error_starting_an_epoch_surfaces_in_that_epoch():
    def batches(epoch: int):
        if epoch == 1:
            yield from ()
            raise OSError("tile store gone")  # read on the ingest thread, raised here
        yield epoch

    ingest = WarmEpochs(batches, epochs=2)
    assert list(ingest.epoch(0)) == [0]
    with pytest.raises(OSError, match="tile store gone"):
        list(ingest.epoch(1))


def test_a_ray_data_split_reads_every_row_once_per_epoch(ray_local):
    import ray.data

    n = 1000
    shard = ray.data.range(n, override_num_blocks=8).streaming_split(1)[0]

    def batches(epoch: int):
        return shard.iter_batches(
            batch_size=64, local_shuffle_buffer_size=128, local_shuffle_seed=epoch
        )

    ingest = WarmEpochs(batches, epochs=3)
    orders = []
    for epoch in range(3):
        ids = np.concatenate([b["id"] for b in ingest.epoch(epoch)])
        assert sorted(ids.tolist()) == list(range(n)), f"epoch {epoch}"
        orders.append(ids)
        if epoch < 2:
            assert ingest._ahead is not None and ingest._ahead[0] == epoch + 1
    assert not np.array_equal(orders[0], orders[1])  # each epoch in its own order
