"""Memory against scale (a script, not a test): does a process's peak memory stay flat as
the object count grows?

For each size (default 10k, 30k, 100k objects) it runs, each in a fresh Python process with
its own local Ray session:
``cutouts`` (``materialise_cutouts``: plan, cutout actors, Parquet parts) and ``infer``
(``run_infer`` streaming from the tiles: plan, cutout actors, Predictor, catalog sink). A
sampler reads the PSS of the driver and of every Ray process every 0.25 s and keeps, per
process type (driver, cutout actor, Predictor, sink, other Ray workers, Ray's own daemons),
the peak of any one process of that type. PSS counts shared pages once (Ray's object store
is shared memory); a type's "own" row leaves out the object-store pages its processes map
(blocks in flight, bounded by the store, not by the sky). The mock skies are simulated once
and cached (``ray_common.cached_sky``: 100k objects take about 40 minutes on 2 cores).

Every size plans on Ray, the path of a large sky: raycat plans an object list under
``DRIVER_PLAN_MAX_BYTES`` (16 MiB: the 10k and 30k skies, not the 100k one) in the driver
instead, and comparing the two paths compared different processes. A Ray worker takes the
type of the first task it is seen running (between tasks its title says IDLE, and it keeps
the memory of the work it did).

Prints a table per stage: peak MiB per process type at each size, the ratio of the largest
size to the smallest (target <= 1.2x) and that of the two largest sizes: a bounded cache or
queue that the smallest sky does not fill raises the first ratio, not the second.

Usage: ``python benchmarks/memory_scale.py [N ...]`` (default 10000 30000 100000).
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from ray_common import demo_like_config, outside_object_store, save_random_model, sky_workspace

SIZES = (10_000, 30_000, 100_000)
STAGES = ("cutouts", "infer")
# process type -> what its command line (Ray's process title) holds, first match wins
TYPES = (
    ("cutout actor", ("CutoutActor",)),
    ("predictor", ("Predictor",)),
    ("sink", ("PartitionSink",)),
    ("Ray Data stats actor", ("_StatsActor",)),  # one per cluster: Ray Data's run statistics
    # the planning tasks: list and read the objects, exchanges, the planned rows' blocks
    ("planning workers", ("ListFiles", "_canonical", "_reduce_share", "Repartition", "Read")),
    (OTHER := "other Ray workers", ("ray::",)),
    # raylet, gcs_server and log agents; also a worker process in its first instants, before
    # it takes its "ray::" title (so a type is never kept for these)
    (DAEMONS := "Ray daemons", ("/ray/",)),
)


def process_type(cmdline: str) -> str | None:
    """The type of a Ray session's process from its command line; None for others."""
    return next((name for name, marks in TYPES if any(m in cmdline for m in marks)), None)


class PeakByType:
    """The peak PSS of any one process of each type, sampled while the block runs."""

    def __init__(self, every: float = 0.25):
        self.every, self.peak = every, {}
        self.kinds: dict[int, str] = {}  # a worker's type: that of its first task

    def __enter__(self):
        import psutil

        me, self._stop = psutil.Process(), threading.Event()

        def sample() -> None:
            while not self._stop.is_set():
                self._note("driver", me)
                for proc in me.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        kind = self._kind(proc.pid, " ".join(proc.cmdline()))
                        if kind:
                            self._note(kind, proc)
                time.sleep(self.every)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def _kind(self, pid: int, cmdline: str) -> str | None:
        kind = process_type(cmdline)
        if kind == OTHER:  # an idle worker, or a task of no type: a typed one's first
            return self.kinds.get(pid, kind)
        if kind not in (None, DAEMONS):
            self.kinds.setdefault(pid, kind)
        return kind

    def _note(self, kind: str, proc) -> None:
        import psutil

        with contextlib.suppress(psutil.Error):
            pss = proc.memory_full_info().pss
            own = outside_object_store(proc, pss)
            for name, value in ((kind, pss), (f"{kind}, own", own)):
                self.peak[name] = max(self.peak.get(name, 0), value)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def measure(n: int, stage: str) -> dict[str, float]:
    """{process type: peak MiB} of one stage on a sky of ``n`` objects (in this process)."""
    import raycat.plan.manifest
    from raycat.pipeline import materialise_cutouts, run_infer
    from raycat.runtime import ray_session

    raycat.plan.manifest.DRIVER_PLAN_MAX_BYTES = 0  # plan on Ray at every size (docstring)

    with sky_workspace(n) as root:
        # infer streams from the tiles (no cutouts.output), as a production run does
        output = {"output": str(root / "cutouts")} if stage == "cutouts" else {}
        cfg = demo_like_config(root, cutouts=output)
        if stage == "infer":
            save_random_model(cfg)
        with ray_session(cfg.ray), PeakByType() as memory:
            started = time.perf_counter()
            materialise_cutouts(cfg) if stage == "cutouts" else run_infer(cfg)
            seconds = time.perf_counter() - started
    peaks = {k: v / 2**20 for k, v in memory.peak.items()}
    print(f"{n} objects, {stage}: {seconds:.0f} s, peak PSS (MiB) {_row(peaks)}", flush=True)
    return peaks


def measure_fresh(n: int, stage: str) -> dict[str, float]:
    """``measure`` in a fresh Python process: a driver that ran a smaller size or another
    stage before keeps their imports and caches, and would not be measured alone."""
    import json
    import subprocess

    command = [sys.executable, __file__, "--one", str(n), stage]
    out = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True).stdout
    *lines, last = out.strip().splitlines()  # its summary line, then the JSON
    print("\n".join(lines), flush=True)
    return json.loads(last)


def _row(peaks: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.0f}" for k, v in sorted(peaks.items()))


def report(results: dict[int, dict[str, dict[str, float]]]) -> None:
    sizes = sorted(results)
    for stage in STAGES:
        kinds = sorted({k for n in sizes for k in results[n][stage]})
        print(f"\n{stage}: peak PSS per process (MiB)")
        print(
            f"{'process':20s}"
            + "".join(f"{n:>10d}" for n in sizes)
            + "  largest/smallest  two largest"
        )
        for kind in kinds:
            values = [results[n][stage].get(kind, float("nan")) for n in sizes]
            ratio = _ratio(values[-1], values[0])
            top = _ratio(values[-1], values[-2]) if len(values) > 1 else 1.0
            flag = "" if ratio <= 1.2 else "  (over 1.2x)"
            print(
                f"{kind:20s}"
                + "".join(f"{v:10.0f}" for v in values)
                + f"  {ratio:15.2f}x  {top:10.2f}x{flag}"
            )


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def main(sizes) -> None:
    results = {n: {stage: measure_fresh(n, stage) for stage in STAGES} for n in sizes}
    report(results)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:  # a child of measure_fresh: one size, one stage
        import json

        print(json.dumps(measure(int(sys.argv[2]), sys.argv[3])))
    else:
        main([int(a) for a in sys.argv[1:]] or SIZES)
