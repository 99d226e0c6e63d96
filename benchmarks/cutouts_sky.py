"""Cutout stage on a mock sky, in the pipeline's order: dense sections against whole tiles.

The mock sky's objects (``truth.parquet``) in curve order, with their tiles from the sky's
index, cut in batches of the pipeline's size by one ``CutoutActor`` on one core, as the
cutout stage feeds them. Measured side by side in one run, each in a fresh process:

- sections: what raycat does (a batch's objects on a tile cut from the section they cover);
- whole tiles: the baseline, every tile read as one that cannot be range-read: prepared
  whole and cached (512 MiB), as every dense tile was before sections.

Prints CPU ms per object (per core: a busy neighbour stretches wall time, not CPU time),
objects/s, megapixels prepared, peak RSS, and the ratio. The two must give the same cutouts:
their checksums are printed side by side.

Usage: ``python benchmarks/cutouts_sky.py [N_GALAXIES]`` (default 20000; the sky is
simulated once and cached, ~200 s for 20000 on 2 cores).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core, honestly

import dataclasses  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ray_common import cached_sky  # noqa: E402

BATCH = 128  # raycat.pipeline.CUTOUT_BATCH
VARIANTS = ("sections", "whole tiles")


def manifest(sky: Path):
    """The sky's objects in curve order with their tiles (what planning hands the cutouts)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from raycat import schema
    from raycat.plan.manifest import find_tiles, spatial_index
    from raycat.surveys.bands import BAND_NAMES
    from raycat.surveys.tile_index import open_tile_index

    rows = pq.read_table(sky / schema.TRUTH_FILE, columns=[schema.ID, schema.RA, schema.DEC])
    index = spatial_index(rows[schema.RA].to_numpy(), rows[schema.DEC].to_numpy())
    rows = rows.append_column(schema.HEALPIX_29, pa.array(index))
    rows = rows.append_column(schema.FLAGS, pa.array(np.zeros(len(rows), np.int32)))
    tiles = open_tile_index(str(sky / schema.TILE_INDEX_FILE), None, list(BAND_NAMES))
    return find_tiles(rows.sort_by(schema.HEALPIX_29), tiles, list(BAND_NAMES))


def measure(sky: Path, variant: str) -> dict:
    """Child process: cut the whole manifest with one actor; figures as a dict."""
    from raycat import schema
    from raycat.config import CutoutConfig
    from raycat.cutouts import actor as cutouts
    from raycat.surveys.bands import BAND_NAMES

    if variant == "whole tiles":
        info = cutouts.tile_info
        cutouts.tile_info = lambda *a: dataclasses.replace(info(*a), sections=False)
    cfg = CutoutConfig(bands=list(BAND_NAMES), size_px=32, pixel_scale=1.0)
    rows = manifest(sky)
    prepared = [0]
    prepare = cutouts.prepare_image

    def counted(pixels, *args, **kwargs):
        prepared[0] += pixels.size
        return prepare(pixels, *args, **kwargs)

    cutouts.prepare_image = counted
    actor = cutouts.CutoutActor(str(sky), {}, cfg)
    checksum = 0.0
    cpu, wall = time.process_time(), time.perf_counter()
    for start in range(0, len(rows), BATCH):
        part = rows.slice(start, BATCH)
        out = actor({c: part[c].to_numpy(zero_copy_only=False) for c in part.column_names})
        checksum += float(out[schema.CUBE].astype("float64").sum())
    return {
        "n": len(rows),
        "cpu": time.process_time() - cpu,
        "wall": time.perf_counter() - wall,
        "mpx": prepared[0] / 1e6,
        "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "checksum": checksum,
    }


def run(sky: Path, variant: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(sky), variant],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.splitlines()[-1])


def main(n_galaxies: int) -> None:
    sky = cached_sky(n_galaxies)
    print(f"mock sky of {n_galaxies} galaxies, 9 bands, 32x32 px, batches of {BATCH}, one core")
    results = {variant: run(sky, variant) for variant in VARIANTS}
    for variant, r in results.items():
        print(
            f"  {variant:12s} {1000 * r['cpu'] / r['n']:.3f} ms CPU/object "
            f"({r['n'] / r['cpu']:.0f} objects/s/core, {r['n'] / r['wall']:.0f} wall), "
            f"{r['mpx']:.0f} Mpx prepared, peak RSS {r['rss']:.0f} MiB, "
            f"checksum {r['checksum']:.6g}"
        )
    new, old = results["sections"], results["whole tiles"]
    print(f"  sections / whole tiles, CPU per object: {new['cpu'] / old['cpu']:.2f}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        print(json.dumps(measure(Path(sys.argv[2]), sys.argv[3])))
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 20000)
