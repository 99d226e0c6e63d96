"""The cost of a 10^9-object full-sky run, from the rates this project measured (a script).

Every rate is a named constant below with where it was measured; every price and geometry
figure is an assumption to change. Prints the markdown tables of docs/scale.md, so the doc
is regenerated after a new measurement: ``python benchmarks/scale_costs.py > /tmp/t.md``.
``--measure`` re-measures, on this machine, the figures marked "measured by --measure"
(catalog bytes and sink CPU per object, PS1 tile preparation) and prints them.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

N_OBJECTS = 1e9

# --- rates measured in this project (2-core CPU machine; no GPU has been lent so far) --------
# Planning: benchmarks/plan_scale.py, 10 M objects on the full-sky PS1 + unWISE index (dry
# run end to end on 2 cores, stop 22: 52,458-63,787 in two runs, the lower taken).
# Pessimistic at 10^9: reading the index pixels is a fixed cost of the sky (~12k pixels),
# which 100x the objects share; 10 M objects in 100 deg2 (per-object costs only) ran at
# 102,036-125,846.
PLAN_OBJECTS_PER_S_PER_CORE = 52_458
# One pass over the full-sky index: ~24k listings and ~53k part files (340 MiB), read by the
# tile assigners (plan_scale.py's index build figures).
PLAN_INDEX_REQUESTS = 77_000
PLAN_INDEX_BYTES = 340 * 2**20
# Cutouts, per object for 9 bands at 32 px and 1"/px, tile preparation excluded: 0.53 ms
# (py-spy of the cutout actor inside the pipeline, issue 4 closing note, stop 9).
CUTOUT_MS_PER_OBJECT = 0.53
# Sparse reads: 457 objects/s/core (benchmarks/cutouts.py, stop 9), bytes 1.25x footprint.
SPARSE_OBJECTS_PER_S_PER_CORE = 457
SPARSE_BYTES_OVER_FOOTPRINT = 1.25
# Dense tile preparation (calibrate + box filter of the whole tile, PS1 box 4): ms per
# megapixel, one core (measured by --measure: prepare_image on a 6240^2 float32 tile).
PREPARE_MS_PER_MPX = 7.0
# Inference, ResNet50 imagenet stem, 9 bands, 32 px: 1.36 ms/object alone on one CPU core
# (issue 4 closing notes: model-only 672-786 objects/s); attribution cost over PDF-only
# (benchmarks/attribute.py, issue 5): exact surveys 7.9x (8 passes), sampled bands M=16 170x.
CPU_INFER_OBJECTS_PER_S_PER_CORE = 735
ATTR_SURVEYS_COST = 7.9
# GPU: NOT MEASURED. An assumption for an A10G (g5.xlarge): ResNet50 at 32x32 px is about
# 0.17 GFLOP per object; 20k objects/s is ~3 TFLOP/s, a tenth of the card's bf16 rate.
GPU_INFER_OBJECTS_PER_S = 20_000
# Catalog sink: CPU per object to build and serialise a partition (measured by --measure,
# 400 bins, surveys attributions) and bytes per object on disk (float32 / float16 PDFs).
SINK_US_PER_OBJECT = 220.0
CATALOG_BYTES_PER_OBJECT = {"float32": 1264, "float16": 418}

# --- geometry and layout (assumptions: change them to your survey mirror) ---------------------
OBJECTS_PER_UNIT_MEAN = 800  # adaptive units hold 0.3-0.5x objects_per_unit (2000) on average
SURVEY_TILES = {  # side px, stored bytes per tile, native "/px, bands, tiles per unit per band
    "ps1": (6240, 50e6, 0.25, 5, 2.0),  # skycell stacks, RICE-compressed int16: ~50 MB
    "unwise": (2048, 2048**2 * 4, 2.75, 2, 1.2),  # img-m, uncompressed float32
    "galex": (3840, 25e6, 1.5, 2, 1.2),  # -int.fits.gz
}
CUTOUT_ARCSEC, FOOTPRINT_MARGIN_PX = 32.0, 6  # 32 px at 1"/px; filter + bilinear margin

# --- cluster.yaml's node types and prices (us-west-2, USD/h: assumptions) --------------------
CPU_NODES, CPU_NODE_CORES, CPU_NODE_PRICE = 32, 16, 0.30  # c6i.4xlarge spot (on-demand 0.68)
GPU_NODES, GPU_NODE_PRICE = 8, 1.006  # g5.xlarge on demand (1 A10G, 4 vCPU)
HEAD_PRICE = 0.192  # m6i.xlarge
CPU_NODE_GBPS = 5.0  # c6i.4xlarge network baseline (bursts to 12.5): S3 reads share it
S3_GET_PER_1000, S3_PUT_PER_1000, S3_GB_MONTH = 0.0004, 0.005, 0.023


def sparse_gets_and_bytes() -> tuple[float, float]:
    """GETs and bytes per object in sparse mode: one range per footprint row and band
    (rows merge into one GET only when the gaps are smaller than the box: never for these)."""
    gets = sum(
        bands * (math.ceil(CUTOUT_ARCSEC / scale) + 2 * FOOTPRINT_MARGIN_PX)
        for _, _, scale, bands, _ in SURVEY_TILES.values()
    )
    footprint = sum(
        bands * (CUTOUT_ARCSEC / scale) ** 2 * 4 for _, _, scale, bands, _ in SURVEY_TILES.values()
    )
    return gets, footprint * SPARSE_BYTES_OVER_FOOTPRINT


def dense_per_unit() -> tuple[float, float, float]:
    """(GETs, bytes, preparation core-seconds) per work unit: each tile it needs read whole
    once (one GET) and prepared whole; no reuse between units assumed."""
    gets = sum(b * t for _, _, _, b, t in SURVEY_TILES.values())
    nbytes = sum(b * t * size for _, size, _, b, t in SURVEY_TILES.values())
    prep = sum(b * t * side**2 / 1e6 for side, _, _, b, t in SURVEY_TILES.values())
    return gets, nbytes, prep * PREPARE_MS_PER_MPX / 1e3


def stages() -> list[dict]:
    """One row per stage: core-hours, GPU-hours, GETs, bytes read or written."""
    units = N_OBJECTS / OBJECTS_PER_UNIT_MEAN
    d_gets, d_bytes, d_prep = dense_per_unit()
    s_gets, s_bytes = sparse_gets_and_bytes()
    core_h = N_OBJECTS / 3600
    rows = [
        {
            "stage": "plan",
            "core_h": N_OBJECTS / PLAN_OBJECTS_PER_S_PER_CORE / 3600,
            "gets": PLAN_INDEX_REQUESTS,
            "bytes": PLAN_INDEX_BYTES,
        },
        {
            "stage": "cutouts, dense",
            "core_h": (core_h * CUTOUT_MS_PER_OBJECT / 1e3) + units * d_prep / 3600,
            "gets": units * d_gets,
            "bytes": units * d_bytes,
        },
        {
            "stage": "cutouts, sparse",
            "core_h": core_h / SPARSE_OBJECTS_PER_S_PER_CORE,
            "gets": N_OBJECTS * s_gets,
            "bytes": N_OBJECTS * s_bytes,
        },
        {"stage": "inference, PDF only, CPU", "core_h": core_h / CPU_INFER_OBJECTS_PER_S_PER_CORE},
        {
            "stage": "inference, + survey attributions, CPU",
            "core_h": core_h * ATTR_SURVEYS_COST / CPU_INFER_OBJECTS_PER_S_PER_CORE,
        },
        {
            "stage": "inference, PDF only, GPU (assumed rate)",
            "gpu_h": core_h / GPU_INFER_OBJECTS_PER_S,
        },
        {
            "stage": "inference, + survey attributions, GPU (assumed rate)",
            "gpu_h": core_h * ATTR_SURVEYS_COST / GPU_INFER_OBJECTS_PER_S,
        },
    ]
    for dtype, per_object in CATALOG_BYTES_PER_OBJECT.items():
        rows.append(
            {
                "stage": f"catalog write, {dtype} PDFs",
                "core_h": core_h * SINK_US_PER_OBJECT / 1e6,
                "puts": units * 2,  # the partition and its done marker
                "bytes": N_OBJECTS * per_object,
            }
        )
    return rows


def fmt(value, unit: str = "") -> str:
    if value is None:
        return "-"
    for scale, suffix in ((1e12, " T"), (1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(value) >= scale:
            return f"{value / scale:,.1f}{suffix}{unit}"
    return f"{value:,.1f}{' ' + unit if unit else ''}"


def stage_table() -> list[str]:
    lines = [
        "| stage | core-hours | GPU-hours | S3 GETs (PUTs) | bytes | request cost |",
        "|---|---|---|---|---|---|",
    ]
    for row in stages():
        if row.get("note"):
            lines.append(f"| {row['stage']} | {row['note']} | | | | |")
            continue
        requests = row.get("gets", 0) * S3_GET_PER_1000 / 1e3
        requests += row.get("puts", 0) * S3_PUT_PER_1000 / 1e3
        count = (
            fmt(row["gets"]) if "gets" in row else f"({fmt(row['puts'])})" if "puts" in row else "-"
        )
        lines.append(
            f"| {row['stage']} | {fmt(row.get('core_h'))} | {fmt(row.get('gpu_h'))} | {count} | "
            f"{fmt(row.get('bytes'), 'B')} | ${requests:,.0f} |"
        )
    return lines


def cluster_table() -> list[str]:
    """Wall-clock and cost on cluster.yaml's nodes: cutouts on the CPU nodes while the GPUs
    infer (a stream: the slower sets the pace), the sink on the CPU nodes' spare share."""
    by = {row["stage"]: row for row in stages()}
    cores = CPU_NODES * CPU_NODE_CORES
    lines = [
        "| run | cutouts, CPU (h) | cutouts, S3 reads (h) | inference (h) | wall-clock (h) | "
        "instance cost |",
        "|---|---|---|---|---|---|",
    ]
    for label, cut, infer in (
        ("dense, PDF only, GPU", "cutouts, dense", "inference, PDF only, GPU (assumed rate)"),
        (
            "dense, + survey attributions, GPU",
            "cutouts, dense",
            "inference, + survey attributions, GPU (assumed rate)",
        ),
    ):
        cut_h = (by[cut]["core_h"] + by["catalog write, float32 PDFs"]["core_h"]) / cores
        infer_h = by[infer]["gpu_h"] / GPU_NODES
        read_h = read_hours(by[cut]["bytes"])
        wall = max(cut_h, read_h, infer_h)
        cost = wall * (CPU_NODES * CPU_NODE_PRICE + GPU_NODES * GPU_NODE_PRICE + HEAD_PRICE)
        lines.append(
            f"| {label} | {cut_h:.1f} | {read_h:.1f} | {infer_h:.1f} | {wall:.1f} | ${cost:,.0f} |"
        )
    cpu_h = (by["cutouts, dense"]["core_h"] + by["inference, PDF only, CPU"]["core_h"]) / cores
    wall = max(cpu_h, read_hours(by["cutouts, dense"]["bytes"]))
    cost = wall * (CPU_NODES * CPU_NODE_PRICE + HEAD_PRICE)
    lines.append(
        f"| dense, PDF only, CPU nodes only | {cpu_h:.1f} | | | {wall:.1f} | ${cost:,.0f} |"
    )
    plan_h = by["plan"]["core_h"] / cores
    cost = plan_h * (CPU_NODES * CPU_NODE_PRICE + HEAD_PRICE)
    lines.append(
        f"| planning (before the cutouts start) | {plan_h:.2f} | | | {plan_h:.2f} | ${cost:,.0f} |"
    )
    return lines


def read_hours(nbytes: float) -> float:
    """Hours to pull ``nbytes`` from S3 through the CPU nodes' network links."""
    return nbytes * 8 / (CPU_NODES * CPU_NODE_GBPS * 1e9) / 3600


# --- --measure: the figures this script can measure itself --------------------------------


def measure_prepare() -> float:
    """ms of one core per megapixel to prepare a PS1 skycell (6240^2 float32, box 4)."""
    from raycat.cutouts.resample import prepare_image

    image = np.random.default_rng(0).normal(size=(6240, 6240)).astype(np.float32)
    prepare_image(image, 1.0, 4)
    started = time.process_time()
    prepare_image(image, 1.0, 4)
    return (time.process_time() - started) * 1e3 / (image.size / 1e6)


def pdfs(n: int, n_bins: int, rng) -> np.ndarray:
    """Softmax-like PDFs: one or two Gaussian peaks of 0.02-0.2 in z over a tail of tiny
    values with random mantissas (a network's softmax has no exact zeros)."""
    z = np.linspace(0, 1.6, n_bins)
    centre = rng.uniform(0.05, 1.4, (n, 2))
    width = rng.uniform(0.02, 0.2, (n, 2))
    weight = np.stack([np.ones(n), rng.uniform(0, 0.5, n)], axis=1)
    peaks = weight[:, :, None] * np.exp(-0.5 * ((z - centre[:, :, None]) / width[:, :, None]) ** 2)
    out = peaks.sum(axis=1) + 1e-6 * rng.lognormal(0, 1, (n, n_bins))
    return out / out.sum(axis=1, keepdims=True)


def measure_catalog(n: int = 2000, n_bins: int = 400) -> None:
    """Bytes per object of one partition of ``n`` objects written with HATS' Parquet
    settings, float32 and float16 PDFs, survey attributions on; and the sink's CPU time."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from hats.io.file_io.file_io import get_parquet_write_table_kwargs

    from raycat.catalog.info import catalog_schema
    from raycat.catalog.write import partition_table

    rng = np.random.default_rng(1)
    ra, dec = 150 + rng.uniform(0, 0.2, n), 2 + rng.uniform(0, 0.2, n)
    players = ["galex", "ps1", "unwise"]
    extra = {f"attr_{p}": rng.normal(0, 0.1, n) for p in players}
    extra["attr_baseline"] = np.full(n, 0.6)
    for dtype in ("float32", "float16"):
        schema = catalog_schema(
            np.linspace(0, 1.6, n_bins + 1),
            ["b"],
            model_id="m",
            config_hash="c",
            pdf_dtype=dtype,
            attr_players=players,
        )
        started = time.process_time()
        table = partition_table(
            schema,
            ids=np.arange(n),
            ra=ra,
            dec=dec,
            flags=np.zeros(n),
            pdf=pdfs(n, n_bins, rng),
            extra=extra,
        )
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, **get_parquet_write_table_kwargs(table.schema))
        cpu = time.process_time() - started
        size = sink.getvalue().size
        print(
            f"catalog, {dtype} PDFs ({n_bins} bins): {size / n:,.0f} bytes/object, "
            f"sink CPU {cpu / n * 1e6:,.1f} us/object"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--measure", action="store_true", help="re-measure the local figures")
    if p.parse_args().measure:
        print(f"PS1 tile preparation: {measure_prepare():.1f} ms/Mpx (one core)")
        measure_catalog()
        return
    print(f"## Per stage, {N_OBJECTS:.0e} objects\n")
    print("\n".join(stage_table()))
    print(f"\n## On cluster.yaml: {CPU_NODES} x c6i.4xlarge, {GPU_NODES} x g5.xlarge\n")
    print("\n".join(cluster_table()))


if __name__ == "__main__":
    main()
