"""Failures clusters have, made real on one machine: a node removed mid-inference, the catalog
sink process killed with rows in flight, a training worker killed after a checkpoint."""

import contextlib
import glob
import os
import signal
import time

import numpy as np
import pandas as pd
import pytest

from raycat import schema
from raycat.background import in_background
from raycat.config import parse_config


def test_lost_infrastructure_is_retried_but_bugs_are_not():
    import ray.exceptions as rex

    from raycat.pipeline import _lost_infrastructure

    lost = rex.ObjectLostError("00" * 28, "owner", "")
    assert _lost_infrastructure(lost)
    assert _lost_infrastructure(RuntimeError("wrapped").with_traceback(None)) is False
    wrapped = RuntimeError("pipeline failed")
    wrapped.__cause__ = rex.NodeDiedError("node gone")
    assert _lost_infrastructure(wrapped)
    assert not _lost_infrastructure(rex.RayActorError(actor_init_failed=True))
    assert not _lost_infrastructure(ValueError("a bug"))


# --- the slow ones: real Ray processes killed -------------------------------------------------


def _sky(root, n_galaxies=400):
    """A small sky, a tiny model, and a config whose inference is slow enough (sampled
    band attributions: 66 passes per object) to be interrupted between partitions."""
    from raycat.photoz.model import ArtifactMeta, build_model, save_artifact
    from raycat.sky.simulate import simulate_sky

    simulate_sky(str(root / "sky"), n_galaxies=n_galaxies, seed=3, progress=False)
    cfg = parse_config(
        {
            "data": {"store": str(root / "sky")},
            "cutouts": {"healpix_order": 12},
            "model": {"arch": "tiny", "n_bins": 20},
            "infer": {
                "model": str(root / "model"),
                "catalog": str(root / "catalog"),
                "batch_size": 32,
                "attributions": "bands",
                "attribution_method": "sampled",
            },
        }
    )
    save_artifact(build_model(cfg.model, 9), cfg.infer.model, ArtifactMeta.from_config(cfg))
    return cfg


@pytest.fixture(scope="module")
def sky(tmp_path_factory):
    return _sky(tmp_path_factory.mktemp("fault"))


def _wait_for(predicate, job, timeout=300.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert not job.done(), "the job ended before the failure could be injected"
        assert time.monotonic() < deadline, "timed out waiting for the job to make progress"
        time.sleep(0.1)


def _done_markers(cfg) -> int:
    return len(glob.glob(f"{cfg.infer.catalog}/{schema.DONE_DIR}/*.done"))


def _quiet_after_progress(cfg, quiet_s: float):
    """A predicate: some partitions are written and none for ``quiet_s`` seconds."""
    last, since = -1, time.monotonic()

    def quiet() -> bool:
        nonlocal last, since
        done = _done_markers(cfg)
        if done != last:
            last, since = done, time.monotonic()
        return done > 0 and time.monotonic() - since >= quiet_s

    return quiet


def _check_every_id_once(cfg):
    from raycat.catalog.read import read_catalog_ids

    truth = pd.read_parquet(f"{cfg.data.store}/{schema.TRUTH_FILE}")
    ids = read_catalog_ids(cfg.infer.catalog)
    assert len(ids) == len(set(ids)) == len(truth) and set(ids) == set(truth[schema.ID])


def _own_processes(title: str, root: int | None = None) -> list:
    """The processes whose command line holds ``title`` among the descendants of ``root``
    (default: this process, which started the test's own Ray: ``ray.init(address="local")``
    or ``Cluster``). Never another user's Ray on the same machine, whatever it runs."""
    import psutil

    found = []
    for proc in psutil.Process(root).children(recursive=True):
        try:
            if title in " ".join(proc.cmdline()):
                found.append(proc)
        except psutil.NoSuchProcess:
            pass  # ended meanwhile
    return found


def _kill_process(title: str) -> int:
    """SIGKILL this test's Ray worker processes whose title contains ``title``; how many."""
    import psutil

    killed = 0
    for proc in _own_processes(title):
        try:
            proc.kill()
            killed += 1
        except psutil.NoSuchProcess:
            pass
    return killed


def test_only_this_tests_own_processes_are_killed(tmp_path):
    """A process with a matching title outside this test's process tree (another user's Ray
    worker, say) is left alone; one inside it is killed."""
    import subprocess
    import sys

    import psutil

    title = f"raycat-decoy-{tmp_path.name}"
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)", title]
    pid_file = tmp_path / "pid"
    # a grandchild whose parent exits at once: re-parented away from this test's tree
    subprocess.run(
        ["sh", "-c", '"$@" >/dev/null 2>&1 & echo $! > "$0"', str(pid_file), *sleeper], check=True
    )
    stranger = int(pid_file.read_text())
    child = subprocess.Popen(sleeper)
    try:
        assert _kill_process(title) == 1
        assert child.wait(timeout=10) != 0
        assert psutil.pid_exists(stranger) and psutil.Process(stranger).status() != "zombie"
    finally:
        child.kill()
        with contextlib.suppress(ProcessLookupError):
            os.kill(stranger, signal.SIGKILL)


@pytest.mark.slow
def test_node_removed_mid_inference_still_gives_every_id_once(sky, tmp_path):
    """Every actor runs on the worker node (the head has no CPUs, as in cluster.yaml); it is
    removed after a few partitions and a replacement joins, as an autoscaler would do."""
    import ray
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    from raycat.pipeline import run_infer
    from raycat.runtime import configure_data_context

    cfg = sky.model_copy(deep=True)
    cfg.infer.catalog = str(tmp_path / "catalog")
    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        worker = cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address)
        configure_data_context()
        job = in_background(run_infer, cfg)
        _wait_for(lambda: _done_markers(cfg) >= 3, job)
        raylet = worker.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid
        assert _own_processes("Predictor", raylet)  # the removed node runs the inference
        cluster.remove_node(worker, allow_graceful=False)
        done_at_removal, running = _done_markers(cfg), not job.done()
        cluster.add_node(num_cpus=2)
        result = job.result(timeout=600)
        assert result["partitions"] == result["partitions_written"] == _done_markers(cfg)
        # the removal hit unfinished work: the job was running, partitions still to write
        assert running and done_at_removal < result["partitions"], (done_at_removal, result)
        _check_every_id_once(cfg)
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.mark.slow
def test_sink_killed_with_rows_in_flight_next_pass_writes_the_rest(
    sky, tmp_path, ray_local, monkeypatch
):
    """The sink buffers a unit's rows until the unit is whole; killed, it restarts empty, the
    units it held cannot complete in that pass, and the next pass redoes just those.

    The kill comes while the sink waits for input between blocks (no partition written for a
    while, though some are): it has then finished its calls so far, and holds the rows of the
    units their blocks cut through. (Killed in the middle of a call it may hold nothing from
    earlier calls: Ray runs the call again on the restarted sink, with the same rows, and
    one pass suffices, which is not this scenario.)"""
    import re

    from raycat import pipeline
    from raycat.catalog.read import read_catalog_ids

    messages: list[str] = []
    monkeypatch.setattr(pipeline, "log", messages.append)
    cfg = sky.model_copy(deep=True)
    cfg.infer.catalog = str(tmp_path / "catalog")
    job = in_background(pipeline.run_infer, cfg)
    _wait_for(_quiet_after_progress(cfg, quiet_s=2.5), job)
    assert _kill_process("PartitionSink") == 1
    done_at_kill, running = _done_markers(cfg), not job.done()
    result = job.result(timeout=600)
    assert running and done_at_kill < result["partitions"], (done_at_kill, result)
    # the rows the sink held were lost with it: exactly one more pass, for the units left
    assert result["passes"] == 2, messages
    left = [int(m.split()[2]) for m in messages if re.match(r"pass 2: \d+ partitions left", m)]
    assert len(left) == 1 and 1 <= left[0] <= result["partitions"] - done_at_kill, messages
    assert result["partitions_written"] == result["partitions"] == _done_markers(cfg)
    ids = read_catalog_ids(cfg.infer.catalog)
    assert len(ids) == len(set(ids)) and result["rows"] == len(ids)
    _check_every_id_once(cfg)


def _cutouts(n=512, size=16):
    import ray.data

    rng = np.random.default_rng(1)
    z = rng.uniform(0.05, 1.0, n)
    cube = rng.normal(0, 0.1, (n, 9, size, size)).astype(np.float32)
    rows = [
        {schema.ID: i, schema.CUBE: cube[i], schema.Z_SPEC: z[i], schema.FLAGS: 0} for i in range(n)
    ]
    return ray.data.from_items(rows)


@pytest.mark.slow
def test_training_worker_killed_resumes_from_the_last_checkpoint(tmp_path, ray_local):
    from raycat.photoz.train import fit

    epochs = 6
    cfg = parse_config(
        {
            "model": {"arch": "tiny", "n_bins": 20, "z_max": 1.0},
            "cutouts": {"size_px": 16},
            "train": {
                "epochs": epochs,
                "batch_size": 16,
                "storage_path": str(tmp_path / "runs"),
                "model_out": str(tmp_path / "model"),
                "run_name": "killed",
                "max_failures": 2,
            },
        }
    )
    job = in_background(fit, cfg, _cutouts())
    checkpoints = str(tmp_path / "runs" / "killed" / "checkpoint_*")
    # a checkpoint directory appears before the controller has registered it: wait for the
    # second, by which time the first is surely registered
    _wait_for(lambda: len(glob.glob(checkpoints)) >= 2, job)
    assert _kill_process("RayTrainWorker") == 1
    metrics = job.result(timeout=600)
    # the restarted worker group loaded the checkpoint and went on from the next epoch
    assert 1 <= metrics["start_epoch"] < epochs and metrics["epoch"] == epochs - 1
