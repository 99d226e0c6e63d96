import itertools

import numpy as np
import pytest
import torch

from raycat import schema
from raycat.config import parse_config
from raycat.photoz.pdf import bin_edges
from raycat.photoz.train import class_weights, dihedral_augment, is_validation


def test_validation_split_is_deterministic_and_sized():
    ids = np.arange(20000)
    held = is_validation(ids, 0.2, seed=3)
    assert np.array_equal(held, is_validation(ids[::-1], 0.2, seed=3)[::-1])
    assert 0.18 < held.mean() < 0.22
    assert not np.array_equal(held, is_validation(ids, 0.2, seed=4))


def test_training_split_of_text_ids_holds_each_object_out_or_in():
    from raycat.photoz.train import _keep_split

    ids = np.array([f"Gaia DR3 {i}/ü" for i in range(400)], dtype=object)
    batch = {
        schema.ID: ids,
        schema.CUBE: np.arange(400, dtype=np.float32).reshape(400, 1, 1, 1),
        schema.Z_SPEC: np.full(400, 0.5),
        schema.FLAGS: np.zeros(400, np.int32),
    }
    train, val = (_keep_split(batch, v, 0.25, 0)[schema.CUBE].ravel() for v in (False, True))
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(400))
    assert 60 < len(val) < 140  # about a quarter held out
    held = is_validation(ids, 0.25, 0)
    assert np.array_equal(np.flatnonzero(held), val.astype(int))


def test_class_weights_flatten_nz_up_to_the_cap():
    rng = np.random.default_rng(0)
    z = np.concatenate([rng.uniform(0, 0.5, 9000), rng.uniform(0.5, 1.0, 1000)])
    edges = bin_edges(0, 1, 10)
    w = class_weights(z, edges, cap=100)
    counts = np.histogram(z, edges)[0]
    weighted = w * counts
    assert weighted.std() / weighted.mean() < 0.01  # flat n(z) after weighting
    assert (w * counts).sum() == pytest.approx(len(z))  # mean weight per object is 1
    capped = class_weights(z, edges, cap=2)
    assert capped.max() / np.median(capped[counts > 0]) <= 2 + 1e-9


def test_dihedral_augment_gives_one_of_the_8_transforms():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    out = dihedral_augment(x, generator=torch.Generator().manual_seed(0))
    for i in range(2):
        options = [
            torch.rot90(img, k, dims=(-2, -1)) for img in (x[i], x[i].flip(-1)) for k in range(4)
        ]
        assert any(torch.equal(out[i], o) for o in options)


def _cutouts(n=96, size=16):
    """Synthetic cutouts whose brightness encodes redshift, so a tiny net can learn it."""
    import ray.data

    rng = np.random.default_rng(1)
    z = rng.uniform(0.05, 1.0, n)
    cube = rng.normal(0, 0.1, (n, 9, size, size)).astype(np.float32)
    cube[:, :, size // 2 - 2 : size // 2 + 2, size // 2 - 2 : size // 2 + 2] += z[
        :, None, None, None
    ]
    rows = [
        {schema.ID: i, schema.CUBE: cube[i], schema.Z_SPEC: z[i], schema.FLAGS: 0} for i in range(n)
    ]
    return ray.data.from_items(rows)


def _run_config(tmp_path, **model):
    """A tiny model's training config, one epoch, run "t" under ``tmp_path``."""
    return parse_config(
        {
            "model": {"arch": "tiny", "n_bins": 20, "z_max": 1.0, **model},
            "cutouts": {"size_px": 16},
            "train": {
                "epochs": 1,
                "batch_size": 32,
                "storage_path": str(tmp_path / "runs"),
                "model_out": str(tmp_path / "model"),
                "run_name": "t",
            },
        }
    )


@pytest.mark.slow
def test_fit_writes_artifact_and_resumes_from_next_epoch(tmp_path, ray_local):
    from raycat.photoz.model import load_artifact
    from raycat.photoz.train import fit

    cfg = _run_config(tmp_path)
    cfg.train.epochs = 2
    metrics = fit(cfg, _cutouts())
    assert metrics["epoch"] == 1 and metrics["start_epoch"] == 0
    assert "val_nmad" in metrics and metrics["train_objects"] > 60
    model, meta = load_artifact(str(tmp_path / "model"))
    assert meta.model.n_bins == 20 and meta.bands == cfg.cutouts.bands
    assert model(torch.zeros(2, 9, 16, 16)).shape == (2, 20)

    cfg.train.epochs = 3  # same run name and storage: picks up the epoch-1 checkpoint
    resumed = fit(cfg, _cutouts())
    assert resumed["start_epoch"] == 2 and resumed["epoch"] == 2


def test_cosine_lr_decays_from_peak_to_a_floor():
    from raycat.photoz.train import cosine_lr

    rates = [cosine_lr(1e-3, e, 10) for e in range(10)]
    assert rates[0] == pytest.approx(1e-3) and all(a > b for a, b in itertools.pairwise(rates))
    assert rates[-1] > 0.05e-3


def test_epoch_progress_line_names_the_epoch_and_validation_metrics():
    from raycat.photoz.train import _epoch_line

    metrics = {
        "epoch": 2,
        "train_loss": 3.21,
        "images_per_s": 151.4,
        "val_nmad": 0.0812,
        "val_outliers_015": 0.123,
        "val_objects": 300,
    }
    assert _epoch_line(metrics, 15) == (
        "raycat: epoch 3/15: train loss 3.210, 151 images/s, "
        "validation NMAD 0.0812, outliers 12.3% (300 objects)"
    )
    no_val = {k: metrics[k] for k in ("epoch", "train_loss", "images_per_s")}
    assert _epoch_line(no_val, 15) == "raycat: epoch 3/15: train loss 3.210, 151 images/s"


def test_training_batches_are_shuffled_per_epoch_and_validation_is_not(monkeypatch):
    """Cutouts arrive in HEALPix order (neighbours share tiles): training mixes a bounded
    buffer of rows, reseeded each epoch; validation reads in order."""
    import ray.train

    from raycat.photoz import train

    calls = []

    class Shard:
        def iter_torch_batches(self, **kwargs):
            calls.append(kwargs)
            return iter(())

    monkeypatch.setattr(ray.train, "get_dataset_shard", lambda split: Shard())
    cfg = parse_config({"train": {"batch_size": 32, "seed": 5}})
    for epoch in (0, 1):
        train._batches("train", cfg, "cpu", epoch)
    train._batches("val", cfg, "cpu")
    first, second, val = calls
    assert first["local_shuffle_buffer_size"] == train.SHUFFLE_BATCHES * 32
    assert (first["local_shuffle_seed"], second["local_shuffle_seed"]) == (5, 6)
    assert first["drop_last"] and not val["drop_last"]
    assert "local_shuffle_buffer_size" not in val


def test_resume_is_refused_naming_the_changed_keys(tmp_path):
    """A checkpoint records what it is valid for; the driver compares before any worker."""
    import json

    from raycat.errors import RaycatError
    from raycat.photoz.train import check_resume, run_identity

    cfg = _run_config(tmp_path)
    check_resume(cfg)  # no run yet: a new one starts
    checkpoint = tmp_path / "runs" / "t" / "checkpoint_2026-01-01_00-00-00.000000"
    checkpoint.mkdir(parents=True)
    (checkpoint / schema.CHECKPOINT_CONFIG_FILE).write_text(json.dumps(run_identity(cfg)))
    (checkpoint.parent / "checkpoint_manager_snapshot.json").write_text("{}")  # Ray's own
    more = _run_config(tmp_path)
    more.train.epochs, more.train.lr = 5, 1e-2  # these may change on a resume
    check_resume(more)
    for change, key in [
        ({"n_bins": 30}, "model.n_bins"),  # another tensor shape: a traceback after restarts
        ({"z_max": 1.5}, "model.z_max"),  # same shapes: continued silently from the old run
    ]:
        with pytest.raises(RaycatError, match=rf"cannot resume run 't'.*changed: {key}\)"):
            check_resume(_run_config(tmp_path, **change))
    other = _run_config(tmp_path)
    other.train.val_fraction = 0.3  # another split would train on held-out objects
    with pytest.raises(RaycatError, match=r"changed: train.val_fraction"):
        check_resume(other)
    (checkpoint / schema.CHECKPOINT_CONFIG_FILE).unlink()  # a checkpoint of an older raycat
    with pytest.raises(RaycatError, match="no settings recorded"):
        check_resume(cfg)


@pytest.mark.slow
def test_a_real_checkpoint_refuses_a_changed_n_bins_before_training(tmp_path, ray_local):
    import time

    from raycat.errors import RaycatError
    from raycat.photoz.train import fit

    fit(_run_config(tmp_path), _cutouts())
    records = list((tmp_path / "runs" / "t").glob(f"checkpoint_*/{schema.CHECKPOINT_CONFIG_FILE}"))
    assert records  # Ray Train copied the record into its checkpoint directory
    started = time.perf_counter()
    with pytest.raises(RaycatError, match=r"changed: model.n_bins\)"):
        fit(_run_config(tmp_path, n_bins=30), _cutouts())
    assert time.perf_counter() - started < 10  # refused up front, no restarts burnt
