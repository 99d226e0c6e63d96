"""Cutout engine benchmark: dense and sparse reads against the naive per-object script.

Builds a synthetic 9-band store (a 2x2 grid of overlapping tiles per band at the real native
scales: GALEX 1.5", PS1 0.25", unWISE 2.75"/px; sizes of the mock sky's tiles) and measures,
side by side in one run, on one core:

- 9-band objects/s: dense and sparse ``CutoutActor`` vs a naive path that, per object and
  band, opens the tile, cuts it with astropy ``Cutout2D`` and reprojects it onto the output
  grid pixel by pixel with exact WCS transforms (what the usual scripts do);
- bytes read per object in sparse mode vs the tile bytes the cutout footprints cover;
- peak memory (ru_maxrss, fresh process each) streaming 10k and 40k objects in batches.

Targets (issue): dense >= 30x naive and >= 1000 objects/s/core at 32 px; sparse bytes
<= 3x footprint; peak memory at 40k <= 1.2x that at 10k. Run: python benchmarks/cutouts.py
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core, honestly

import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raycat import schema  # noqa: E402
from raycat.config import CutoutConfig  # noqa: E402
from raycat.cutouts.actor import CutoutActor  # noqa: E402
from raycat.surveys.bands import BAND_NAMES, NANOMAGGY_ZP, SURVEYS, get_band, sigma_pixel  # noqa: E402

RA0, DEC0 = 150.0, 2.0
GRID_OFFSET = 0.055  # deg: tile centres at +-this in ra and dec (tiles overlap in the middle)
HALF_FIELD = 0.1  # deg: objects are drawn inside +-this
BATCH = 1000
CFG = CutoutConfig(bands=list(BAND_NAMES), size_px=32, pixel_scale=1.0)


def tile_uri(band: str, quadrant: int) -> str:
    return f"tiles/{band}/q{quadrant}.fits"


def quadrant_centres() -> list[tuple[float, float]]:
    offsets = [(-1, -1), (1, -1), (-1, 1), (1, 1)]
    return [
        (RA0 + sx * GRID_OFFSET / np.cos(np.radians(DEC0)), DEC0 + sy * GRID_OFFSET)
        for sx, sy in offsets
    ]


def build_store(root: Path) -> None:
    """2x2 noise tiles per band at the band's depth, with the survey's native scale."""
    from astropy.io import fits
    from astropy.wcs import WCS

    rng = np.random.default_rng(0)
    for band in BAND_NAMES:
        info = get_band(band)
        survey = SURVEYS[info.survey]
        n = int(round(survey.mock_tile_deg * 3600 / survey.pixel_scale))
        for q, (ra, dec) in enumerate(quadrant_centres()):
            wcs = WCS(naxis=2)
            wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
            wcs.wcs.crval, wcs.wcs.crpix = [ra, dec], [(n + 1) / 2, (n + 1) / 2]
            wcs.wcs.cd = np.diag([-1, 1]) * survey.pixel_scale / 3600
            header = wcs.to_header()
            header["EXPTIME"], header["MAGZP"] = info.mock_exptime or 1.0, 22.5
            unit = float(info.calibration.to_nanomaggies(np.ones(1), header)[0])
            sigma = sigma_pixel(info, NANOMAGGY_ZP) / unit
            data = rng.normal(0.0, sigma, (n, n)).astype(np.float32)
            path = root / tile_uri(band, q)
            path.parent.mkdir(parents=True, exist_ok=True)
            fits.PrimaryHDU(data, header).writeto(path)


def objects(n: int, seed: int = 1) -> dict[str, np.ndarray]:
    """Manifest-like rows, sorted by quadrant (the work unit), each band's nearest tile."""
    rng = np.random.default_rng(seed)
    dec = DEC0 + rng.uniform(-HALF_FIELD, HALF_FIELD, n)
    ra = RA0 + rng.uniform(-HALF_FIELD, HALF_FIELD, n) / np.cos(np.radians(DEC0))
    quadrant = (ra > RA0).astype(int) + 2 * (dec > DEC0).astype(int)
    order = np.argsort(quadrant, kind="stable")
    batch = {
        schema.ID: np.arange(n, dtype=np.int64),
        schema.RA: ra[order],
        schema.DEC: dec[order],
        schema.WORK_UNIT: quadrant[order].astype(np.int64),
        schema.FLAGS: np.zeros(n, dtype=np.int32),
    }
    for band in BAND_NAMES:
        batch[schema.tile_column(band)] = np.array([tile_uri(band, q) for q in quadrant[order]])
    return batch


def batches(rows: dict[str, np.ndarray], size: int = BATCH):
    n = len(rows[schema.ID])
    for start in range(0, n, size):
        yield {k: v[start : start + size] for k, v in rows.items()}


class Timer:
    """Wall and CPU seconds of a block; CPU time is the per-core figure (the machine may be
    shared, and a busy neighbour stretches wall time but not this process's CPU time)."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def run_actor(root: Path, rows: dict, mode: str) -> tuple[Timer, int]:
    """Time and bytes read to cut all ``rows`` with a fresh actor (cold tile cache)."""
    actor = CutoutActor(str(root), {}, CFG.model_copy(update={"read_mode": mode}))
    with Timer() as timer:
        for batch in batches(rows):
            actor(batch)
    return timer, actor.store.bytes_read


def naive_cutout(path: Path, band: str, ra: float, dec: float) -> np.ndarray:
    """The usual per-object script: open, Cutout2D, exact per-pixel reprojection."""
    from astropy.coordinates import SkyCoord
    from astropy.io import fits
    from astropy.nddata import Cutout2D
    from astropy.wcs import WCS
    from astropy.wcs.utils import proj_plane_pixel_scales
    from scipy.ndimage import map_coordinates

    size, scale = CFG.size_px, CFG.pixel_scale
    with fits.open(path) as hdus:
        header = hdus[0].header
        wcs = WCS(header)
        native = float(proj_plane_pixel_scales(wcs).mean()) * 3600
        side = int(np.ceil(size * scale / native * 1.5)) + 4
        cut = Cutout2D(
            hdus[0].data,
            SkyCoord(ra, dec, unit="deg"),
            side,
            wcs=wcs,
            mode="partial",
            fill_value=np.nan,
        )
        out_wcs = WCS(naxis=2)
        out_wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        out_wcs.wcs.crval, out_wcs.wcs.crpix = [ra, dec], [(size + 1) / 2, (size + 1) / 2]
        out_wcs.wcs.cd = np.diag([-scale, scale]) / 3600
        yy, xx = np.mgrid[:size, :size]
        world = out_wcs.all_pix2world(np.column_stack([xx.ravel(), yy.ravel()]), 0)
        px = cut.wcs.all_world2pix(world, 0)
        values = map_coordinates(np.nan_to_num(cut.data), [px[:, 1], px[:, 0]], order=1)
        unit = get_band(band).calibration.to_nanomaggies(np.ones(1), header)[0]
        return (values.reshape(size, size) * (scale / native) ** 2 * unit).astype(np.float32)


def run_naive(root: Path, rows: dict) -> Timer:
    with Timer() as timer:
        for i in range(len(rows[schema.ID])):
            for band in BAND_NAMES:
                naive_cutout(
                    root / rows[schema.tile_column(band)][i],
                    band,
                    rows[schema.RA][i],
                    rows[schema.DEC][i],
                )
    return timer


def footprint_bytes() -> float:
    """Tile bytes one 9-band cutout footprint covers: (side / native scale)^2 float32 pixels."""
    side = CFG.size_px * CFG.pixel_scale
    return sum((side / get_band(b).pixel_scale) ** 2 * 4 for b in BAND_NAMES)


def peak_memory(root: Path, n: int) -> float:
    """Peak RSS (MiB) of a fresh process streaming ``n`` objects through one actor."""
    out = subprocess.run(
        [sys.executable, __file__, "stream", str(root), str(n)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def stream(root: Path, n: int) -> None:
    """Child process of ``peak_memory``: cut and drop batches, print ru_maxrss in MiB."""
    actor = CutoutActor(str(root), {}, CFG)
    for batch in batches(objects(n, seed=2)):
        cube = actor(batch)[schema.CUBE]
        del cube
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="raycat-bench-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        build_store(root)
        print(f"store: 9 bands x 4 tiles, built in {time.perf_counter() - t0:.1f} s")
        n_dense, n_sparse, n_naive = 8000, 1000, 20
        run_actor(root, objects(5, seed=9), "dense")  # warm-up: imports, not timed
        run_naive(root, objects(1, seed=9))
        dense, _ = run_actor(root, objects(n_dense), "dense")
        sparse, sparse_bytes = run_actor(root, objects(n_sparse), "sparse")
        naive = run_naive(root, objects(n_naive))
        counts = {
            "dense": (n_dense, dense),
            "sparse": (n_sparse, sparse),
            "naive": (n_naive, naive),
        }
        rate = {name: n / t.cpu for name, (n, t) in counts.items()}
        print(
            f"9-band {CFG.size_px}x{CFG.size_px} cutouts, objects/s per core "
            f"(n objects, CPU-time rate, wall-clock rate; cold tile cache):"
        )
        for name, (n, t) in counts.items():
            print(f"  {name:7s} n={n:5d} {rate[name]:9.1f} /s cpu {n / t.wall:9.1f} /s wall")
        print(
            f"  dense/naive  {rate['dense'] / rate['naive']:7.1f}x  (target >= 30x; dense "
            f"target >= 1000 objects/s/core)"
        )
        print(f"  sparse/naive {rate['sparse'] / rate['naive']:7.1f}x")
        per_object = sparse_bytes / n_sparse
        print(
            f"sparse bytes read per object: {per_object / 1024:.1f} KiB; footprint "
            f"{footprint_bytes() / 1024:.1f} KiB; ratio {per_object / footprint_bytes():.2f}"
            f" (target <= 3)"
        )
        mem = {n: peak_memory(root, n) for n in (10_000, 40_000)}
        print(
            f"peak RSS streaming 10k: {mem[10_000]:.0f} MiB, 40k: {mem[40_000]:.0f} MiB, "
            f"ratio {mem[40_000] / mem[10_000]:.2f} (target <= 1.2)"
        )
        print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "stream":
        stream(Path(sys.argv[2]), int(sys.argv[3]))
    else:
        main()
