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
