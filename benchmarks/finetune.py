"""Sim-to-real: a model trained on the simulation, applied to a shifted sky zero-shot, trained
from scratch on N shifted objects, and fine-tuned from the simulation model on the same N.

The shifted domain (`raycat simulate --domain shifted`: other PSFs and depths, another SED
mix, Milky Way extinction) plays the real sky. Every model is scored on a held-out shifted
sky of another seed: NMAD, outlier rate (|dz|/(1+z) > 0.15) and PIT KS of the catalog's
PDFs (the Predictor's, calibration and all). Fine-tuning should beat both other rows at
each N: the simulation taught the network what galaxies look like, the N real objects how
this survey renders them.

    python benchmarks/finetune.py --epochs 10   # about 45 min on 2 cores: docs/real_data.md
    python benchmarks/finetune.py --sim-galaxies 600 --sizes 100 --epochs 2 --arch tiny

Skies, cutouts and the simulation model are cached under ``--workdir`` between runs.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from photoz_bench import (
    cached_sky,
    model_scores,
    read_rows,
    sky_config,
    table,
    train_on,
    training_ids,
)

from raycat.runtime import ray_session

SHIFTED = "shifted"
COLUMNS = ["n_shifted", "model", "nmad", "outliers", "pit_ks", "n", "train_s"]


def main() -> None:
    args = _arguments()
    root = Path(args.workdir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    sim = sky_config(
        cached_sky(root / "sim-sky", args.sim_galaxies, seed=21),
        root / "sim",
        args.epochs,
        args.arch,
    )
    n_shifted = math.ceil(max(args.sizes) / (1 - sim.train.val_fraction) * 1.05)
    shifted_sky = cached_sky(root / "shifted-sky", n_shifted, seed=22, domain=SHIFTED)
    held_sky = cached_sky(root / "shifted-held-out", args.held_out, seed=23, domain=SHIFTED)
    results = []
    with ray_session(sim.ray):
        held_out = read_rows(sky_config(held_sky, root / "sim", args.epochs, args.arch))
        if not (root / "sim" / "model").is_dir():
            sim_rows = read_rows(sim)
            train_on(sim, training_ids(sim, sim_rows, args.sim_train))
        zero_shot = model_scores(sim, held_out)
        results.append({"n_shifted": 0, "model": "simulation, zero-shot", **zero_shot})
        print(table(results, COLUMNS), flush=True)
        for n in sorted(args.sizes):
            for name, train in _variants(root, args, n):
                out = root / f"{name}-{n}".replace(" ", "_").replace(",", "")  # one per setting
                cfg = sky_config(shifted_sky, out, args.epochs, args.arch, **train)
                seconds = train_on(cfg, training_ids(cfg, read_rows(cfg), n))
                row = {"n_shifted": n, "model": name, **model_scores(cfg, held_out)}
                results.append({**row, "train_s": round(seconds)})
                print(table(results[-1:], COLUMNS), flush=True)
    print(f"\nshifted sky, held out ({args.arch}, {args.epochs} epochs)")
    print(table(results, COLUMNS))


def _variants(root: Path, args: argparse.Namespace, n: int):
    """(name, train settings) of the models trained on the N shifted objects: from scratch
    and fine-tuned, or only the second with ``--fine-tuned-only`` (another freeze or rate
    beside an earlier run: the workdir's skies and simulation model are reused)."""
    if not args.fine_tuned_only:
        yield "from scratch", {}
    yield (
        f"fine-tuned, freeze {args.freeze}, lr {args.finetune_lr:g}",
        {
            "init_from": str(root / "sim" / "model"),
            "freeze": args.freeze,
            "finetune_lr": args.finetune_lr,
        },
    )


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sim-galaxies", type=int, default=5500, help="simulation sky size")
    parser.add_argument("--sim-train", type=int, default=4500, help="its training objects")
    parser.add_argument("--sizes", type=int, nargs="+", default=[300, 1000])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--held-out", type=int, default=2000, help="galaxies of the held-out sky")
    parser.add_argument("--freeze", default="stem", help="train.freeze when fine-tuning")
    parser.add_argument("--finetune-lr", type=float, default=5e-4)
    parser.add_argument("--fine-tuned-only", action="store_true", help="skip from-scratch")
    parser.add_argument("--arch", default="resnet50", choices=["resnet50", "tiny"])
    parser.add_argument("--workdir", default="bench-finetune", help="skies and models, cached")
    return parser.parse_args()


if __name__ == "__main__":
    main()
