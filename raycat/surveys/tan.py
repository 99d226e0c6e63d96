"""The gnomonic (TAN) projection, vectorised: sky <-> standard coordinates about a point.

Every TAN survey tile and every cutout grid is a tangent plane, so the computed tilings
(``tiling``) and the cutout geometry (``raycat.cutouts.resample``) share these two
functions instead of each carrying its own copy of the spherical trigonometry.
"""

from __future__ import annotations

import numpy as np


def tan_project(ra, dec, ra0, dec0) -> tuple[np.ndarray, np.ndarray]:
    """Standard coordinates (xi east, eta north) in degrees about (ra0, dec0).

    Points on the far hemisphere have no tangent-plane image: they come back as inf.
    """
    ra, dec, ra0, dec0 = (np.radians(np.asarray(v, dtype=float)) for v in (ra, dec, ra0, dec0))
    cos_c = np.sin(dec) * np.sin(dec0) + np.cos(dec) * np.cos(dec0) * np.cos(ra - ra0)
    with np.errstate(divide="ignore", invalid="ignore"):
        xi = np.cos(dec) * np.sin(ra - ra0) / cos_c
        eta = (np.sin(dec) * np.cos(dec0) - np.cos(dec) * np.sin(dec0) * np.cos(ra - ra0)) / cos_c
    behind = cos_c <= 0
    return np.where(behind, np.inf, np.degrees(xi)), np.where(behind, np.inf, np.degrees(eta))


def tan_deproject(xi, eta, ra0, dec0) -> tuple[np.ndarray, np.ndarray]:
    """(ra, dec) in degrees, ra in [0, 360), of standard coordinates (degrees) about
    (ra0, dec0): the inverse gnomonic projection, exact for any offset."""
    xi, eta, ra0, dec0 = (np.radians(np.asarray(v, dtype=float)) for v in (xi, eta, ra0, dec0))
    denom = np.cos(dec0) - eta * np.sin(dec0)
    ra = ra0 + np.arctan2(xi, denom)
    dec = np.arctan2(np.sin(dec0) + eta * np.cos(dec0), np.hypot(xi, denom))
    return np.degrees(ra) % 360.0, np.degrees(dec)
