"""Starting Ray: the embedded local Ray is always a fresh one."""

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

SCRIPT = """
import ray
from raycat.runtime import RayConfig
from raycat.runtime import ray_session
with ray_session(RayConfig(num_cpus=1)):
    print("CPUS", ray.cluster_resources()["CPU"])
"""


@pytest.mark.slow
def test_embedded_ray_ignores_the_address_a_stopped_cluster_left_behind():
    """`ray start` records its cluster in <tmp>/ray/ray_current_cluster and a plain ray.init()
    joins it; a cluster killed without `ray stop` leaves the file behind. The demo must still
    start its own Ray (it used to fail with "When connecting to an existing cluster, num_cpus
    and num_gpus must not be provided")."""
    tmp = tempfile.mkdtemp(prefix="rt-", dir="/tmp")  # short: Ray's socket paths live here
    try:
        os.makedirs(f"{tmp}/ray")
        with open(f"{tmp}/ray/ray_current_cluster", "w") as f:
            f.write("127.0.0.1:1")  # nothing listens there
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        run = subprocess.run(
            [sys.executable, "-c", SCRIPT],
            env={**env, "RAY_TMPDIR": tmp},
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert run.returncode == 0, run.stderr[-2000:]
        assert "CPUS 1.0" in run.stdout
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.slow
def test_embedded_ray_binds_to_loopback_without_being_told():
    """Started from an environment without the loopback switch, the embedded Ray's node (and
    so its GCS, raylet and workers) still listens on 127.0.0.1 only; it has no dashboard
    unless the config asks for one (``ray.dashboard``)."""
    script = (
        "import os, ray\n"
        "from raycat.runtime import RayConfig, ray_session\n"
        "with ray_session(RayConfig(num_cpus=1)):\n"
        "    print('NODE', ray.nodes()[0]['NodeManagerAddress'])\n"
        "    ip = ray.remote(lambda: ray.util.get_node_ip_address())\n"
        "    print('WORKER', ray.get(ip.remote()))\n"
        "    print('DASHBOARD', repr(ray._private.worker._global_node.webui_url))\n"
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    }
    run = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=180
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "NODE 127.0.0.1" in run.stdout and "WORKER 127.0.0.1" in run.stdout, run.stdout
    assert "DASHBOARD ''" in run.stdout, run.stdout


def test_ray_data_sends_its_metrics_to_the_stats_actor_once_a_minute(ray_local):
    # every update grows Ray 2.60's stats actor (raycat.runtime.slow_metric_updates)
    from ray.data._internal.block_batching.iter_batches import BatchIterator
    from ray.data._internal.execution.streaming_executor import StreamingExecutor

    from raycat.runtime import METRICS_INTERVAL_S, configure_data_context

    configure_data_context()
    assert METRICS_INTERVAL_S >= 60
    assert StreamingExecutor.UPDATE_METRICS_INTERVAL_S == METRICS_INTERVAL_S
    assert BatchIterator.UPDATE_METRICS_INTERVAL_S == METRICS_INTERVAL_S


def test_ray_data_progress_bars_are_off_unless_the_config_asks(ray_local):
    from ray.data import DataContext

    from raycat.config import parse_config
    from raycat.runtime import configure_data_context

    assert parse_config({}).ray.data_progress_bars is False
    asked = parse_config({"ray": {"data_progress_bars": True}}).ray.data_progress_bars
    try:
        configure_data_context(progress_bars=asked)
        assert DataContext.get_current().enable_progress_bars is True
    finally:
        configure_data_context()
    assert DataContext.get_current().enable_progress_bars is False
