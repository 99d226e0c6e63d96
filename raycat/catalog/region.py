"""A sky region to reprocess: a cone ``RA,DEC,RADIUS_DEG`` or HEALPix pixels ``ORDER/PIX,...``.

``raycat infer --region`` rewrites only the catalog partitions the region touches. A region
is matched against partitions at the catalog's own order: a cone by the pixels it overlaps, a
pixel by its ancestor or descendants at that order (never by listing every descendant).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from raycat.config import REGION_CONE_RE, REGION_HELP, REGION_PIXELS_RE
from raycat.errors import RaycatError
from raycat.healpix import ORDER as MAX_ORDER


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

    def select(self, pixels: Iterable[int], order: int) -> set[int]:
        """The ``pixels`` (nested, at ``order``) that the region touches."""
        pixels = set(pixels)
        if self.cone is not None:
            return pixels & self._cone_pixels(order)
        return {
            pixel for pixel in pixels if any(_touches(pixel, order, o, p) for o, p in self.pixels)
        }

    def _cone_pixels(self, order: int) -> set[int]:
        from astropy.coordinates import Angle, Latitude, Longitude
        from cdshealpix.nested import cone_search

        assert self.cone is not None
        ra, dec, radius = self.cone
        ipix, _depth, _full = cone_search(
            Longitude(ra, "deg"), Latitude(dec, "deg"), Angle(radius, "deg"), order, flat=True
        )
        return set(np.asarray(ipix, dtype=np.int64).tolist())


def _touches(pixel: int, order: int, region_order: int, region_pixel: int) -> bool:
    """Whether pixel ``region_pixel`` at ``region_order`` overlaps ``pixel`` at ``order``
    (nested indices: an ancestor's index is a prefix of its descendants')."""
    if region_order <= order:
        return pixel >> 2 * (order - region_order) == region_pixel
    return region_pixel >> 2 * (region_order - order) == pixel
