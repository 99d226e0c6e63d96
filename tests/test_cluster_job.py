"""Production path on one machine: a real Ray cluster (`ray start --head` plus a second node),
tiles, model and config in an S3 server on 127.0.0.1, the inference job sent with the
`ray job submit` CLI, the catalog written to S3. Credentials come from the environment (the
AWS chain, endpoint included) and must appear in no log, config or catalog file."""

import os
import socket
import subprocess
import sys
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
    return subprocess.run([ray_cli, *args], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def store(s3_bucket):
    """A tiny sky, a tiny model and a config on S3; the config holds no endpoint or keys."""
    from raycat.model import ArtifactMeta, build_model, save_artifact
    from raycat.simulate import simulate_sky

    url, opts = s3_bucket
    simulate_sky(f"{url}/sky", n_galaxies=80, seed=11, storage_options=opts, progress=False)
    cfg = parse_config({"data": {"store": f"{url}/sky"}, "cutouts": {"healpix_order": 11},
                        "model": {"arch": "tiny", "n_bins": 20},
                        "infer": {"model": f"{url}/model", "catalog": f"{url}/catalog"}})
    save_artifact(build_model(cfg.model, 9), cfg.infer.model, ArtifactMeta.from_config(cfg),
                  storage_options=opts)
    import fsspec
    with fsspec.open(f"{url}/config.yaml", "w", **opts) as f:
        yaml.safe_dump(cfg.model_dump(mode="json"), f)
    return url, opts


@pytest.fixture
def cluster(s3_server, tmp_path):
    """Head (dashboard + job server) and a second node on 127.0.0.1, stopped afterwards."""
    import ray

    ray.shutdown()  # the in-process Ray of other tests; they start it again when needed
    env = {**os.environ, "RAY_AUTH_MODE": "token", "AWS_ENDPOINT_URL": s3_server,
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": SECRET,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    port, dashboard = _port(), _port()
    head = _ray(env, "start", "--head", f"--port={port}", "--num-cpus=1",
                f"--dashboard-port={dashboard}", "--include-dashboard=true",
                "--dashboard-host=127.0.0.1", "--node-ip-address=127.0.0.1")
    try:
        assert head.returncode == 0, head.stderr[-2000:]
        node = _ray(env, "start", f"--address=127.0.0.1:{port}", "--num-cpus=1",
                    "--node-ip-address=127.0.0.1")
        assert node.returncode == 0, node.stderr[-2000:]
        yield env, f"http://127.0.0.1:{dashboard}"
    finally:
        _ray(env, "stop", "--force", timeout=120)


def test_infer_job_submitted_to_a_cluster_writes_every_id_once_to_s3(store, cluster):
    import fsspec

    from raycat.catalog_read import read_catalog_ids

    url, opts = store
    env, address = cluster
    job = _ray(env, "job", "submit", "--address", address, "--working-dir", ".", "--",
               "python", "jobs/infer.py", "--config", f"{url}/config.yaml", timeout=600)
    output = job.stdout + job.stderr
    assert job.returncode == 0 and "succeeded" in output, output[-3000:]

    truth = pd.read_parquet(f"{url}/sky/{schema.TRUTH_FILE}", storage_options=opts)
    ids = read_catalog_ids(f"{url}/catalog", opts)
    assert len(ids) == len(set(ids)) == len(truth) and set(ids) == set(truth[schema.ID])

    fs = fsspec.filesystem("s3", **opts)
    written = [p for p in fs.find(url.removeprefix("s3://")) if "/sky/" not in p]
    assert SECRET not in output
    assert not [p for p in written if SECRET.encode() in fs.cat_file(p)]
