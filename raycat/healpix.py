"""The HATS spatial index (``_healpix_29``): nested HEALPix pixel at order 29.

Computed with cdshealpix, exactly as ``hats.pixel_math.compute_spatial_index`` does, without
importing hats: its import costs about a second, which the planner would otherwise pay
before the first cutout (hats still sets the Parquet options and writes the metadata).
"""

from __future__ import annotations

import numpy as np

ORDER = 29


def healpix29(ra, dec) -> np.ndarray:
    """``_healpix_29`` of positions in degrees (ra wrapped into [0, 360))."""
    from astropy.coordinates import Latitude, Longitude
    from cdshealpix.nested import lonlat_to_healpix

    ra = Longitude(np.asarray(ra, dtype=np.float64) % 360.0, unit="deg")
    dec = Latitude(np.asarray(dec, dtype=np.float64), unit="deg")
    return lonlat_to_healpix(ra, dec, ORDER).astype(np.int64)
