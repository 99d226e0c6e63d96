"""A tile's footprint columns from its WCS header: one computation for every index writer.

The mock sky (``mock_tiles``), the header indexer (``indexer``) and the computed real tilings
(``tiling``) all describe a tile the same way in the tile index, so they share this code:
centre of the pixel grid, enclosing radius, outer corners, position angle of +y and the WCS
header itself (so planning never has to open a tile).
"""

from __future__ import annotations

import contextlib
import math

import numpy as np

from raycat import schema


def celestial_wcs(header):
    """The celestial WCS of ``header`` with its pixel shape, or None when it has none.

    None covers a header without CTYPEs, with non-celestial axes or with keywords astropy
    cannot parse: such a file cannot be placed on the sky, so the caller reports it.
    """
    import warnings

    from astropy.wcs import WCS

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # FITS-standard fixes (old PC001001 keywords...)
            wcs = WCS(header, naxis=2)
    except Exception:
        return None
    if not wcs.has_celestial or (wcs.wcs.lng, wcs.wcs.lat) != (0, 1):
        return None
    nx, ny = int(header.get("NAXIS1", 0)), int(header.get("NAXIS2", 0))
    if nx <= 0 or ny <= 0:
        return None
    wcs.pixel_shape = (nx, ny)
    return wcs


def separation_deg(ra1, dec1, ra2, dec2):
    """Great-circle distance in degrees (arrays broadcast)."""
    r1, d1, r2, d2 = (np.radians(v) for v in (ra1, dec1, ra2, dec2))
    cos = np.sin(d1) * np.sin(d2) + np.cos(d1) * np.cos(d2) * np.cos(r1 - r2)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def footprint(header) -> dict:
    """The footprint columns of the tile index for a header with a celestial WCS.

    Raises ValueError when the header has none (callers decide how to report that).
    """
    wcs = celestial_wcs(header)
    if wcs is None:
        raise ValueError("header has no celestial WCS")
    nx, ny = wcs.pixel_shape
    ((ra, dec),) = wcs.all_pix2world([[(nx - 1) / 2, (ny - 1) / 2]], 0)
    lo_x, hi_x, lo_y, hi_y = -0.5, nx - 0.5, -0.5, ny - 0.5
    corners_ra, corners_dec = wcs.all_pix2world(
        [lo_x, hi_x, hi_x, lo_x], [lo_y, lo_y, hi_y, hi_y], 0
    )
    radius = float(np.max(separation_deg(ra, dec, corners_ra, corners_dec)))
    return {
        schema.TILE_NAXIS1: int(nx),
        schema.TILE_NAXIS2: int(ny),
        schema.TILE_RA: float(ra) % 360.0,
        schema.TILE_DEC: float(dec),
        schema.TILE_RADIUS: radius,
        schema.TILE_CORNERS_RA: [float(v) for v in corners_ra],
        schema.TILE_CORNERS_DEC: [float(v) for v in corners_dec],
        schema.TILE_ROTATION: rotation_deg(wcs),
        schema.TILE_WCS: wcs_string(wcs),
        **wcs_numbers(wcs),
    }


PLAIN_TAN_CTYPES = ["RA---TAN", "DEC--TAN"]


def wcs_numbers(wcs) -> dict:
    """The numeric WCS columns (CRVAL, CRPIX, CD) and whether they describe it exactly.

    Read back from astropy's parse (units in degrees, CD = PC x CDELT, LONPOLE resolved), so
    a plain TAN tile's numbers give the same pixels astropy would, without a header parse.
    """
    crval, crpix, cd = wcs.wcs.crval, wcs.wcs.crpix, wcs.pixel_scale_matrix
    return {
        schema.TILE_CRVAL1: float(crval[0]),
        schema.TILE_CRVAL2: float(crval[1]),
        schema.TILE_CRPIX1: float(crpix[0]),
        schema.TILE_CRPIX2: float(crpix[1]),
        schema.TILE_CD11: float(cd[0, 0]),
        schema.TILE_CD12: float(cd[0, 1]),
        schema.TILE_CD21: float(cd[1, 0]),
        schema.TILE_CD22: float(cd[1, 1]),
        schema.TILE_PLAIN_TAN: is_plain_tan(wcs),
    }


def is_plain_tan(wcs) -> bool:
    """True for a WCS that CRVAL, CRPIX and CD describe exactly: RA---TAN/DEC--TAN in
    degrees, native pole at LONPOLE 180 (so the intermediate coordinates are the standard
    ones, xi east and eta north), no SIP, no distortion tables, no projection parameters."""
    w = wcs.wcs
    with contextlib.suppress(Exception):
        w.set()
    return bool(
        list(w.ctype) == PLAIN_TAN_CTYPES
        and [str(u) for u in w.cunit] == ["deg", "deg"]
        and w.lonpole == 180.0
        and wcs.sip is None
        and all(d is None for d in (wcs.cpdis1, wcs.cpdis2, wcs.det2im1, wcs.det2im2))
        and not w.get_pv()
        and np.all(np.isfinite(wcs.pixel_scale_matrix))
        and np.linalg.det(wcs.pixel_scale_matrix) != 0
    )


def rotation_deg(wcs) -> float:
    """Position angle of the pixel +y axis, degrees east of north, in [0, 360).

    Read from the linear part of the WCS at the reference point (CD, or PC times CDELT):
    the column of +y gives its east (RA) and north (Dec) components.
    """
    matrix = wcs.celestial.pixel_scale_matrix
    return math.degrees(math.atan2(matrix[0, 1], matrix[1, 1])) % 360.0


def wcs_string(wcs) -> str:
    """NAXIS and WCS keywords of a WCS as a header string (what TileFinder reads back).

    Only the WCS is kept: a real header carries hundreds of history cards the index does
    not need. astropy writes it in the modern form (CDELT/PC), which fixes old keywords.
    """
    out = wcs.to_header(relax=True)
    out.insert(0, ("NAXIS", 2))
    out.insert(1, ("NAXIS1", wcs.pixel_shape[0]))
    out.insert(2, ("NAXIS2", wcs.pixel_shape[1]))
    return out.tostring()


def index_row(survey: str, band: str, name: str, uri: str, header) -> dict:
    """One tile index row: identity columns plus the footprint of ``header``."""
    return {
        schema.TILE_SURVEY: survey,
        schema.TILE_BAND: band,
        schema.TILE_NAME: name,
        schema.TILE_URI: uri,
        **footprint(header),
    }
