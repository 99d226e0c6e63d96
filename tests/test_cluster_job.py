"""Production path on one machine: a real Ray cluster (`ray start --head` plus a second node),
tiles, model and config in an S3 server on 127.0.0.1, the inference job sent with the
`ray job submit` CLI, the catalog written to S3. Credentials come from the environment (the
AWS chain, endpoint included) and must appear in no log, config or catalog file."""

import contextlib
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from raycat import schema
from raycat.config import parse_config

pytestmark = pytest.mark.slow
REPO = Path(__file__).parent.parent
SECRET = "raycat-fake-secret-7f3a9c"  # moto accepts any key; this one must never leak


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray(env, *args, timeout=300):
    ray_cli = str(Path(sys.executable).parent / "ray")
    return subprocess.run(
        [ray_cli, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def store(s3_bucket):
    """A tiny sky, a tiny model and a config on S3; the config holds no endpoint or keys."""
    from raycat.photoz.model import ArtifactMeta, build_model, save_artifact
    from raycat.sky.simulate import simulate_sky

    url, opts = s3_bucket
    simulate_sky(f"{url}/sky", n_galaxies=80, seed=11, storage_options=opts, progress=False)
    cfg = parse_config(
        {
            "data": {"store": f"{url}/sky"},
            "cutouts": {"healpix_order": 11},
            "model": {"arch": "tiny", "n_bins": 20},
            "infer": {"model": f"{url}/model", "catalog": f"{url}/catalog"},
        }
    )
    save_artifact(
        build_model(cfg.model, 9),
        cfg.infer.model,
        ArtifactMeta.from_config(cfg),
        storage_options=opts,
    )
    _save_config(cfg, f"{url}/config.yaml", opts)
    return url, opts, cfg


def _agent_ports() -> list[str]:
    """Free ports for a node's agents (their defaults are fixed: two nodes on one machine,
    or a straggler of an earlier test's cluster, would collide on them)."""
    return [
        f"--dashboard-agent-listen-port={_port()}",
        f"--dashboard-agent-grpc-port={_port()}",
        f"--runtime-env-agent-port={_port()}",
        f"--metrics-export-port={_port()}",
    ]


def _submit(env, *args, timeout=600):
    """`ray job submit`, tried again while the head's job agent is still starting (it answers
    "No available agent" for a few seconds after `ray start` on a busy machine)."""
    deadline = time.monotonic() + 120
    while True:
        run = _ray(env, "job", "submit", *args, timeout=timeout)
        if "No available agent" not in run.stderr + run.stdout or time.monotonic() > deadline:
            return run
        time.sleep(3)


def _cluster_processes(token: Path) -> list:
    """This test's Ray processes, never another user's: every process `ray start` launched
    for this cluster inherits its own auth-token path (process titles such as
    ``ray::DashboardAgent`` hide the command line, the environment stays)."""
    import psutil

    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.environ().get("RAY_AUTH_TOKEN_PATH") == str(token):
                found.append(proc)
    return found


def _stop_cluster(token: Path) -> None:
    """Stop this cluster only (`ray stop` would stop every Ray on the machine)."""
    import psutil

    procs = _cluster_processes(token)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    psutil.wait_procs(procs, timeout=15)
    deadline = time.monotonic() + 30  # a raylet can start an agent while it shuts down
    while (procs := _cluster_processes(token)) and time.monotonic() < deadline:
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(procs, timeout=5)


def _save_config(cfg, url, opts):
    import fsspec

    with fsspec.open(url, "w", **opts) as f:
        yaml.safe_dump(cfg.model_dump(mode="json"), f)


@pytest.fixture
def cluster(s3_server, tmp_path):
    """Head (dashboard + job server) and a second node on 127.0.0.1, stopped afterwards."""
    import ray

    ray.shutdown()  # the in-process Ray of other tests; they start it again when needed
    # Ray 2.60 turns token auth on for `ray start --head`; a fresh machine has no
    # ~/.ray/auth_token, so every ray command here shares a token made for this cluster.
    token = tmp_path / "ray_auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
        "AWS_ENDPOINT_URL": s3_server,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        # `ray start --address` refuses to join a cluster with the loopback switch at "0"
        # (and a node with it at "1" never joins a head with it at "0"): this two-node
        # cluster is pinned to 127.0.0.1 by --node-ip-address instead.
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1",
    }
    env.pop("RAY_ADDRESS", None)
    port, dashboard = _port(), _port()
    logs = Path(tempfile.mkdtemp(prefix="rc-", dir="/tmp"))  # short: Ray's socket paths live here
    head = _ray(
        env,
        "start",
        "--head",
        f"--port={port}",
        "--num-cpus=1",
        f"--dashboard-port={dashboard}",
        *_agent_ports(),
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        "--node-ip-address=127.0.0.1",
        f"--temp-dir={logs}",
    )
    try:
        assert head.returncode == 0, head.stderr[-2000:]
        node = _ray(
            env,
            "start",
            f"--address=127.0.0.1:{port}",
            "--num-cpus=1",
            "--node-ip-address=127.0.0.1",
            *_agent_ports(),
        )
        assert node.returncode == 0, node.stderr[-2000:]
        yield env, f"http://127.0.0.1:{dashboard}", logs
    finally:
        _stop_cluster(token)
        left = _cluster_processes(token)
        shutil.rmtree(logs, ignore_errors=True)
        assert not left, f"processes of this cluster still running: {left}"


def test_infer_job_submitted_to_a_cluster_writes_every_id_once_to_s3(store, cluster):
    import fsspec

    url, opts, _ = store
    env, address, ray_logs = cluster
    job = _submit(
        env,
        "--address",
        address,
        "--working-dir",
        ".",
        "--",
        "python",
        "jobs/infer.py",
        "--config",
        f"{url}/config.yaml",
        timeout=600,
    )
    output = job.stdout + job.stderr
    assert job.returncode == 0 and "succeeded" in output, output[-3000:]

    _check_every_id_once(url, f"{url}/catalog", opts)

    fs = fsspec.filesystem("s3", **opts)
    written = [p for p in fs.find(url.removeprefix("s3://")) if "/sky/" not in p]
    assert SECRET not in output
    assert not [p for p in written if SECRET.encode() in fs.cat_file(p)]
    _assert_no_secret_in_ray_logs(ray_logs)


def _assert_no_secret_in_ray_logs(ray_logs: Path) -> None:
    """Every file Ray wrote for the cluster (driver, raylet, worker and job logs)."""
    logs = [p for p in ray_logs.glob("session_*/logs/**/*") if p.is_file()]
    assert len(logs) > 10  # the scan really saw the cluster's logs
    assert not [p for p in logs if SECRET.encode() in p.read_bytes()]


def _check_every_id_once(url, catalog, opts):
    from raycat.catalog.read import read_catalog_ids

    truth = pd.read_parquet(f"{url}/sky/{schema.TRUTH_FILE}", storage_options=opts)
    ids = read_catalog_ids(catalog, opts)
    assert len(ids) == len(set(ids)) == len(truth) and set(ids) == set(truth[schema.ID])


def _partition_versions(fs, catalog: str) -> dict[str, str]:
    """ETag of every finished partition (one with a done marker) and of its marker: a
    rewritten object gets a new one. A partition without its marker is not finished."""
    root = catalog.removeprefix("s3://")
    fs.invalidate_cache()
    found = fs.find(root, detail=True)
    done = {p.rsplit("/", 1)[1].removesuffix(".done") for p in found if p.endswith(".done")}

    def finished(path: str) -> bool:
        if path.endswith(".done"):
            return True
        order, npix = re.search(r"Norder=(\d+)/Dir=\d+/Npix=(\d+)\.parquet$", path).groups()
        return f"Norder={order}_Npix={npix}" in done

    return {
        p: info["ETag"] + str(info["LastModified"])
        for p, info in found.items()
        if ((p.endswith(".parquet") and "/dataset/Norder=" in p) or p.endswith(".done"))
        and finished(p)
    }


def _settled_versions(fs, catalog: str) -> dict[str, str]:
    """The finished partitions once no more appear (a stopped job's actors die shortly after
    its driver, and may finish a write in between)."""
    versions = _partition_versions(fs, catalog)
    while True:
        time.sleep(2.0)
        again = _partition_versions(fs, catalog)
        if again == versions:
            return versions
        versions = again


def test_killed_job_resubmitted_resumes_without_recomputing_finished_partitions(store, cluster):
    """`ray job stop` after a few partitions, then the same job again: it skips what was
    finished (those objects on S3 are untouched) and ends with every id exactly once."""
    import fsspec

    url, opts, cfg = store
    env, address, ray_logs = cluster
    from raycat.photoz.model import ArtifactMeta, build_model, save_artifact

    # a job worth killing: the production ResNet50 with sampled band attributions (66
    # forward passes per object), in small batches and fine partitions
    cfg = cfg.model_copy(deep=True)
    cfg.model.arch, cfg.cutouts.healpix_order = "resnet50", 13
    cfg.infer.model, cfg.infer.catalog = f"{url}/model-resnet50", f"{url}/catalog-killed"
    cfg.infer.batch_size, cfg.infer.attributions = 4, "bands"
    cfg.infer.attribution_method, cfg.infer.attribution_permutations = "sampled", 8
    save_artifact(
        build_model(cfg.model, 9),
        cfg.infer.model,
        ArtifactMeta.from_config(cfg),
        storage_options=opts,
    )
    _save_config(cfg, f"{url}/config-killed.yaml", opts)
    submit = ("--address", address, "--working-dir", ".")
    command = ("--", "python", "jobs/infer.py", "--config", f"{url}/config-killed.yaml")
    first = _submit(env, *submit, "--no-wait", "--submission-id", "raycat-killed", *command)
    assert first.returncode == 0, first.stderr[-2000:]

    fs = fsspec.filesystem("s3", **opts)
    markers = f"{cfg.infer.catalog.removeprefix('s3://')}/{schema.DONE_DIR}"
    deadline = time.monotonic() + 300
    while not (fs.invalidate_cache() or fs.exists(markers)) or len(fs.ls(markers)) < 1:
        assert time.monotonic() < deadline, "the first job wrote no partitions"
        time.sleep(0.1)
    stop = _ray(env, "job", "stop", "--address", address, "raycat-killed")
    assert stop.returncode == 0, stop.stderr[-2000:]
    finished = _settled_versions(fs, cfg.infer.catalog)
    n_done = sum(p.endswith(".done") for p in finished)
    total = len(_plan_units(cfg, opts))
    assert 1 <= n_done < total, "the job must be stopped part way"

    second = _submit(env, *submit, *command, timeout=600)
    output = second.stdout + second.stderr
    assert second.returncode == 0 and "succeeded" in output, output[-3000:]
    assert f": {n_done} unchanged, " in output  # nothing finished was planned again
    after = _partition_versions(fs, cfg.infer.catalog)
    assert all(after[p] == v for p, v in finished.items())  # nor rewritten
    _check_every_id_once(url, cfg.infer.catalog, opts)
    assert SECRET not in output + first.stdout + first.stderr
    written = [p for p in fs.find(url.removeprefix("s3://")) if "/sky/" not in p]
    assert not [p for p in written if SECRET.encode() in fs.cat_file(p)]
    _assert_no_secret_in_ray_logs(ray_logs)


def _plan_units(cfg, opts) -> set[int]:
    """Work units of the objects at the config's order (without Ray)."""
    from raycat.healpix import pixel_at_order, unit_key
    from raycat.plan.manifest import spatial_index

    truth = pd.read_parquet(f"{cfg.data.store}/{schema.TRUTH_FILE}", storage_options=opts)
    cells = spatial_index(truth[schema.RA].to_numpy(), truth[schema.DEC].to_numpy())
    order = cfg.cutouts.healpix_order
    return set(unit_key(order, pixel_at_order(cells, order)).tolist())
