"""One writer at a time: a lease object in the catalog root.

``_raycat_lease.json`` names the job that writes the catalog (job id, host, pid, start time)
and when its lease expires. It is created exclusively (a hard link of a complete temp file
on a local disk; a conditional PUT, ``If-None-Match: *``, on S3, read back to confirm), renewed
by a thread while the job runs, and removed at the end. A second job is refused with one line
naming the holder. A lease can be taken over once it has expired, or at once when its holder
ran on this host and its process is gone (a killed job).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from raycat import schema as S
from raycat.errors import RaycatError
from raycat.fsutil import is_local, put_atomic


class LeaseHeld(RaycatError):
    """Another job holds the catalog's lease."""


@dataclass(frozen=True)
class Holder:
    """Who holds a lease, and until when (seconds since the epoch)."""

    job_id: str
    host: str
    pid: int
    started: float
    expires: float

    def describe(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        since = datetime.fromtimestamp(self.started, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        left = self.expires - now
        until = f"expires in {left:.0f} s" if left > 0 else f"expired {-left:.0f} s ago"
        return f"job {self.job_id} on {self.host} (pid {self.pid}) since {since}; {until}"

    def takeable(self, now: float) -> bool:
        """Expired, or held by a process of this host that no longer runs."""
        return self.expires <= now or (self.host == socket.gethostname() and not _alive(self.pid))

    @classmethod
    def parse(cls, blob: bytes) -> Holder | None:
        try:
            raw = json.loads(blob)
            return cls(
                str(raw["job_id"]),
                str(raw["host"]),
                int(raw["pid"]),
                float(raw["started"]),
                float(raw["expires"]),
            )
        except (ValueError, KeyError, TypeError):
            return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def read_holder(fs, root: str) -> Holder | None:
    """The lease at ``root``; None when there is none (or it is unreadable)."""
    try:
        return Holder.parse(fs.cat_file(f"{root}/{S.LEASE_FILE}"))
    except FileNotFoundError:
        return None


class Lease:
    """The lease of one job on the catalog at ``root`` (``url`` names it in messages).

    Use as a context manager: acquired on entry (or :class:`LeaseHeld`), renewed every third
    of ``seconds`` by a daemon thread, released on exit. ``lost`` says why the lease was
    lost while held (taken over after renewals failed), else None.
    """

    def __init__(self, fs, root: str, url: str, seconds: float, job_id: str | None = None):
        self.fs, self.root, self.url, self.seconds = fs, root, url, seconds
        self.path = f"{root}/{S.LEASE_FILE}"
        self.job_id = job_id or uuid.uuid4().hex[:12]
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.started = time.time()

    def holder(self) -> Holder:
        return Holder(
            self.job_id, socket.gethostname(), os.getpid(), self.started, time.time() + self.seconds
        )

    def __enter__(self) -> Lease:
        self.acquire()
        self._thread = threading.Thread(target=self._renew_loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    # -- acquire --
    def acquire(self) -> None:
        """Take the lease, or raise LeaseHeld naming the job that holds it."""
        for _ in range(3):  # a holder that releases between our two looks: look again
            if self._create():
                return
            current = read_holder(self.fs, self.root)
            now = time.time()
            if current is not None and not current.takeable(now):
                raise LeaseHeld(
                    f"catalog {self.url} is being written by {current.describe(now)}: wait "
                    "for it, or write elsewhere (if that job is dead, remove "
                    f"{S.LEASE_FILE} from the catalog)"
                )
            if current is not None and self._take_over(current):
                return
        raise LeaseHeld(f"catalog {self.url}: could not take its lease (other jobs contend)")

    def _create(self) -> bool:
        """Create the lease object exclusively; False when one exists."""
        blob = json.dumps(asdict(self.holder())).encode()
        if is_local(self.fs):
            os.makedirs(self.root, exist_ok=True)
            temp = f"{self.root}/.{S.LEASE_FILE}.{self.job_id}{S.TEMP_SUFFIX}"
            with open(temp, "wb") as out:
                out.write(blob)
            try:
                os.link(temp, self.path)  # atomic and exclusive, and the content is whole
                return True
            except (FileExistsError, FileNotFoundError):  # taken, or our temp file cleared
                return False
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temp)
        try:
            self.fs.pipe_file(self.path, blob, mode="create")  # If-None-Match: * on S3
        except FileExistsError:
            return False
        return self._confirmed()  # stores without conditional writes: last writer wins

    def _confirmed(self) -> bool:
        self.fs.invalidate_cache(self.root)
        current = read_holder(self.fs, self.root)
        return current is not None and current.job_id == self.job_id

    def _take_over(self, stale: Holder) -> bool:
        """Move an expired lease aside and create ours; False if someone else was faster."""
        if is_local(self.fs):
            aside = f"{self.root}/.{S.LEASE_FILE}.{self.job_id}.stale{S.TEMP_SUFFIX}"
            try:
                os.replace(self.path, aside)
            except FileNotFoundError:
                return False
            moved = read_holder_file(aside)
            fresh = moved is not None and moved.job_id != stale.job_id  # another's new lease
            if fresh:  # put it back
                with contextlib.suppress(FileExistsError):
                    os.link(aside, self.path)
            os.unlink(aside)
            if fresh:
                return False
        else:
            self.fs.rm(self.path)
        return self._create()

    # -- renew and release --
    def held(self) -> bool:
        """True while the lease object still names this job."""
        return self._confirmed()

    def _renew_loop(self) -> None:
        renewed = time.time()
        while not self._stop.wait(self.seconds / 3):
            try:
                if not self.held():
                    self.lost = "its lease was taken over by another job"
                    return
                put_atomic(self.fs, self.path, json.dumps(asdict(self.holder())).encode())
                renewed = time.time()
            except OSError as err:  # a store hiccup: the next renewal may still be in time
                if time.time() > renewed + self.seconds:
                    self.lost = f"its lease expired: renewals failed ({type(err).__name__})"
                    return

    def release(self) -> None:
        """Stop renewing and remove the lease, if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with contextlib.suppress(FileNotFoundError):
            if self.held():
                self.fs.rm(self.path)


def read_holder_file(path: str) -> Holder | None:
    """The lease in a local file; None if missing or unreadable."""
    try:
        with open(path, "rb") as f:
            return Holder.parse(f.read())
    except FileNotFoundError:
        return None
