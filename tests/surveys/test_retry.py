"""Transient object-store errors are retried (bounded, with backoff); permanent ones are not."""

import errno
import sys

import numpy as np
import pytest

from raycat.surveys.retry import RetryPolicy, call_with_retries, is_transient
from raycat.surveys.store import TileReadError, open_store

PS1_PATH = "rings.v3.skycell/1503/057/rings.v3.skycell.1503.057.stk.r.unconv.fits"


@pytest.mark.parametrize(
    "err, transient",
    [
        (ConnectionResetError("reset by peer"), True),
        (TimeoutError(), True),
        (OSError(errno.ECONNREFUSED, "connection refused"), True),
        (OSError(errno.ETIMEDOUT, "timed out"), True),
        (OSError(errno.EPIPE, "broken pipe"), True),
        (OSError(errno.EBUSY, "Please reduce your request rate."), True),  # s3fs: SlowDown, 503
        (
            OSError(
                errno.EIO,
                "An error occurred (503) when calling the HeadObject operation: "
                "Service Unavailable",
            ),
            True,
        ),  # s3fs: an unmapped code, cause dropped
        (
            OSError(
                errno.EIO, "An error occurred (NoSuchBucket) when calling the GetObject operation"
            ),
            False,
        ),
        (FileNotFoundError("tiles/x.fits"), False),
        (PermissionError(errno.EACCES, "Access Denied"), False),
        (ValueError("not a FITS file"), False),
        (EOFError("truncated"), False),
        # words and numbers in a message decide nothing: PS1 tile paths hold 503, 500, ...
        (ValueError(f"bad header in {PS1_PATH}"), False),
        (OSError(f"503 Service Unavailable {PS1_PATH}"), False),
        (OSError(errno.EIO, f"SlowDown: Connection reset in {PS1_PATH}"), False),
        (RuntimeError("Throttling: InternalError 500 Internal"), False),
    ],
)
def test_transient_errors_are_told_from_permanent_ones(err, transient):
    assert is_transient(err) is transient
    wrapped = RuntimeError("cannot read")
    wrapped.__cause__ = err
    assert is_transient(wrapped) is transient


def _client_error(code: str, status: int):
    from botocore.exceptions import ClientError

    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "GetObject",
    )


@pytest.mark.parametrize(
    "code, status, transient",
    [
        ("SlowDown", 503, True),
        ("Throttling", 400, True),
        ("RequestTimeout", 400, True),
        ("InternalError", 500, True),
        ("", 502, True),
        ("", 504, True),
        ("", 429, True),
        ("NoSuchKey", 404, False),
        ("AccessDenied", 403, False),
        ("InvalidRange", 416, False),
    ],
)
def test_botocore_errors_are_told_by_code_and_status(code, status, transient):
    pytest.importorskip("botocore")
    from s3fs.errors import translate_boto_error

    err = _client_error(code, status)
    assert is_transient(err) is transient
    # what s3fs raises: an OSError subclass with an errno, the ClientError as its cause or not
    assert is_transient(translate_boto_error(err)) is transient
    if code:
        assert is_transient(translate_boto_error(err, set_cause=False)) is transient


def test_botocore_and_aiohttp_connection_errors_are_transient():
    pytest.importorskip("botocore")
    aiohttp = pytest.importorskip("aiohttp")
    from botocore.exceptions import EndpointConnectionError, ReadTimeoutError, SSLError

    assert is_transient(EndpointConnectionError(endpoint_url="http://s3"))
    assert is_transient(ReadTimeoutError(endpoint_url="http://s3"))
    assert not is_transient(SSLError(endpoint_url="http://s3", error="certificate verify failed"))
    assert is_transient(aiohttp.ServerDisconnectedError())
    assert is_transient(aiohttp.ClientPayloadError("body cut short"))
    info = aiohttp.RequestInfo(url=aiohttp.client.URL("http://s3/x"), method="GET", headers={})
    for status, transient in ((503, True), (429, True), (404, False), (403, False)):
        err = aiohttp.ClientResponseError(info, (), status=status, message=PS1_PATH)
        assert is_transient(err) is transient


def test_the_classifier_works_without_the_client_libraries(monkeypatch):
    for name in ("botocore", "botocore.exceptions", "aiohttp"):
        monkeypatch.setitem(sys.modules, name, None)
    assert is_transient(ConnectionResetError()) and is_transient(OSError(errno.EBUSY, "busy"))
    assert not is_transient(ValueError(f"bad header in {PS1_PATH}"))


def test_the_cause_chain_is_walked_and_a_permanent_link_decides():
    try:
        try:
            raise ConnectionResetError("reset")
        except ConnectionResetError:
            raise ValueError("cannot parse")  # noqa: B904 - an implicit __context__
    except ValueError as err:
        assert is_transient(err)
    missing = FileNotFoundError("tiles/x.fits")
    missing.__cause__ = _client_error("503", 503) if _has("botocore") else TimeoutError()
    assert not is_transient(missing)
    hidden = ValueError("x")
    hidden.__context__, hidden.__suppress_context__ = TimeoutError(), True  # raise ... from None
    assert not is_transient(hidden)


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


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

    write_tile(
        tmp_path / "t.fits",
        "ps1_r",
        150.0,
        2.0,
        (64, 64),
        sources=[PointSource(150.0, 2.0, 100.0, 1.2)],
    )
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
    with pytest.raises(TileReadError, match=r"t\.fits"):
        store.read_full("t.fits")
    assert left == [97]
