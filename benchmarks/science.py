"""A learning curve: the CNN on cutouts against catalog photometry, by training-set size.

For each size (default 2k, 5k, 10k training galaxies) the production model (ResNet50, the
demo's settings) trains for ``--epochs`` on the first N training objects of one mock sky, and
is scored on a second mock sky it never saw (another seed): held-out NMAD, outlier rate
(|dz|/(1+z) > 0.15) and PIT KS of the catalog's PDFs. The catalog-photometry baseline
(aperture fluxes -> gradient boosting, the demo's) trains on the same N objects and is scored
on the same held-out ones; it gives point estimates only, so no PIT.

Images carry what catalog photometry lacks (morphology, blending, neighbours): the ratio
column says whether, and from which size, the CNN uses it.

    python benchmarks/science.py --epochs 8   # 49 min on 2 cores: docs/evaluate.md
    python benchmarks/science.py --sizes 300 --epochs 2 --held-out 300 --arch tiny  # a check

Skies and cutouts are cached under ``--workdir`` between runs.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from photoz_bench import (
    baseline_scores,
    cached_sky,
    model_scores,
    read_rows,
    sky_config,
    table,
    train_on,
    training_ids,
)

from raycat.runtime import ray_session

COLUMNS = ["n_train", "model", "nmad", "outliers", "pit_ks", "n", "nmad_vs_photometry", "train_s"]


def main() -> None:
    args = _arguments()
    root = Path(args.workdir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    # the training sky holds the largest training set beside its validation split
    cfg = sky_config(root / "sky", root / "model", args.epochs, args.arch)
    n_sky = math.ceil(max(args.sizes) / (1 - cfg.train.val_fraction) * 1.05)  # + unusable
    cached_sky(root / "sky", n_sky, seed=11)
    cached_sky(root / "held-out-sky", args.held_out, seed=12)
    held_cfg = sky_config(root / "held-out-sky", root / "model", args.epochs, args.arch)
    results = []
    with ray_session(cfg.ray):
        rows, held_out = read_rows(cfg), read_rows(held_cfg)
        for n in sorted(args.sizes):
            # a run and model of its own per size: one run name would resume the last size's
            # finished run (its identity is the plan's, not the subset's) and train nothing
            sized = sky_config(root / "sky", root / f"model-{n}", args.epochs, args.arch)
            ids = training_ids(sized, rows, n)
            seconds = train_on(sized, ids)
            cnn = model_scores(sized, held_out)
            photometry = baseline_scores(cfg, rows.take(np.isin(rows.ids, ids)), held_out)
            results += [
                {
                    "n_train": n,
                    "model": "cnn",
                    **cnn,
                    "train_s": round(seconds),
                    "nmad_vs_photometry": cnn["nmad"] / photometry["nmad"],
                },
                {"n_train": n, "model": "photometry", **photometry},
            ]
            print(table(results[-2:], COLUMNS), flush=True)
    print(f"\nlearning curve ({args.arch}, {args.epochs} epochs; held out: a sky of another seed)")
    print(table(results, COLUMNS))


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 5000, 10000])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--held-out", type=int, default=2000, help="galaxies of the held-out sky")
    parser.add_argument("--arch", default="resnet50", choices=["resnet50", "tiny"])
    parser.add_argument("--workdir", default="bench-science", help="skies and models, cached")
    return parser.parse_args()


if __name__ == "__main__":
    main()
