"""An autoscaler at work (issue 15, item 1): Ray's fake multi-node provider starts and stops
"nodes" (a raylet each, all on 127.0.0.1) for the node types of cluster.yaml, scaled down.

The infer job goes in with `ray job submit`. It must bring up cutout_node workers for the
cutout actors and a gpu worker for the predictors (placement by the resources raycat
requests), write every id exactly once, and leave only the head once the workers idled past
idle_timeout. Then a worker's raylet is killed mid-job: the autoscaler terminates it through
the provider and starts another, and the catalog still holds every id exactly once.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from test_cluster_job import _agent_ports, _cluster_processes, _port, _ray, _stop_cluster, _submit
from tinysky import make_tiny_sky

from raycat import schema
from raycat.config import RaycatConfig

pytestmark = pytest.mark.slow
REPO = Path(__file__).parent.parent
GCS_PORT = 6379  # the fake provider starts its nodes against the GCS on Ray's default port
HEAD_TYPE = "ray.head.default"  # the fake provider's own name for the head's type
IDLE_MINUTES = 0.2  # workers idle this long are terminated
CPU_TYPE, GPU_TYPE = "cpu_spot", "gpu"
SCALED_CPUS = {CPU_TYPE: 2, GPU_TYPE: 1}  # cluster.yaml's node types, scaled to this machine
SMALL_STORE = 200 * 1024**2  # object store per fake node, bytes
NODE_TYPE_BY_RESOURCE = {"cutout_node": CPU_TYPE, "gpu_node": GPU_TYPE}
FAKE_NODE_ID = "RAY_OVERRIDE_NODE_ID_FOR_TESTING"  # the node id the provider gives a node

# Runs in a separate Python connected to the fake cluster (the test process keeps its own
# embedded Ray for the other tests): "watch" prints the alive nodes, one JSON line a second;
# "actors" prints where every actor ran.
PROBE = """
import json, sys, time
import ray
ray.init(address="127.0.0.1:6379", logging_level="ERROR", log_to_driver=False)
if sys.argv[1] == "watch":
    while True:
        alive = {n["NodeID"]: sorted(n["Resources"]) for n in ray.nodes() if n["Alive"]}
        print(json.dumps({"t": time.time(), "alive": alive}), flush=True)
        time.sleep(0.5)
from ray.util.state import list_actors
actors = list_actors(sys.argv[2], detail=True, limit=1000)  # Ray Data's: "MapWorker(...)"
print(json.dumps([[a.class_name + (a.repr_name or ""), a.node_id or "", a.state] for a in actors]))
"""


# The rest of the fake cluster's config: every key the provider would otherwise take from its
# example.yaml, which Ray's wheel does not ship.
FAKE_PROVIDER = """
cluster_name: raycat-fake
max_workers: 3
upscaling_speed: 1.0
provider: {type: fake_multinode, use_node_id_as_ip: true, disable_node_updaters: true,
           disable_launch_config_check: true}
auth: {}
docker: {}
file_mounts: {}
file_mounts_sync_continuously: false
cluster_synced_files: []
rsync_exclude: []
rsync_filter: []
initialization_commands: []
setup_commands: []
head_setup_commands: []
worker_setup_commands: []
head_start_ray_commands: []
worker_start_ray_commands: []
"""


def _scaled(resources: dict, cpus: int) -> dict:
    """A node type's resources with its CPUs cut to ``cpus`` and every other count by the
    same factor (at least 1), plus a small object store."""
    factor = resources["CPU"] / cpus
    scaled = {name: max(1.0, round(n / factor)) for name, n in resources.items()}
    return {**scaled, "CPU": cpus, "object_store_memory": SMALL_STORE}


def fake_cluster_config() -> dict:
    """cluster.yaml's node types on the fake provider: same worker type names and resources,
    scaled down; a quick idle timeout."""
    real = yaml.safe_load((REPO / "cluster.yaml").read_text())
    types = real["available_node_types"]
    workers = {
        name: {
            "resources": _scaled(types[name]["resources"], cpus),
            "node_config": {},
            "min_workers": 0,
            "max_workers": 2 if name == CPU_TYPE else 1,
        }
        for name, cpus in SCALED_CPUS.items()
    }
    head = {"resources": types[real["head_node_type"]]["resources"], "node_config": {}}
    return {
        **yaml.safe_load(FAKE_PROVIDER),
        "available_node_types": {HEAD_TYPE: {**head, "max_workers": 0}, **workers},
        "head_node_type": HEAD_TYPE,
        "idle_timeout_minutes": IDLE_MINUTES,
    }


def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class FakeCluster:
    env: dict
    address: str  # the dashboard (job server)
    token: Path
    node_types: dict[str, str] = field(default_factory=dict)  # node id -> type, as seen

    def probe(self, what: str) -> list:
        out = subprocess.run(
            [sys.executable, "-c", PROBE, what, self.address],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1])


def _own_token(root: Path) -> Path:
    """An auth token made for this cluster: every process it starts inherits its path, which
    is how the test finds (and stops) them, and only them."""
    path = root / "ray_auth_token"
    path.write_text(secrets.token_hex(32))
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def fake_cluster(tmp_path_factory):
    """The head of a fake autoscaling cluster (CPU 0, as cluster.yaml's), stopped afterwards
    by the processes that carry its own token, never by name."""
    import ray

    if _port_taken(GCS_PORT):
        pytest.skip(f"port {GCS_PORT} is taken: Ray's fake multi-node provider needs it")
    ray.shutdown()  # the in-process Ray of other tests; they start it again when needed
    root = tmp_path_factory.mktemp("fake-cluster")
    config = root / "fake_cluster.yaml"
    config.write_text(yaml.safe_dump(fake_cluster_config()))
    token = _own_token(root)
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
        "RAY_FAKE_CLUSTER": "1",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "AUTOSCALER_UPDATE_INTERVAL_S": "1",
        # a node whose raylet died is terminated through the provider 5 s after its last
        # heartbeat (30 s by default); the GCS notices the death within ~3 s
        "AUTOSCALER_HEARTBEAT_TIMEOUT_S": "5",
        "RAY_health_check_period_ms": "1000",
        "RAY_health_check_failure_threshold": "3",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    env.pop("RAY_ADDRESS", None)
    dashboard = _port()
    logs = Path(tempfile.mkdtemp(prefix="rca-", dir="/tmp"))  # short: Ray's socket paths
    head = _ray(
        env,
        "start",
        "--head",
        f"--port={GCS_PORT}",
        f"--autoscaling-config={config}",
        "--num-cpus=0",
        f"--dashboard-port={dashboard}",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--ray-client-server-port={_port()}",
        *_agent_ports(),
        f"--temp-dir={logs}",
    )
    try:
        assert head.returncode == 0, head.stderr[-2000:]
        yield FakeCluster(env, f"http://127.0.0.1:{dashboard}", token)
    finally:
        _stop_cluster(token)
        left = _cluster_processes(token)
        shutil.rmtree(logs, ignore_errors=True)
        assert not left, f"processes of this cluster still running: {left}"


class NodeWatch:
    """The alive nodes over time, read from a probe in the background: when each node was
    first and last seen alive, and its type (by the placement resource it declares)."""

    def __init__(self, cluster: FakeCluster):
        self.cluster = cluster
        self.first_seen: dict[str, float] = {}
        self.last_seen: dict[str, float] = {}
        self.alive: dict[str, str] = {}  # the latest snapshot: node id -> type
        self.proc = subprocess.Popen(
            [sys.executable, "-c", PROBE, "watch", cluster.address],
            env=cluster.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout or ():
            if not line.startswith("{"):  # a warning Ray printed
                continue
            snapshot = json.loads(line)
            alive = {}
            for node, resources in snapshot["alive"].items():
                kinds = [NODE_TYPE_BY_RESOURCE[r] for r in resources if r in NODE_TYPE_BY_RESOURCE]
                alive[node] = self.cluster.node_types.setdefault(node, (kinds or [HEAD_TYPE])[0])
                self.first_seen.setdefault(node, snapshot["t"])
                self.last_seen[node] = snapshot["t"]
            self.alive = alive

    def started_after(self, kind: str, since: float) -> list[tuple[float, str]]:
        """(seconds after ``since``, node id) of the nodes of ``kind`` first seen after it."""
        return sorted(
            (t - since, node)
            for node, t in list(self.first_seen.items())
            if self.cluster.node_types[node] == kind and t >= since
        )

    def wait_for(self, predicate, timeout: float) -> float:
        """Seconds until ``predicate(alive nodes)`` holds; fails after ``timeout``."""
        started = time.time()
        while not predicate(self.alive):
            assert time.time() - started < timeout, f"nodes still {self.alive} after {timeout} s"
            time.sleep(0.2)
        return time.time() - started

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def _config(sky, root: Path, name: str, **infer) -> RaycatConfig:
    """A config for the tiny sky with cluster.yaml's placement resources."""
    cfg = sky.config(
        root / name, str(sky.root / "sky" / schema.TRUTH_FILE), resources={"gpu_node": 1}, **infer
    )
    cfg.cutouts.resources = {"cutout_node": 1}
    cfg.cutouts.actors = 2
    return cfg


def _saved(cfg: RaycatConfig, path: Path) -> str:
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return str(path)


def _infer_job(cluster: FakeCluster, config: str, *options: str):
    """`ray job submit [options] -- python jobs/infer.py --config CONFIG`; asserts it went in
    (and, without --no-wait, that the job succeeded)."""
    command = ("--", "python", str(REPO / "jobs" / "infer.py"), "--config", config)
    run = _submit(cluster.env, "--address", cluster.address, *options, *command)
    output = run.stdout + run.stderr
    assert run.returncode == 0 and ("--no-wait" in options or "succeeded" in output), output[-3000:]
    return output


def _job_status(cluster: FakeCluster, submission: str) -> str:
    """SUCCEEDED, FAILED, STOPPED or RUNNING (the CLI says "Job 'x' succeeded")."""
    run = _ray(cluster.env, "job", "status", "--address", cluster.address, submission)
    said = (run.stdout + run.stderr).lower()
    return next((s.upper() for s in ("succeeded", "failed", "stopped") if s in said), "RUNNING")


def _job_logs(cluster: FakeCluster, submission: str) -> str:
    return _ray(cluster.env, "job", "logs", "--address", cluster.address, submission).stdout


def _check_every_id_once(sky, catalog: Path) -> None:
    from raycat.catalog.read import read_catalog_ids

    ids = read_catalog_ids(str(catalog), None)
    assert len(ids) == len(set(ids)) == len(sky.truth)
    assert set(ids) == set(sky.truth[schema.ID])


@pytest.fixture(scope="module")
def sky(tmp_path_factory):
    return make_tiny_sky(tmp_path_factory.mktemp("autoscaled-sky"))


@pytest.fixture
def watch(fake_cluster):
    nodes = NodeWatch(fake_cluster)
    nodes.wait_for(lambda alive: alive, timeout=120)  # the probe is connected
    yield nodes
    nodes.close()


def _head_only(alive: dict[str, str]) -> bool:
    return set(alive.values()) == {HEAD_TYPE}


def _placement(cluster: FakeCluster) -> dict[str, set[str]]:
    """Stage (cutouts, predictors) -> the node types its Ray Data actors ran on."""
    stages = {"CutoutActor": "cutouts", "Predictor": "predictors"}
    placed: dict[str, set[str]] = {}
    actors = cluster.probe("actors")
    for name, node, _ in actors:
        for marker, stage in stages.items():
            if marker in name:
                placed.setdefault(stage, set()).add(cluster.node_types.get(node, node))
    print(f"\nactors (name, node, state): {actors}")
    return placed


def test_autoscaler_places_each_stage_on_its_node_type_and_scales_down(
    fake_cluster, watch, sky, tmp_path
):
    assert _head_only(watch.alive)
    config = _saved(_config(sky, tmp_path, "catalog"), tmp_path / "config.yaml")
    submitted = time.time()
    _infer_job(fake_cluster, config)
    ended = time.time()
    _check_every_id_once(sky, tmp_path / "catalog")

    cpu_up, gpu_up = (watch.started_after(kind, submitted) for kind in (CPU_TYPE, GPU_TYPE))
    assert cpu_up and gpu_up, f"nodes seen: {fake_cluster.node_types}"
    placed = _placement(fake_cluster)
    assert placed == {"cutouts": {CPU_TYPE}, "predictors": {GPU_TYPE}}, placed
    watch.wait_for(_head_only, timeout=150)
    workers = [t for n, t in watch.last_seen.items() if fake_cluster.node_types[n] != HEAD_TYPE]
    idle = max(workers) - ended  # the last worker last seen alive, after the job ended
    print(
        f"\njob {ended - submitted:.0f} s; {CPU_TYPE} up at +{cpu_up[0][0]:.1f} s "
        f"({len(cpu_up)} nodes), {GPU_TYPE} up at +{gpu_up[0][0]:.1f} s; the last worker gone "
        f"{idle:.1f} s after the job (idle_timeout {IDLE_MINUTES * 60:.0f} s); placement {placed}"
    )


def _node_process(cluster: FakeCluster, node: str, title: str, timeout: float = 300):
    """A process of fake node ``node`` whose title (Ray names a worker after its actor, e.g.
    ``ray::MapWorker(MapBatches(Predictor))``) contains ``title``: one of this cluster's
    processes (its token) started for that node id."""
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in _cluster_processes(cluster.token):
            with contextlib.suppress(psutil.Error):
                program = (proc.cmdline() or [""])[0]  # not its arguments: agents name the raylet
                if node in proc.environ().get(FAKE_NODE_ID, "") and title in program:
                    return proc
        time.sleep(0.2)
    raise AssertionError(f"no {title} process on node {node} after {timeout} s")


def test_a_worker_lost_mid_job_is_replaced_and_every_id_is_written_once(
    fake_cluster, watch, sky, tmp_path
):
    """The gpu worker's raylet is killed while its predictor works: the autoscaler
    terminates that node through the provider and launches another for the predictors still
    wanted; the job redoes what the lost node held (infer.passes)."""
    from raycat.photoz.model import ArtifactMeta, build_model, save_artifact

    # a job worth interrupting: the production ResNet50 with sampled band attributions in
    # small batches (about 70 forward passes per object)
    cfg = _config(sky, tmp_path, "catalog", batch_size=4, attributions="bands")
    cfg.model.arch, cfg.infer.model = "resnet50", str(tmp_path / "resnet50")
    cfg.infer.attribution_method, cfg.infer.attribution_permutations = "sampled", 8
    save_artifact(build_model(cfg.model, 9), cfg.infer.model, ArtifactMeta.from_config(cfg))
    config = _saved(cfg, tmp_path / "config.yaml")
    submitted = time.time()
    _infer_job(fake_cluster, config, "--no-wait", "--submission-id", "raycat-node-lost")
    watch.wait_for(lambda alive: GPU_TYPE in alive.values(), timeout=300)
    gpu_node = next(n for n, kind in watch.alive.items() if kind == GPU_TYPE)
    _node_process(fake_cluster, gpu_node, "Predictor")
    time.sleep(3)  # the predictor at work: rows in flight on the node
    _node_process(fake_cluster, gpu_node, "raylet").kill()
    killed = time.time()

    status = _wait_for_job(fake_cluster, "raycat-node-lost", timeout=400)
    logs = _job_logs(fake_cluster, "raycat-node-lost")
    assert status == "SUCCEEDED", logs[-3000:]
    _check_every_id_once(sky, tmp_path / "catalog")
    replaced = watch.started_after(GPU_TYPE, killed)
    assert replaced and replaced[0][1] != gpu_node, f"nodes seen: {fake_cluster.node_types}"
    print(
        f"\nkilled the raylet of {GPU_TYPE} node {gpu_node[-5:]} {killed - submitted:.0f} s "
        f"into the job; a new {GPU_TYPE} node up {replaced[0][0]:.1f} s later; job "
        f"{time.time() - submitted:.0f} s; " + " | ".join(re.findall(r'"passes": \d+', logs))
    )


def _wait_for_job(cluster: FakeCluster, submission: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while (status := _job_status(cluster, submission)) == "RUNNING":
        assert time.monotonic() < deadline, f"job {submission} still running"
        time.sleep(2)
    return status
