"""Bounded retries with exponential backoff, for the transient errors of object stores.

A throttled or dropped request (S3 SlowDown, a 503, a reset connection, a timeout) usually
succeeds when repeated a moment later; a missing or corrupt file never does. Only the first
kind is retried, a bounded number of times, so a bad tile costs seconds, not a hung job.
"""

from __future__ import annotations

import errno
import http.client
import logging
import random
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

# The answers of a server that mean "try again": HTTP statuses, and the error codes of S3 and
# the other AWS services (botocore's own retry lists: botocore/retries/standard.py).
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "EC2ThrottledException",
        "PriorRequestNotComplete",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "ServiceUnavailable",
        *map(str, TRANSIENT_STATUSES),
    }
)
# errnos of a dropped or refused connection, a busy server (s3fs turns SlowDown and 503 into
# EBUSY) and a remote failure (s3fs turns InternalError and 500 into EREMOTEIO).
TRANSIENT_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "ECONNRESET",
        "ECONNABORTED",
        "ECONNREFUSED",
        "ETIMEDOUT",
        "EPIPE",
        "EHOSTUNREACH",
        "EHOSTDOWN",
        "ENETUNREACH",
        "ENETDOWN",
        "ENETRESET",
        "EAGAIN",
        "EBUSY",
        "EREMOTEIO",
    )
    if hasattr(errno, name)
)
PERMANENT_TYPES = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
# s3fs raises an unmapped S3 error as OSError(EIO, botocore's message), sometimes without the
# ClientError as cause; the message then starts with the error code in this exact form.
_BOTOCORE_MESSAGE = re.compile(
    r"An error occurred \(([A-Za-z0-9]+)\) when calling the \w+ operation"
)


def is_transient(err: BaseException | None) -> bool:
    """True when ``err`` or anything in its cause chain is worth retrying.

    Decided by exception type, error code, HTTP status and errno, never by words in the
    message (tile paths hold numbers such as 503). The first link of the chain that is known
    to be transient or permanent decides; a chain with neither is permanent.
    """
    seen = 0
    while err is not None and seen < 10:
        verdict = _classify(err)
        if verdict is not None:
            return verdict
        cause = err.__cause__
        if cause is None and not err.__suppress_context__:
            cause = err.__context__
        err, seen = cause, seen + 1
    return False


def _classify(err: BaseException) -> bool | None:
    """True: transient; False: permanent; None: this link does not say."""
    # An instance of a client library's exception exists only if the library was imported,
    # so looking in sys.modules is enough, and the library may well be absent.
    botocore = sys.modules.get("botocore.exceptions")
    aiohttp = sys.modules.get("aiohttp")
    if isinstance(err, PERMANENT_TYPES):
        return False
    if botocore is not None:
        if isinstance(err, botocore.ClientError):
            response = getattr(err, "response", None) or {}
            code = str((response.get("Error") or {}).get("Code", ""))
            status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
            return code in TRANSIENT_CODES or status in TRANSIENT_STATUSES
        if isinstance(err, botocore.SSLError):
            return False
        if isinstance(
            err, (botocore.ConnectionError, botocore.HTTPClientError, botocore.IncompleteReadError)
        ):
            return True  # endpoint unreachable, connect/read timeout, connection closed
    if aiohttp is not None:
        if isinstance(err, (aiohttp.ClientSSLError, aiohttp.ServerFingerprintMismatch)):
            return False
        if isinstance(err, aiohttp.ClientResponseError):
            return err.status in TRANSIENT_STATUSES
        if isinstance(err, (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)):
            return True  # refused, reset, disconnected, timed out, body cut short
    if isinstance(err, (ConnectionError, TimeoutError)):
        return True
    if isinstance(err, OSError) and err.errno is not None:
        if err.errno in TRANSIENT_ERRNOS:
            return True
        if err.errno == errno.EIO and err.__cause__ is None:
            found = _BOTOCORE_MESSAGE.match(str(err.strerror or ""))
            if found:
                return found.group(1) in TRANSIENT_CODES
    if isinstance(err, http.client.IncompleteRead):  # the body was cut short
        return True
    return None


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries in all; waits of ``base_s * 2**k`` (capped, with jitter) between."""

    attempts: int = 5
    base_s: float = 0.2
    cap_s: float = 5.0

    def delay(self, retry: int) -> float:
        return min(self.cap_s, self.base_s * 2**retry) * (0.5 + random.random() / 2)


def call_with_retries(
    fn: Callable[[], T],
    policy: RetryPolicy,
    what: str,
    transient: Callable[[BaseException], bool] = is_transient,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``fn()``, repeated after transient errors up to ``policy.attempts`` times in all."""
    for retry in range(policy.attempts):
        try:
            return fn()
        except Exception as err:
            if retry == policy.attempts - 1 or not transient(err):
                raise
            wait = policy.delay(retry)
            log.warning(
                "%s: transient error (%s), retry %d/%d in %.1f s",
                what,
                type(err).__name__,
                retry + 1,
                policy.attempts - 1,
                wait,
            )
            sleep(wait)
    raise AssertionError("unreachable")
