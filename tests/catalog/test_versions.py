"""Whose a catalog root is, and an overwrite's switch of versions, crashed and finished."""

from __future__ import annotations

import numpy as np
import pytest
from tinysky import fake_catalog, tree

from raycat import schema as S
from raycat.catalog import versions as V
from raycat.fsutil import filesystem


def _catalog(root: str, objects: dict, model: str, storage_options=None) -> None:
    """A finished raycat catalog of ``objects`` predicted by ``model``."""
    fake_catalog(root, objects["id"], objects["ra"], objects["dec"], model, storage_options)


@pytest.fixture(scope="module")
def objects() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    n = 60
    return {"id": np.arange(n), "ra": rng.uniform(150, 150.02, n), "dec": rng.uniform(2, 2.02, n)}


def test_ownership_of_empty_user_and_raycat_roots(tmp_path, objects):
    fs, _ = filesystem(str(tmp_path))
    assert V.ownership(fs, str(tmp_path / "absent")) == ("empty", [])
    (tmp_path / "leased").mkdir()
    (tmp_path / "leased" / S.LEASE_FILE).write_text("{}")
    assert V.ownership(fs, str(tmp_path / "leased"))[0] == "empty"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("chapter 1")
    assert V.ownership(fs, str(tmp_path / "mine")) == ("foreign", ["thesis.tex"])
    _catalog(str(tmp_path / "ours"), objects, "model-a")
    assert V.ownership(fs, str(tmp_path / "ours"))[0] == "raycat"


def _staged(tmp_path, objects) -> str:
    """An old catalog (model-a) with a user's files in it, and a new version (model-b)."""
    root = str(tmp_path / "cat")
    _catalog(root, objects, "model-a")
    (tmp_path / "cat" / "README.txt").write_text("my notes")  # beside the catalog
    (tmp_path / "cat" / S.CATALOG_DATASET_DIR / "keep.me").write_text("inside an entry")
    newer = {k: v[:40] for k, v in objects.items()}
    _catalog(f"{root}/{S.STAGING_DIR}", newer, "model-b")
    return root


def test_switch_interrupted_at_every_step_finishes_with_the_new_version(
    tmp_path, objects, monkeypatch
):
    reference = tree(_staged(tmp_path / "reference", objects) + f"/{S.STAGING_DIR}")
    moves = 0
    real_move = V._move
    for crash_at in range(1, 12):
        root = _staged(tmp_path / f"crash{crash_at}", objects)
        fs, path = filesystem(root)
        calls = {"n": 0}

        def crashing_move(fs, source, target, crash_at=crash_at, calls=calls):
            calls["n"] += 1
            if calls["n"] == crash_at:
                raise KeyboardInterrupt("killed mid-switch")
            real_move(fs, source, target)

        monkeypatch.setattr(V, "_move", crashing_move)
        try:
            V.switch_versions(fs, path, "job1")
            finished_first_time = True
        except KeyboardInterrupt:
            finished_first_time = False
        monkeypatch.setattr(V, "_move", real_move)
        kept = V.recover_switch(fs, path)
        assert finished_first_time == (kept is None)
        moves = max(moves, calls["n"])
        files = tree(root)
        assert files.pop("README.txt") == b"my notes"
        retired = [f for f in files if f.startswith(S.RETIRED_PREFIX)]
        assert [f.split("/", 1)[1] for f in retired] == [f"{S.CATALOG_DATASET_DIR}/keep.me"]
        assert {f: b for f, b in files.items() if f not in retired} == reference
    assert moves < 12  # every step was crashed at least once


def test_switch_on_s3(s3_bucket, objects):
    url, options = s3_bucket
    root = f"{url}/cat"
    _catalog(root, objects, "model-a", options)
    _catalog(f"{root}/{S.STAGING_DIR}", {k: v[:40] for k, v in objects.items()}, "model-b", options)
    fs, path = filesystem(root, options)
    assert V.switch_versions(fs, path, "job1") == []
    from raycat.catalog.read import read_catalog_ids, read_catalog_info

    assert sorted(read_catalog_ids(root, options)) == list(range(40))
    assert read_catalog_info(root, options).model_id == "model-b"
    assert not [p for p in fs.find(path) if S.STAGING_DIR in p or S.RETIRED_PREFIX in p]
