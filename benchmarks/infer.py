"""Inference benchmark (a script, not a test): tiles -> catalog vs the model alone.

End to end: ``run_infer`` streams a mock sky's tiles through the manifest, the cutout
actors, the Predictor actor and the catalog sink (planning included). Model only: the same
Predictor on in-memory tensors, in a Ray task with the Predictor's CPU share (so the same
torch threads on the same device). The network has random weights: speed does not depend
on them. Prints objects/s for both, their ratio, and the peak memory (PSS) of the Ray session.
Ray Data's cluster-lifetime helper actors are started before the timer (see
``ray_common.warm_ray_data``); their one-off cost is printed beside the figures.

Usage: ``python benchmarks/infer.py [N_GALAXIES] [--gpu]`` (default 6000: about 4 minutes on
2 cores). ``--gpu``: the Predictor on one GPU (``infer.use_gpu``), both figures; the cutout
actors on the cores left (``RAYCAT_BENCH_CPUS``, default 2, sets Ray's CPUs).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from ray_common import (
    PeakTreeMemory,
    demo_like_config,
    gpu_sections,
    save_random_model,
    sky_workspace,
    warm_ray_data,
)


def model_only_rate(cfg, n: int) -> float:
    """Objects/s of the Predictor on in-memory cutouts, with the Predictor's CPU share (or
    its GPU)."""
    import ray

    gpu = cfg.infer.use_gpu
    share = {"num_gpus": 1, "num_cpus": 0.25} if gpu else {"num_cpus": cfg.infer.cpus_per_actor}

    @ray.remote(**share)
    def run() -> float:
        from raycat.photoz.infer import Predictor

        predictor = Predictor(cfg.infer)
        size, bands = cfg.cutouts.size_px, len(cfg.cutouts.bands)
        cubes = np.random.default_rng(0).normal(size=(n, bands, size, size)).astype(np.float32)
        predictor.predict(cubes[: cfg.infer.batch_size])  # warm up
        started = time.perf_counter()
        for start in range(0, n, cfg.infer.batch_size):
            predictor.predict(cubes[start : start + cfg.infer.batch_size])
        return n / (time.perf_counter() - started)

    return ray.get(run.remote())


def done_markers(cfg) -> list[Path]:
    """The catalog's done-markers, oldest first: one per partition, written as it lands."""
    from raycat import schema

    markers = Path(cfg.infer.catalog, schema.DONE_DIR).glob("*.done")
    return sorted(markers, key=lambda p: p.stat().st_mtime)


def steady_rate(markers: list[Path]) -> float:
    """Objects/s from the first partition written to the last (done-marker times): the
    streaming rate once the pipeline is full, without start-up (actors, model load) and
    planning. A figure beside the target's, not instead of it."""
    import json

    if len(markers) < 2:  # one partition: no first-to-last interval
        return float("nan")
    rows = sum(json.loads(p.read_text())["rows"] for p in markers[1:])
    return rows / (markers[-1].stat().st_mtime - markers[0].stat().st_mtime)


def main(n_galaxies: int, gpu: bool = False) -> None:
    from raycat.pipeline import run_infer
    from raycat.runtime import ray_session

    with sky_workspace(n_galaxies) as root:
        cfg = demo_like_config(root, **(gpu_sections() if gpu else {}))
        save_random_model(cfg)
        with ray_session(cfg.ray):
            helpers = warm_ray_data()
            with PeakTreeMemory() as memory:
                wall_start, started = time.time(), time.perf_counter()
                totals = run_infer(cfg)
                end_to_end = totals["rows"] / (time.perf_counter() - started)
            model_only = model_only_rate(cfg, min(totals["rows"], 6000))
        markers = done_markers(cfg)
        steady = steady_rate(markers)
        first = markers[0].stat().st_mtime - wall_start if markers else float("nan")
    print(
        f"Ray Data's cluster-lifetime helper actors started before the timer: {helpers:.1f} s "
        f"(once per cluster; in make demo by the cutout stage)"
    )
    print(
        f"end to end (tiles -> catalog, planning included): {end_to_end:7.1f} objects/s "
        f"over {totals['rows']} objects, {totals['partitions']} partitions"
    )
    print(
        f"  of which planning (read, tiles, duplicate check, unit sizes): "
        f"{totals['rows'] / end_to_end - totals['seconds']:.1f} s; streaming stage "
        f"(sort, cutouts, model, catalog writes): {totals['rows'] / totals['seconds']:7.1f} "
        f"objects/s"
    )
    print(f"  first partition written {first:.1f} s after the start (planning, actors' start-up)")
    print(f"model only (in-memory tensors, same CPU share):     {model_only:7.1f} objects/s")
    print(f"ratio end-to-end / model-only: {end_to_end / model_only:.2f} (target >= 0.8)")
    print(
        f"steady state (first to last partition written): {steady:7.1f} objects/s, "
        f"ratio {steady / model_only:.2f} to model-only"
    )
    print(f"peak memory (PSS) of the Ray session (driver + raylet + workers): {memory.mib:.0f} MiB")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--gpu"]
    main(int(args[0]) if args else 6000, gpu="--gpu" in sys.argv)
