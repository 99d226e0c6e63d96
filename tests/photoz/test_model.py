"""The classifier's shapes and its artifact: round trip, safe loading, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from raycat.config import ModelConfig, RaycatConfig  # noqa: E402
from raycat.errors import RaycatError  # noqa: E402
from raycat.photoz.model import ArtifactMeta, build_model, load_artifact, save_artifact  # noqa: E402
from raycat.schema import MODEL_META_FILE, MODEL_WEIGHTS_FILE  # noqa: E402

N_BANDS, SIZE, N_BINS = 9, 32, 40


def tiny_cfg(**changes) -> ModelConfig:
    return ModelConfig(**{"arch": "tiny", "n_bins": N_BINS, "z_max": 2.0, **changes})


def make_meta(cfg: ModelConfig) -> ArtifactMeta:
    return ArtifactMeta(
        model=cfg,
        bands=[f"b{i}" for i in range(N_BANDS)],
        size_px=SIZE,
        pixel_scale=1.0,
        config_hash="abc123",
        metrics={"val_nmad": 0.05},
        train_median_z=0.6,
    )


@pytest.mark.parametrize("stem", ["imagenet", "small"])
def test_resnet50_maps_cutouts_to_bin_logits(stem):
    model = build_model(ModelConfig(arch="resnet50", stem=stem, n_bins=N_BINS), N_BANDS).eval()
    assert model.conv1.in_channels == N_BANDS
    assert isinstance(model.fc[0], torch.nn.Dropout) and model.fc[1].out_features == N_BINS
    with torch.no_grad():
        out = model(torch.randn(2, N_BANDS, SIZE, SIZE))
    assert out.shape == (2, N_BINS)


def test_stems_differ_in_resolution_kept():
    imagenet = build_model(ModelConfig(arch="resnet50", stem="imagenet"), N_BANDS)
    small = build_model(ModelConfig(arch="resnet50", stem="small"), N_BANDS)
    assert imagenet.conv1.kernel_size == (7, 7) and not isinstance(
        imagenet.maxpool, torch.nn.Identity
    )
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    assert isinstance(small.maxpool, torch.nn.Identity)
    # what the stems keep of a 32 px cutout before the first residual block
    x = torch.zeros(1, N_BANDS, SIZE, SIZE)
    assert imagenet.maxpool(imagenet.conv1(x)).shape[-1] == 8
    assert small.maxpool(small.conv1(x)).shape[-1] == 32


def test_tiny_twin_has_the_same_interface_and_dropout_before_head():
    model = build_model(tiny_cfg(dropout=0.5), N_BANDS)
    assert isinstance(model[-2], torch.nn.Dropout) and model[-2].p == 0.5
    out = model(torch.randn(4, N_BANDS, SIZE, SIZE))
    assert out.shape == (4, N_BINS)
    out.sum().backward()  # trainable end to end


@pytest.mark.parametrize("arch", ["tiny", "resnet50"])
def test_artifact_round_trip_gives_identical_outputs(tmp_path, monkeypatch, arch):
    cfg = tiny_cfg(arch=arch)
    model = build_model(cfg, N_BANDS).eval()
    saved = save_artifact(model, str(tmp_path / "m"), make_meta(cfg))
    assert len(saved.model_id) == 16 and saved.model == cfg

    calls = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k) or real_load(*a, **k))
    loaded, meta = load_artifact(str(tmp_path / "m"))
    assert calls and all(k.get("weights_only") is True for k in calls)
    assert not loaded.training
    # built on the meta device: every tensor must have been replaced by a loaded one
    assert not any(t.is_meta for t in [*loaded.parameters(), *loaded.buffers()])
    assert meta == saved and meta.train_median_z == 0.6
    np.testing.assert_allclose(meta.bin_edges, np.linspace(0, 2.0, N_BINS + 1))
    x = torch.randn(3, N_BANDS, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_wrapped_models_save_plain_keys(tmp_path):
    class Wrapper(torch.nn.Module):  # what DDP does to the names
        def __init__(self, inner):
            super().__init__()
            self.module = inner

    save_artifact(Wrapper(build_model(tiny_cfg(), N_BANDS)), str(tmp_path), make_meta(tiny_cfg()))
    load_artifact(str(tmp_path))  # strict load: fails if keys kept "module."


def test_meta_from_config_keeps_the_grid_and_cutout_settings():
    cfg = RaycatConfig.model_validate({"model": {"n_bins": 30}, "cutouts": {"size_px": 24}})
    meta = ArtifactMeta.from_config(cfg, metrics={"train_median_z": 0.4, "history": [1, 2]})
    assert meta.size_px == 24 and meta.bands == cfg.cutouts.bands
    assert meta.config_hash == cfg.config_hash() and len(meta.bin_edges) == 31
    assert meta.train_median_z == 0.4 and "history" not in meta.metrics


def test_meta_records_each_band_survey_and_old_artifacts_use_the_built_in_bands():
    cfg = RaycatConfig.model_validate(
        {
            "cutouts": {
                "bands": ["ps1_g", "hsclike_r"],
                "surveys": {"hsc_like": {"like": "hsc", "bands": {"hsclike_r": {"like": "hsc_r"}}}},
            }
        }
    )
    meta = ArtifactMeta.from_config(cfg)
    assert meta.band_surveys == {"ps1_g": "ps1", "hsclike_r": "hsc_like"}
    assert meta.players("surveys").names == ["ps1", "hsc_like"]
    before = make_meta(tiny_cfg()).model_dump(exclude={"band_surveys"})  # an older model.json
    before["bands"] = ["unwise_w1", "ps1_g"]
    old = ArtifactMeta.model_validate(before)
    assert old.players("surveys") == (["ps1", "unwise"], [[1], [0]])


def test_missing_truncated_or_swapped_artifacts_raise_one_line_errors(tmp_path):
    root = tmp_path / "m"
    with pytest.raises(RaycatError, match="not found"):
        load_artifact(str(root))
    save_artifact(build_model(tiny_cfg(), N_BANDS), str(root), make_meta(tiny_cfg()))
    weights = (root / MODEL_WEIGHTS_FILE).read_bytes()

    (root / MODEL_WEIGHTS_FILE).write_bytes(weights[: len(weights) // 2])
    with pytest.raises(RaycatError, match="does not match") as err:
        load_artifact(str(root))
    assert "\n" not in str(err.value)

    (root / MODEL_WEIGHTS_FILE).unlink()
    with pytest.raises(RaycatError, match="missing"):
        load_artifact(str(root))

    meta = json.loads((root / MODEL_META_FILE).read_text())
    meta["bands"] = "not a list"
    (root / MODEL_META_FILE).write_text(json.dumps(meta))
    with pytest.raises(RaycatError, match="bands"):
        load_artifact(str(root))
    (root / MODEL_META_FILE).write_text("{ truncated")
    with pytest.raises(RaycatError, match=MODEL_META_FILE):
        load_artifact(str(root))


def test_weights_for_another_architecture_are_refused(tmp_path):
    root = tmp_path / "m"
    saved = save_artifact(build_model(tiny_cfg(), N_BANDS), str(root), make_meta(tiny_cfg()))
    # a consistent hash but a model.json that claims a different grid
    bad = saved.model_copy(update={"model": tiny_cfg().model_copy(update={"n_bins": 7})})
    (root / MODEL_META_FILE).write_text(bad.model_dump_json())
    with pytest.raises(RaycatError, match="weights do not load"):
        load_artifact(str(root))


def test_artifact_on_object_storage(s3_bucket):
    url, options = s3_bucket
    model = build_model(tiny_cfg(), N_BANDS).eval()
    saved = save_artifact(model, f"{url}/models/run1", make_meta(tiny_cfg()), options)
    loaded, meta = load_artifact(f"{url}/models/run1", options)
    assert meta.model_id == saved.model_id
    x = torch.randn(2, N_BANDS, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
