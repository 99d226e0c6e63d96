"""`raycat demo`: the whole chain on an embedded local Ray and a small mock sky.

simulate -> cutouts -> train (validation objects held out) -> infer every object -> HATS
catalog -> metrics and plots on the held-out objects. Sized for a 2-core laptop.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import yaml

from raycat import schema
from raycat.config import RaycatConfig, parse_config
from raycat.pipeline import log


def demo_config(workdir: Path, epochs: int) -> RaycatConfig:
    """A config for the demo: the production model at a laptop's scale."""
    return parse_config(
        {
            "data": {"store": str(workdir / "sky"), "objects": schema.TRUTH_FILE},
            "cutouts": {"output": str(workdir / "cutouts"), "objects_per_unit": 250},
            "model": {"arch": "resnet50", "stem": "imagenet", "n_bins": 100, "dropout": 0.2},
            "train": {
                "epochs": epochs,
                "batch_size": 64,
                "lr": 2e-3,
                "storage_path": str(workdir / "runs"),
                "model_out": str(workdir / "model"),
                "run_name": "demo",
            },
            "infer": {
                "model": str(workdir / "model"),
                "catalog": str(workdir / "catalog"),
                "mode": "overwrite",
                "batch_size": 256,
                "attributions": "surveys",
            },
            "ray": {"num_cpus": 2},
        }
    )


def held_out_truth(cfg: RaycatConfig, out: Path) -> Path:
    """The truth rows of the validation objects: the only ones the metrics may score."""
    import pandas as pd

    from raycat.photoz.train import is_validation

    truth = pd.read_parquet(Path(cfg.data.store) / schema.TRUTH_FILE)
    held = truth[is_validation(truth[schema.ID].to_numpy(), cfg.train.val_fraction, cfg.train.seed)]
    held.to_parquet(out)
    return out


def photometry_baseline(cfg: RaycatConfig) -> dict:
    """Catalog-photometry photo-z (aperture fluxes -> gradient boosting) on the same cutouts,
    trained on the CNN's training objects and scored on the same held-out ones."""
    from raycat.photoz.train import usable_for_training
    from raycat.pipeline import read_materialised
    from raycat.quality.baseline import baseline_metrics_from_features, features_from_batches
    from raycat.surveys.bands import softenings

    _, make = read_materialised(cfg)
    rows = make().select_columns([schema.ID, schema.CUBE, schema.Z_SPEC, schema.FLAGS])
    usable = (
        {k: v[usable_for_training(b)] for k, v in b.items()}
        for b in rows.iter_batches(batch_format="numpy", batch_size=512)
    )
    features, z, ids = features_from_batches(usable, softenings(cfg.cutouts))
    return baseline_metrics_from_features(features, z, ids, cfg.train.val_fraction, cfg.train.seed)


def run_demo(workdir: str, n_galaxies: int = 2000, epochs: int = 15, seed: int = 0) -> dict:
    """Run the whole chain into ``workdir``; returns the held-out metrics."""
    from raycat.pipeline import materialise_cutouts, read_materialised, run_infer, run_train
    from raycat.quality.report import build_report
    from raycat.runtime import ray_session
    from raycat.sky.simulate import simulate_sky

    started = time.perf_counter()
    root = Path(workdir).resolve()
    cfg = demo_config(root, epochs)
    for stale in ("cutouts", "runs", "model", "catalog", "report"):  # a demo starts afresh
        shutil.rmtree(root / stale, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    log(f"simulating {n_galaxies} galaxies -> {cfg.data.store}")
    print(simulate_sky(cfg.data.store, n_galaxies=n_galaxies, seed=seed), flush=True)
    with ray_session(cfg.ray):
        materialise_cutouts(cfg)
        train_metrics = run_train(cfg)
        run_infer(cfg)
        baseline = photometry_baseline(cfg)
        truth = held_out_truth(cfg, root / "heldout_truth.parquet")
        report, metrics = build_report(
            cfg.infer.catalog,
            str(truth),
            str(root / "report"),
            cutouts=read_materialised(cfg)[1](),
            model_url=cfg.infer.model,
            baseline=baseline,
            train_median_z=train_metrics["train_median_z"],
        )
    metrics["wall_seconds"] = round(time.perf_counter() - started, 1)
    metrics["report"] = report
    metrics.update({f"photometry_baseline_{k}": v for k, v in baseline.items() if k in COMPARED})
    _print_summary(metrics, cfg)
    return metrics


COMPARED = ("nmad", "bias_mean", "outlier_frac_0.05", "outlier_frac_0.15", "n_evaluated")


def _print_summary(metrics: dict, cfg: RaycatConfig) -> None:
    plots = metrics.pop("plots", {})
    print("held-out objects        CNN (cutouts)  photometry baseline  median redshift")
    for key in COMPARED[:-1]:
        base = metrics.get(f"baseline_{key}")
        print(
            f"  {key:20s}  {metrics[key]:13.4f}  {metrics[f'photometry_baseline_{key}']:19.4f}"
            f"  {'' if base is None else f'{base:15.4f}'}"
        )
    print(
        json.dumps(
            {k: v for k, v in metrics.items() if not isinstance(v, dict)}, indent=2, default=float
        )
    )
    print(f"catalog: {cfg.infer.catalog}")
    print(f"config:  {Path(cfg.data.store).parent / 'config.yaml'}")
    print(f"report:  {metrics['report']}")
    for path in plots.values():
        print(f"plot:    {path}")
