"""Which tile each object is cut from, band by band, reading only the index pixels it needs.

The choice (the contract of the planner): per object and band, the tile that holds the
object farthest from its edge, margin = min(x + 0.5, nx - 0.5 - x, y + 0.5, ny - 0.5 - y) in
native pixels as astropy's ``world_to_pixel_values`` gives them; "" where no tile of that
band holds it. An object can only lie in a tile listed under its own index pixel
(``raycat.surveys.tile_index``), so only those pixels are read, and a bounded LRU cache of
them keeps memory set by the tiles one work unit touches, not by the sky.

Within a pixel, each tile is also listed under the finer pixels its enclosing circle
reaches, so an object is tested against the few tiles around it. For a plain TAN tile the
pixel position is computed in NumPy (gnomonic projection as dot products with the tile's
tangent-plane axes, then the inverse CD matrix): agreeing with astropy to ~1e-10 px. Where
that could change the answer (an object within ``EPS_PX`` of an edge, two tiles within
``EPS_PX`` of a tie), and for every other projection (TAN-SIP, ZEA, ...), astropy decides,
with its WCS built lazily and cached with a bound. Exact ties go to the smallest URI.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd

from raycat import schema
from raycat.healpix import ORDER as HP29_ORDER
from raycat.healpix import healpix29
from raycat.surveys.tile_index import INDEX_COLUMNS, TileIndex

EPS_PX = 1e-6  # NumPy margins closer than this to 0 or to a rival are settled by astropy
FINE_STEPS = (3, 4, 5, 6)  # finer orders (index order + step) a pixel's rows are listed at
READ_THREADS = 8  # index pixels read at once (I/O bound: listings and small files)
WCS_CACHE = 512  # astropy WCS objects kept (~15 KB each)
ASSIGN_CHUNK = 65_536  # objects per pass: bounds the pass's (object, tile) pair arrays
# What the finder reads of an index pixel: all but the header text (read when needed)
PLAN_COLUMNS = tuple(c for c in INDEX_COLUMNS if c != schema.TILE_WCS)


@dataclass
class _Pixel:
    """The rows of one index pixel as arrays, listed by its finer pixels."""

    uris: np.ndarray  # object array of tile URIs
    band: np.ndarray  # band number (position in the finder's bands)
    plain: np.ndarray  # bool: plain TAN, computed in NumPy
    centre: np.ndarray  # (n, 3) unit vector of CRVAL
    ax: np.ndarray  # (n, 3): x - x0 = (p . ax) / (p . centre)
    ay: np.ndarray
    x0: np.ndarray  # 0-based pixel of CRVAL
    y0: np.ndarray
    nx: np.ndarray
    ny: np.ndarray
    pixel: int  # the index pixel (its header strings are read only if astropy must decide)
    wcs: np.ndarray | None  # object array of header strings, once read
    fine_shift: int  # _healpix_29 >> fine_shift = fine pixel
    fine_base: int  # first fine pixel under this pixel
    starts: np.ndarray  # entries of fine pixel k: rows[starts[k]:starts[k + 1]]
    rows: np.ndarray


class TileFinder:
    """Picks, per object and band, the tile that holds the object farthest from its edge."""

    def __init__(self, index: TileIndex, bands: list[str], cache_pixels: int = 16):
        self.index = index
        self.bands = list(bands)
        self.cache_pixels = max(1, int(cache_pixels))
        self._pixels: OrderedDict[int, _Pixel] = OrderedDict()
        self._wcs: OrderedDict[str, object] = OrderedDict()
        self.loads = 0  # index pixels read (a pixel evicted and needed again counts twice)

    @property
    def cached_pixels(self) -> list[int]:
        return list(self._pixels)

    def assign(self, ra: np.ndarray, dec: np.ndarray) -> dict[str, np.ndarray]:
        """Tile URI per object for each band; "" where no tile of that band holds it."""
        ra, dec = np.asarray(ra, dtype=float), np.asarray(dec, dtype=float)
        if len(ra) > ASSIGN_CHUNK:  # a pass holds ~20 (object, tile) pairs per object
            parts = [
                self.assign(ra[at : at + ASSIGN_CHUNK], dec[at : at + ASSIGN_CHUNK])
                for at in range(0, len(ra), ASSIGN_CHUNK)
            ]
            return {b: np.concatenate([p[b] for p in parts]) for b in self.bands}
        best = {b: np.full(len(ra), "", dtype=object) for b in self.bands}
        if len(ra) == 0 or not self.bands:
            return best
        hp29 = healpix29(ra, dec)
        coarse = hp29 >> (2 * (HP29_ORDER - self.index.index_order))
        order = np.argsort(coarse, kind="stable")
        cuts = np.flatnonzero(np.diff(coarse[order])) + 1
        groups = np.split(order, cuts)
        for start in range(0, len(groups), self.cache_pixels):  # at most a cache's worth
            chunk = groups[start : start + self.cache_pixels]
            tables = self._tables([int(coarse[g[0]]) for g in chunk])
            for group, table in zip(chunk, tables):
                if table is not None:
                    self._assign_group(table, group, ra, dec, hp29, best)
        return best

    # --- one index pixel -------------------------------------------------------------

    def _assign_group(self, table: _Pixel, group, ra, dec, hp29, best) -> None:
        local = (hp29[group] >> table.fine_shift) - table.fine_base
        lo, hi = table.starts[local], table.starts[local + 1]
        counts = hi - lo
        obj = np.repeat(np.arange(len(group)), counts)
        if len(obj) == 0:
            return
        first = np.repeat(lo - (np.cumsum(counts) - counts), counts)
        row = table.rows[np.arange(len(obj)) + first]
        ra_g, dec_g = ra[group], dec[group]
        margin = self._margins(table, obj, row, ra_g, dec_g)
        key = obj * len(self.bands) + table.band[row]  # sorted: entries are by (band, uri)
        unsure = _unsure_objects(key, margin, len(self.bands))
        redo = np.isin(obj, unsure) & table.plain[row]
        if redo.any():
            margin[redo] = self._astropy_margins(
                table, row[redo], ra_g[obj[redo]], dec_g[obj[redo]]
            )
        inside = margin >= 0
        winners = _winners(key[inside], margin[inside])
        o, r = obj[inside][winners], row[inside][winners]
        for b, band in enumerate(self.bands):
            pick = table.band[r] == b
            best[band][group[o[pick]]] = table.uris[r[pick]]

    def _margins(self, table: _Pixel, obj, row, ra, dec) -> np.ndarray:
        """Edge margin (native px, -inf behind the tangent plane) of each (object, row)."""
        p = _unit_vectors(ra, dec)
        margin = np.empty(len(obj))
        plain = table.plain[row]
        o, r = obj[plain], row[plain]
        po = p[o]
        w = np.einsum("ij,ij->i", po, table.centre[r])
        with np.errstate(divide="ignore", invalid="ignore"):
            x = table.x0[r] + np.einsum("ij,ij->i", po, table.ax[r]) / w
            y = table.y0[r] + np.einsum("ij,ij->i", po, table.ay[r]) / w
        m = np.minimum(
            np.minimum(x + 0.5, table.nx[r] - 0.5 - x), np.minimum(y + 0.5, table.ny[r] - 0.5 - y)
        )
        margin[plain] = np.where((w > 0) & np.isfinite(m), m, -np.inf)
        if not plain.all():
            other = ~plain
            margin[other] = self._astropy_margins(
                table, row[other], ra[obj[other]], dec[obj[other]]
            )
        return margin

    def _astropy_margins(self, table: _Pixel, row, ra, dec) -> np.ndarray:
        """Margins as astropy gives them (the reference arithmetic), one WCS per row."""
        margin = np.empty(len(row))
        order = np.argsort(row, kind="stable")
        cuts = np.flatnonzero(np.diff(row[order])) + 1
        for group in np.split(order, cuts):
            t = int(row[group[0]])
            x, y = self._astropy_wcs(self._headers(table)[t]).world_to_pixel_values(
                ra[group], dec[group]
            )
            nx, ny = table.nx[t], table.ny[t]
            m = np.minimum.reduce([x + 0.5, nx - 0.5 - x, y + 0.5, ny - 0.5 - y])
            margin[group] = np.where(np.isfinite(m), m, -np.inf)
        return margin

    def _headers(self, table: _Pixel) -> np.ndarray:
        """The WCS header text of each of ``table``'s rows, read on first need: they are
        most of an index pixel's bytes, and only edge cases and non-TAN tiles use them."""
        if table.wcs is None:
            rows = self.index.rows_for([table.pixel], (schema.TILE_WCS,))
            text = dict(
                zip(zip(rows[schema.TILE_BAND], rows[schema.TILE_URI]), rows[schema.TILE_WCS])
            )
            names = np.array(self.bands, dtype=object)[table.band]
            table.wcs = np.array([text[k] for k in zip(names, table.uris)], dtype=object)
        return table.wcs

    def _astropy_wcs(self, text: str):
        if text in self._wcs:
            self._wcs.move_to_end(text)
            return self._wcs[text]
        from astropy.io import fits
        from astropy.wcs import WCS

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wcs = WCS(fits.Header.fromstring(text))
        self._wcs[text] = wcs
        if len(self._wcs) > WCS_CACHE:
            self._wcs.popitem(last=False)
        return wcs

    # --- the pixel cache -------------------------------------------------------------

    def _tables(self, pixels: list[int]) -> list[_Pixel | None]:
        """The tables of ``pixels`` (no more than the cache holds), the missing ones read
        on ``READ_THREADS`` threads: an index pixel is a listing and a few small files,
        so reading them one after another waits on the store's latency, not on the CPU."""
        missing = [p for p in pixels if p not in self._pixels]
        self.loads += len(missing)
        if len(missing) > 1:
            with ThreadPoolExecutor(min(READ_THREADS, len(missing))) as pool:
                read = dict(zip(missing, pool.map(self._read, missing)))
        else:
            read = {p: self._read(p) for p in missing}
        tables = []
        for pixel in pixels:
            if pixel in read:
                table = read[pixel]
                if table is not None:
                    self._pixels[pixel] = table
            else:
                self._pixels.move_to_end(pixel)
                table = self._pixels[pixel]
            tables.append(table)
        while len(self._pixels) > self.cache_pixels:
            self._pixels.popitem(last=False)
        return tables

    def _read(self, pixel: int) -> _Pixel | None:
        rows = self.index.rows_for([pixel], PLAN_COLUMNS)
        return _pixel_table(rows, pixel, self.index.index_order, self.bands) if len(rows) else None


def _unsure_objects(key: np.ndarray, margin: np.ndarray, n_bands: int) -> np.ndarray:
    """Objects whose choice NumPy's rounding could change: a margin within EPS_PX of 0, or
    the best two of a band within EPS_PX of each other."""
    near_edge = np.abs(margin) < EPS_PX
    live = margin > -EPS_PX
    k, m = key[live], margin[live]
    unsure = [key[near_edge] // n_bands]
    if len(k) > 1:
        starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
        top = np.maximum.reduceat(m, starts)
        sizes = np.diff(np.r_[starts, len(k)])
        rest = np.where(m == np.repeat(top, sizes), -np.inf, m)
        second = np.maximum.reduceat(rest, starts)
        ties = (np.repeat(top, sizes) == m).astype(int)
        double = np.add.reduceat(ties, starts) > 1
        close = (top - second < EPS_PX) | double
        unsure.append(k[starts[close]] // n_bands)
    return np.unique(np.concatenate(unsure))


def _winners(key: np.ndarray, margin: np.ndarray) -> np.ndarray:
    """Index of the largest margin of each run of equal keys (the first on a tie)."""
    if len(key) == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    top = np.repeat(np.maximum.reduceat(margin, starts), np.diff(np.r_[starts, len(key)]))
    at = np.flatnonzero(margin == top)
    return at[np.r_[True, key[at[1:]] != key[at[:-1]]]]


def _unit_vectors(ra, dec) -> np.ndarray:
    ra, dec = np.radians(ra), np.radians(dec)
    cos_dec = np.cos(dec)
    return np.stack([cos_dec * np.cos(ra), cos_dec * np.sin(ra), np.sin(dec)], axis=-1)


def _pixel_table(rows: pd.DataFrame, pixel: int, order: int, bands: list[str]) -> _Pixel:
    """Arrays of a pixel's rows (sorted by band, then URI) and their fine-pixel listing."""
    band_of = {b: i for i, b in enumerate(bands)}
    rows = rows.assign(_b=rows[schema.TILE_BAND].map(band_of))
    rows = rows.sort_values(["_b", schema.TILE_URI], kind="stable").reset_index(drop=True)
    num = {c: rows[c].to_numpy(float) for c in schema.TILE_WCS_NUMBERS}
    centre = _unit_vectors(num[schema.TILE_CRVAL1], num[schema.TILE_CRVAL2])
    east, north = _tangent_axes(num[schema.TILE_CRVAL1], num[schema.TILE_CRVAL2])
    a, b = num[schema.TILE_CD11], num[schema.TILE_CD12]
    c, d = num[schema.TILE_CD21], num[schema.TILE_CD22]
    det = a * d - b * c
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.degrees(1.0) / det  # xi, eta come out in radians; CD is in degrees
    ax = (d * inv)[:, None] * east - (b * inv)[:, None] * north
    ay = -(c * inv)[:, None] * east + (a * inv)[:, None] * north
    plain = rows[schema.TILE_PLAIN_TAN].to_numpy(bool) & np.isfinite(inv)
    shift, base, starts, listed = _fine_listing(rows, pixel, order)
    return _Pixel(
        uris=rows[schema.TILE_URI].to_numpy(object),
        band=rows["_b"].to_numpy(np.int64),
        plain=plain,
        centre=centre,
        ax=ax,
        ay=ay,
        x0=num[schema.TILE_CRPIX1] - 1.0,
        y0=num[schema.TILE_CRPIX2] - 1.0,
        nx=rows[schema.TILE_NAXIS1].to_numpy(float),
        ny=rows[schema.TILE_NAXIS2].to_numpy(float),
        pixel=pixel,
        wcs=None,
        fine_shift=shift,
        fine_base=base,
        starts=starts,
        rows=listed,
    )


def _tangent_axes(ra0, dec0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors east and north at (ra0, dec0): the gnomonic xi and eta directions."""
    a, d = np.radians(ra0), np.radians(dec0)
    east = np.stack([-np.sin(a), np.cos(a), np.zeros_like(a)], axis=-1)
    north = np.stack([-np.sin(d) * np.cos(a), -np.sin(d) * np.sin(a), np.cos(d)], axis=-1)
    return east, north


def _fine_listing(rows: pd.DataFrame, pixel: int, order: int):
    """Each row under the finer pixels (children of ``pixel``) its enclosing circle may
    reach: (shift from _healpix_29, first child, CSR starts, rows by child then band/URI).

    The finer order puts ~3 children across the smallest typical tile radius, capped so
    that at most 4**6 children are tested.
    """
    import astropy.units as u
    from cdshealpix.nested import healpix_to_lonlat, vertices

    radius = rows[schema.TILE_RADIUS].to_numpy(float)
    side = np.degrees(np.sqrt(4 * np.pi / (12 * 4.0**order)))
    want = np.log2(side / max(float(np.median(radius)) / 3, 1e-9))
    step = int(np.clip(np.ceil(want), FINE_STEPS[0], FINE_STEPS[-1]))
    fine = order + step
    base = pixel << (2 * step)
    children = np.arange(base, base + 4**step, dtype=np.int64)
    # one thread: a few thousand cells take ~1 ms, less than starting a thread pool
    lon, lat = healpix_to_lonlat(children, fine, num_threads=1)
    centres = _unit_vectors(lon.to_value(u.deg), lat.to_value(u.deg))
    vlon, vlat = vertices(children, fine, num_threads=1)
    corner = _unit_vectors(vlon.to_value(u.deg), vlat.to_value(u.deg))
    cos_r = np.clip(np.einsum("ijk,ik->ij", corner, centres), -1, 1)
    reach = float(np.arccos(cos_r.min())) * 1.05  # a child's points lie within this
    tile = _unit_vectors(
        rows[schema.TILE_RA].to_numpy(float), rows[schema.TILE_DEC].to_numpy(float)
    )
    limit = np.cos(np.minimum(np.radians(radius * 1.0001) + reach, np.pi))
    child, row = np.nonzero(centres @ tile.T >= limit[None, :])  # by child, then row
    starts = np.searchsorted(child, np.arange(len(children) + 1))
    return 2 * (HP29_ORDER - fine), int(base), starts, row.astype(np.int64)
