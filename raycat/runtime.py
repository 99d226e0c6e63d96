"""Starting or joining Ray: an embedded local Ray on a laptop, the cluster under `ray job
submit`."""

from __future__ import annotations

import contextlib
import os
from typing import Any

from pydantic import Field

from raycat.section import StrictSection

# I/O-bound reads take a quarter CPU: actor pools hold their CPUs for a whole job, and on a
# 2-core machine whole-CPU read tasks beside them would never be scheduled (a silent hang).
# Ray Data's file listing still takes one whole CPU, so the actor pools of one job must
# leave a CPU free on a 2-core machine: hence the fractional actor defaults in the config.
METRICS_INTERVAL_S = 60.0  # Ray Data metric updates to its stats actor: slow_metric_updates
LOOPBACK_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": a local Ray binds to 127.0.0.1
READ_ARGS: dict[str, Any] = {"num_cpus": 0.25}
# Task results (and arguments) under this size travel inside the caller's memory instead of
# Ray's object store (Ray's default: 100 KiB). Planning's exchanges return blocks x shares
# pieces that shrink as the list grows (ids: 40 KB each at 10 M objects): inlined, they all
# sat in the driver at once (+110 MiB of peak RSS at 10 M objects); in the store they are
# spilled when large. cluster.yaml sets the same on every node (RAY_<name> overrides it).
INLINE_CONFIG, INLINE_BYTES = "max_direct_call_object_size", 1024


class RayConfig(StrictSection):
    """How to reach Ray."""

    address: str | None = Field(
        None, description="Cluster address; null starts an embedded local Ray."
    )
    num_cpus: int | None = Field(None, ge=1, description="CPUs for an embedded local Ray.")
    dashboard: bool = Field(
        False,
        description="Start Ray's dashboard (localhost:8265) with an embedded local Ray; off by "
        "default: on 2 cores it took 8% of a core, CPU the model needs (a cluster's head "
        "runs its own, whatever this says).",
    )
    data_progress_bars: bool = Field(
        False,
        description="Show Ray Data's own progress bars (per operator, redrawn in place) "
        "beside raycat's progress lines; off by default because they garble job logs.",
    )


@contextlib.contextmanager
def ray_session(cfg: RayConfig | None = None):
    """Join the cluster (``address``, or RAY_ADDRESS under `ray job submit`) or start a local
    Ray for the duration of the block; an already-initialised Ray is left as it is."""
    import ray

    cfg = cfg or RayConfig()
    if ray.is_initialized():
        yield
        return
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    if not address:
        _stay_on_loopback()
    if address:
        ray.init(address=address, log_to_driver=True)
    else:  # "local": a fresh embedded Ray, even when `ray start` left a cluster running here
        ray.init(
            address="local",
            num_cpus=cfg.num_cpus,
            include_dashboard=cfg.dashboard,
            log_to_driver=True,
            configure_logging=False,
            _system_config={INLINE_CONFIG: INLINE_BYTES},
        )
    configure_data_context(progress_bars=cfg.data_progress_bars)
    try:
        yield
    finally:
        ray.shutdown()


def _stay_on_loopback() -> None:
    """Keep an embedded Ray on 127.0.0.1: Ray 2.60 otherwise binds it to the machine's other
    address. The GCS, raylet and workers read the switch from the environment they inherit;
    this process read it when it imported ray, so its copy of the constant is set too."""
    from ray._private import ray_constants

    os.environ.setdefault(LOOPBACK_SWITCH, "0")
    if os.environ[LOOPBACK_SWITCH] == "0":
        ray_constants.ENABLE_RAY_CLUSTER = False


def configure_data_context(progress_bars: bool = False) -> None:
    """Quiet, right-sized Ray Data defaults for batch jobs.

    Progress bars garble job logs (raycat prints its own progress lines, ``raycat.progress``;
    ``ray.data_progress_bars`` brings Ray Data's back for an interactive run), and the default of
    200 shuffle partitions makes a laptop spend seconds scheduling empty tasks: size shuffles
    to the cluster instead.
    """
    import ray
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = progress_bars
    ctx.print_on_execution_start = False
    ctx.raise_original_map_exception = True  # a user error in a task keeps its type
    cpus = int(ray.cluster_resources().get("CPU", 1))
    ctx.default_hash_shuffle_parallelism = max(4, min(200, 2 * cpus))
    slow_metric_updates()


def slow_metric_updates(seconds: float = METRICS_INTERVAL_S) -> None:
    """Ray Data's executors and iterators send their metrics to its stats actor every 5 s,
    and in Ray 2.60 that actor keeps about 0.3-0.5 MiB from each round of updates: a plain
    ``range().map_batches()`` stream grew it 8.5 MiB in 79 s, and 3.7 MiB with updates every
    60 s. The iterator's updates also ship the stats of every block so far: 6 MiB of the
    actor's 26 MiB growth from 10k to 100k objects at infer. A full-sky run lasts hours:
    updates every ``seconds`` instead. Metrics and the dashboard are otherwise unchanged; a
    Ray without these classes or attributes is left alone."""
    import importlib

    for module, name in _METRIC_UPDATERS:
        with contextlib.suppress(ImportError):
            updater = getattr(importlib.import_module(module), name, None)
            if updater is not None and hasattr(updater, "UPDATE_METRICS_INTERVAL_S"):
                updater.UPDATE_METRICS_INTERVAL_S = seconds


_METRIC_UPDATERS = (  # Ray 2.60's classes that send metric updates to Ray Data's stats actor
    ("ray.data._internal.execution.streaming_executor", "StreamingExecutor"),
    ("ray.data._internal.block_batching.iter_batches", "BatchIterator"),
)
