"""Shared fixtures: a real S3 HTTP endpoint on loopback (moto in server mode)."""

from __future__ import annotations

import os
import socket

import pytest

# Every Ray process these tests start (embedded, `ray start`, fake clusters) binds to loopback.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 server on 127.0.0.1; credentials come from the environment (the standard
    AWS chain), never from storage options."""
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_server, request):
    """A fresh bucket; returns (s3://bucket URL, fsspec storage_options)."""
    import boto3
    import s3fs

    name = "raycat-" + request.node.name.lower().replace("_", "-")[:40].strip("-[]")
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=name)
    s3fs.S3FileSystem.clear_instance_cache()
    return f"s3://{name}", {"client_kwargs": {"endpoint_url": s3_server}}


def _ensure_ray() -> None:
    """An embedded 2-CPU Ray, started on first use and kept for later tests (starting Ray
    takes seconds); a test that needs another cluster shuts it down, the next user restarts it."""
    import ray

    from raycat.runtime import configure_data_context

    if not ray.is_initialized():
        # address="local": always a fresh embedded Ray, even if another cluster runs here
        ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False)
        configure_data_context()


@pytest.fixture
def ray_local():
    _ensure_ray()


@pytest.fixture(scope="module")
def ray_module():
    _ensure_ray()


def pytest_sessionfinish(session, exitstatus):
    import sys

    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
