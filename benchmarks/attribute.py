"""Attribution cost benchmark (a script, not a test): Shapley methods vs PDF-only inference.

For the tiny network and ResNet50 (imagenet stem, 100 bins, 9 bands, 32 px cutouts, random
weights: speed does not depend on them) it measures objects/s of PDF-only inference and of
each attribution method, side by side in one process, and prints each method's cost
relative to PDF-only (re-measured right before each method, as the load on a shared
machine drifts), the forward passes per object the method needs, and the process's
peak memory (ru_maxrss, a running peak). Object counts are sized from the measured
PDF-only rate so that each timed run takes about ``--seconds``; each rate is the best of
two runs after a warm-up.

Usage: ``python benchmarks/attribute.py [--seconds 4] [--archs tiny resnet50]``
(about 2-3 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import torch

from raycat.config import ModelConfig
from raycat.photoz.attribute import absent_baseline, players_for, shapley_exact, shapley_sampled
from raycat.photoz.forward import pdf_fn, z_mean_fn
from raycat.photoz.model import build_model
from raycat.photoz.pdf import bin_centres, bin_edges
from raycat.surveys.bands import BAND_NAMES

SIZE, N_BINS, MAX_BATCH = 32, 100, 256
BANDS = list(BAND_NAMES)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def methods(model: torch.nn.Module) -> dict[str, tuple[int, callable]]:
    """name -> (forward passes per object, run(x))."""
    f = z_mean_fn(model, bin_centres(bin_edges(0.0, 1.6, N_BINS)))
    pdf = pdf_fn(model)
    bands = players_for(BANDS, "bands")[1]
    surveys = players_for(BANDS, "surveys")[1]
    gen = torch.Generator().manual_seed(0)

    def sampled(m: int):
        return lambda x: shapley_sampled(f, x, bands, absent_baseline(x), m, gen, MAX_BATCH)

    return {
        "pdf-only": (1, lambda x: [pdf(c) for c in x.split(MAX_BATCH)]),
        "exact-surveys (P=3)": (
            8,
            lambda x: shapley_exact(f, x, surveys, absent_baseline(x), MAX_BATCH),
        ),
        "sampled-bands M=8": (8 * 8 + 2, sampled(8)),
        "sampled-bands M=16": (16 * 8 + 2, sampled(16)),
        "exact-bands (P=9)": (
            512,
            lambda x: shapley_exact(f, x, bands, absent_baseline(x), MAX_BATCH),
        ),
    }


def rate(run, n: int, repeats: int = 2) -> float:
    """Objects/s: best of ``repeats`` timed runs after a small warm-up (the machine is
    shared, so the best run is the least disturbed one)."""
    x = torch.randn(n, len(BANDS), SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    run(x[:2])
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run(x)
        best = min(best, time.perf_counter() - started)
    return n / best


def bench(arch: str, seconds: float) -> dict[str, float]:
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch, stem="imagenet", n_bins=N_BINS), len(BANDS))
    model.eval()
    table = methods(model)
    _, pdf_run = table["pdf-only"]
    base = rate(pdf_run, 64)
    print(
        f"\n{arch}: 9 bands, {SIZE} px, {N_BINS} bins, torch threads "
        f"{torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f} (ratios are "
        "noisy on a shared machine)"
    )
    print(
        f"  {'method':<22}{'passes/obj':>11}{'objects':>9}{'objects/s':>11}"
        f"{'cost x PDF':>12}{'peak RSS MiB':>14}"
    )
    results = {}
    pdf_n = max(64, min(4096, int(base * seconds / 2)))
    for name, (passes, run) in table.items():
        n = max(2, min(2048, int(base * seconds / passes)))
        pdf_rate = rate(pdf_run, pdf_n)  # re-measured beside each method: load drifts
        r = pdf_rate if name == "pdf-only" else rate(run, n)
        results[name] = pdf_rate / r
        print(
            f"  {name:<22}{passes:>11}{n:>9}{r:>11.1f}{pdf_rate / r:>12.1f}{peak_rss_mib():>14.0f}",
            flush=True,
        )
    return results


def suggest(costs: dict[str, dict[str, float]]) -> None:
    worst = costs.get("resnet50") or next(iter(costs.values()))
    print("\nsuggested defaults (from the ratios above):")
    print(
        f"  attributions=surveys, attribution_method=exact: ~{worst['exact-surveys (P=3)']:.0f}x "
        "the PDF-only cost, exact, cheap enough for a whole catalog."
    )
    print(
        f"  per-band maps: attribution_method=sampled, attribution_permutations=16 "
        f"(~{worst['sampled-bands M=16']:.0f}x) on a subset; exact bands cost "
        f"~{worst['exact-bands (P=9)']:.0f}x, for validation samples only."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, default=4.0, help="target time per method (sets object counts)"
    )
    parser.add_argument("--archs", nargs="+", default=["tiny", "resnet50"])
    args = parser.parse_args()
    costs = {arch: bench(arch, args.seconds) for arch in args.archs}
    suggest(costs)


if __name__ == "__main__":
    main()
