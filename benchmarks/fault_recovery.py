"""Fault-recovery benchmark (a script, not a test): what a lost node and a killed job cost.

On a local multi-node Ray (``ray.cluster_utils.Cluster``: a head with no CPUs, as in
cluster.yaml, and one 2-CPU worker node), a demo-like inference (random ResNet50) runs:

1. clean, start to finish: the baseline time;
2. with the worker node removed once a third of the partitions are written, and a fresh
   node added at once (as an autoscaler replaces a preempted spot node): time lost = this
   run's time minus the baseline, plus the streaming passes it took;
3. as a job (``python jobs/infer.py`` joined to the cluster) SIGKILLed once a third of the
   partitions are written, then run again: partitions recomputed on resume (finished
   partition files rewritten: should be 0) and the resumed run's time.

Usage: ``python benchmarks/fault_recovery.py [N_GALAXIES]`` (default 3000).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from ray_common import demo_like_config, save_random_model, sky_workspace

from raycat import schema

REPO = Path(__file__).parent.parent


def done_markers(cfg) -> list[Path]:
    return sorted(Path(cfg.infer.catalog, schema.DONE_DIR).glob("*.done"))


def partition_mtimes(cfg) -> dict[Path, int]:
    files = Path(cfg.infer.catalog, schema.CATALOG_DATASET_DIR).glob("Norder=*/Dir=*/*.parquet")
    return {f: f.stat().st_mtime_ns for f in files}


def wait_for_partitions(cfg, count: int, alive) -> None:
    while len(done_markers(cfg)) < count:
        if not alive():
            raise RuntimeError("the run ended before the failure could be injected")
        time.sleep(0.1)


def timed_infer(cfg, on_progress=None) -> tuple[float, dict]:
    """run_infer in a thread (so the failure can be injected from here); (seconds, result)."""
    from raycat.pipeline import run_infer

    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.update(result=run_infer(cfg)))
    started = time.perf_counter()
    thread.start()
    if on_progress:
        on_progress(thread.is_alive)
    thread.join()
    if "result" not in outcome:
        raise RuntimeError("inference failed (see the log above)")
    return time.perf_counter() - started, outcome["result"]


def node_loss(cluster, cfg, n_units: int) -> tuple[float, dict]:
    worker = next(iter(cluster.worker_nodes))

    def kill_a_third(alive) -> None:
        wait_for_partitions(cfg, n_units // 3, alive)
        cluster.remove_node(worker, allow_graceful=False)
        cluster.add_node(num_cpus=2)

    return timed_infer(cfg, kill_a_third)


def job_kill_and_resume(cluster, cfg, config_file: Path, n_units: int) -> tuple[int, int, float]:
    """(partitions finished when killed, partitions rewritten by the rerun, rerun seconds)."""
    import yaml

    config_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    env = {**os.environ, "RAY_ADDRESS": cluster.address}
    command = [sys.executable, str(REPO / "jobs" / "infer.py"), "--config", str(config_file)]
    job = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_partitions(cfg, n_units // 3, lambda: job.poll() is None)
    job.kill()
    job.wait()
    finished = partition_mtimes(cfg)
    n_done = len(done_markers(cfg))
    started = time.perf_counter()
    subprocess.run(
        command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    seconds = time.perf_counter() - started
    after = partition_mtimes(cfg)
    return n_done, sum(after[f] != t for f, t in finished.items()), seconds


def main(n_galaxies: int) -> None:
    import ray
    from ray.cluster_utils import Cluster

    from raycat.runtime import configure_data_context

    with sky_workspace(n_galaxies) as root:
        cfg = demo_like_config(root, infer={"mode": "resume"}, cutouts={"objects_per_unit": 100})
        save_random_model(cfg)
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
        try:
            cluster.add_node(num_cpus=2)
            cluster.wait_for_nodes()
            ray.init(address=cluster.address)
            configure_data_context()
            clean, result = timed_infer(cfg)
            n_units = result["partitions"]
            print(
                f"clean run: {clean:.1f} s for {result['rows']} objects in {n_units} partitions",
                flush=True,
            )
            cfg.infer.catalog = str(root / "catalog-node-loss")
            lost, result = node_loss(cluster, cfg, n_units)
            print(
                f"worker node removed after {n_units // 3} partitions, replaced at once: "
                f"{lost:.1f} s, {result['passes']} streaming pass(es), "
                f"{result['rows']} rows; time lost to the node: {lost - clean:+.1f} s "
                f"({lost / clean:.2f}x the clean run)",
                flush=True,
            )
            ray.shutdown()  # the job below is its own driver
            cfg.infer.catalog = str(root / "catalog-job-kill")
            n_done, rewritten, rerun = job_kill_and_resume(cluster, cfg, root / "job.yaml", n_units)
            print(
                f"job killed with {n_done}/{n_units} partitions written; the rerun "
                f"recomputed {rewritten} of them and took {rerun:.1f} s "
                f"(clean run of everything: {clean:.1f} s)"
            )
        finally:
            ray.shutdown()
            cluster.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3000)
