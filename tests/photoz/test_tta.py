"""Test-time symmetry (``infer.tta: dihedral``): the PDF averaged over the 8 rotations and
flips, so every rotation or flip of a cutout gets the same PDF."""

import numpy as np
import pytest
import torch

from raycat.config import ConfigError, InferConfig, ModelConfig, parse_config
from raycat.photoz.calibrate import Calibration
from raycat.photoz.forward import pdf_fn
from raycat.photoz.uncertainty import dihedral_transforms


def _artifact(root) -> str:
    from raycat.photoz.model import ArtifactMeta, build_model, save_artifact

    cfg = ModelConfig(arch="tiny", n_bins=20, z_max=1.0)
    calibration = Calibration(class_weights=np.linspace(0.5, 3, 20).tolist(), temperature=1.3)
    meta = ArtifactMeta(
        model=cfg,
        bands=["a", "b", "c"],
        band_surveys={"a": "x", "b": "x", "c": "y"},
        size_px=16,
        pixel_scale=1.0,
        calibration=calibration,
    )
    torch.manual_seed(0)
    net = build_model(cfg, 3)
    with torch.no_grad():  # a sharper head: modes that follow the pixels, not the biases
        net[-1].weight.mul_(50)
    save_artifact(net, str(root), meta)
    return str(root)


def _cubes(n=5) -> np.ndarray:
    rng = np.random.default_rng(0)
    cube = rng.normal(0, 0.3, (n, 3, 16, 16)).astype(np.float32)
    cube[:, :, 4:9, 6:8] += 2.0  # an elongated, off-centre source: no symmetry of its own
    return cube


def test_with_dihedral_tta_every_rotation_and_flip_of_a_cutout_gives_the_same_pdf(tmp_path):
    from raycat.photoz.infer import Predictor

    model = _artifact(tmp_path / "model")
    cube = _cubes()
    images = [t.numpy() for t in dihedral_transforms(torch.from_numpy(cube))]
    with_tta = Predictor(InferConfig(model=model, tta="dihedral"))
    pdfs = [with_tta.predict(image) for image in images]
    for other in pdfs[1:]:
        np.testing.assert_array_equal(other, pdfs[0])  # the same bits (sorted sums)
    np.testing.assert_allclose(pdfs[0].sum(axis=1), 1, rtol=1e-5)
    without = Predictor(InferConfig(model=model))
    plain = [without.predict(image) for image in images]
    assert max(np.abs(p - plain[0]).max() for p in plain[1:]) > 1e-4  # the net alone is not
    # the calibration applies to the mean of the 8 softmax PDFs
    from raycat.photoz.calibrate import calibrate_pdfs

    with torch.inference_mode():
        softmax = [torch.softmax(without.model(torch.from_numpy(i)), dim=1) for i in images]
    expected = calibrate_pdfs(torch.stack(softmax).mean(0), without.meta.calibration)
    np.testing.assert_allclose(pdfs[0], expected.numpy(), atol=1e-6)


def test_dihedral_tta_costs_8_forward_passes():
    calls = []
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 6))
    net.register_forward_hook(lambda *_: calls.append(1))
    pdf_fn(net, tta="dihedral")(torch.randn(2, 3, 4, 4))
    assert len(calls) == 8
    pdf_fn(net)(torch.randn(2, 3, 4, 4))
    assert len(calls) == 9
    with pytest.raises(ValueError, match="unknown tta"):
        pdf_fn(net, tta="rotate")  # type: ignore[arg-type]


def test_the_report_shows_rotation_stability_without_and_with_tta(tmp_path):
    from raycat.photoz.model import load_artifact
    from raycat.quality.report import stability

    model, meta = load_artifact(_artifact(tmp_path / "model"))
    summary, shifts = stability(model, meta, _cubes(12))
    assert summary["n_objects"] == 12 and len(shifts) == 12
    assert summary["mean"] > 0  # an untrained net moves with the cutout
    assert summary["tta_mean"] == 0 and summary["tta_max"] == 0
    assert summary["tta_n_objects"] == 12


def test_tta_is_a_config_choice_that_changes_the_catalog_hash():
    assert InferConfig().tta == "none"
    with pytest.raises(ConfigError, match="tta"):
        parse_config({"infer": {"tta": "rotate"}})
    base = parse_config(None)
    assert base.config_hash() != parse_config({"infer": {"tta": "dihedral"}}).config_hash()
    assert base.config_hash() == parse_config({"infer": {"tta": "none"}}).config_hash()


def test_the_catalog_metadata_names_the_configured_tta_and_the_calibration(tmp_path):
    from raycat.catalog.info import CatalogInfo
    from raycat.photoz.attribute import Players
    from raycat.photoz.model import read_artifact_meta
    from raycat.pipeline import PlanSummary, _catalog_schema

    meta = read_artifact_meta(_artifact(tmp_path))
    cfg = parse_config({"infer": {"tta": "dihedral"}})
    summary = PlanSummary(unit_counts={}, bands=meta.bands, has_z_spec=False)
    schema = _catalog_schema(cfg, meta, summary, Players([], []))
    calibration = CatalogInfo.from_schema(schema).calibration
    assert calibration is not None and calibration["tta"] == "dihedral"
    assert calibration["temperature"] == pytest.approx(1.3)
