"""Drawing one band of one mock tile with GalSim: PSFs, stamps, noise and masks.

Sources are drawn as stamps sized to their profile (6 half-light radii plus 4 PSF FWHM,
which holds all but ~0.1% of the light) straight into the tile array, clipped at its edges,
so a source near an edge or in the overlap of two tiles is drawn consistently in both.
Profiles are a de Vaucouleurs bulge (truncated at 5 half-light radii) plus an exponential
disk with the catalogue's axis ratios and position angle, convolved with the band's PSF
(Moffat beta = 3.5 for PS1, Gaussian for GALEX and unWISE) and the pixel, on the tile's local
Jacobian, so rotation and parity come out right. Stars are the PSF alone.

Two shortcuts keep the cost down without visible change. Sources fainter than the band's
5-sigma depth + 2.5 mag (under half a sigma in total) are not drawn in that band. In the
Gaussian-PSF bands (GALEX, unWISE), sources smaller than a quarter of the FWHM (half-light
radius) are unresolved: they are drawn as circular Gaussians whose width adds the galaxy's
size in quadrature, integrated exactly over the pixels (erf), over 10x faster than an FFT
draw; flux and centroid are exact, only the unresolved shape is approximated.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import pandas as pd
from scipy.special import erf

from raycat import schema
from raycat.extras import MOCK_SKY, missing_extra
from raycat.sky.population import KIND_STAR, bulge_mag_column, disk_mag_column
from raycat.sky.sed import MAG_NO_FLUX
from raycat.sky.tiles import TileGeometry
from raycat.surveys.bands import BANDS, Band

try:
    import galsim
except ImportError as err:  # the [sim] extra
    raise missing_extra("sim", MOCK_SKY, err) from None

PS1_MOFFAT_BETA = 3.5
BULGE_TRUNCATION = 5.0  # de Vaucouleurs profiles stop at 5 half-light radii
STAMP_HLR, STAMP_FWHM = 6.0, 4.0  # stamp half-size: 6 hlr + 4 FWHM
MAX_STAMP_HALF_PX = 300
INVISIBLE_BELOW_DEPTH = 2.5  # mag fainter than the 5-sigma depth
STAR_MASK_MAG = 17.0  # stars brighter than this in r get a circular NaN mask
STAR_MASK_RADIUS_ARCSEC = 8.0  # at r = STAR_MASK_MAG, growing x 10^(-0.2 dm) for brighter
BAD_COLUMN_PROBABILITY = 0.25  # per PS1 tile and band
UNRESOLVED_HLR_FRACTION = 0.25  # hlr / FWHM below which Gaussian-PSF bands use the shortcut
GAUSSIAN_HLR_PER_SIGMA = 1.1774  # half-light radius of a Gaussian in units of its sigma


@cache
def band_psf(info: Band) -> galsim.GSObject:
    """The band's PSF: Moffat for PS1 (seeing-limited), Gaussian for GALEX and unWISE.

    Keyed on the whole band, so a domain's other FWHM gets its own PSF."""
    if info.survey == "ps1":
        return galsim.Moffat(beta=PS1_MOFFAT_BETA, fwhm=info.psf_fwhm)
    return galsim.Gaussian(fwhm=info.psf_fwhm)


@cache
def _unit_profiles() -> tuple[galsim.GSObject, galsim.GSObject]:
    """Unit-size bulge and disk; dilating them reuses GalSim's cached profile tables."""
    return (
        galsim.DeVaucouleurs(half_light_radius=1.0, trunc=BULGE_TRUNCATION),
        galsim.Exponential(half_light_radius=1.0),
    )


def galsim_beta_deg(pa_deg: np.ndarray | float) -> np.ndarray | float:
    """Position angle east of north -> GalSim's beta (from +u = west, towards +v = north)."""
    return 90.0 + np.asarray(pa_deg)


def flux_in_pixel_units(mag: np.ndarray, zero_point: float) -> np.ndarray:
    """Total flux (sum over pixels) of AB magnitude ``mag`` for a pixel zero point."""
    return 10.0 ** (-0.4 * (np.asarray(mag, dtype=float) - zero_point))


def sources_on_tile(
    tile: TileGeometry, sources: pd.DataFrame, margin_px: float
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Sources whose stamps can touch ``tile``, with their 0-based pixel positions."""
    x, y = tile.wcs.all_world2pix(sources[schema.RA].to_numpy(), sources[schema.DEC].to_numpy(), 0)
    inside = (
        (x > -margin_px)
        & (x < tile.naxis - 1 + margin_px)
        & (y > -margin_px)
        & (y < tile.naxis - 1 + margin_px)
    )
    return sources[inside], x[inside], y[inside]


def stamp_half_px(sources: pd.DataFrame, band: Band) -> np.ndarray:
    """Half-size of each source's stamp in pixels (see the module docstring)."""
    hlr = np.fmax(
        sources[schema.TRUTH_HLR_DISK].fillna(0).to_numpy(),
        sources[schema.TRUTH_HLR_BULGE].fillna(0).to_numpy(),
    )
    half = (STAMP_HLR * hlr + STAMP_FWHM * band.psf_fwhm) / band.pixel_scale
    return np.minimum(np.ceil(half), MAX_STAMP_HALF_PX).astype(int)


def _component(
    unit: galsim.GSObject, flux: float, hlr: float, q: float, beta: galsim.Angle
) -> galsim.GSObject:
    return unit.dilate(hlr).shear(q=q, beta=beta).withFlux(flux)


def _galaxy_profile(row, zero_point: float) -> galsim.GSObject | None:
    """Bulge + disk of one drawing-table row; None if neither has flux."""
    unit_bulge, unit_disk = _unit_profiles()
    beta = float(galsim_beta_deg(row.pa)) * galsim.degrees
    parts = [
        _component(unit, float(flux_in_pixel_units(mag, zero_point)), hlr, q, beta)
        for unit, mag, hlr, q in (
            (unit_bulge, row.bulge_mag, row.hlr_bulge, row.q_bulge),
            (unit_disk, row.disk_mag, row.hlr_disk, row.q_disk),
        )
        if mag < MAG_NO_FLUX
    ]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else galsim.Add(parts)


def _drawing_table(sources: pd.DataFrame, band: str) -> pd.DataFrame:
    """The fields drawing needs in ``band``, under short names for ``itertuples``."""
    return pd.DataFrame(
        {
            "star": (sources[schema.TRUTH_KIND] == KIND_STAR).to_numpy(),
            "bulge_mag": sources[bulge_mag_column(band)].to_numpy(),
            "disk_mag": sources[disk_mag_column(band)].to_numpy(),
            "hlr_bulge": sources[schema.TRUTH_HLR_BULGE].to_numpy(),
            "hlr_disk": sources[schema.TRUTH_HLR_DISK].to_numpy(),
            "q_bulge": sources[schema.TRUTH_Q_BULGE].to_numpy(),
            "q_disk": sources[schema.TRUTH_Q_DISK].to_numpy(),
            "pa": sources[schema.TRUTH_PA].to_numpy(),
        }
    )


def _add_circular_gaussian(
    image: np.ndarray, x: float, y: float, flux: float, sigma: float, half: int
) -> None:
    """Add a pixel-integrated circular Gaussian (pixel units, 0-based centre) in place.

    A circular Gaussian integrated over square pixels separates into x and y erf
    differences whatever the tile's rotation, so this is exact.
    """
    ny, nx = image.shape
    x0, x1 = max(0, round(x) - half), min(nx, round(x) + half + 1)
    y0, y1 = max(0, round(y) - half), min(ny, round(y) + half + 1)
    if x0 >= x1 or y0 >= y1:
        return
    scale = math.sqrt(2.0) * sigma
    along_x = np.diff(erf((np.arange(x0, x1 + 1) - 0.5 - x) / scale)) / 2
    along_y = np.diff(erf((np.arange(y0, y1 + 1) - 0.5 - y) / scale)) / 2
    image[y0:y1, x0:x1] += (flux * np.outer(along_y, along_x)).astype(np.float32)


def _unresolved(sources: pd.DataFrame, band: Band) -> np.ndarray:
    """Sources the band cannot resolve (Gaussian-PSF bands only; see the module docstring)."""
    if isinstance(band_psf(band), galsim.Moffat):
        return np.zeros(len(sources), dtype=bool)
    hlr = np.fmax(
        sources[schema.TRUTH_HLR_DISK].fillna(0).to_numpy(),
        sources[schema.TRUTH_HLR_BULGE].fillna(0).to_numpy(),
    )
    return hlr <= UNRESOLVED_HLR_FRACTION * band.psf_fwhm


def _draw_profile(
    image: galsim.ImageF,
    wcs: galsim.JacobianWCS,
    psf: galsim.GSObject,
    row,
    x: float,
    y: float,
    half: int,
    zero_point: float,
) -> None:
    """Draw one source with GalSim (FFT) into its clipped stamp of ``image``."""
    ix, iy = round(x) + 1, round(y) + 1  # GalSim pixels are 1-based
    bounds = galsim.BoundsI(ix - half, ix + half, iy - half, iy + half) & image.bounds
    if not bounds.isDefined():
        return
    if row.star:
        light = galsim.DeltaFunction(flux=float(flux_in_pixel_units(row.bulge_mag, zero_point)))
    else:
        light = _galaxy_profile(row, zero_point)
    if light is not None:
        galsim.Convolve(light, psf).drawImage(
            image=image[bounds],
            wcs=wcs,
            add_to_image=True,
            center=galsim.PositionD(x + 1.0, y + 1.0),
        )


def draw_band(
    tile: TileGeometry,
    band: str,
    sources: pd.DataFrame,
    x: np.ndarray,
    y: np.ndarray,
    zero_point: float,
    info: Band | None = None,
) -> np.ndarray:
    """Noiseless float32 image of ``sources`` (at 0-based pixels x, y) in one tile band.

    ``info`` is the band as observed (a domain's PSF and depth); default the built-in one.
    """
    info = info or BANDS[band]
    image = galsim.ImageF(tile.naxis, tile.naxis)
    wcs = galsim.JacobianWCS(*tile.jacobian_arcsec())
    psf = band_psf(info)
    mags = sources[schema.truth_mag(band)].to_numpy()
    visible = mags < info.depth_ab + INVISIBLE_BELOW_DEPTH
    unresolved = _unresolved(sources, info)
    flux = flux_in_pixel_units(mags, zero_point)
    size = sources[schema.TRUTH_HLR].to_numpy() / GAUSSIAN_HLR_PER_SIGMA
    sigma_px = np.hypot(info.psf_fwhm / 2.3548, size) / info.pixel_scale
    half = stamp_half_px(sources, info)
    for i, row in enumerate(_drawing_table(sources, band).itertuples(index=False)):
        if not visible[i]:
            continue
        if unresolved[i]:
            _add_circular_gaussian(image.array, x[i], y[i], flux[i], sigma_px[i], half[i])
        else:
            _draw_profile(image, wcs, psf, row, x[i], y[i], half[i], zero_point)
    return image.array


def add_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> None:
    """Add Gaussian sky noise in place, generated once for the whole tile array."""
    image += np.float32(sigma) * rng.standard_normal(image.shape, dtype=np.float32)


def star_mask_circles(
    stars: pd.DataFrame, x: np.ndarray, y: np.ndarray, pixel_scale: float
) -> list[tuple[float, float, float]]:
    """(x, y, radius px) of the NaN masks around bright stars, the same in every band."""
    mag = stars[schema.truth_mag("ps1_r")].to_numpy()
    bright = (stars[schema.TRUTH_KIND] == KIND_STAR).to_numpy() & (mag < STAR_MASK_MAG)
    radius = STAR_MASK_RADIUS_ARCSEC * 10.0 ** (-0.2 * (mag[bright] - STAR_MASK_MAG)) / pixel_scale
    return list(zip(x[bright], y[bright], radius))


def apply_masks(
    image: np.ndarray,
    circles: list[tuple[float, float, float]],
    band: str,
    rng: np.random.Generator,
) -> None:
    """Set masked pixels to NaN: star circles, and sometimes a bad PS1 column."""
    ny, nx = image.shape
    for cx, cy, radius in circles:
        x0, x1 = max(0, math.floor(cx - radius)), min(nx, math.ceil(cx + radius) + 1)
        y0, y1 = max(0, math.floor(cy - radius)), min(ny, math.ceil(cy + radius) + 1)
        if x0 >= x1 or y0 >= y1:
            continue
        yy, xx = np.ogrid[y0:y1, x0:x1]
        region = image[y0:y1, x0:x1]
        region[(xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2] = np.nan
    if BANDS[band].survey == "ps1" and rng.uniform() < BAD_COLUMN_PROBABILITY:
        column = int(rng.integers(0, nx))
        image[:, column : column + int(rng.integers(1, 4))] = np.nan
