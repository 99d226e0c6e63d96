"""Shared by the science benchmarks (science.py, finetune.py): mock skies cached between runs,
training on the first N training objects, and held-out scores of a model and of the
catalog-photometry baseline on a sky the model never saw.

Held-out objects come from a separate mock sky (another seed): the validation split of the
training sky is what recalibration is fitted on, so scoring on it would flatter the PDFs.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from raycat import schema
from raycat.config import RaycatConfig, parse_config
from raycat.pipeline import log

SKY_RECORD = "_bench_sky.json"  # what a cached sky was simulated with


def cached_sky(out: Path, n_galaxies: int, seed: int, **options) -> Path:
    """A mock sky at ``out``, simulated unless ``out`` already holds one made with the same
    arguments (a second run of a benchmark skips the minutes of simulation)."""
    from raycat.sky.simulate import simulate_sky

    wanted = {"n_galaxies": n_galaxies, "seed": seed, **options}
    record = out / SKY_RECORD
    if record.is_file() and json.loads(record.read_text()) == wanted:
        log(f"reusing the mock sky in {out}")
        return out
    started = time.perf_counter()
    simulate_sky(str(out), n_galaxies=n_galaxies, seed=seed, progress=False, **options)
    record.write_text(json.dumps(wanted))
    log(f"simulated {n_galaxies} galaxies in {time.perf_counter() - started:.0f} s -> {out}")
    return out


def sky_config(sky: Path, work: Path, epochs: int, arch: str, **train) -> RaycatConfig:
    """The demo's model and training settings on ``sky``; cutouts, runs and model in ``work``."""
    return parse_config(
        {
            "data": {"store": str(sky), "objects": schema.TRUTH_FILE},
            "cutouts": {"output": str(sky.parent / f"{sky.name}-cutouts"), "objects_per_unit": 500},
            "model": {"arch": arch, "stem": "imagenet", "n_bins": 100, "dropout": 0.2},
            "train": {
                "epochs": epochs,
                "batch_size": 64,
                "lr": 2e-3,
                "storage_path": str(work / "runs"),
                "model_out": str(work / "model"),
                "run_name": "bench",
                **train,
            },
            "infer": {"model": str(work / "model"), "catalog": str(work / "catalog")},
            "ray": {"num_cpus": 2},
        }
    )


def cutouts(cfg: RaycatConfig):
    """The sky's materialised cutouts (cut once, reused by later runs), as a Ray dataset."""
    from raycat.pipeline import materialise_cutouts, read_materialised
    from raycat.plan.fingerprint import reusable_plan

    if reusable_plan(cfg) is None:
        materialise_cutouts(cfg)
    return read_materialised(cfg)[1]()


@dataclass
class Rows:
    """Cutout rows held in memory (a benchmark's few thousand objects, never a survey)."""

    ids: np.ndarray
    cube: np.ndarray
    flags: np.ndarray
    z: np.ndarray

    def take(self, keep: np.ndarray) -> Rows:
        return Rows(self.ids[keep], self.cube[keep], self.flags[keep], self.z[keep])


def read_rows(cfg: RaycatConfig) -> Rows:
    """Every cutout row of the sky with a true redshift."""
    columns = [schema.ID, schema.CUBE, schema.FLAGS, schema.Z_SPEC]
    parts = [
        [np.asarray(b[c]) for c in columns]
        for b in cutouts(cfg).select_columns(columns).iter_batches(batch_format="numpy")
    ]
    rows = Rows(*(np.concatenate(column) for column in zip(*parts)))
    return rows.take(np.isfinite(rows.z))


def training_ids(cfg: RaycatConfig, rows: Rows, n: int) -> np.ndarray:
    """The first ``n`` usable training objects of ``rows`` in a fixed pseudo-random order (by
    id hash), so a larger training set holds every object of a smaller one."""
    from raycat.photoz.train import is_validation, usable_for_training
    from raycat.plan.idhash import id_keys

    usable = usable_for_training({schema.Z_SPEC: rows.z, schema.FLAGS: rows.flags})
    usable &= ~is_validation(rows.ids, cfg.train.val_fraction, cfg.train.seed)
    ids = rows.ids[usable]
    order = np.argsort(id_keys(ids) * np.uint64(0x9E3779B97F4A7C15), kind="stable")
    if n > len(ids):
        raise SystemExit(f"the sky has {len(ids)} usable training objects, fewer than {n}")
    return ids[order[:n]]


def _keep_ids(batch: dict, ids: np.ndarray, fraction: float, seed: int) -> dict:
    from raycat.photoz.train import is_validation

    keep = np.isin(batch[schema.ID], ids) | is_validation(batch[schema.ID], fraction, seed)
    return {k: np.asarray(v)[keep] for k, v in batch.items()}


def train_on(cfg: RaycatConfig, ids: np.ndarray) -> float:
    """Train ``cfg``'s model on the objects ``ids`` (the validation split kept for validation
    and recalibration); returns the training seconds."""
    from raycat.photoz.train import fit

    subset = cutouts(cfg).map_batches(
        _keep_ids,
        batch_format="numpy",
        fn_kwargs={"ids": ids, "fraction": cfg.train.val_fraction, "seed": cfg.train.seed},
    )
    started = time.perf_counter()
    fit(cfg, subset)
    return time.perf_counter() - started


def model_scores(cfg: RaycatConfig, held_out: Rows, batch: int = 256) -> dict[str, float]:
    """NMAD, outlier rate and PIT KS of the catalog's PDFs (the Predictor's, calibration and
    all) for ``held_out``, with z_mean as the point estimate."""
    from raycat.photoz.infer import Predictor
    from raycat.photoz.pdf import bin_edges, pit

    predictor = Predictor(cfg.infer)
    pdfs = [
        predictor({schema.ID: ids, schema.CUBE: cube, schema.FLAGS: flags})[schema.PDF]
        for ids, cube, flags in _chunks(held_out, batch)
    ]
    pdf = np.concatenate(pdfs).astype(np.float64)
    edges = bin_edges(cfg.model.z_min, cfg.model.z_max, cfg.model.n_bins)
    return _scores(pdf @ ((edges[1:] + edges[:-1]) / 2), held_out.z, pit(pdf, edges, held_out.z))


def _chunks(rows: Rows, size: int):
    for start in range(0, len(rows.ids), size):
        part = slice(start, start + size)
        yield rows.ids[part], rows.cube[part], rows.flags[part]


def _scores(z_phot: np.ndarray, z_true: np.ndarray, pits: np.ndarray | None) -> dict[str, float]:
    from raycat.photoz.pdf import nmad, outlier_fraction, pit_ks

    used = np.isfinite(z_phot)
    return {
        "nmad": nmad(z_phot[used], z_true[used]),
        "outliers": outlier_fraction(z_phot[used], z_true[used], 0.15),
        "pit_ks": pit_ks(pits[used]) if pits is not None else float("nan"),
        "n": int(used.sum()),
    }


def baseline_scores(cfg: RaycatConfig, train: Rows, held_out: Rows) -> dict[str, float]:
    """The catalog-photometry baseline (aperture fluxes -> gradient boosting) trained on
    ``train`` and scored on ``held_out``: point estimates only, so no PIT."""
    from raycat.quality.baseline import cube_features, fit_baseline, predict_baseline
    from raycat.surveys.bands import softenings

    soft = softenings(cfg.cutouts)
    model = fit_baseline(cube_features(train.cube, soft), train.z, seed=cfg.train.seed)
    return _scores(predict_baseline(model, cube_features(held_out.cube, soft)), held_out.z, None)


def table(rows: list[dict], columns: list[str]) -> str:
    """A plain-text table of ``rows`` (figures to 4 significant digits)."""
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def _cell(value) -> str:
    if isinstance(value, float):
        return "n/a" if np.isnan(value) else f"{value:.4g}"
    return "" if value is None else str(value)
