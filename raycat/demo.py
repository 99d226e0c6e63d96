"""`raycat demo`: the whole chain on an embedded local Ray and a small mock sky.

simulate -> cutouts -> train (validation objects held out) -> infer every object -> HATS
catalog -> metrics and plots on the held-out objects. Sized for a 2-core laptop.

The demo deletes only what it made: it claims its workdir with a marker file (a new or
empty directory), a rerun cleans only the entries it writes and only under its marker, and a
non-empty directory without the marker is refused, whatever it holds.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import yaml

from raycat import schema
from raycat.config import RaycatConfig, parse_config
from raycat.errors import RaycatError
from raycat.pipeline import log


def claim_workdir(root: Path) -> None:
    """Make ``root`` the demo's: create or claim it (marker file), or clean a previous demo's
    entries from it; a non-empty directory without the marker is refused, untouched."""
    marker = root / schema.DEMO_MARKER_FILE
    if root.exists() and not root.is_dir():
        raise RaycatError(f"demo workdir {root} is a file, not a directory")
    if root.is_dir() and not marker.exists() and any(root.iterdir()):
        raise RaycatError(
            f"demo workdir {root} is not empty and was not made by `raycat demo` (no "
            f"{schema.DEMO_MARKER_FILE} in it): give an empty or new --workdir"
        )
    for name in schema.DEMO_ENTRIES if marker.exists() else ():
        entry = root / name
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        elif entry.exists() or entry.is_symlink():
            entry.unlink()
    root.mkdir(parents=True, exist_ok=True)
    marker.write_text("made by `raycat demo`: a rerun deletes the demo's entries here\n")


def demo_config(workdir: Path, epochs: int) -> RaycatConfig:
    """A config for the demo: the production model at a laptop's scale."""
    return parse_config(
        {
            "data": {"store": str(workdir / schema.DEMO_SKY_DIR), "objects": schema.TRUTH_FILE},
            "cutouts": {
                "output": str(workdir / schema.DEMO_CUTOUTS_DIR),
                "objects_per_unit": 250,
            },
            "model": {"arch": "resnet50", "stem": "imagenet", "n_bins": 100, "dropout": 0.2},
            "train": {
                "epochs": epochs,
                "batch_size": 64,
                "lr": 2e-3,
                "storage_path": str(workdir / schema.DEMO_RUNS_DIR),
                "model_out": str(workdir / schema.DEMO_MODEL_DIR),
                "run_name": "demo",
            },
            "infer": {
                "model": str(workdir / schema.DEMO_MODEL_DIR),
                "catalog": str(workdir / schema.DEMO_CATALOG_DIR),
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
    claim_workdir(root)  # a demo starts afresh, deleting only what a demo made
    config_text = yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
    (root / schema.DEMO_CONFIG_FILE).write_text(config_text)
    log(f"simulating {n_galaxies} galaxies -> {cfg.data.store}")
    print(simulate_sky(cfg.data.store, n_galaxies=n_galaxies, seed=seed), flush=True)
    with ray_session(cfg.ray):
        materialise_cutouts(cfg)
        train_metrics = run_train(cfg)
        run_infer(cfg)
        baseline = photometry_baseline(cfg)
        truth = held_out_truth(cfg, root / schema.DEMO_HELD_OUT_FILE)
        report, metrics = build_report(
            cfg.infer.catalog,
            str(truth),
            str(root / schema.DEMO_REPORT_DIR),
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
    print(f"config:  {Path(cfg.data.store).parent / schema.DEMO_CONFIG_FILE}")
    print(f"report:  {metrics['report']}")
    for path in plots.values():
        print(f"plot:    {path}")
