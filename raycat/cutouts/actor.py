"""Cutouts: every object, every band, one common grid; pure functions plus the Ray actor.

``cutout_batch`` turns a batch of manifest rows (id, ra, dec, work_unit, flags, optional
z_spec, and ``tile_<band>`` = tile URI relative to the store or "") into one cube per object,
float32 [n_bands, S, S], in input order, one output row per input row whatever happens.
Geometry and resampling are in ``raycat.cutouts.resample``. Per band, objects are grouped by tile:

- dense: the section of the tile that the batch's objects on it cover (their footprints'
  bounding box plus the interpolation margin) is read once, calibrated and box-averaged, and
  every object is sampled from it in one vectorised pass. Sections are not kept: preparing
  a section again costs less than the memory traffic of a cache of whole tiles (measured:
  ``benchmarks/cutouts_sky.py``). A tile that cannot be range-read (gzip, tile-compressed,
  or read with such a companion) is read and prepared whole instead and kept in a small LRU
  cache, because consecutive batches come from the same work unit and so the same tiles.
- sparse: for each object only its footprint's bounding box (plus the interpolation margin)
  is read, as byte ranges.

``read_mode`` auto picks dense when a tile has at least ``dense_min_objects`` objects in the
batch, or when it cannot be range-read.

Each band is normalised as asinh(flux / softening), flux in AB nanomaggies per output pixel.
The default softening is about the band's 1-sigma sky noise per output pixel implied by its
5-sigma depth (``raycat.surveys.bands.default_softening``), so sky noise spans about +-1 and
bright sources are compressed logarithmically. Filled pixels (off the tile, masked, missing
or unreadable band) are 0, which is sky after normalisation. Flags (``schema.Flag``) say why.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from raycat import schema
from raycat.config import CutoutConfig
from raycat.cutouts.resample import (
    CutoutGrid,
    LocalAffine,
    PreparedImage,
    local_affine,
    prepare_image,
    resample,
    smoothing_box,
)
from raycat.surveys.bands import Band, get_band, softenings
from raycat.surveys.pixels import companion_uris, read_pixels
from raycat.surveys.store import (
    LRUCache,
    StorePathError,
    TileLayout,
    TileReadError,
    TileStore,
    open_store,
)

Flag = schema.Flag
log = logging.getLogger(__name__)
DEFAULT_CACHE_BYTES = 512 * 2**20  # prepared full tiles kept per actor
TILE_INFOS = 128  # tile infos (parsed WCS and header) kept per actor: TileCache
MMAP_THRESHOLD = 32 * 2**20  # bytes from which glibc maps an allocation (whole tiles)
TRIM_THRESHOLD = 128 * 2**20  # free heap bytes glibc keeps for the next batch
PIXELS_PER_PASS = 256 * 32 * 32  # output pixels per vectorised pass: temporaries ~40 MB


def normalise(flux: np.ndarray, softening: np.ndarray) -> np.ndarray:
    """asinh(flux / softening) per band; ``flux`` is [n, n_bands, S, S] nanomaggies.

    Works in place on a float32 ``flux`` (no second cube in memory) and returns it.
    """
    cube = np.asarray(flux, dtype=np.float32)
    cube /= softening.astype(np.float32)[None, :, None, None]
    return np.arcsinh(cube, out=cube)


@dataclass(frozen=True)
class TileInfo:
    """What sampling needs from a tile's header: WCS, calibration, smoothing box, and the
    band whose conventions its pixels follow (``tile_pixels.read_pixels``)."""

    layout: TileLayout
    wcs: Any  # astropy.wcs.WCS
    nmgy_per_unit: float
    box: int
    band: Band
    native_scale: float  # arcsec / px
    sections: bool  # it and the companions read with it can be range-read

    def pixels(self, store: TileStore, uri: str, box=None, one_request=False) -> np.ndarray:
        """The tile's linear pixels (all, or ``box`` = y0, y1, x0, x1), non-data NaN;
        ``one_request`` as in ``TileStore.read_section``."""
        return read_pixels(store, uri, self.band, self.layout, self.native_scale, box, one_request)


class TileCache:
    """Per-actor caches: tile infos (by count) and prepared full tiles (by bytes).

    A tile info holds a parsed WCS (6 KB) and the tile's header, which the store keeps too
    (19 KB for the mock sky's 31 cards: astropy keeps a Python object per card). Both caches
    keep ``TILE_INFOS`` tiles, so an actor's memory is set by that bound and not by the
    tiles it has seen (a full sky has about a million). Rows come in curve order, about 22
    tiles a batch over the nine bands; on the 100k mock sky (1,240 tiles, 17,113 tile
    lookups by one actor) an LRU of 128 misses 1,871 times, of 512 1,338 times, of 64
    2,477 times. A miss costs one header read (a GET on object storage) and a WCS parse;
    every lookup reads pixels anyway.
    """

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES, max_infos: int = TILE_INFOS):
        self.infos = LRUCache(max_infos)
        self.images = LRUCache(
            max_items=1 << 20, max_bytes=max_bytes, sizeof=lambda image: image.nbytes
        )


def tile_info(store: TileStore, uri: str, band: str | Band, pixel_scale: float) -> TileInfo:
    """Read a tile's header and derive its WCS, calibration and smoothing box.

    ``band`` (a name, or a definition such as ``CutoutConfig.band``) says which HDU holds the
    image and how its units calibrate (``raycat.surveys.bands``).

    A header without a usable celestial WCS or calibration is a bad tile: TileReadError.
    """
    import warnings

    from astropy.utils.exceptions import AstropyWarning
    from astropy.wcs import WCS
    from astropy.wcs.utils import proj_plane_pixel_scales

    band = band if isinstance(band, Band) else get_band(band)
    layout = store.layout(uri, band.layout.image_hdu)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
            wcs = WCS(layout.header, naxis=2)
        if not wcs.has_celestial:
            raise ValueError("no celestial WCS")
        native_scale = float(np.sqrt(np.prod(proj_plane_pixel_scales(wcs)))) * 3600.0
        unit = band.calibration.nmgy_per_unit(layout.header)
    except Exception as err:  # astropy raises many types for a bad header
        raise TileReadError(f"cannot use tile {uri}: {type(err).__name__}: {err}") from err
    box = smoothing_box(native_scale, pixel_scale)
    sections = layout.range_readable and all(
        _range_readable(store, c) for c in companion_uris(band, uri)
    )
    return TileInfo(layout, wcs, float(unit), box, band, native_scale, sections)


def _range_readable(store: TileStore, uri: str) -> bool:
    """Whether a companion can be range-read; a missing or unreadable one cannot (the whole
    tile is then read and cached, and the companion's problem reported once)."""
    try:
        return store.layout(uri).range_readable
    except (TileReadError, StorePathError):
        return False


class _BandCutter:
    """Cuts one band for a batch: groups objects by tile and reads dense or sparse."""

    def __init__(self, store: TileStore, cfg: CutoutConfig, cache: TileCache, band: str):
        self.store, self.cfg, self.cache, self.band = store, cfg, cache, band
        self.definition = cfg.band(band)
        self.grid = CutoutGrid(cfg.size_px, cfg.pixel_scale)
        self.failed: dict[str, np.ndarray] = {}  # unreadable tile URI -> rows it held

    def cut(
        self, uris: np.ndarray, ra: np.ndarray, dec: np.ndarray, out: np.ndarray, flags: np.ndarray
    ) -> None:
        """Fill ``out`` [n, S, S] with this band's cutouts and OR flags into ``flags``; the
        tiles that could not be read, with their rows, are kept in ``failed``."""
        flags[uris == ""] |= Flag.MISSING_BAND
        for uri in np.unique(uris[uris != ""]):
            rows = np.flatnonzero(uris == uri)
            try:
                info = self._info(uri)
                affine = self._affine(uri, info, ra[rows], dec[rows])
                if self._dense(uri, info, len(rows)):
                    self._cut_dense(uri, info, affine, rows, out, flags)
                else:
                    self._cut_sparse(uri, info, affine, rows, out, flags)
            except (TileReadError, StorePathError) as err:  # this tile only; the batch goes on
                log.warning("%s: %d objects flagged READ_ERROR", err, len(rows))
                out[rows] = 0.0
                flags[rows] |= Flag.READ_ERROR
                self.failed[str(uri)] = rows

    def _affine(self, uri: str, info: TileInfo, ra: np.ndarray, dec: np.ndarray) -> LocalAffine:
        try:
            return local_affine(info.wcs, ra, dec, self.grid.half_extent)
        except Exception as err:  # a WCS astropy parsed but cannot evaluate
            raise TileReadError(f"cannot map objects into tile {uri}: {err}") from err

    def _info(self, uri: str) -> TileInfo:
        key = (uri, self.band, self.cfg.pixel_scale)
        info = self.cache.infos.get(key)
        if info is None:
            info = tile_info(self.store, uri, self.definition, self.cfg.pixel_scale)
            self.cache.infos.put(key, info)
        return info

    def _dense(self, uri: str, info: TileInfo, n_objects: int) -> bool:
        mode = self.cfg.read_mode
        if mode == "dense" or not info.sections:  # a tile that cannot be range-read: whole
            return True
        return mode == "auto" and n_objects >= self.cfg.dense_min_objects

    def _cut_dense(self, uri, info, affine: LocalAffine, rows, out, flags) -> None:
        """All the tile's objects in the batch from one prepared image: the section their
        footprints cover, or the whole tile (kept in the cache) when it cannot be range-read."""
        box = _union(affine.footprint(self.grid, margin=_margin(info)), info.layout.shape)
        if info.sections or box[1] <= box[0]:  # (an empty box: no object reaches the tile)
            image = self._section(uri, info, box, one_request=True)
        else:
            image = self._whole_tile(uri, info)
        per_pass = max(1, PIXELS_PER_PASS // self.cfg.size_px**2)
        for start in range(0, len(rows), per_pass):
            part = slice(start, start + per_pass)
            self._store_result(
                resample(image, affine.take(part), self.grid), rows[part], out, flags
            )

    def _cut_sparse(self, uri, info, affine: LocalAffine, rows, out, flags) -> None:
        ny, nx = info.layout.shape
        boxes = affine.footprint(self.grid, margin=_margin(info))
        for k in range(len(rows)):
            image = self._section(uri, info, _union(boxes[k : k + 1], (ny, nx)), one_request=False)
            self._store_result(
                resample(image, affine.take([k]), self.grid), rows[k : k + 1], out, flags
            )

    def _whole_tile(self, uri, info: TileInfo) -> PreparedImage:
        """The prepared whole tile, from the cache or read and kept there."""
        image = self.cache.images.get((uri, info.box))
        if image is None:
            image = prepare_image(info.pixels(self.store, uri), info.nmgy_per_unit, info.box)
            self.cache.images.put((uri, info.box), image)
        return image

    def _section(self, uri, info: TileInfo, box, one_request: bool) -> PreparedImage:
        """The prepared pixels of ``box`` (y0, y1, x0, x1, inside the tile; empty: all the
        objects are off the tile, nothing is read)."""
        y0, y1, x0, x1 = box
        shape = info.layout.shape
        if y1 <= y0 or x1 <= x0:
            return PreparedImage(np.zeros((1, 1), np.float32), None, (0, 0), shape, 1)
        pixels = info.pixels(self.store, uri, box, one_request)
        return prepare_image(pixels, info.nmgy_per_unit, info.box, (y0, x0), shape)

    @staticmethod
    def _store_result(result, rows, out, flags) -> None:
        out[rows] = result.flux
        flags[rows[result.edge]] |= Flag.EDGE
        flags[rows[result.masked]] |= Flag.NAN_PIXELS


def _margin(info: TileInfo) -> int:
    """Tile pixels read beyond a cutout's footprint (to its outer pixel edges): the box
    filter's and the bilinear sampling's reach, with room to spare."""
    return info.box + 2


def _union(boxes: np.ndarray, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """The smallest box (y0, y1, x0, x1) holding the parts of ``boxes`` (n, 4) inside the
    tile; (0, 0, 0, 0) when none of them reaches it (an object off the tile does not
    stretch the box)."""
    ny, nx = shape
    y0, x0 = np.maximum(boxes[:, 0], 0), np.maximum(boxes[:, 2], 0)
    y1, x1 = np.minimum(boxes[:, 1], ny), np.minimum(boxes[:, 3], nx)
    inside = (y1 > y0) & (x1 > x0)
    if not inside.any():
        return 0, 0, 0, 0
    return (
        int(y0[inside].min()),
        int(y1[inside].max()),
        int(x0[inside].min()),
        int(x1[inside].max()),
    )


def _uri_column(batch: Mapping[str, np.ndarray], band: str, n: int) -> np.ndarray:
    """The band's tile URIs as a str array; None/NaN/absent column mean "no tile"."""
    column = batch.get(schema.tile_column(band))
    if column is None:
        return np.full(n, "", dtype=str)
    column = np.asarray(column)
    if column.dtype.kind == "U":
        return column
    return np.array(
        ["" if v is None or (isinstance(v, float) and v != v) else str(v) for v in column],
        dtype=str,
    )


def cutout_batch(
    batch: Mapping[str, np.ndarray],
    store: TileStore,
    cfg: CutoutConfig,
    cache: TileCache | None = None,
    *,
    normalised: bool = True,
) -> dict[str, np.ndarray]:
    """Cut every object of a manifest batch out of every band (see the module docstring).

    Returns the columns of ``schema.PASS_THROUGH`` present in the input, ``read_error_tile``
    (the URI of the first tile that could not be read for each object, "" for none: a job
    that fails on unreadable tiles names them), ``flags`` (int32, input flags OR-ed with the
    new ones) and ``cube`` float32 [n, n_bands, S, S]:
    asinh-normalised, or nanomaggies per output pixel when ``normalised`` is False. Exactly
    one output row per input row, in input order.
    """
    cache = cache or TileCache()
    ra = np.asarray(batch[schema.RA], dtype=float)
    dec = np.asarray(batch[schema.DEC], dtype=float)
    n, size = len(ra), cfg.size_px
    flags = np.zeros(n, dtype=np.int32)
    if schema.FLAGS in batch:
        flags |= np.asarray(batch[schema.FLAGS]).astype(np.int32)
    cube = np.zeros((n, len(cfg.bands), size, size), dtype=np.float32)
    covered = np.zeros(n, dtype=bool)
    error_tile = np.full(n, "", dtype=object)  # the first unreadable tile of each object
    for b, band in enumerate(cfg.bands):
        uris = _uri_column(batch, band, n)
        covered |= uris != ""
        band_flags = np.zeros(n, dtype=np.int32)
        cutter = _BandCutter(store, cfg, cache, band)
        cutter.cut(uris, ra, dec, cube[:, b], band_flags)
        flags |= band_flags
        for uri, rows in cutter.failed.items():
            error_tile[rows[error_tile[rows] == ""]] = uri
    # an object no band holds is off the footprint, not "missing" in each band
    flags[~covered] = (flags[~covered] & ~np.int32(Flag.MISSING_BAND)) | Flag.OFF_FOOTPRINT
    if normalised:
        cube = normalise(cube, softenings(cfg))
    out = {k: np.asarray(batch[k]) for k in schema.PASS_THROUGH if k in batch}
    out[schema.READ_ERROR_TILE] = error_tile
    out[schema.FLAGS] = flags
    out[schema.CUBE] = cube
    return out


class CutoutActor:
    """Ray Data callable class: ``map_batches(CutoutActor, batch_format="numpy", ...)``.

    Holds one store and one tile cache for its lifetime, so the tiles of a work unit are read
    once even when the unit spans several batches.
    """

    def __init__(
        self,
        store: str,
        storage_options: dict | None,
        cutout_cfg: CutoutConfig,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        read_attempts: int = 5,
    ):
        tune_allocator()
        self.cfg = cutout_cfg
        self.store = open_store(store, storage_options, read_attempts)
        self.cache = TileCache(cache_bytes)

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return cutout_batch(batch, self.store, self.cfg, self.cache)


def tune_allocator() -> None:
    """Set glibc's allocator for tiles: allocations of ``MMAP_THRESHOLD`` bytes or more by
    mmap, and up to ``TRIM_THRESHOLD`` bytes of free heap kept rather than returned.

    A whole survey tile (PS1 skycell 156 MB, GALEX 59 MB as float32) is then mmapped, so one
    the cache evicts goes back to the OS instead of leaving a hole in the heap (by default
    glibc raises its mmap threshold to the largest block freed, and its heap kept 910-930 MiB
    per actor against 730 with a fixed threshold: benchmarks/memory_scale.py). Sections and
    batch temporaries, a few MB each and allocated for every batch, are reused from the heap:
    with a 1 MiB threshold each one was freshly mapped and faulted in, 30% more CPU per
    object on the 20k mock sky (benchmarks/cutouts_sky.py: 1.05 ms against 0.81, same peak
    RSS, 298 MiB). A no-op where the C library is not glibc (macOS).
    """
    import ctypes

    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    mallopt(m_mmap_threshold, MMAP_THRESHOLD)  # also ends the dynamic thresholds
    mallopt(m_trim_threshold, TRIM_THRESHOLD)
