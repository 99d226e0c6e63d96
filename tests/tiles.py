"""Tiny synthetic survey tiles for tests: TAN WCS, optional rotation/parity, point sources.

Pixel values are in the band's native unit (PS1 counts with EXPTIME, unWISE nanomaggies with
MAGZP, GALEX cps), so reading them back through ``surveys.Calibration`` gives the injected
fluxes in AB nanomaggies. Point sources are circular Gaussians integrated over each pixel
(erf differences), so the pixel sum equals the injected flux and the light-weighted centroid
equals the injected position to far better than 0.01 px.
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, Sip
from scipy.special import erf

from raycat.surveys.bands import NANOMAGGY_ZP, get_band

Compression = Literal["none", "gzip", "tile"]


@dataclass(frozen=True)
class PointSource:
    """A point source: position (deg), AB flux in nanomaggies, Gaussian PSF FWHM (arcsec)."""

    ra: float
    dec: float
    flux_nmgy: float
    fwhm_arcsec: float


def tile_wcs(
    ra0: float,
    dec0: float,
    shape: tuple[int, int],
    scale_arcsec: float,
    rotation_deg: float = 0.0,
    flip: bool = False,
    distortion: float = 0.0,
) -> WCS:
    """TAN WCS centred on (ra0, dec0); ``shape`` is (ny, nx).

    ``rotation_deg`` turns the pixel grid on the sky; ``flip`` makes east point right
    (the opposite parity to the usual east-left images); ``distortion`` adds second-order
    SIP terms (A_2_0 = B_0_2 = distortion, per pixel), making it a TAN-SIP WCS.
    """
    s = scale_arcsec / 3600.0
    theta = math.radians(rotation_deg)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    parity = np.diag([s if flip else -s, s])
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra0, dec0]
    wcs.wcs.crpix = [(shape[1] + 1) / 2.0, (shape[0] + 1) / 2.0]
    wcs.wcs.cd = rot @ parity
    if distortion:
        a = np.zeros((3, 3))
        b = np.zeros((3, 3))
        a[2, 0] = b[0, 2] = distortion
        wcs.sip = Sip(a, b, None, None, wcs.wcs.crpix)
        wcs.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"]
    return wcs


def band_header(band: str) -> fits.Header:
    """The survey keywords that calibrate ``band`` (EXPTIME, MAGZP, BUNIT)."""
    info = get_band(band)
    header = fits.Header()
    header["BUNIT"] = info.unit
    header["FILTER"] = band
    if info.calibration.kind == "exptime":
        header["EXPTIME"] = info.mock_exptime or 1000.0
    elif info.calibration.kind == "header":
        header[info.calibration.keyword] = info.calibration.zero_point
    return header


def nmgy_per_unit(band: str, header: fits.Header) -> float:
    """AB nanomaggies per pixel unit of ``band`` for this header."""
    zp = get_band(band).calibration.zero_point_ab(header)
    return 10.0 ** (-0.4 * (zp - NANOMAGGY_ZP))


def render_point_source(
    wcs: WCS, shape: tuple[int, int], source: PointSource, scale_arcsec: float
) -> np.ndarray:
    """Pixel-integrated circular Gaussian of total flux ``source.flux_nmgy`` (float64)."""
    x, y = wcs.all_world2pix([[source.ra, source.dec]], 0)[0]
    erf_width = source.fwhm_arcsec / 2.3548 / scale_arcsec * math.sqrt(2.0)  # sigma sqrt(2)
    edges_x = (np.arange(shape[1] + 1) - 0.5 - x) / erf_width
    edges_y = (np.arange(shape[0] + 1) - 0.5 - y) / erf_width
    px = 0.5 * np.diff(erf(edges_x))
    py = 0.5 * np.diff(erf(edges_y))
    return source.flux_nmgy * np.outer(py, px)


def make_tile(
    band: str,
    ra0: float,
    dec0: float,
    shape: tuple[int, int],
    scale_arcsec: float | None = None,
    *,
    rotation_deg: float = 0.0,
    flip: bool = False,
    distortion: float = 0.0,
    sources: Iterable[PointSource] = (),
    nan_boxes: Iterable[tuple[int, int, int, int]] = (),
    noise_nmgy: float = 0.0,
    seed: int = 0,
) -> tuple[np.ndarray, fits.Header]:
    """A float32 tile in ``band``'s units and its header (WCS + survey keywords).

    ``nan_boxes`` are (y0, y1, x0, x1) pixel boxes set to NaN (masked pixels).
    """
    scale = scale_arcsec or get_band(band).pixel_scale
    wcs = tile_wcs(ra0, dec0, shape, scale, rotation_deg, flip, distortion)
    header = band_header(band)
    header.update(wcs.to_header(relax=True))
    flux = np.zeros(shape)
    for source in sources:
        flux += render_point_source(wcs, shape, source, scale)
    if noise_nmgy:
        flux += np.random.default_rng(seed).normal(0.0, noise_nmgy, shape)
    data = (flux / nmgy_per_unit(band, header)).astype(np.float32)
    for y0, y1, x0, x1 in nan_boxes:
        data[y0:y1, x0:x1] = np.nan
    return data, header


def write_fits(
    path: str | Path,
    data: np.ndarray,
    header: fits.Header,
    compression: Compression = "none",
    in_extension: bool = False,
) -> Path:
    """Write one image: primary HDU, first extension, gzip file or lossless tile compression."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if compression == "tile":
        image = fits.CompImageHDU(data, header, compression_type="GZIP_2", quantize_level=0.0)
        hdus = fits.HDUList([fits.PrimaryHDU(), image])
    elif in_extension:
        hdus = fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data, header)])
    else:
        hdus = fits.HDUList([fits.PrimaryHDU(data, header)])
    if compression == "gzip":
        with gzip.open(path, "wb") as f:
            hdus.writeto(f)
    else:
        hdus.writeto(path, overwrite=True)
    return path


def write_tile(
    path: str | Path,
    band: str,
    ra0: float,
    dec0: float,
    shape: tuple[int, int],
    scale_arcsec: float | None = None,
    *,
    compression: Compression = "none",
    in_extension: bool = False,
    **tile_kwargs,
) -> Path:
    """``make_tile`` + ``write_fits`` in one call; returns the path."""
    data, header = make_tile(band, ra0, dec0, shape, scale_arcsec, **tile_kwargs)
    return write_fits(path, data, header, compression, in_extension)


def sky_to_pixel(path: str | Path, ra: float, dec: float) -> tuple[float, float]:
    """0-based (x, y) pixel position of (ra, dec) in the tile at ``path``."""
    with fits.open(path) as hdus:
        hdu = next(h for h in hdus if h.header.get("NAXIS", 0) >= 2)
        x, y = WCS(hdu.header, naxis=2).all_world2pix([[ra, dec]], 0)[0]
    return float(x), float(y)


def truncate(path: str | Path, fraction: float = 0.5) -> Path:
    """Cut the file to ``fraction`` of its length (a partial upload or a dead disk)."""
    path = Path(path)
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * fraction)])
    return path
