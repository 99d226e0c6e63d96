"""Calibrated PDFs: the class-weight prior undone, temperature and PIT map fitted on
validation sums, stored in the artifact, applied by the Predictor, recorded in the catalog."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from raycat import schema
from raycat.config import InferConfig, ModelConfig
from raycat.photoz.calibrate import (
    TEMPERATURES,
    Calibration,
    CalibrationSums,
    calibrate_pdfs,
    pit_map_from_counts,
)
from raycat.photoz.pdf import bin_edges, pit, pit_ks
from raycat.photoz.train import class_weights

EDGES = bin_edges(0.0, 1.0, 20)


def _skewed_sky(n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Redshifts piled up at low z (as a real n(z)) and one noisy feature that tracks z."""
    z = np.clip(rng.gamma(2.0, 0.12, n), 0, 0.999)
    return z, z + rng.normal(0, 0.15, n)


def _weighted_classifier(feature: np.ndarray, z: np.ndarray, weights: np.ndarray):
    """A small net trained as raycat trains: cross-entropy over the bins, class-weighted."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(1, 32), torch.nn.Tanh(), torch.nn.Linear(32, 20))
    x = torch.tensor(feature, dtype=torch.float32)[:, None]
    target = torch.bucketize(torch.tensor(z, dtype=torch.float32), torch.tensor(EDGES[1:-1]))
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32))
    optimiser = torch.optim.Adam(net.parameters(), lr=0.03)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny net: threads only wait on each other on a busy machine
    try:
        for _ in range(150):
            optimiser.zero_grad()
            loss_fn(net(x), target).backward()
            optimiser.step()
    finally:
        torch.set_num_threads(threads)
    return net


def test_undoing_the_class_weight_prior_makes_the_pits_of_a_weighted_model_uniform():
    rng = np.random.default_rng(0)
    z_train, f_train = _skewed_sky(2000, rng)
    weights = class_weights(z_train, EDGES, cap=10)
    net = _weighted_classifier(f_train, z_train, weights)
    z_test, f_test = _skewed_sky(4000, rng)
    with torch.no_grad():
        raw = torch.softmax(net(torch.tensor(f_test, dtype=torch.float32)[:, None]), dim=1)
    corrected = calibrate_pdfs(raw, Calibration(class_weights=weights.tolist()))
    ks_raw = pit_ks(pit(raw.numpy(), EDGES, z_test))
    ks_corrected = pit_ks(pit(corrected.numpy(), EDGES, z_test))
    # the flattened prior pushes the PDFs to high z: PITs pile up low
    assert np.median(pit(raw.numpy(), EDGES, z_test)) < 0.42
    assert ks_raw > 0.08
    assert ks_corrected < 0.5 * ks_raw


def _overconfident(n: int, rng) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits 3x too sharp for the scatter of the estimate they are centred on."""
    z = torch.tensor(rng.uniform(0, 1, n))
    estimate = z + torch.tensor(rng.normal(0, 0.15, n))
    centres = torch.tensor((EDGES[1:] + EDGES[:-1]) / 2)
    return (-((centres[None] - estimate[:, None]) ** 2) / (2 * 0.05**2)).float(), z.float()


def test_temperature_and_pit_map_fitted_on_validation_sums_calibrate_new_objects():
    rng = np.random.default_rng(1)
    logits, z = _overconfident(2000, rng)
    sums = CalibrationSums.zeros()
    for part, zs in zip(logits.split(300), z.split(300)):  # batch by batch
        sums.add(part, zs, torch.tensor(EDGES), [])
    calibration, metrics = sums.fit([])
    assert sums.objects == 2000 and calibration.validation_objects == 2000
    assert calibration.temperature > 2 and calibration.steps == ["temperature", "pit_map"]
    assert metrics["val_crps"] < metrics["val_crps_raw"]
    assert metrics["val_nll"] < metrics["val_nll_raw"]
    assert metrics["val_pit_ks_prior_temperature"] < metrics["val_pit_ks_raw"]
    new_logits, new_z = _overconfident(3000, np.random.default_rng(2))
    raw = torch.softmax(new_logits, dim=1)
    assert pit_ks(pit(raw.numpy(), EDGES, new_z.numpy())) > 0.15
    calibrated = calibrate_pdfs(raw, calibration)
    assert pit_ks(pit(calibrated.numpy(), EDGES, new_z.numpy())) < 0.04


def test_sums_added_per_worker_equal_the_sums_of_one_pass():
    """What all_reduce adds up: two shards' sums are one pass's (the fit is additive)."""
    logits, z = _overconfident(400, np.random.default_rng(3))
    whole, first, second = (CalibrationSums.zeros() for _ in range(3))
    whole.add(logits, z, torch.tensor(EDGES), [])
    first.add(logits[:150], z[:150], torch.tensor(EDGES), [])
    second.add(logits[150:], z[150:], torch.tensor(EDGES), [])
    torch.testing.assert_close(first.nll + second.nll, whole.nll)
    torch.testing.assert_close(first.crps + second.crps, whole.crps)
    torch.testing.assert_close(first.pit_counts + second.pit_counts, whole.pit_counts)
    assert whole.all_reduce() is whole  # no process group: a single worker's sums


def test_the_crps_of_the_fit_is_the_metrics_crps():
    from raycat.photoz.calibrate import crps_of, pit_of
    from raycat.photoz.pdf import crps_per_object

    rng = np.random.default_rng(6)
    pdf = torch.softmax(torch.tensor(rng.normal(0, 2, (50, 20))), dim=1)
    z = torch.tensor(np.append(rng.uniform(-0.1, 1.1, 49), 0.5))  # some beyond the grid
    edges = torch.tensor(EDGES)
    expected = crps_per_object(pdf.numpy(), EDGES, z.numpy())
    np.testing.assert_allclose(crps_of(pdf, edges, z).numpy(), expected, rtol=1e-10)
    inside = z.clamp(0, 1).numpy()
    np.testing.assert_allclose(pit_of(pdf, edges, z).numpy(), pit(pdf.numpy(), EDGES, inside))


def test_pit_map_is_monotone_from_0_to_1_with_knots_the_objects_support():
    counts = np.zeros(1000)
    counts[:500] = 1.0  # 500 objects, all with PIT < 0.5
    g = pit_map_from_counts(counts)
    assert g[0] == 0 and g[-1] == 1 and np.all(np.diff(g) > 0)  # rises everywhere
    assert len(g) - 1 == 25  # the most knots with >= 20 objects each on average
    assert g[len(g) // 2] > 0.9
    assert len(pit_map_from_counts(np.zeros(1000))) == 0


def test_calibrated_pdfs_stay_normalised_non_negative_and_nan_where_nan():
    rng = np.random.default_rng(4)
    pdf = torch.softmax(torch.tensor(rng.normal(0, 3, (6, 20)), dtype=torch.float32), dim=1)
    pdf[2] = float("nan")
    pdf[4] = 0.0
    pdf[4, 7] = 1.0  # a one-bin PDF
    calibration = Calibration(
        class_weights=rng.uniform(0, 5, 20).round(1).tolist(),  # zero weights included
        temperature=2.0,
        pit_map=np.sqrt(np.linspace(0, 1, 11)).tolist(),
    )
    out = calibrate_pdfs(pdf, calibration)
    assert out.dtype == torch.float32
    assert torch.isnan(out[2]).all() and not torch.isnan(out[[0, 1, 3, 4, 5]]).any()
    keep = [0, 1, 3, 4, 5]
    assert (out[keep] >= 0).all()
    torch.testing.assert_close(out[keep].sum(1), torch.ones(5))
    assert not torch.allclose(out[keep], pdf[keep])


def test_the_default_calibration_and_an_old_artifact_change_nothing():
    from raycat.photoz.model import ArtifactMeta

    pdf = torch.softmax(torch.randn(3, 20), dim=1)
    assert Calibration().steps == [] and calibrate_pdfs(pdf, Calibration()) is pdf
    old = ArtifactMeta(model=ModelConfig(n_bins=20), bands=["g"], size_px=16, pixel_scale=1.0)
    record = json.loads(old.model_dump_json())
    del record["calibration"]  # model.json as an older raycat wrote it
    assert ArtifactMeta.model_validate(record).calibration == Calibration()
    assert 1.0 in TEMPERATURES  # the fit can always choose no change


def _artifact(root, calibration: Calibration) -> str:
    from raycat.photoz.model import ArtifactMeta, build_model, save_artifact

    cfg = ModelConfig(arch="tiny", n_bins=20, z_max=1.0)
    meta = ArtifactMeta(
        model=cfg,
        bands=["a", "b", "c"],
        band_surveys={"a": "x", "b": "y", "c": "x"},
        size_px=16,
        pixel_scale=1.0,
        calibration=calibration,
    )
    torch.manual_seed(0)
    save_artifact(build_model(cfg, 3), str(root), meta)
    return str(root)


def test_the_predictor_applies_the_stored_calibration_and_attributions_explain_it(tmp_path):
    from raycat.photoz.infer import Predictor
    from raycat.photoz.model import read_artifact_meta
    from raycat.photoz.pdf import bin_centres

    calibration = Calibration(
        class_weights=np.linspace(0.2, 5, 20).tolist(),
        temperature=1.7,
        pit_map=np.linspace(0, 1, 11).round(3).tolist(),
    )
    path = _artifact(tmp_path / "model", calibration)
    assert read_artifact_meta(path).calibration == calibration  # stored in model.json
    predictor = Predictor(InferConfig(model=path, attributions="bands"))
    cube = np.random.default_rng(5).normal(size=(6, 3, 16, 16)).astype(np.float32)
    cube[3] = 0.0  # no pixels: no prediction
    out = predictor(
        {schema.CUBE: cube, schema.FLAGS: np.zeros(6, np.int32), schema.ID: np.arange(6)}
    )
    with torch.inference_mode():
        raw = torch.softmax(predictor.model(torch.from_numpy(cube)), dim=1)
    expected = calibrate_pdfs(raw, calibration).numpy()
    usable = [0, 1, 2, 4, 5]
    np.testing.assert_allclose(out[schema.PDF][usable], expected[usable], atol=1e-6)
    assert np.abs(out[schema.PDF][usable] - raw.numpy()[usable]).max() > 1e-3
    assert np.isnan(out[schema.PDF][3]).all()
    z_mean = out[schema.PDF][usable] @ bin_centres(predictor.meta.bin_edges)
    total = out[schema.ATTR_BASELINE] + sum(out[f"attr_{b}"] for b in "abc")
    np.testing.assert_allclose(total[usable], z_mean, atol=1e-4)


@pytest.mark.parametrize("tta", ["none", "dihedral"])
def test_the_catalog_metadata_records_the_calibration_applied(tmp_path, tta):
    from raycat.catalog.info import META_CALIBRATION, CatalogInfo, schema_for_artifact
    from raycat.photoz.model import read_artifact_meta

    calibration = Calibration(class_weights=[1.0] * 20, temperature=1.5, validation_objects=9)
    meta = read_artifact_meta(_artifact(tmp_path / "model", calibration))
    arrow_schema = schema_for_artifact(meta, tta=tta)
    recorded = json.loads(arrow_schema.metadata[META_CALIBRATION])
    assert recorded["steps"] == ["prior", "temperature"] and recorded["temperature"] == 1.5
    assert recorded["tta"] == tta and recorded["validation_objects"] == 9
    assert CatalogInfo.from_schema(arrow_schema).calibration == recorded
    older = arrow_schema.with_metadata(
        {k: v for k, v in arrow_schema.metadata.items() if k != META_CALIBRATION}
    )
    assert CatalogInfo.from_schema(older).calibration is None


def _worker(rank: int, world: int, init: str, out: str) -> None:
    """One of two gloo workers: its half of the validation objects, then all_reduce."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        logits, z = _overconfident(600, np.random.default_rng(7))
        sums = CalibrationSums.zeros()
        sums.add(logits[rank::world], z[rank::world], torch.tensor(EDGES), [1.0] * 20)
        calibration, _ = sums.all_reduce().fit([1.0] * 20)
        with open(f"{out}.{rank}", "w") as f:
            f.write(calibration.model_dump_json())
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes importing torch
def test_workers_all_reduce_to_the_fit_of_every_object(tmp_path):
    """Two torch.distributed workers (as Ray Train runs them) fit what one would on all."""
    import torch.multiprocessing as mp

    out = str(tmp_path / "fit")
    mp.spawn(_worker, args=(2, f"file://{tmp_path}/rendezvous", out), nprocs=2)
    logits, z = _overconfident(600, np.random.default_rng(7))
    one = CalibrationSums.zeros()
    one.add(logits, z, torch.tensor(EDGES), [1.0] * 20)
    expected, _ = one.fit([1.0] * 20)
    for rank in (0, 1):
        fitted = Calibration.model_validate_json(Path(f"{out}.{rank}").read_text())
        assert fitted.validation_objects == 600
        assert fitted.temperature == expected.temperature
        np.testing.assert_allclose(fitted.pit_map, expected.pit_map)
