"""Tile indexes for planning tests: one square TAN tile per band, as a single-file index."""

from pathlib import Path

import numpy as np
import pandas as pd
from astropy.wcs import WCS

from raycat import schema


def tan_tile_row(name, band, ra, dec, n=100, scale_arcsec=1.0, rotation_deg=0.0) -> dict:
    """An index row (band, name, uri, WCS header) of an n x n TAN tile centred on (ra, dec)."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra, dec]
    wcs.wcs.crpix = [(n + 1) / 2, (n + 1) / 2]
    c, s = np.cos(np.radians(rotation_deg)), np.sin(np.radians(rotation_deg))
    wcs.wcs.cd = scale_arcsec / 3600 * np.array([[-c, s], [s, c]])
    header = wcs.to_header()
    header["NAXIS1"] = header["NAXIS2"] = n
    return {
        schema.TILE_BAND: band,
        schema.TILE_NAME: name,
        schema.TILE_URI: f"tiles/{name}.{band}.fits",
        schema.TILE_WCS: header.tostring(),
    }


def one_tile_index(path: Path, ra: float, dec: float, size_deg: float, bands=("a",)) -> Path:
    """A single-file index of one square tile of ``size_deg`` per band at (ra, dec)."""
    n = 1000
    rows = [tan_tile_row("t0", b, ra, dec, n=n, scale_arcsec=size_deg * 3600 / n) for b in bands]
    pd.DataFrame(rows).to_parquet(path)
    return path
