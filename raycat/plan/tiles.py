"""Which tile each object is cut from, band by band, reading only the index pixels it needs.

The choice (the contract of the planner): per object and band, the tile that holds the
object farthest from its edge, margin = min(x + 0.5, nx - 0.5 - x, y + 0.5, ny - 0.5 - y) in
native pixels as astropy's ``world_to_pixel_values`` gives them; "" where no tile of that
band holds it. An object can only lie in a tile listed under its own index pixel
(``raycat.surveys.tile_index``), so only those pixels are read, and a bounded LRU cache of
them keeps memory set by the tiles one work unit touches, not by the sky.

Within a pixel, an object is tested only against the tiles whose enclosing circle reaches
its finer pixel (the cells its objects occupy, matched per group of objects, so a sparse sky
pays for the cells it has, not for all of them). For a plain TAN tile the
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

import numpy as np
import pyarrow as pa

from raycat import schema
from raycat.healpix import ORDER as HP29_ORDER
from raycat.healpix import healpix29
from raycat.plan.tile_pixels import (
    PixelRows,
    candidates,
    cell_circles,
    pixel_rows,
    ranges,
    unit_vectors,
)
from raycat.surveys.tile_index import TileIndex

EPS_PX = 1e-6  # NumPy margins closer than this to 0 or to a rival are settled by astropy
READ_THREADS = 8  # index pixels read at once (I/O bound: listings and small files)
WCS_CACHE = 512  # astropy WCS objects kept (~15 KB each)
ASSIGN_CHUNK = 65_536  # objects per pass: bounds the pass's (object, tile) pair arrays
# Groups of up to this many objects are tested object by object against the tiles' circles;
# larger ones by the finer cells they occupy (fewer tests, plus a fixed ~0.6 ms for the cells)
DIRECT_MAX = 2048
# What the finder reads of an index pixel: the numbers it computes with; the header text,
# most of a pixel's bytes, is read only where astropy must decide
PLAN_COLUMNS = (
    schema.TILE_BAND,
    schema.TILE_URI,
    schema.TILE_NAXIS1,
    schema.TILE_NAXIS2,
    schema.TILE_RA,
    schema.TILE_DEC,
    schema.TILE_RADIUS,
    *schema.TILE_WCS_NUMBERS,
    schema.TILE_PLAIN_TAN,
)


class _Names:
    """The URIs a call picks from: each pixel's appended once (code 0 is "no tile"); a
    winner is stored as a code into them."""

    def __init__(self):
        self.parts: list[np.ndarray] = [np.array([""], dtype=object)]
        self.first: dict[int, int] = {}
        self.size = 1

    def offset(self, table: PixelRows) -> int:
        if table.pixel not in self.first:
            self.first[table.pixel] = self.size
            self.parts.append(table.uris)
            self.size += len(table.uris)
        return self.first[table.pixel]

    def array(self) -> pa.Array:
        """Every URI appended, as one Arrow array (built once, then taken from per band)."""
        return pa.array(np.concatenate(self.parts), pa.string())


class TileFinder:
    """Picks, per object and band, the tile that holds the object farthest from its edge."""

    def __init__(self, index: TileIndex, bands: list[str], cache_pixels: int = 16):
        self.index = index
        self.bands = list(bands)
        self.cache_pixels = max(1, int(cache_pixels))
        self._pixels: OrderedDict[int, PixelRows] = OrderedDict()
        self._wcs: OrderedDict[str, object] = OrderedDict()
        self.loads = 0  # index pixels read (a pixel evicted and needed again counts twice)

    @property
    def cached_pixels(self) -> list[int]:
        return list(self._pixels)

    def assign(self, ra: np.ndarray, dec: np.ndarray) -> dict[str, np.ndarray]:
        """Tile URI per object for each band; "" where no tile of that band holds it."""
        picked = self.assign_arrow(ra, dec)
        return {b: picked[b].to_numpy(zero_copy_only=False) for b in self.bands}

    def assign_arrow(self, ra: np.ndarray, dec: np.ndarray) -> dict[str, pa.Array]:
        """``assign`` as Arrow strings: winners are kept as codes into the URIs of the pixels
        read and taken at the end, never as one Python string per object and band."""
        ra, dec = np.asarray(ra, dtype=float), np.asarray(dec, dtype=float)
        names = _Names()
        codes = {b: np.zeros(len(ra), dtype=np.int64) for b in self.bands}
        for at in range(0, len(ra), ASSIGN_CHUNK):  # a pass holds ~20 pairs per object
            part = slice(at, at + ASSIGN_CHUNK)
            self._assign_pass(ra[part], dec[part], {b: c[part] for b, c in codes.items()}, names)
        uris = names.array()
        return {b: uris.take(pa.array(codes[b])) for b in self.bands}

    def _assign_pass(self, ra, dec, codes: dict[str, np.ndarray], names: _Names) -> None:
        if len(ra) == 0 or not self.bands:
            return
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
                    self._assign_group(table, group, ra, dec, hp29, codes, names)

    # --- one index pixel -------------------------------------------------------------

    def _assign_group(self, table: PixelRows, group, ra, dec, hp29, codes, names) -> None:
        if len(group) <= DIRECT_MAX:  # few objects: each is its own cell, of no extent
            inverse = np.arange(len(group))
            found = candidates(table, unit_vectors(ra[group], dec[group]), 0.0)
        else:
            cells, inverse = np.unique(
                hp29[group] >> (2 * (HP29_ORDER - table.fine_order)), return_inverse=True
            )
            found = candidates(table, *cell_circles(cells, table.fine_order))
        # margins once per (object, geometry): the bands of a tile share one
        gcounts = np.diff(found.geo_starts)[inverse]
        gobj = np.repeat(np.arange(len(group)), gcounts)
        grow = found.geo_rows[ranges(found.geo_starts[inverse], gcounts)]
        ra_g, dec_g = ra[group], dec[group]
        gmargin = self._margins(table, gobj, grow, ra_g, dec_g)
        counts = np.diff(found.starts)[inverse]
        obj = np.repeat(np.arange(len(group)), counts)
        if len(obj) == 0:
            return
        at = ranges(found.starts[inverse], counts)
        row = found.rows[at]
        margin = gmargin[np.repeat(np.cumsum(gcounts) - gcounts, counts) + found.geo_at[at]]
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
        first = names.offset(table)
        for b, band in enumerate(self.bands):
            pick = table.band[r] == b
            codes[band][group[o[pick]]] = first + r[pick]

    def _margins(self, table: PixelRows, obj, row, ra, dec) -> np.ndarray:
        """Edge margin (native px, -inf behind the tangent plane) of each (object, row)."""
        p = unit_vectors(ra, dec)
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

    def _astropy_margins(self, table: PixelRows, row, ra, dec) -> np.ndarray:
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

    def _headers(self, table: PixelRows) -> np.ndarray:
        """The WCS header text of each of ``table``'s rows, read on first need: they are
        most of an index pixel's bytes, and only edge cases and non-TAN tiles use them."""
        if table.wcs is None:
            rows = self.index.table_for([table.pixel], (schema.TILE_WCS,)).to_pydict()
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

    def _tables(self, pixels: list[int]) -> list[PixelRows | None]:
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

    def _read(self, pixel: int) -> PixelRows | None:
        rows = self.index.table_for([pixel], PLAN_COLUMNS)
        return pixel_rows(rows, pixel, self.index.index_order, self.bands) if len(rows) else None


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
