"""Bounded retries with exponential backoff, for the transient errors of object stores.

A throttled or dropped request (S3 SlowDown, a 503, a reset connection, a timeout) usually
succeeds when repeated a moment later; a missing or corrupt file never does. Only the first
kind is retried, a bounded number of times, so a bad tile costs seconds, not a hung job.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

# Exception types (by name, so no client library has to be imported) that mean "try again".
TRANSIENT_TYPES = {"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError",
                   "ConnectionClosedError", "ClientPayloadError", "ServerDisconnectedError",
                   "ClientConnectorError", "ServerTimeoutError", "IncompleteReadError"}
TRANSIENT_WORDS = ("SlowDown", "Throttl", "RequestTimeout", "ServiceUnavailable",
                   "InternalError", "503", "500 Internal", "Connection reset")


def is_transient(err: BaseException | None) -> bool:
    """True when ``err`` or anything in its cause chain is worth retrying."""
    seen = 0
    while err is not None and seen < 10:
        if isinstance(err, (FileNotFoundError, PermissionError, IsADirectoryError)):
            return False
        if isinstance(err, (ConnectionError, TimeoutError)):
            return True
        if type(err).__name__ in TRANSIENT_TYPES or any(w in str(err) for w in TRANSIENT_WORDS):
            return True
        err, seen = err.__cause__ or err.__context__, seen + 1
    return False


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries in all; waits of ``base_s * 2**k`` (capped, with jitter) between."""

    attempts: int = 5
    base_s: float = 0.2
    cap_s: float = 5.0

    def delay(self, retry: int) -> float:
        return min(self.cap_s, self.base_s * 2**retry) * (0.5 + random.random() / 2)


def call_with_retries(fn: Callable[[], T], policy: RetryPolicy, what: str,
                      transient: Callable[[BaseException], bool] = is_transient,
                      sleep: Callable[[float], None] = time.sleep) -> T:
    """``fn()``, repeated after transient errors up to ``policy.attempts`` times in all."""
    for retry in range(policy.attempts):
        try:
            return fn()
        except Exception as err:  # noqa: BLE001 - classified just below
            if retry == policy.attempts - 1 or not transient(err):
                raise
            wait = policy.delay(retry)
            log.warning("%s: transient error (%s), retry %d/%d in %.1f s", what,
                        type(err).__name__, retry + 1, policy.attempts - 1, wait)
            sleep(wait)
    raise AssertionError("unreachable")
