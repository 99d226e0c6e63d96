"""One writer at a time: the lease object, on a local disk and on S3 (moto server)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time

import pytest

from raycat import schema as S
from raycat.catalog.lease import Lease, LeaseHeld, read_holder
from raycat.fsutil import filesystem


def _lease(url, seconds=60.0, options=None, job_id=None) -> Lease:
    fs, root = filesystem(url, options)
    return Lease(fs, root.rstrip("/"), url, seconds, job_id=job_id)


def _write_holder(fs, root, **fields):
    holder = {"job_id": "old-job", "host": "elsewhere", "pid": 1, "started": 0.0}
    fs.pipe_file(f"{root}/{S.LEASE_FILE}", json.dumps({**holder, **fields}).encode())


def test_second_job_refused_with_one_line_naming_the_holder(tmp_path):
    _second_job_refused(str(tmp_path / "cat"), None)


def test_second_job_refused_on_s3(s3_bucket):
    _second_job_refused(f"{s3_bucket[0]}/cat", s3_bucket[1])


def _second_job_refused(url, options):
    first = _lease(url, options=options, job_id="job-one")
    with first:
        with pytest.raises(LeaseHeld) as refused:
            _lease(url, options=options).acquire()
        message = str(refused.value)
        assert "\n" not in message
        assert f"job job-one on {socket.gethostname()} (pid {os.getpid()})" in message
        assert first.held()
    assert read_holder(first.fs, first.root) is None  # released
    with _lease(url, options=options) as second:
        assert second.held()


def test_an_expired_lease_is_taken_over(tmp_path):
    _expired_taken_over(str(tmp_path / "cat"), None)


def test_an_expired_lease_is_taken_over_on_s3(s3_bucket):
    _expired_taken_over(f"{s3_bucket[0]}/cat", s3_bucket[1])


def _expired_taken_over(url, options):
    fs, root = filesystem(url, options)
    fs.makedirs(root, exist_ok=True)
    _write_holder(fs, root, expires=time.time() - 5)
    with _lease(url, options=options, job_id="new-job") as lease:
        assert read_holder(fs, root).job_id == "new-job" and lease.held()
    _write_holder(fs, root, expires=time.time() + 60)  # alive elsewhere: refused
    with pytest.raises(LeaseHeld, match="old-job on elsewhere"):
        _lease(url, options=options).acquire()


def test_a_dead_holder_on_this_host_is_taken_over_at_once(tmp_path):
    fs, root = filesystem(str(tmp_path))
    gone = subprocess.Popen(["true"])
    gone.wait()
    _write_holder(fs, root, host=socket.gethostname(), pid=gone.pid, expires=time.time() + 600)
    with _lease(str(tmp_path), job_id="after-crash"):
        assert read_holder(fs, root).job_id == "after-crash"


def test_the_lease_is_renewed_and_a_lost_one_is_noticed(tmp_path):
    lease = _lease(str(tmp_path), seconds=0.6, job_id="renewing")
    with lease:
        time.sleep(1.5)  # past the first expiry: only renewals keep it
        holder = read_holder(lease.fs, lease.root)
        assert holder.job_id == "renewing" and holder.expires > time.time()
        assert lease.lost is None
        _write_holder(lease.fs, lease.root, expires=time.time() + 60)  # someone took it
        time.sleep(0.6)
        assert lease.lost and "taken over" in lease.lost
    assert read_holder(lease.fs, lease.root).job_id == "old-job"  # not ours: not removed
