"""The mock multi-survey sky: raycat's embedded data source, written like a real tile store.

:func:`simulate_sky` draws a galaxy population with physical SEDs (:mod:`raycat.sky.sed`,
:mod:`raycat.sky.population`), lays out each survey's tiles (:mod:`raycat.sky.tiles`),
draws every band of every tile with GalSim (:mod:`raycat.sky.draw`) and writes, through
fsspec (local directory or object store URL):

- ``tiles/<survey>/<tile>/<tile>.<band>.fits``: float32 images in each survey's own units,
  with a TAN WCS and the header keywords that set the zero point;
- ``truth.parquet``: the target galaxies (the object list a user feeds the pipeline);
- ``sources.parquet``: every source drawn (targets, faint neighbours, stars);
- ``tiles.parquet``: one row per tile and band with its footprint and WCS;
- ``mock_sky.json``: the parameters of the run, its domain included.

A domain (:mod:`raycat.sky.domains`, ``default`` unless asked) sets the observing setup:
per-band PSFs and depths, the target SED mix and the Milky Way E(B-V) field
(:mod:`raycat.sky.extinction`) that dims every band; ``ebv`` is a column of the catalogs.

Tiles are processed one at a time (all bands of one tile, then the next), so memory holds a
single tile; with ``on_ray`` each tile is a Ray task instead (on a cluster the driver runs on
the head, which does no heavy work). Randomness comes from numpy Generators seeded by (seed,
purpose, survey, tile, band); GalSim's drawing is deterministic, so the same seed gives
byte-identical files, in the driver or on Ray.
"""

from __future__ import annotations

import io
import json
import math
import sys
import time
from dataclasses import dataclass, replace

import fsspec
import numpy as np
import pandas as pd
from astropy.io import fits
from fsspec.implementations.local import LocalFileSystem

from raycat import schema
from raycat.errors import RaycatError
from raycat.sky.domains import SkyDomain, get_domain
from raycat.sky.draw import (
    MAX_STAMP_HALF_PX,
    add_noise,
    apply_masks,
    draw_band,
    sources_on_tile,
    star_mask_circles,
)
from raycat.sky.extinction import apply_extinction, ebv_at
from raycat.sky.population import KIND_GALAXY, Field, draw_sources
from raycat.sky.sed import colour_grid
from raycat.sky.tiles import TileGeometry, covering_field, grid_size, layout_survey, tile_header
from raycat.surveys.bands import SURVEYS, Band, sigma_pixel

FIELD_CENTRE = (150.0, 2.0)  # deg: a COSMOS-like high-latitude field
TARGET_DENSITY_DEG2 = 40_000.0  # default area = n_galaxies / this (about 11 per arcmin^2)
NEIGHBOUR_DENSITY_DEG2 = 30_000.0  # faint non-target galaxies, 22.5 < r < 25
STAR_DENSITY_DEG2 = 2_500.0  # stars, 15 < r < 23, at galactic latitude ~ 40 deg
GALEX_NOMINAL_EXPTIME = 1500.0  # s, GALEX MIS
EXPTIME_SPREAD = 0.2  # exposure times vary +-20% from tile to tile
MAX_OUTPUT_BYTES = 20e9  # refuse skies that would write more than this


@dataclass(frozen=True)
class SkySummary:
    """What :func:`simulate_sky` wrote; ``str()`` gives a one-line summary."""

    out: str
    n_galaxies: int
    n_sources: int
    n_tiles: int  # FITS files written (tiles x bands)
    area_deg2: float
    bytes_written: int
    seconds: float

    def __str__(self) -> str:
        return (
            f"mock sky: {self.n_galaxies} target galaxies ({self.n_sources} sources) over "
            f"{self.area_deg2:.4g} deg2, {self.n_tiles} tile files, "
            f"{self.bytes_written / 1e6:.1f} MB in {self.seconds:.1f} s -> {self.out}"
        )


class _Store:
    """Writes files under the output root through fsspec; counts bytes written."""

    def __init__(self, out: str, storage_options: dict | None):
        try:
            self.fs, self.root = fsspec.core.url_to_fs(out, **(storage_options or {}))
        except (ValueError, ImportError, TypeError) as err:
            raise RaycatError(f"cannot open output {out!r}: {err}") from None
        self.out, self.storage_options = out, storage_options
        self.bytes_written = 0

    def write_bytes(self, relpath: str, data: bytes) -> None:
        path = f"{self.root.rstrip('/')}/{relpath}"
        try:
            if isinstance(self.fs, LocalFileSystem):  # object stores have no directories
                self.fs.makedirs(self.fs._parent(path), exist_ok=True)
            with self.fs.open(path, "wb") as f:
                f.write(data)
        except OSError as err:
            raise RaycatError(f"cannot write {relpath} under {self.out!r}: {err}") from None
        self.bytes_written += len(data)

    def write_table(self, relpath: str, table: pd.DataFrame) -> None:
        buffer = io.BytesIO()
        table.to_parquet(buffer, index=False)
        self.write_bytes(relpath, buffer.getvalue())


def _is_integer(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_arguments(n_galaxies: int, seed: int, area_deg2: float | None) -> float:
    """Validate the arguments; return the sky area in deg^2."""
    if not _is_integer(n_galaxies) or n_galaxies < 1:
        raise RaycatError(f"n_galaxies must be a positive integer, got {n_galaxies!r}")
    if not _is_integer(seed) or seed < 0:
        raise RaycatError(f"seed must be a non-negative integer, got {seed!r}")
    area = n_galaxies / TARGET_DENSITY_DEG2 if area_deg2 is None else area_deg2
    if not isinstance(area, (int, float)) or not math.isfinite(area) or area <= 0:
        raise RaycatError(
            f"area_deg2 must be a positive number (square degrees), got {area_deg2!r}"
        )
    expected = _expected_bytes(math.sqrt(area))
    if expected > MAX_OUTPUT_BYTES:
        raise RaycatError(
            f"area {area:g} deg2 would write about {expected / 1e9:.0f} GB of "
            f"tiles (limit {MAX_OUTPUT_BYTES / 1e9:.0f} GB); choose a smaller area"
        )
    return float(area)


def _expected_bytes(side_deg: float) -> float:
    """Rough size of all tiles (rotated tiles are up to 2x larger: count 1.3x on average)."""
    total = 0.0
    for survey in SURVEYS.values():
        pixels = (survey.mock_tile_deg * 3600 / survey.pixel_scale) ** 2
        total += grid_size(survey, side_deg) ** 2 * len(survey.bands) * pixels * 4 * 1.3
    return total


def _nominal_exptime(band: Band) -> float:
    if band.mock_exptime > 0:
        return band.mock_exptime
    return GALEX_NOMINAL_EXPTIME if band.survey == "galex" else 0.0


def _band_at_exptime(band: Band, exptime: float) -> Band:
    """The band with its depth scaled to this tile's exposure (deeper for longer)."""
    nominal = _nominal_exptime(band)
    if nominal <= 0:
        return band
    return replace(band, depth_ab=band.depth_ab + 1.25 * math.log10(exptime / nominal))


def _fits_bytes(header: fits.Header, data: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(data=data, header=header)]).writeto(buffer)
    return buffer.getvalue()


def _render_band(
    tile: TileGeometry,
    band: str,
    on_tile: pd.DataFrame,
    x: np.ndarray,
    y: np.ndarray,
    circles: list,
    rng: np.random.Generator,
    seed: int,
    info: Band,
) -> tuple[fits.Header, np.ndarray]:
    """Header and pixels of one band of one tile (``info``: as the domain observes it)."""
    exptime = _nominal_exptime(info) * rng.uniform(1 - EXPTIME_SPREAD, 1 + EXPTIME_SPREAD)
    header = tile_header(tile, band, exptime, seed, info)
    zero_point = info.calibration.zero_point_ab(header)  # the header is the calibration
    sigma = sigma_pixel(_band_at_exptime(info, exptime), zero_point)
    header["SKYSIG"] = (float(np.float32(sigma)), "per-pixel noise sigma, pixel units")
    image = draw_band(tile, band, on_tile, x, y, zero_point, info)
    add_noise(image, sigma, rng)
    apply_masks(image, circles, band, rng)
    return header, image


def _write_tile(
    store: _Store,
    tile: TileGeometry,
    sources: pd.DataFrame,
    seed: int,
    survey_index: int,
    bands: dict[str, Band],
) -> list[dict]:
    """Draw and write every band of one tile; return its tile-index rows."""
    survey = SURVEYS[tile.survey]
    on_tile, x, y = sources_on_tile(tile, sources, margin_px=MAX_STAMP_HALF_PX + 1)
    circles = star_mask_circles(on_tile, x, y, survey.pixel_scale)
    rows = []
    for band_index, band in enumerate(survey.bands):
        rng = np.random.default_rng([seed, 2, survey_index, tile.index, band_index])
        header, image = _render_band(tile, band, on_tile, x, y, circles, rng, seed, bands[band])
        store.write_bytes(
            schema.tile_relpath(tile.survey, tile.name, band), _fits_bytes(header, image)
        )
        rows.append(tile.index_row(band))
    return rows


def _write_tiles_here(
    store: _Store,
    layouts: dict,
    sources: pd.DataFrame,
    seed: int,
    bands: dict[str, Band],
    progress: bool,
) -> list[dict]:
    """Every tile drawn and written in this process, one after the other."""
    rows: list[dict] = []
    for survey_index, survey in enumerate(SURVEYS.values()):
        tiles = layouts[survey.name]
        for tile in tiles:
            _progress(
                progress,
                f"{survey.name} tile {tile.index + 1}/{len(tiles)} ({len(survey.bands)} bands)",
            )
            rows += _write_tile(store, tile, sources, seed, survey_index, bands)
    return rows


def _tile_task(
    out: str,
    storage_options: dict | None,
    tile: TileGeometry,
    sources: pd.DataFrame,
    seed: int,
    survey_index: int,
    bands: dict[str, Band],
) -> tuple[list[dict], int]:
    """Ray task: one tile's bands drawn and written; its index rows and bytes written.

    It writes whole files named by the tile, so a retried task rewrites the same bytes."""
    store = _Store(out, storage_options)
    return _write_tile(store, tile, sources, seed, survey_index, bands), store.bytes_written


def _write_tiles_on_ray(
    store: _Store,
    layouts: dict,
    sources: pd.DataFrame,
    seed: int,
    bands: dict[str, Band],
    progress: bool,
) -> list[dict]:
    """Every tile drawn and written by a Ray task (one CPU each); rows in the serial order."""
    import ray

    from raycat.progress import Progress

    task = ray.remote(num_cpus=1)(_tile_task)
    shared = ray.put(sources)  # once, not once per task
    refs = [
        # replace(): a fresh geometry, without the cached WCS, whose pickle (a FITS header)
        # rounds the CD matrix and would move every source by ~1e-12 px
        task.remote(
            store.out, store.storage_options, replace(tile), shared, seed, survey_index, bands
        )
        for survey_index, survey in enumerate(SURVEYS.values())
        for tile in layouts[survey.name]
    ]
    counter = Progress(len(refs), "tiles", "simulate", write=_stderr if progress else _silent)
    pending = list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=len(pending), timeout=1.0)
        counter.update(len(ready))
    results = ray.get(refs)
    store.bytes_written += sum(written for _, written in results)
    return [row for rows, _ in results for row in rows]


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _silent(line: str) -> None:
    pass


def _public_columns(table: pd.DataFrame) -> pd.DataFrame:
    """Drop the internal per-component magnitudes (leading underscore)."""
    return table[[c for c in table.columns if not c.startswith("_")]].reset_index(drop=True)


def _write_catalogs(store: _Store, sources: pd.DataFrame) -> None:
    """truth.parquet (the targets) and sources.parquet (everything drawn)."""
    public = _public_columns(sources)
    targets = public[public[schema.TRUTH_KIND] == KIND_GALAXY].drop(columns=schema.TRUTH_TEFF)
    store.write_table(schema.TRUTH_FILE, targets)
    store.write_table(schema.SOURCES_FILE, public)


def _progress(enabled: bool, message: str) -> None:
    if enabled:
        _stderr(f"simulate: {message}")


def _write_tiles(
    store: _Store,
    layouts: dict,
    sources: pd.DataFrame,
    seed: int,
    bands: dict[str, Band],
    progress: bool,
    on_ray: bool,
) -> list[dict]:
    """The tiles written here or on Ray (joined or started for the call); their index rows."""
    if not on_ray:
        return _write_tiles_here(store, layouts, sources, seed, bands, progress)
    from raycat.runtime import ray_session

    with ray_session():  # an initialised Ray is used as it is
        return _write_tiles_on_ray(store, layouts, sources, seed, bands, progress)


def _draw_sky_sources(
    seed: int, n_galaxies: int, field: Field, background: Field, domain: SkyDomain
) -> pd.DataFrame:
    """Every source of the sky, with its E(B-V) and magnitudes dimmed by it."""
    grid = colour_grid()
    sources = draw_sources(
        np.random.default_rng([seed, 1]),
        n_galaxies,
        field,
        background,
        NEIGHBOUR_DENSITY_DEG2,
        STAR_DENSITY_DEG2,
        grid,
        domain.populations(),
    )
    ra, dec = sources[schema.RA].to_numpy(), sources[schema.DEC].to_numpy()
    return apply_extinction(sources, ebv_at(ra, dec, domain.extinction, seed), grid.bands)


def simulate_sky(
    out: str,
    n_galaxies: int = 2000,
    seed: int = 0,
    area_deg2: float | None = None,
    storage_options: dict | None = None,
    progress: bool = True,
    on_ray: bool = False,
    domain: str | SkyDomain = "default",
) -> SkySummary:
    """Write a mock 9-band sky (tiles, truth, sources, tile index) under ``out``.

    Parameters
    ----------
    out : local directory or fsspec URL (``s3://bucket/prefix``); created if needed.
    n_galaxies : number of target galaxies (rows of ``truth.parquet``).
    seed : random seed; the same seed writes byte-identical files.
    area_deg2 : sky area; default ``n_galaxies / 40000`` (about 11 targets per arcmin^2).
    storage_options : fsspec options for ``out`` (e.g. an S3 endpoint).
    progress : print one line per tile to stderr (on Ray: done/total, rate and ETA).
    on_ray : draw the tiles in Ray tasks, on the cluster joined (``RAY_ADDRESS``) or a local
        Ray; the same files as without.
    domain : the observing setup, a name of :data:`raycat.sky.domains.DOMAINS` or a
        :class:`~raycat.sky.domains.SkyDomain`; ``default`` is the built-in one.

    Raises
    ------
    RaycatError : bad arguments, an unknown domain, or ``out`` cannot be written.
    """
    started = time.perf_counter()
    area = _check_arguments(n_galaxies, seed, area_deg2)
    sky_domain = get_domain(domain)
    store = _Store(out, storage_options)
    field = Field(*FIELD_CENTRE, math.sqrt(area))
    store.write_bytes(
        schema.MOCK_SKY_META_FILE,
        json.dumps(  # first: fails fast if unwritable
            {
                "n_galaxies": int(n_galaxies),
                "seed": int(seed),
                "area_deg2": area,
                "centre_deg": list(FIELD_CENTRE),
                "side_deg": field.side_deg,
                "domain": sky_domain.model_dump(),
            },
            indent=1,
        ).encode(),
    )
    layouts = {
        survey.name: layout_survey(survey, field, np.random.default_rng([seed, 3, i]))
        for i, survey in enumerate(SURVEYS.values())
    }
    background = covering_field(field, [t for tiles in layouts.values() for t in tiles])
    sources = _draw_sky_sources(seed, int(n_galaxies), field, background, sky_domain)
    _progress(
        progress,
        f"{len(sources)} sources ({n_galaxies} targets) over {background.area_deg2:.3g} deg2",
    )
    _write_catalogs(store, sources)
    rows = _write_tiles(store, layouts, sources, seed, sky_domain.bands(), progress, on_ray)
    store.write_table(schema.TILE_INDEX_FILE, pd.DataFrame(rows))  # last: marks completion
    return SkySummary(
        out=out,
        n_galaxies=int(n_galaxies),
        n_sources=len(sources),
        n_tiles=len(rows),
        area_deg2=area,
        bytes_written=store.bytes_written,
        seconds=time.perf_counter() - started,
    )
