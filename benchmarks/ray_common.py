"""Shared by the Ray benchmarks: a mock sky, a demo-like config, and peak memory of a Ray
session (the driver plus every process it started: raylet, GCS, workers), as PSS."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

from raycat.config import RaycatConfig, parse_config

SKY_CACHE = Path(os.environ.get("RAYCAT_BENCH_CACHE", Path.home() / ".cache" / "raycat-bench"))


def cached_sky(n_galaxies: int, seed: int = 7) -> Path:
    """A mock sky of ``n_galaxies`` under ``SKY_CACHE``, simulated on first use only (a
    100k-object sky takes minutes: benchmarks and their repeats share one). Simulated into a
    scratch directory and renamed, so an interrupted run never leaves half a sky."""
    path = SKY_CACHE / f"sky-{n_galaxies}-seed{seed}"
    if path.is_dir():
        return path
    SKY_CACHE.mkdir(parents=True, exist_ok=True)
    # one simulation per sky: a second benchmark asking for it waits for the first
    with open(SKY_CACHE / f"{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return path if path.is_dir() else _simulate_into(path, n_galaxies, seed)


def _simulate_into(path: Path, n_galaxies: int, seed: int) -> Path:
    from raycat.sky.simulate import simulate_sky

    scratch = Path(tempfile.mkdtemp(prefix=path.name + ".", dir=SKY_CACHE))
    # more than 2 cores (a GPU node): tiles drawn in Ray tasks on all of them
    on_ray = bench_cpus() > 2
    sky = simulate_sky(
        str(scratch / "sky"), n_galaxies=n_galaxies, seed=seed, progress=False, on_ray=on_ray
    )
    print(f"mock sky of {n_galaxies} galaxies in {sky.seconds:.0f} s -> {path}", flush=True)
    (scratch / "sky").rename(path)
    shutil.rmtree(scratch, ignore_errors=True)
    return path


@contextlib.contextmanager
def sky_workspace(n_galaxies: int):
    """A temporary directory whose ``sky/`` is the cached mock sky (read only: catalogs,
    models and cutouts go beside it); yields its path."""
    sky = cached_sky(n_galaxies)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "sky").symlink_to(sky, target_is_directory=True)
        yield root


def demo_like_config(root: Path, **sections) -> RaycatConfig:
    """The demo's model and cutout settings, with files under ``root``."""
    base = {
        "data": {"store": str(root / "sky")},
        "cutouts": {"objects_per_unit": 500},
        "model": {"arch": "resnet50", "stem": "imagenet", "n_bins": 100},
        "train": {
            "batch_size": 64,
            "storage_path": str(root / "runs"),
            "model_out": str(root / "model"),
            "run_name": "bench",
        },
        "infer": {
            "model": str(root / "model"),
            "catalog": str(root / "catalog"),
            "mode": "overwrite",
            "batch_size": 256,
        },
        "ray": {"num_cpus": bench_cpus()},
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return parse_config(base)


def bench_cpus() -> int:
    """Ray's CPUs for a benchmark: ``RAYCAT_BENCH_CPUS``, default 2 (the figures in
    docs/scale.md are for 2 cores; a GPU node gives the cutout actors its other cores)."""
    return int(os.environ.get("RAYCAT_BENCH_CPUS", "2"))


def gpu_sections() -> dict:
    """Config sections for a run on one GPU: the Predictor there with whole 1024-row batches,
    the cutout actors on the cores left (one is the driver's, a quarter the Predictor's)."""
    cpus = bench_cpus()
    return {
        "infer": {"use_gpu": True, "batch_size": 1024},
        "cutouts": {"actors": max(1, cpus - 2)},
        "ray": {"num_cpus": cpus},
    }


class _Identity:
    def __call__(self, batch):
        return batch


def warm_ray_data() -> float:
    """Run a one-row dataset through a one-actor pool; returns the seconds it took.

    The first Ray Data job on a cluster starts Ray Data's helper actors (stats, autoscaling
    coordinator, actor-location tracker): detached, so they live as long as the cluster.
    ``make demo`` has started them by the time it infers (cutouts and training ran first),
    and so has any job after the first on a running cluster; a benchmark of one stage
    starts them beforehand, and reports that one-off cost, so its timer holds the stage.
    """
    import ray.data

    started = time.perf_counter()
    ray.data.range(1).map_batches(
        _Identity, compute=ray.data.ActorPoolStrategy(size=1), num_cpus=0.1
    ).materialize()
    return time.perf_counter() - started


def save_random_model(cfg: RaycatConfig) -> None:
    """A model artifact with random weights (speed does not depend on them)."""
    from raycat.photoz.model import ArtifactMeta, build_model, save_artifact

    model = build_model(cfg.model, len(cfg.cutouts.bands))
    save_artifact(model, cfg.infer.model, ArtifactMeta.from_config(cfg))


BIG = 128 * 2**20  # PSS above which a process's object-store pages are counted (smaps: slow)


def outside_object_store(proc, pss: int) -> int:
    """A process's PSS (``pss``) less its mappings of Ray's object store (``/dev/shm/plasma*``,
    or the plasma file of a fallback directory): memory the process itself holds, where the
    store's pages (shared, bounded by the store's size, spilled when full) are left out.
    Processes under ``BIG`` are taken whole: reading smaps is slow."""
    if pss <= BIG:
        return pss
    return pss - sum(m.pss for m in proc.memory_maps(grouped=True) if "plasma" in m.path)


class PeakTreeMemory:
    """Samples the summed PSS of this process and all its descendants every 0.5 s.

    PSS (proportional set size) splits each shared page between the processes that map it,
    so Ray's shared-memory object store is counted once, not once per worker that reads it
    (a sum of RSS counts it again in every process: several GiB too much here).

    Reading PSS walks each process's page tables, which is not free: sampled every 0.2 s at
    normal priority it took half the driver's CPU and ~5% of the inference rate on 2 cores
    (335 against 354 objects/s end to end). The sampler runs at the lowest priority, so a
    busy machine delays a sample rather than the work being measured.
    """

    def __enter__(self):
        import psutil

        self.peak, self._stop = 0, threading.Event()
        me = psutil.Process()

        def sample():
            with contextlib.suppress(OSError):  # Linux: a thread's own nice value
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
            while not self._stop.is_set():
                total = 0
                for proc in [me, *me.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        total += proc.memory_full_info().pss
                self.peak = max(self.peak, total)
                time.sleep(0.5)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def mib(self) -> float:
        return self.peak / 2**20
