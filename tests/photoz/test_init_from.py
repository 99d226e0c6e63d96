"""Fine-tuning from a trained artifact: ``train.init_from``, ``train.freeze``,
``train.finetune_lr`` and ``raycat train --init-from``."""

import numpy as np
import pytest
import torch

from raycat.config import ModelConfig, parse_config
from raycat.errors import RaycatError
from raycat.photoz.finetune import freeze, keep_frozen_in_eval
from raycat.photoz.train import run_identity

MODEL = {"arch": "tiny", "n_bins": 20, "z_max": 1.0}


def _config(tmp_path, init_from=None, bands=None, **train):
    cutouts = {"size_px": 16, **({"bands": bands} if bands else {})}
    return parse_config(
        {
            "model": MODEL,
            "cutouts": cutouts,
            "train": {
                "epochs": 1,
                "batch_size": 32,
                "storage_path": str(tmp_path / "runs"),
                "model_out": str(tmp_path / "tuned"),
                "run_name": "ft",
                "init_from": init_from,
                **train,
            },
        }
    )


def _artifact(tmp_path, bands=None, **model) -> str:
    """A trained-model stand-in: a tiny random net saved as an artifact."""
    from raycat.photoz.model import ArtifactMeta, build_model, save_artifact

    cfg = _config(tmp_path, bands=bands)
    model_cfg = ModelConfig(**{**MODEL, **model})
    meta = ArtifactMeta.from_config(cfg).model_copy(update={"model": model_cfg})
    torch.manual_seed(3)
    path = str(tmp_path / f"init-{len(cfg.cutouts.bands)}-{model_cfg.n_bins}")
    save_artifact(build_model(model_cfg, len(cfg.cutouts.bands)), path, meta)
    return path


def test_an_init_artifact_with_the_config_bands_and_grid_is_part_of_the_run_identity(tmp_path):
    from raycat.photoz.model import read_artifact_meta

    init = _artifact(tmp_path)
    identity = run_identity(_config(tmp_path, init, freeze="layer1"))
    assert identity["train.init_from"] == read_artifact_meta(init).model_id
    assert identity["train.freeze"] == "layer1"
    # a resume from another start is refused (check_resume compares these keys); a plain
    # run's identity is the one older checkpoints recorded
    assert "train.init_from" not in run_identity(_config(tmp_path))


def test_an_init_artifact_with_other_bands_is_refused_in_one_line_before_ray(tmp_path):
    init = _artifact(tmp_path, bands=["ps1_g", "ps1_r", "ps1_i"])
    with pytest.raises(RaycatError, match=r"train.init_from .*bands .*differ") as err:
        run_identity(_config(tmp_path, init))
    assert "\n" not in str(err.value)


def test_an_init_artifact_on_another_redshift_grid_is_refused_naming_it(tmp_path):
    init = _artifact(tmp_path, n_bins=30)
    with pytest.raises(RaycatError, match=r"n_bins is 30, model.n_bins is 20"):
        run_identity(_config(tmp_path, init))


def test_the_cli_flag_sets_train_init_from(tmp_path):
    from raycat.cli import build_parser, overrides

    args = build_parser().parse_args(["train", "--config", "c.yaml", "--init-from", "s3://b/m"])
    assert overrides(args) == {"train": {"init_from": "s3://b/m"}}


def test_freezing_stops_gradients_and_batchnorm_statistics_up_to_the_block():
    from raycat.photoz.model import build_model

    tiny = build_model(ModelConfig(**MODEL), 9)
    frozen = freeze(tiny, "tiny", "stem")
    tiny.train()
    keep_frozen_in_eval(frozen)
    assert [p.requires_grad for p in tiny[0].parameters()] == [False]
    assert not tiny[1].training and tiny[4].training  # the stem's BatchNorm keeps its stats
    assert all(p.requires_grad for p in tiny[3].parameters())
    resnet = build_model(ModelConfig(n_bins=20, stem="small"), 9)
    freeze(resnet, "resnet50", "layer1")
    assert not any(p.requires_grad for m in (resnet.conv1, resnet.layer1) for p in m.parameters())
    assert all(p.requires_grad for p in resnet.layer2.parameters())
    assert all(p.requires_grad for p in resnet.fc.parameters())


@pytest.mark.slow
def test_fine_tuning_starts_from_the_artifact_and_trains_only_the_unfrozen_head(
    tmp_path, ray_local
):
    from raycat.photoz.model import load_artifact
    from raycat.photoz.train import fit
    from tests.photoz.test_train import _cutouts

    init = _artifact(tmp_path)
    cfg = _config(tmp_path, init, freeze="layer2", finetune_lr=1e-2)
    metrics = fit(cfg, _cutouts())
    start, _ = load_artifact(init)
    tuned, meta = load_artifact(cfg.train.model_out)
    before, after = start.state_dict(), tuned.state_dict()
    for key in before:  # the feature extractor (and its BatchNorm statistics) is the init's
        if not key.startswith("12."):
            torch.testing.assert_close(after[key], before[key])
    assert not torch.allclose(after["12.weight"], before["12.weight"])  # the head trained
    # the artifact carries the calibration fitted on the validation split
    assert len(meta.calibration.class_weights) == 20
    assert meta.calibration.validation_objects == metrics["val_objects"] > 0
    assert meta.calibration.pit_map[0] == 0 and meta.calibration.pit_map[-1] == 1
    assert np.isfinite(metrics["val_pit_ks_raw"]) and metrics["val_temperature"] > 0


def test_freezing_without_an_init_artifact_is_refused(tmp_path):
    from raycat.config import ConfigError

    with pytest.raises(ConfigError, match=r"train: .*freeze 'stem' needs init_from"):
        _config(tmp_path, freeze="stem")


def test_an_init_artifact_without_the_ebv_input_is_refused_when_the_config_has_one(tmp_path):
    cfg = _config(tmp_path, _artifact(tmp_path))
    with_ebv = cfg.model_copy(update={"data": cfg.data.model_copy(update={"ebv_column": "ebv"})})
    with pytest.raises(RaycatError, match=r"does not take E\(B-V\).*data.ebv_column is 'ebv'"):
        run_identity(with_ebv)
