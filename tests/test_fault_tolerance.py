"""Failures clusters have, made real on one machine: a node removed mid-inference, the catalog
sink process killed with rows in flight, a training worker killed after a checkpoint."""

import glob
import threading
import time

import numpy as np
import pandas as pd
import pytest

from raycat import schema
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
    cfg = parse_config({
        "data": {"store": str(root / "sky")}, "cutouts": {"healpix_order": 12},
        "model": {"arch": "tiny", "n_bins": 20},
        "infer": {"model": str(root / "model"), "catalog": str(root / "catalog"),
                  "batch_size": 32, "attributions": "bands", "attribution_method": "sampled"}})
    save_artifact(build_model(cfg.model, 9), cfg.infer.model, ArtifactMeta.from_config(cfg))
    return cfg


@pytest.fixture(scope="module")
def sky(tmp_path_factory):
    return _sky(tmp_path_factory.mktemp("fault"))


def _in_background(fn, *args):
    """Run ``fn`` in a thread; returns (thread, outcome dict with 'result' or 'error')."""
    outcome = {}

    def run():
        try:
            outcome["result"] = fn(*args)
        except BaseException as err:  # noqa: BLE001 - handed to the test
            outcome["error"] = err
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def _wait_for(predicate, thread, timeout=300.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert thread.is_alive(), "the job ended before the failure could be injected"
        assert time.monotonic() < deadline, "timed out waiting for the job to make progress"
        time.sleep(0.1)


def _done_markers(cfg) -> int:
    return len(glob.glob(f"{cfg.infer.catalog}/{schema.DONE_DIR}/*.done"))


def _check_every_id_once(cfg):
    from raycat.catalog.read import read_catalog_ids

    truth = pd.read_parquet(f"{cfg.data.store}/{schema.TRUTH_FILE}")
    ids = read_catalog_ids(cfg.infer.catalog)
    assert len(ids) == len(set(ids)) == len(truth) and set(ids) == set(truth[schema.ID])


def _kill_process(title: str) -> int:
    """SIGKILL the Ray worker processes whose title contains ``title``; how many."""
    import psutil

    killed = 0
    for proc in psutil.process_iter(["cmdline"]):
        if title in " ".join(proc.info["cmdline"] or ()):
            proc.kill()
            killed += 1
    return killed


@pytest.mark.slow
def test_node_removed_mid_inference_still_gives_every_id_once(sky, tmp_path):
    """Every actor runs on the worker node (the head has no CPUs, as in cluster.yaml); it is
    removed after a few partitions and a replacement joins, as an autoscaler would do."""
    import ray
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
        thread, outcome = _in_background(run_infer, cfg)
        _wait_for(lambda: _done_markers(cfg) >= 3, thread)
        cluster.remove_node(worker, allow_graceful=False)
        cluster.add_node(num_cpus=2)
        thread.join(600)
        assert "error" not in outcome, outcome.get("error")
        assert outcome["result"]["partitions"] == outcome["result"]["partitions_written"]
        _check_every_id_once(cfg)
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.mark.slow
def test_sink_killed_with_rows_in_flight_next_pass_writes_the_rest(sky, tmp_path, ray_local):
    """The sink buffers a unit's rows until the unit is whole; killed, it restarts empty, the
    units it held cannot complete in that pass, and the next pass redoes just those."""
    from raycat.catalog.read import read_catalog_ids
    from raycat.pipeline import run_infer

    cfg = sky.model_copy(deep=True)
    cfg.infer.catalog = str(tmp_path / "catalog")
    thread, outcome = _in_background(run_infer, cfg)
    _wait_for(lambda: _done_markers(cfg) >= 3, thread)
    assert _kill_process("PartitionSink") == 1
    thread.join(600)
    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    assert result["passes"] >= 1 and result["partitions_written"] == result["partitions"]
    ids = read_catalog_ids(cfg.infer.catalog)
    assert len(ids) == len(set(ids)) and result["rows"] == len(ids)
    _check_every_id_once(cfg)


def _cutouts(n=512, size=16):
    import ray.data

    rng = np.random.default_rng(1)
    z = rng.uniform(0.05, 1.0, n)
    cube = rng.normal(0, 0.1, (n, 9, size, size)).astype(np.float32)
    rows = [{schema.ID: i, schema.CUBE: cube[i], schema.Z_SPEC: z[i], schema.FLAGS: 0}
            for i in range(n)]
    return ray.data.from_items(rows)


@pytest.mark.slow
def test_training_worker_killed_resumes_from_the_last_checkpoint(tmp_path, ray_local):
    from raycat.photoz.train import fit

    epochs = 6
    cfg = parse_config({
        "model": {"arch": "tiny", "n_bins": 20, "z_max": 1.0}, "cutouts": {"size_px": 16},
        "train": {"epochs": epochs, "batch_size": 16, "storage_path": str(tmp_path / "runs"),
                  "model_out": str(tmp_path / "model"), "run_name": "killed",
                  "max_failures": 2}})
    thread, outcome = _in_background(fit, cfg, _cutouts())
    checkpoints = str(tmp_path / "runs" / "killed" / "checkpoint_*")
    # a checkpoint directory appears before the controller has registered it: wait for the
    # second, by which time the first is surely registered
    _wait_for(lambda: len(glob.glob(checkpoints)) >= 2, thread)
    assert _kill_process("RayTrainWorker") == 1
    thread.join(600)
    assert "error" not in outcome, outcome.get("error")
    metrics = outcome["result"]
    # the restarted worker group loaded the checkpoint and went on from the next epoch
    assert 1 <= metrics["start_epoch"] < epochs and metrics["epoch"] == epochs - 1
