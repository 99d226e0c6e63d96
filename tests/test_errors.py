"""Bad inputs end in one line and exit status 2, found before Ray starts (issue 14, item 13).

Each case runs the real CLI in a subprocess: the exit status, the single stderr line and,
by that single line, that Ray never started (its start-up would log and take ~18 s).
Stores are on loopback only: a closed port, the moto server, a blocked package.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pandas as pd
import pytest

from raycat import schema
from raycat.sky.tiles import TileGeometry

NO_AWS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _raycat(*args, env=None, pythonpath=None):
    """(exit status, stderr lines, seconds) of ``python -m raycat ARGS``."""
    env = {**os.environ, "AWS_EC2_METADATA_DISABLED": "true", **(env or {})}
    for name in [k for k, v in env.items() if v is None]:
        del env[name]
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([pythonpath, env.get("PYTHONPATH", "")])
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "raycat", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    return out.returncode, out.stderr.strip().splitlines(), time.perf_counter() - started


def _config(path, data: dict, extra: str = "") -> str:
    lines = ["data:"] + [f"  {k}: {v}" for k, v in data.items()]
    path.write_text("\n".join(lines) + "\ncutouts:\n  output: " + str(path.parent / "cut") + extra)
    return str(path)


def _store(root, wcs: str | None = None) -> None:
    """An object list and a tile index (one tile, its WCS or ``wcs``) under ``root``."""
    root.mkdir(exist_ok=True)
    pd.DataFrame(
        {"id": [1, 2], "ra": [150.0, 150.01], "dec": [5.0, 5.0], "z": [0.1, 0.2]}
    ).to_parquet(root / schema.TRUTH_FILE)
    header = TileGeometry("ps1", "t", 0, 150.0, 5.0, 0.0, 100, 0.25).wcs_header
    row = {
        schema.TILE_SURVEY: "ps1",
        schema.TILE_BAND: "ps1_g",
        schema.TILE_NAME: "t",
        schema.TILE_URI: "t.ps1_g.fits",
        schema.TILE_WCS: wcs if wcs is not None else header.tostring(),
    }
    pd.DataFrame([row]).to_parquet(root / schema.TILE_INDEX_FILE)


def _one_line(rc, lines, seconds, *words):
    assert rc == 2, lines
    assert len(lines) == 1, "\n".join(lines[-20:])
    assert all(w in lines[0] for w in words), lines[0]
    assert "Traceback" not in lines[0]


def test_garbage_parquet_object_list(tmp_path):
    _store(tmp_path / "sky")
    (tmp_path / "garbage.parquet").write_bytes(b"not parquet at all" * 100)
    cfg = _config(
        tmp_path / "c.yaml", {"store": tmp_path / "sky", "objects": tmp_path / "garbage.parquet"}
    )
    _one_line(*_raycat("cutouts", "--config", cfg), "object list", "garbage.parquet", "Parquet")


def test_garbage_wcs_in_the_tile_index(tmp_path):
    _store(tmp_path / "sky", wcs="garbage")
    cfg = _config(tmp_path / "c.yaml", {"store": tmp_path / "sky"})
    _one_line(*_raycat("train", "--config", cfg), "tiles.parquet", "no usable WCS", "t.ps1_g.fits")


def test_missing_model_for_infer(tmp_path):
    _store(tmp_path / "sky")
    extra = f"\ninfer:\n  model: {tmp_path / 'nomodel'}\n"
    cfg = _config(tmp_path / "c.yaml", {"store": tmp_path / "sky"}, extra)
    _one_line(*_raycat("infer", "--config", cfg), "no model at", "nomodel")


@pytest.mark.slow  # the S3 client retries for ~10 s before it gives up
def test_unreachable_s3_endpoint(tmp_path):
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    (tmp_path / "c.yaml").write_text(
        "data:\n  store: s3://bucket/sky\n  storage_options:\n    client_kwargs:\n"
        f"      endpoint_url: {endpoint}\ncutouts:\n  output: {tmp_path / 'cut'}\n"
    )
    env = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"}
    _one_line(
        *_raycat("cutouts", "--config", str(tmp_path / "c.yaml"), env=env), "unreachable", endpoint
    )


def test_missing_s3_credentials(tmp_path, s3_server):
    (tmp_path / "c.yaml").write_text(
        "data:\n  store: s3://bucket/sky\n  storage_options:\n    client_kwargs:\n"
        f"      endpoint_url: {s3_server}\ncutouts:\n  output: {tmp_path / 'cut'}\n"
    )
    env = {name: None for name in NO_AWS}
    env |= {"AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_CONFIG_FILE": os.devnull}
    _one_line(*_raycat("cutouts", "--config", str(tmp_path / "c.yaml"), env=env), "no credentials")


def test_gs_without_gcsfs(tmp_path):
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "gcsfs.py").write_text("raise ImportError('No module named gcsfs')\n")
    cfg = _config(tmp_path / "c.yaml", {"store": "gs://bucket/sky"})
    rc, lines, seconds = _raycat("cutouts", "--config", cfg, pythonpath=str(blocked))
    _one_line(rc, lines, seconds, "gs://bucket/sky", "gcsfs", "raycat[gcs]")


@pytest.mark.slow  # gcsfs retries for ~35 s before it gives up
def test_gs_without_network(tmp_path):
    """gcsfs installed, nothing to reach: every Google endpoint pointed at a closed port."""
    closed = f"127.0.0.1:{_closed_port()}"
    env = {
        "STORAGE_EMULATOR_HOST": f"http://{closed}",
        "GCE_METADATA_HOST": closed,
        "GCE_METADATA_IP": closed,
        "NO_GCE_CHECK": "true",
        "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"),
        "GOOGLE_APPLICATION_CREDENTIALS": None,
    }
    cfg = _config(tmp_path / "c.yaml", {"store": "gs://bucket/sky"})
    _one_line(*_raycat("cutouts", "--config", cfg, env=env), "gs://bucket/sky", "unreachable")


def test_a_user_error_raised_inside_a_ray_task_is_found_behind_rays_wrapper(ray_local):
    """A RaycatError raised in a Ray Data task reaches the driver inside a RayTaskError whose
    message is Ray's traceback; the CLI still finds the error and prints its first line."""
    import ray.data

    from raycat.errors import RaycatError, one_line, user_error

    def bad_rows(batch):
        raise RaycatError("objects.parquet: column 'id' has missing ids")

    with pytest.raises(Exception) as caught:
        ray.data.range(4).map_batches(bad_rows).materialize()
    found = user_error(caught.value)
    assert isinstance(found, RaycatError)
    assert one_line(found) == "objects.parquet: column 'id' has missing ids"
    assert user_error(ValueError("a bug")) is None


def test_user_error_walks_causes_and_stops_on_cycles():
    from raycat.errors import RaycatError, user_error

    inner = RaycatError("bad band")
    outer = RuntimeError("wrapped")
    outer.__cause__ = inner
    assert user_error(outer) is inner
    loop = ValueError("a")
    loop.__context__ = loop
    assert user_error(loop) is None


@pytest.mark.slow  # simulates a tiny sky, starts an embedded Ray and plans before the pool
def test_use_gpu_on_a_cluster_without_gpus_is_one_line_never_a_cpu_run(tmp_path):
    """`raycat infer` with infer.use_gpu on this machine (its embedded Ray has no GPU and no
    autoscaler): exit 2 and one error line, before planning or the catalog job begin."""
    import yaml
    from tinysky import make_tiny_sky

    sky = make_tiny_sky(tmp_path)
    cfg = sky.config(tmp_path / "catalog", str(sky.root / "sky" / schema.TRUTH_FILE), use_gpu=True)
    path = tmp_path / "gpu.yaml"
    path.write_text(yaml.safe_dump({**cfg.model_dump(mode="json"), "ray": {"num_cpus": 1}}))
    rc, lines, _ = _raycat("infer", "--config", str(path), env={"CUDA_VISIBLE_DEVICES": ""})
    errors = [line for line in lines if "error" in line.lower() or "Traceback" in line]
    assert rc == 2 and len(errors) == 1, "\n".join(lines[-20:])
    assert errors[0] == lines[-1] and lines[-1].startswith("raycat infer: error: infer.use_gpu")
    assert "no GPU" in lines[-1] and not (tmp_path / "catalog").exists()  # nothing began
    assert not [line for line in lines if "planned" in line]
