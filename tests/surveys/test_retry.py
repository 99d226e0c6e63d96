"""Transient object-store errors are retried (bounded, with backoff); permanent ones are not."""

import numpy as np
import pytest

from raycat.surveys.retry import RetryPolicy, call_with_retries, is_transient
from raycat.surveys.store import TileReadError, open_store


class SlowDown(Exception):
    """Stands in for botocore's throttling error (matched by its message)."""


@pytest.mark.parametrize("err, transient", [
    (ConnectionResetError("reset by peer"), True),
    (TimeoutError(), True),
    (SlowDown("An error occurred (SlowDown) when calling GetObject"), True),
    (OSError("503 Service Unavailable"), True),
    (FileNotFoundError("tiles/x.fits"), False),
    (ValueError("not a FITS file"), False),
    (EOFError("truncated"), False),
])
def test_transient_errors_are_told_from_permanent_ones(err, transient):
    assert is_transient(err) is transient
    wrapped = RuntimeError("cannot read")
    wrapped.__cause__ = err
    assert is_transient(wrapped) is transient


def test_retries_are_bounded_and_back_off():
    waits, calls = [], []

    def flaky():
        calls.append(1)
        raise ConnectionError("dropped")
    with pytest.raises(ConnectionError):
        call_with_retries(flaky, RetryPolicy(attempts=4, base_s=0.1), "x", sleep=waits.append)
    assert len(calls) == 4 and len(waits) == 3
    assert waits[0] < 0.11 and 0.2 <= waits[2] <= 0.4  # doubling, with jitter in [0.5, 1]


def _flaky_store(tmp_path, failures: int, attempts: int):
    from tiles import PointSource, write_tile

    write_tile(tmp_path / "t.fits", "ps1_r", 150.0, 2.0, (64, 64),
               sources=[PointSource(150.0, 2.0, 100.0, 1.2)])
    store = open_store(str(tmp_path), read_attempts=attempts)
    store.retry = RetryPolicy(attempts=attempts, base_s=0.0)
    real = store._read_local_full
    left = [failures]

    def read(path, layout):
        if left[0]:
            left[0] -= 1
            raise ConnectionResetError("connection reset by peer")
        return real(path, layout)
    store._read_local_full = read
    return store, left


def test_a_tile_read_survives_transient_failures(tmp_path):
    store, left = _flaky_store(tmp_path, failures=3, attempts=5)
    data, _ = store.read_full("t.fits")
    assert left == [0] and np.isfinite(data).all() and data.max() > 0


def test_a_tile_that_keeps_failing_is_a_read_error(tmp_path):
    store, left = _flaky_store(tmp_path, failures=100, attempts=3)
    with pytest.raises(TileReadError, match="t.fits"):
        store.read_full("t.fits")
    assert left == [97]
