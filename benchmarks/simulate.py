"""Benchmark of the mock sky (a script, not a test): throughput, output size, peak memory.

Runs ``simulate_sky`` for 500 and 2000 target galaxies (each in a fresh process, so peak
memory is per run), then measures three optimisations against their honest baselines in the
same run, on the same sources:

1. magnitudes: the cached redshift grid of K-corrections vs integrating every galaxy's
   bulge and disk SEDs through the nine filters one by one (speclite, per object);
2. unresolved sources in the Gaussian-PSF bands: the exact erf Gaussian vs a GalSim FFT draw
   of every source (one unWISE W1 tile);
3. stamps: drawing each source into a stamp sized to its profile vs into the whole PS1 tile.

Usage: ``python benchmarks/simulate.py`` (about 2 minutes on 2 cores).
"""

from __future__ import annotations

import multiprocessing
import resource
import tempfile
import time
from pathlib import Path

import numpy as np


def _run_sky(n_galaxies: int) -> dict:
    """Simulate one sky in this (fresh) process; report time, size and peak memory."""
    from raycat.sky.simulate import simulate_sky

    with tempfile.TemporaryDirectory() as out:
        cpu = time.process_time()
        summary = simulate_sky(out, n_galaxies=n_galaxies, seed=1, progress=False)
        cpu = time.process_time() - cpu
        files = sum(1 for p in Path(out).rglob("*") if p.is_file())
    return {
        "n": n_galaxies,
        "seconds": summary.seconds,
        "cpu": cpu,
        "files": files,
        "tiles": summary.n_tiles,
        "sources": summary.n_sources,
        "mb": summary.bytes_written / 1e6,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def bench_skies() -> None:
    context = multiprocessing.get_context("spawn")
    for n in (500, 2000):
        with context.Pool(1) as pool:
            r = pool.apply(_run_sky, (n,))
        print(
            f"sky of {r['n']:5d} galaxies ({r['sources']} sources): {r['seconds']:6.1f} s wall "
            f"({r['cpu']:.1f} s cpu), {r['n'] / r['seconds']:6.1f} galaxies/s, "
            f"{r['tiles'] / r['seconds']:5.2f} tile files/s, {r['mb']:6.1f} MB written "
            f"({r['mb'] / r['seconds']:5.1f} MB/s), peak RSS {r['peak_mb']:.0f} MB"
        )


def _timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def bench_magnitudes() -> None:
    from raycat.sky import sed
    from raycat.sky.population import BULGE_TEMPLATE, draw_targets

    grid = sed.colour_grid()
    targets = draw_targets(np.random.default_rng(0), 2000, grid)
    z, types = targets["z"].to_numpy(), targets["sed"].to_numpy()
    bulge_frac = targets["bulge_frac"].to_numpy()
    from raycat.sky.population import component_kflux

    def cached():
        component_kflux(grid, types, bulge_frac, z)

    def direct(count: int):
        for i in range(count):
            for template in (BULGE_TEMPLATE, types[i]):
                for band in grid.bands:
                    sed.kcorrection_direct(template, float(z[i]), band)

    for cache in (sed.colour_grid, sed.load_template, sed.load_filter):
        cache.cache_clear()  # build the grid from cold: read templates and filters again
    build = _timed(sed.colour_grid)
    per_cached = (_timed(cached) + build) / len(z)
    per_direct = _timed(direct, 100) / 100
    print(
        f"magnitudes (9 bands, bulge + disk): grid {per_cached * 1e6:8.1f} us/galaxy "
        f"(incl. {build:.2f} s to build the grid, over 2000), per-object speclite "
        f"{per_direct * 1e6:8.1f} us/galaxy -> {per_direct / per_cached:6.1f}x faster"
    )


def _tile_inputs(survey: str, n_galaxies: int = 2000):
    """The sources and first tile of ``survey`` of a default sky, as simulate_sky makes them."""
    import math

    from raycat.sky import simulate as sim
    from raycat.sky.draw import MAX_STAMP_HALF_PX, sources_on_tile
    from raycat.sky.population import Field, draw_sources
    from raycat.sky.sed import colour_grid
    from raycat.sky.tiles import covering_field, layout_survey
    from raycat.surveys.bands import SURVEYS

    field = Field(*sim.FIELD_CENTRE, math.sqrt(n_galaxies / sim.TARGET_DENSITY_DEG2))
    tiles = {
        s: layout_survey(SURVEYS[s], field, np.random.default_rng(i)) for i, s in enumerate(SURVEYS)
    }
    background = covering_field(field, [t for ts in tiles.values() for t in ts])
    sources = draw_sources(
        np.random.default_rng(1),
        n_galaxies,
        field,
        background,
        sim.NEIGHBOUR_DENSITY_DEG2,
        sim.STAR_DENSITY_DEG2,
        colour_grid(),
    )
    tile = tiles[survey][0]
    on_tile, x, y = sources_on_tile(tile, sources, MAX_STAMP_HALF_PX + 1)
    return tile, on_tile, x, y


def bench_unresolved_shortcut() -> None:
    from raycat.sky import draw as mock_draw

    tile, sources, x, y = _tile_inputs("unwise")
    fast = _timed(mock_draw.draw_band, tile, "unwise_w1", sources, x, y, 25.2)
    saved = mock_draw.UNRESOLVED_HLR_FRACTION
    mock_draw.UNRESOLVED_HLR_FRACTION = 0.0  # every source through GalSim's FFT
    try:
        slow = _timed(mock_draw.draw_band, tile, "unwise_w1", sources, x, y, 25.2)
    finally:
        mock_draw.UNRESOLVED_HLR_FRACTION = saved
    print(
        f"unWISE W1 tile ({len(sources)} sources): erf shortcut {fast:6.2f} s, all GalSim FFT "
        f"{slow:6.2f} s -> {slow / fast:6.1f}x faster"
    )


def bench_stamps(n_sources: int = 40) -> None:
    from raycat.sky import draw as mock_draw

    tile, sources, x, y = _tile_inputs("ps1")
    inside = (x > 0) & (x < tile.naxis - 1) & (y > 0) & (y < tile.naxis - 1)
    sources, x, y = sources[inside].iloc[:n_sources], x[inside][:n_sources], y[inside][:n_sources]
    stamps = _timed(mock_draw.draw_band, tile, "ps1_r", sources, x, y, 32.5)
    saved = mock_draw.MAX_STAMP_HALF_PX, mock_draw.STAMP_HLR
    mock_draw.MAX_STAMP_HALF_PX, mock_draw.STAMP_HLR = 10 * tile.naxis, 1e6  # whole tile
    try:
        whole = _timed(mock_draw.draw_band, tile, "ps1_r", sources, x, y, 32.5)
    finally:
        mock_draw.MAX_STAMP_HALF_PX, mock_draw.STAMP_HLR = saved
    print(
        f"PS1 r, {n_sources} sources on a {tile.naxis}^2 tile: stamps "
        f"{stamps * 1e3 / n_sources:7.2f} ms/source, whole-tile draws "
        f"{whole * 1e3 / n_sources:7.2f} ms/source -> {whole / stamps:6.1f}x faster"
    )


if __name__ == "__main__":
    started = time.perf_counter()
    bench_skies()
    bench_magnitudes()
    bench_unresolved_shortcut()
    bench_stamps()
    print(f"benchmark done in {time.perf_counter() - started:.0f} s")
