"""Tile geometry of the mock sky: the grid per survey, TAN WCS, FITS headers, index rows.

Each survey covers the field with a grid of square tiles of side ``survey.mock_tile_deg``
whose neighbours overlap by ``survey.mock_overlap_arcsec``, like real skycells and coadd
tiles. Every third tile (the first included, so even a one-tile sky has one) is turned by a
random position angle and enlarged to side s (|cos t| + |sin t|), so it still covers its
grid cell. All bands of a survey share the same geometry.

Pixel convention: east left, north up before rotation; ``rotation_deg`` is the position angle
of the +y axis east of north, so the CD matrix is

    CD = s [[-cos t, sin t], [sin t, cos t]]   (deg / px; first row: RA direction)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from raycat import schema
from raycat.sky.population import Field
from raycat.surveys.bands import BANDS, Band, Survey
from raycat.surveys.footprint import index_row

ROTATE_EVERY = 3  # tiles k with k % ROTATE_EVERY == 0 are rotated


@dataclass(frozen=True)
class TileGeometry:
    """One tile of one survey: centre, orientation and pixel grid."""

    survey: str
    name: str
    index: int
    ra: float
    dec: float
    rotation_deg: float
    naxis: int  # square tiles: naxis1 == naxis2
    pixel_scale: float  # arcsec / px

    @cached_property
    def cd_matrix(self) -> np.ndarray:
        """CD matrix in deg / px (see the module docstring for the convention)."""
        t = math.radians(self.rotation_deg)
        c, s = math.cos(t), math.sin(t)
        return self.pixel_scale / 3600.0 * np.array([[-c, s], [s, c]])

    @cached_property
    def wcs_header(self) -> fits.Header:
        """NAXIS and TAN WCS keywords; CRVAL is the centre of the pixel grid."""
        header = fits.Header()
        header["NAXIS"] = 2
        header["NAXIS1"] = self.naxis
        header["NAXIS2"] = self.naxis
        header["CTYPE1"], header["CTYPE2"] = "RA---TAN", "DEC--TAN"
        header["CUNIT1"], header["CUNIT2"] = "deg", "deg"
        header["CRVAL1"], header["CRVAL2"] = self.ra, self.dec
        header["CRPIX1"] = header["CRPIX2"] = (self.naxis + 1) / 2.0
        for (i, j), value in np.ndenumerate(self.cd_matrix):
            header[f"CD{i + 1}_{j + 1}"] = float(value)
        header["RADESYS"] = "ICRS"
        header["EQUINOX"] = 2000.0
        return header

    @cached_property
    def wcs(self) -> WCS:
        return WCS(self.wcs_header)

    def jacobian_arcsec(self) -> tuple[float, float, float, float]:
        """(dudx, dudy, dvdx, dvdy) for ``galsim.JacobianWCS``.

        GalSim's u points west (-RA) and v north, so u flips the sign of the RA row.
        """
        (a, b), (c, d) = self.cd_matrix * 3600.0
        return -a, -b, c, d

    def corners(self) -> tuple[list[float], list[float]]:
        """Sky positions of the outer pixel edges, order (0,0) (nx,0) (nx,ny) (0,ny)."""
        lo, hi = -0.5, self.naxis - 0.5
        ra, dec = self.wcs.all_pix2world([lo, hi, hi, lo], [lo, lo, hi, hi], 0)
        return [float(v) for v in ra], [float(v) for v in dec]

    def index_row(self, band: str) -> dict:
        """The tile index row of this tile in ``band`` (footprint shared with real tiles)."""
        return index_row(
            self.survey,
            band,
            self.name,
            schema.tile_relpath(self.survey, self.name, band),
            self.wcs_header,
        )


def grid_size(survey: Survey, side_deg: float) -> int:
    """Tiles per axis so that n * step + overlap covers ``side_deg``."""
    overlap = survey.mock_overlap_arcsec / 3600.0
    step = survey.mock_tile_deg - overlap
    return max(1, math.ceil((side_deg - overlap) / step - 1e-9))


def layout_survey(survey: Survey, field: Field, rng: np.random.Generator) -> list[TileGeometry]:
    """The tiles of ``survey`` covering ``field``, row by row from the south-west corner."""
    n = grid_size(survey, field.side_deg)
    step = survey.mock_tile_deg - survey.mock_overlap_arcsec / 3600.0
    side_px = round(survey.mock_tile_deg * 3600.0 / survey.pixel_scale)
    tiles = []
    for k in range(n * n):
        row, col = divmod(k, n)
        dec = field.dec + (row - (n - 1) / 2) * step
        ra = field.ra + (col - (n - 1) / 2) * step / math.cos(math.radians(dec))
        rotation = float(rng.uniform(0.0, 360.0)) if k % ROTATE_EVERY == 0 else 0.0
        t = math.radians(rotation)
        naxis = math.ceil(side_px * (abs(math.cos(t)) + abs(math.sin(t))))
        tiles.append(
            TileGeometry(
                survey.name,
                f"{survey.name}_{k:04d}",
                k,
                ra,
                dec,
                rotation,
                naxis,
                survey.pixel_scale,
            )
        )
    return tiles


def covering_field(field: Field, tiles: list[TileGeometry]) -> Field:
    """The smallest box about ``field``'s centre that holds ``field`` and every tile."""
    cos_dec = math.cos(math.radians(field.dec))
    half = field.side_deg / 2
    for tile in tiles:
        ra, dec = tile.corners()
        half = max(
            half, *(abs(r - field.ra) * cos_dec for r in ra), *(abs(d - field.dec) for d in dec)
        )
    return Field(field.ra, field.dec, 2 * half)


# --- FITS headers: each survey's own keywords ---------------------------------------------
_TELESCOPES = {"galex": ("GALEX", "GALEX"), "ps1": ("PS1", "GPC1"), "unwise": ("WISE", "WISE")}


def _native_filter(band: str) -> str:
    """The filter label the real products use: 'FUV', 'g.00000', 'W1'."""
    short = band.split("_", 1)[1]
    if band.startswith("ps1_"):
        return f"{short}.00000"
    return short.upper()


def tile_header(
    tile: TileGeometry, band: str, exptime: float, seed: int, info: Band | None = None
) -> fits.Header:
    """The full primary header of one band of one tile (WCS plus survey keywords).

    Calibration keywords follow each survey: PS1 EXPTIME (ZP = 25 + 2.5 log10 EXPTIME),
    unWISE MAGZP (Vega nanomaggies), GALEX EXPTIME (cps, fixed zero point). ``info`` is the
    band as observed (a domain's PSF FWHM goes to PSFFWHM); default the built-in one.
    """
    info = info or BANDS[band]
    header = tile.wcs_header.copy()
    telescope, instrument = _TELESCOPES[tile.survey]
    header["TELESCOP"] = telescope
    header["INSTRUME"] = instrument
    header["SURVEY"] = (tile.survey, "raycat survey name")
    header["FILTER"] = _native_filter(band)
    header["BAND"] = (band, "raycat band name")
    header["BUNIT"] = info.unit
    if info.calibration.kind == "header":
        header[info.calibration.keyword] = (info.calibration.zero_point, "Vega zero point")
    if exptime > 0:
        header["EXPTIME"] = (round(exptime, 3), "[s] effective exposure time")
    header["PSFFWHM"] = (info.psf_fwhm, "[arcsec] PSF FWHM")
    header["OBJECT"] = tile.name
    header["ORIGIN"] = "raycat mock sky"
    header["MOCKSEED"] = (seed, "random seed of the mock sky")
    return header
