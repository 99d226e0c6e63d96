"""A sky region to reprocess: a cone ``RA,DEC,RADIUS_DEG`` or HEALPix pixels ``ORDER/PIX,...``.

``raycat infer --region`` rewrites only the catalog partitions the region touches. A region
is matched against partitions of any orders (NUNIQ keys, ``raycat.catalog.keys``): a cone by
the cells of its coverage (a MOC down to the finest order present), a pixel by ancestry in
either direction, each as overlapping ranges on the order-29 curve (never by listing every
descendant).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from raycat.config import REGION_CONE_RE, REGION_HELP, REGION_PIXELS_RE
from raycat.errors import RaycatError
from raycat.healpix import ORDER as MAX_ORDER
from raycat.healpix import Partitioning, unit_key, unit_orders_pixels, unit_ranges


@dataclass(frozen=True)
class Region:
    """A cone (``cone`` = ra, dec, radius in degrees) or nested HEALPix ``pixels``."""

    cone: tuple[float, float, float] | None = None
    pixels: tuple[tuple[int, int], ...] = ()

    @classmethod
    def parse(cls, text: str) -> Region:
        """The region ``text`` describes; a one-line RaycatError otherwise."""
        cone = REGION_CONE_RE.match(text)
        if cone:
            ra, dec, radius = (float(v) for v in cone.groups())
            if abs(dec) > 90 or not 0 < radius <= 180:
                raise RaycatError(f"region {text!r}: needs |dec| <= 90 and 0 < radius <= 180")
            return cls(cone=(ra % 360.0, dec, radius))
        if REGION_PIXELS_RE.match(text):
            pixels = tuple(
                (int(o), int(p)) for o, p in (item.split("/") for item in text.split(","))
            )
            for order, pixel in pixels:
                if order > MAX_ORDER or pixel >= 12 * 4**order:
                    raise RaycatError(f"region {text!r}: no HEALPix pixel {pixel} at {order}")
            return cls(pixels=pixels)
        raise RaycatError(f"region {text!r} is not {REGION_HELP}")

    def select(self, keys: Iterable[int]) -> set[int]:
        """The partitions among ``keys`` (NUNIQ, any orders) that the region touches."""
        keys = np.unique(np.fromiter((int(k) for k in keys), dtype=np.int64))
        if not len(keys):
            return set()
        starts, ends = unit_ranges(keys)
        if self.cone is not None:
            orders, _ = unit_orders_pixels(keys)
            touched = Partitioning(self._cone_cells(int(orders.max()))).overlapping(starts, ends)
        else:  # pixels nest: a partition and a region pixel overlap when their ranges do
            touched = np.zeros(len(keys), dtype=bool)
            for region_start, region_end in zip(*unit_ranges(self._pixel_keys()), strict=True):
                touched |= (starts < region_end) & (region_start < ends)
        return set(keys[touched].tolist())

    def _pixel_keys(self) -> np.ndarray:
        return np.array([unit_key(order, pixel) for order, pixel in self.pixels], np.int64)

    def _cone_cells(self, order: int) -> np.ndarray:
        """The cone as disjoint cells (NUNIQ keys) of orders up to ``order``: every pixel at
        ``order`` or coarser that the cone overlaps holds one of them."""
        from astropy.coordinates import Angle, Latitude, Longitude
        from cdshealpix.nested import cone_search

        assert self.cone is not None
        ra, dec, radius = self.cone
        ipix, depth, _full = cone_search(
            Longitude(ra, "deg"), Latitude(dec, "deg"), Angle(radius, "deg"), order
        )
        return unit_key(np.asarray(depth, np.int64), np.asarray(ipix, np.int64))
