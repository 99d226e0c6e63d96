"""Planning at sky scale (a script, not a test): index build, dry-run planning, and memory.

Builds the computed tile index of the whole PS1 3pi (ps1_g..ps1_y) plus unWISE (W1, W2)
with ``raycat tiles``, and the same for a 100 deg2 box (RA 150:160, DEC -5:5); writes
synthetic object lists (``raycat.sky.objects``: a Galactic-latitude law with >= 30x density
contrast plus a deep cone), cached under ``--workdir``; then runs ``raycat plan --config``
(a dry run, each in a fresh driver process) for each index with a list of each size:

- full-sky index x full-sky list of N objects;
- 100 deg2 index x a list of the same N objects drawn from the same law inside the box.

Same N, a sky 400x larger: what must not grow is the memory of any process. Per run it
prints objects/s/core end to end (objects / wall of the subprocess / cores, from a run that
nothing samples), the peak PSS (from a second, sampled run) of the driver and of the
largest single other process (every process of the subprocess tree, sampled by pid, named
by its command line: ``ray::MapBatches(...)``, raylet, gcs_server), the partition size
spread and partitions by order; then the ratios measured in this run: peak memory 10 M vs
1 M objects, and full-sky vs 100 deg2 index.

Targets (issue 13): >= 100,000 objects/s/core at 10 M objects; every process's peak within
1.2x from the box to the full sky and from 1 M to 10 M objects; largest partition <= 2x
``objects_per_unit``.

Usage: ``python benchmarks/plan_scale.py [--sizes 1e6,1e7] [--quick] [--workdir DIR]``
(``--quick``: 100k objects and the box index only, about a minute).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).parent))
from ray_common import outside_object_store

from raycat import schema
from raycat.sky.objects import write_synthetic_objects

BOX = (150.0, 160.0, -5.0, 5.0)  # 100 deg2 around COSMOS (the lists' deep cone is inside)
SURVEYS = {
    "ps1": ["ps1_g", "ps1_r", "ps1_i", "ps1_z", "ps1_y"],
    "unwise": ["unwise_w1", "unwise_w2"],
}
OBJECTS_PER_UNIT = 2000
SEED = 13
ENV = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
SAMPLE_S = 0.25
IDLE = "ray::IDLE"

# --- object lists --------------------------------------------------------------------------


def object_list(workdir: Path, n: int, box: tuple | None) -> Path:
    """The synthetic list of ``n`` objects (full sky, or inside ``box``), written once and
    reused by later runs: written beside, then renamed into place, so a killed write is
    never taken for a finished list."""
    name = f"objects-{'box' if box else 'sky'}-{n}-seed{SEED}"
    final = workdir / "objects" / name
    if final.exists():
        print(f"object list {name}: cached", flush=True)
        return final
    partial = final.with_name(f".{name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    started = time.perf_counter()
    files = write_synthetic_objects(str(partial), n, SEED, rows_per_file=1_000_000, box=box)
    partial.rename(final)
    seconds = time.perf_counter() - started
    print(f"object list {name}: {len(files)} files in {seconds:.1f} s", flush=True)
    return final


# --- tile indexes ---------------------------------------------------------------------------


def tiles_cli_help() -> str:
    """``raycat tiles --help``, or "" while the command does not exist."""
    out = subprocess.run(
        [sys.executable, "-m", "raycat", "tiles", "--help"],
        capture_output=True,
        text=True,
        env=ENV,
    )
    return out.stdout if out.returncode == 0 else ""


def build_index(store: Path, name: str, box: tuple | None, append: bool) -> list[Path]:
    """Build PS1 and unWISE indexes under ``store``: into one index when ``raycat tiles``
    can append a survey to an index, else one index per survey. Prints time, rows, files."""
    dirs = []
    for i, (survey, bands) in enumerate(SURVEYS.items()):
        out = store / (name if append else f"{name}-{survey}")
        cmd = [sys.executable, "-m", "raycat", "tiles", "--survey", survey]
        cmd += ["--bands", ",".join(bands), "--uri-template", f"{survey}/{{tile}}/{{band}}.fits"]
        cmd += ["--out", str(out)]
        if box is not None:
            cmd += ["--region", "{}:{},{}:{}".format(*box)]
        if append and i > 0:
            cmd.append("--append")
        started = time.perf_counter()
        subprocess.run(cmd, check=True, env=ENV, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - started
        meta = json.loads((out / schema.TILE_INDEX_META_FILE).read_text())
        print(
            f"index {name} {survey}: {seconds:.1f} s, {meta['rows']:,} rows, "
            f"{meta['entries']:,} entries, {meta['files']:,} files, "
            f"{meta['bytes'] / 2**20:.1f} MiB",
            flush=True,
        )
        if out not in dirs:
            dirs.append(out)
    return dirs


# --- process-tree memory ---------------------------------------------------------------------


def process_label(proc) -> str:
    """A process's name from its command line: Ray workers set it (``ray::MapBatches(...)``,
    ``ray::IDLE``); for others the program, and the script or module of a Python one."""
    cmd = proc.cmdline()
    if not cmd:
        return proc.name()
    if cmd[0].startswith("ray::"):
        return " ".join(" ".join(cmd).split())[:80]  # Ray pads its process titles
    program = os.path.basename(cmd[0])
    if program.startswith("python") and len(cmd) > 1:
        rest = cmd[1:3] if cmd[1] == "-m" else cmd[1:2]
        return f"{program} {' '.join(os.path.basename(a) for a in rest)}"
    return program


@dataclass
class TreePeaks:
    """Peak PSS of each process of a process tree, sampled by pid every ``SAMPLE_S`` seconds
    (PSS counts a shared page once across the processes that map it: Ray's object store)."""

    root: int
    peak: dict[int, int] = field(default_factory=dict)
    # peak PSS outside Ray's object store: a worker maps the store's shared-memory pages it
    # wrote (the planned rows it returned) for as long as they are referenced, which Ray
    # bounds by the store's size and spills to disk; the rest is the process's own memory
    own: dict[int, int] = field(default_factory=dict)
    label: dict[int, str] = field(default_factory=dict)
    peak_total: int = 0

    def sample(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.root)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        total = 0
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                pss = proc.memory_full_info().pss
                total += pss
                if pss > self.peak.get(proc.pid, 0):
                    self.peak[proc.pid] = pss
                    self._name(proc)
                own = outside_object_store(proc, pss)
                self.own[proc.pid] = max(own, self.own.get(proc.pid, 0))
        self.peak_total = max(self.peak_total, total)

    def _name(self, proc) -> None:
        """Name a process by what it ran when its peak was sampled (a Ray worker runs many
        tasks); keep the last busy name if it was idle then: its title returns to
        ``ray::IDLE`` after a task, while the task's memory may still be held."""
        label = process_label(proc)
        if proc.pid not in self.label or label != IDLE:
            self.label[proc.pid] = label

    def driver_mib(self) -> float:
        return self.peak.get(self.root, 0) / 2**20

    def driver_own_mib(self) -> float:
        return self.own.get(self.root, 0) / 2**20

    def largest_own(self) -> tuple[float, str]:
        """(peak MiB outside the object store, name) of the largest process but the driver."""
        others = {pid: own for pid, own in self.own.items() if pid != self.root}
        if not others:
            return 0.0, "-"
        pid = max(others, key=others.__getitem__)
        return others[pid] / 2**20, self.label.get(pid, "?")

    def largest_other(self) -> tuple[float, str]:
        """(peak MiB, name) of the largest process other than the driver."""
        others = {pid: pss for pid, pss in self.peak.items() if pid != self.root}
        if not others:
            return 0.0, "-"
        pid = max(others, key=others.__getitem__)
        return others[pid] / 2**20, self.label[pid]


def run_sampled(cmd: list[str]) -> tuple[subprocess.CompletedProcess, TreePeaks, float]:
    """Run ``cmd`` while sampling its process tree; (result, peaks, wall seconds)."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    peaks, stop = TreePeaks(proc.pid), threading.Event()

    def loop():
        while not stop.is_set():
            peaks.sample()
            stop.wait(SAMPLE_S)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - started
    stop.set()
    thread.join()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err), peaks, wall


# --- planning runs -------------------------------------------------------------------------


@dataclass
class PlanRun:
    name: str
    objects: int
    rate: float  # objects / s / core, end to end
    driver_mib: float
    worker_mib: float
    worker: str
    own_mib: float  # the largest other process outside the object store
    own: str
    summary: dict
    driver_own_mib: float = 0.0  # the driver outside the object store


def write_config(path: Path, store: Path, index: Path, objects: Path, bands: list, cpus: int):
    import yaml

    config = {
        "data": {
            "store": str(store),
            "tile_index": index.name,
            "objects": str(objects),
            "z_column": schema.TRUTH_Z,
        },
        "cutouts": {"bands": bands, "objects_per_unit": OBJECTS_PER_UNIT},
        "ray": {"num_cpus": cpus},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def parse_summary(stdout: str) -> dict:
    """The one JSON object ``raycat plan`` prints (indented or not), whatever precedes it."""
    summary, _ = json.JSONDecoder().raw_decode(stdout[stdout.index("{") :])
    return summary


def plan_once(name: str, config: Path, cpus: int) -> PlanRun:
    """Two dry runs, each in a fresh driver: one timed alone, one sampled for memory (reading
    every process's smaps each ``SAMPLE_S`` costs a core's worth of CPU on 2 cores, ~25% of
    the wall time); prints their figures."""
    cmd = [sys.executable, "-m", "raycat", "plan", "--config", str(config)]
    started = time.perf_counter()
    timed = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    wall = time.perf_counter() - started
    result, peaks, sampled_wall = run_sampled(cmd)
    for done in (timed, result):
        if done.returncode:
            sys.exit(f"{name}: raycat plan failed ({done.returncode}):\n{done.stderr[-3000:]}")
    summary = parse_summary(timed.stdout)
    run = PlanRun(
        name,
        summary["objects"],
        summary["objects"] / wall / cpus,
        peaks.driver_mib(),
        *peaks.largest_other(),
        *peaks.largest_own(),
        summary,
        peaks.driver_own_mib(),
    )
    print_run(run, wall, peaks.peak_total / 2**20)
    print(f"  (the run sampled for memory took {sampled_wall:.1f} s)", flush=True)
    return run


def print_run(run: PlanRun, wall: float, tree_mib: float) -> None:
    s = run.summary
    sizes = s["objects_per_partition"]
    over = s.get("partitions_over_2x", "n/a (not in the dry run's summary)")
    print(
        f"plan {run.name}: {run.objects:,} objects in {wall:.1f} s "
        f"(dry run's own wall {s.get('wall_s')} s): {run.rate:,.0f} objects/s/core\n"
        f"  peak PSS: driver {run.driver_mib:.0f} MiB, largest other process "
        f"{run.worker_mib:.0f} MiB ({run.worker}), whole tree {tree_mib:.0f} MiB\n"
        f"  outside the object store: driver {run.driver_own_mib:.0f} MiB, largest other "
        f"process {run.own_mib:.0f} MiB ({run.own})\n"
        f"  partitions {s.get('partitions')}, by order {s['partitions_by_order']}; objects per "
        f"partition min {sizes['min']} median {sizes['median']} max {sizes['max']}; above "
        f"2x {OBJECTS_PER_UNIT}: {over}\n"
        f"  tiles per band {s.get('tiles_per_band')}, off footprint {s.get('off_footprint')}",
        flush=True,
    )


def ratio_line(label: str, big: PlanRun, small: PlanRun) -> None:
    print(
        f"{label}: driver {big.driver_mib / small.driver_mib:.2f}x "
        f"({small.driver_mib:.0f} -> {big.driver_mib:.0f} MiB; outside the object store "
        f"{small.driver_own_mib:.0f} -> {big.driver_own_mib:.0f} MiB), largest other process "
        f"{big.worker_mib / small.worker_mib:.2f}x ({small.worker_mib:.0f} -> "
        f"{big.worker_mib:.0f} MiB), outside the object store "
        f"{big.own_mib / small.own_mib:.2f}x ({small.own_mib:.0f} -> {big.own_mib:.0f} MiB); "
        f"rate {small.rate:,.0f} -> {big.rate:,.0f} /s/core",
        flush=True,
    )


# --- the benchmark ---------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1e6,1e7", help="object-list sizes, comma-separated")
    p.add_argument("--quick", action="store_true", help="100k objects, the box index only")
    p.add_argument("--workdir", default="/tmp/raycat-plan-scale", help="cache and indexes")
    p.add_argument("--cpus", type=int, default=2, help="ray.num_cpus of the dry runs")
    args = p.parse_args(argv)
    args.sizes = [100_000] if args.quick else [int(float(s)) for s in args.sizes.split(",")]
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    workdir = Path(args.workdir)
    store = workdir / "store"
    store.mkdir(parents=True, exist_ok=True)
    append = "--append" in tiles_cli_help()
    print(f"raycat tiles --append: {'one index of both surveys' if append else 'absent'}")
    skies = {"box": BOX} if args.quick else {"sky": None, "box": BOX}
    indexes = {
        name: build_index(store, f"index-{name}", box, append) for name, box in skies.items()
    }
    bands = SURVEYS["ps1"] + SURVEYS["unwise"] if append else SURVEYS["ps1"]
    runs: dict[tuple[str, int], PlanRun] = {}
    for n in args.sizes:
        for name, box in skies.items():
            objects = object_list(workdir, n, box)
            config = workdir / f"plan-{name}-{n}.yaml"
            write_config(config, store, indexes[name][0], objects, bands, args.cpus)
            runs[name, n] = plan_once(f"{name} index x {n:,} objects", config, args.cpus)
    print_ratios(runs, args.sizes)


def print_ratios(runs: dict, sizes: list[int]) -> None:
    """Peak memory of the largest list against the smallest, and sky against box."""
    smallest, largest = min(sizes), max(sizes)
    for name in ("sky", "box"):
        if largest != smallest and (name, largest) in runs:
            label = f"{name} index, {largest:,} vs {smallest:,} objects"
            ratio_line(label, runs[name, largest], runs[name, smallest])
    for n in sizes:
        if ("sky", n) in runs:
            ratio_line(f"full-sky vs 100 deg2 index, {n:,} objects", runs["sky", n], runs["box", n])


if __name__ == "__main__":
    main()
