"""READ_ERROR is not final: a store whose every tile is unreadable fails the job with one line
naming tiles (exit 2), and a resume once the store is readable again retries those partitions."""

from __future__ import annotations

import shutil

import pyarrow.parquet as pq
import pytest
import yaml
from tinysky import catalog_ids

from raycat import schema

pytestmark = pytest.mark.slow


def test_unreadable_tiles_fail_the_job_and_a_resume_retries_them(
    tiny_sky, tmp_path, ray_module, capsys
):
    from raycat.cli import main

    store = tmp_path / "store"
    shutil.copytree(tiny_sky.root / "sky", store)
    tiles = sorted(store.rglob("*.fits"))
    for tile in tiles:  # expired credentials, a broken mirror: nothing can be read
        tile.write_bytes(b"SIMPLE  = T / not really" + b"\0" * 100)
    cfg = tiny_sky.config(tmp_path / "cat", tiny_sky.objects(tiny_sky.truth, "all60"))
    cfg.data.store = str(store)
    config = tmp_path / "infer.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))

    assert main(["infer", "--config", str(config)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(lines)
    error = lines[-1]
    assert error.startswith("raycat infer: error: 60 of 60 objects (100.0%) could not be read")
    assert "tiles/" in error and ".fits" in error  # names tiles at fault

    for tile in tiles:  # the store is readable again
        shutil.copyfile(tiny_sky.root / "sky" / tile.relative_to(store), tile)
    assert main(["infer", "--config", str(config)]) == 0
    summary = capsys.readouterr().out
    assert '"partitions_retried": 11' in summary and '"partitions_unchanged": 0' in summary
    ids = catalog_ids(tmp_path / "cat")
    assert sorted(ids) == sorted(tiny_sky.truth[schema.ID])
    for path in (tmp_path / "cat").glob(schema.PARTITION_GLOB):
        flags = pq.read_table(path, columns=[schema.FLAGS])[schema.FLAGS].to_numpy()
        assert not (flags & int(schema.Flag.READ_ERROR)).any()
