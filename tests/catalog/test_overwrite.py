"""Overwrite only a catalog raycat wrote, only after the model loads, by switching to a new
version written beside the old one: never a byte of anyone else's files."""

from __future__ import annotations

import pytest
from tinysky import catalog_ids, fake_catalog, tree

from raycat import schema
from raycat.errors import RaycatError


def _refused(cfg, root) -> str:
    """Run the job; assert that nothing under ``root`` changed and that it was refused with
    one line; returns the line."""
    from raycat.pipeline import run_infer

    files = tree(root)
    error = None
    try:
        run_infer(cfg)
    except Exception as err:
        error = err
    assert tree(root) == files  # not a file deleted, changed or added
    assert isinstance(error, RaycatError) and "\n" not in str(error)
    return str(error)


def test_overwrite_refuses_a_user_directory(tiny_sky, tmp_path):
    mine = tmp_path / "mine"
    for name in ("dataset/results.parquet", "properties", "partition_info.csv", "notes.txt"):
        (mine / name).parent.mkdir(parents=True, exist_ok=True)
        (mine / name).write_text(f"the user's {name}")
    cfg = tiny_sky.config(mine, tiny_sky.objects(tiny_sky.truth, "all60"), mode="overwrite")
    assert "raycat did not write" in _refused(cfg, mine)


def test_overwrite_refuses_an_lsdb_catalog(tiny_sky, tmp_path):
    import lsdb

    frame = tiny_sky.truth[[schema.ID, schema.RA, schema.DEC]]
    lsdb.from_dataframe(frame).to_hats(str(tmp_path / "lsdb"))
    all60 = tiny_sky.objects(tiny_sky.truth, "all60")
    cfg = tiny_sky.config(tmp_path / "lsdb", all60, mode="overwrite")
    assert "raycat did not write" in _refused(cfg, tmp_path / "lsdb")


def test_a_corrupt_model_leaves_the_old_catalog_whole(tiny_sky, tmp_path):
    import shutil

    truth = tiny_sky.truth
    fake_catalog(
        str(tmp_path / "cat"), truth[schema.ID], truth[schema.RA], truth[schema.DEC], "old"
    )
    shutil.copytree(tiny_sky.model, tmp_path / "model")
    weights = tmp_path / "model" / schema.MODEL_WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:1000])
    cfg = tiny_sky.config(tmp_path / "cat", tiny_sky.objects(truth, "all60"), mode="overwrite")
    cfg.infer.model = str(tmp_path / "model")
    assert "does not match model_id" in _refused(cfg, tmp_path / "cat")


@pytest.mark.slow
def test_overwrite_switches_to_the_new_version_and_keeps_foreign_files(
    tiny_sky, tmp_path, ray_module
):
    from raycat.catalog.read import read_catalog_info
    from raycat.photoz.model import read_artifact_meta
    from raycat.pipeline import run_infer

    truth = tiny_sky.truth
    root = tmp_path / "cat"
    fake_catalog(
        str(root), truth[schema.ID][:20], truth[schema.RA][:20], truth[schema.DEC][:20], "old"
    )
    (root / "README.txt").write_text("what this catalog is")
    result = run_infer(tiny_sky.config(root, tiny_sky.objects(truth, "all60"), mode="overwrite"))
    assert result["rows"] == 60 and sorted(catalog_ids(root)) == sorted(truth[schema.ID])
    assert read_catalog_info(str(root)).model_id == read_artifact_meta(tiny_sky.model).model_id
    assert (root / "README.txt").read_text() == "what this catalog is"
    leftovers = [p.name for p in root.iterdir() if schema.is_private_entry(p.name)]
    assert leftovers == []
