"""The HATS spatial index (``_healpix_29``): nested HEALPix pixel at order 29.

Computed with cdshealpix, exactly as ``hats.pixel_math.compute_spatial_index`` does, without
importing hats: its import costs about a second, which the planner would otherwise pay
before the first cutout (hats still sets the Parquet options and writes the metadata).
"""

from __future__ import annotations

import numpy as np

ORDER = 29  # the order of the HATS spatial index: the one place raycat writes it


def healpix29(ra, dec) -> np.ndarray:
    """``_healpix_29`` of positions in degrees (ra wrapped into [0, 360))."""
    from astropy.coordinates import Latitude, Longitude
    from cdshealpix.nested import lonlat_to_healpix

    ra = Longitude(np.asarray(ra, dtype=np.float64) % 360.0, unit="deg")
    dec = Latitude(np.asarray(dec, dtype=np.float64), unit="deg")
    return lonlat_to_healpix(ra, dec, ORDER).astype(np.int64)


def pixel_at_order(healpix_29, order: int) -> np.ndarray:
    """Nested HEALPix pixel at ``order`` of each ``_healpix_29`` value.

    A nested pixel's index is the prefix of its children's, so the pixel is the index with
    its last 2 * (29 - order) bits dropped: no trigonometry, and the same rule for planning
    work units and for checking that a catalog partition holds only its own rows.
    """
    return np.asarray(healpix_29, dtype=np.int64) >> (2 * (ORDER - order))


# --- work units of mixed orders -----------------------------------------------------------
# A work unit (= a catalog partition) is one HEALPix pixel at any order. It travels through
# the pipeline as one int64, its NUNIQ key 4 * 4**order + pixel (the IVOA MOC encoding):
# distinct for every (order, pixel), so units of mixed orders share one column and one dict.


def unit_key(order, pixel):
    """NUNIQ key of (order, pixel): scalars give a Python int, arrays an int64 array."""
    if np.ndim(order) == 0 and np.ndim(pixel) == 0:
        return (4 << (2 * int(order))) + int(pixel)
    order = np.asarray(order, dtype=np.int64)
    return (np.int64(4) << (2 * order)) + np.asarray(pixel, dtype=np.int64)


def unit_order_pixel(key: int) -> tuple[int, int]:
    """(order, pixel) of one NUNIQ key."""
    key = int(key)
    order = (key.bit_length() - 3) // 2
    return order, key - (4 << (2 * order))


def unit_orders_pixels(keys) -> tuple[np.ndarray, np.ndarray]:
    """(orders, pixels) of an array of NUNIQ keys."""
    keys = np.asarray(keys, dtype=np.int64)
    order = np.zeros(keys.shape, dtype=np.int64)
    for level in range(1, ORDER + 1):  # order = the highest level with 4 * 4**level <= key
        order[keys >= (4 << (2 * level))] = level
    return order, keys - (np.int64(4) << (2 * order))


def unit_ranges(keys) -> tuple[np.ndarray, np.ndarray]:
    """[start, end) of each unit in ``_healpix_29``: a pixel covers a contiguous range."""
    order, pixel = unit_orders_pixels(keys)
    shift = 2 * (ORDER - order)
    return pixel << shift, (pixel + 1) << shift


class Partitioning:
    """Disjoint HEALPix pixels of mixed orders (NUNIQ keys): which unit each row falls in.

    Sorted by where each pixel starts on the order-29 curve, so a row's unit is one binary
    search on its ``_healpix_29``: O(units) memory, whatever the number of rows.
    """

    def __init__(self, keys):
        keys = np.unique(np.asarray(list(keys) if not np.ndim(keys) else keys, dtype=np.int64))
        starts, ends = unit_ranges(keys)
        order = np.argsort(starts, kind="stable")
        self.keys, self.starts, self.ends = keys[order], starts[order], ends[order]
        if len(keys) > 1 and (self.starts[1:] < self.ends[:-1]).any():
            raise ValueError("work units overlap: a pixel and one of its ancestors")

    def __len__(self) -> int:
        return len(self.keys)

    def unit_of(self, healpix_29) -> np.ndarray:
        """NUNIQ key of the unit holding each ``_healpix_29``; -1 where none does."""
        at = self.position_of(healpix_29)
        return np.where(at >= 0, self.keys[at] if len(self.keys) else -1, -1)

    def position_of(self, healpix_29) -> np.ndarray:
        """Index (in ``keys``) of the unit holding each ``_healpix_29``; -1 where none does.

        The values are sorted first: a binary search of sorted values walks the units in
        order and stays in cache (about 6x faster on 100k values; the sort costs less)."""
        h = np.asarray(healpix_29, dtype=np.int64)
        if not len(self.keys):
            return np.full(len(h), -1, dtype=np.int64)
        order = np.argsort(h)
        at = np.empty(len(h), dtype=np.int64)
        at[order] = np.searchsorted(self.starts, h[order], side="right") - 1
        safe = np.maximum(at, 0)
        return np.where((at >= 0) & (h < self.ends[safe]), at, -1)

    def overlapping(self, start: np.ndarray, end: np.ndarray) -> np.ndarray:
        """Whether each range [start, end) of ``_healpix_29`` overlaps any unit."""
        first = np.searchsorted(self.ends, np.asarray(start, dtype=np.int64), side="right")
        safe = np.clip(first, 0, max(len(self.keys) - 1, 0))
        if not len(self.keys):
            return np.zeros(np.shape(start), dtype=bool)
        return (first < len(self.keys)) & (self.starts[safe] < np.asarray(end, dtype=np.int64))
