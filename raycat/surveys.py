"""Survey and band definitions: the facts about each instrument, as data.

Every band says how its pixel values become AB fluxes, so readers and the mock sky share one
set of conventions (the real products' own):

- GALEX intensity maps are counts per second; AB = -2.5 log10(cps) + 18.82 (FUV) / 20.08 (NUV).
- Pan-STARRS1 stacks are counts; AB zero point = 25 + 2.5 log10(EXPTIME) from the header.
- unWISE coadds are Vega nanomaggies with MAGZP = 22.5; AB = Vega + 2.699 (W1) / 3.339 (W2).

Depths are 5-sigma point-source AB magnitudes of the real data sets (GALEX MIS, PS1 3pi
stacks, unWISE coadds); PSF FWHMs are the surveys' median values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Mapping

import numpy as np

from raycat.errors import RaycatError

NANOMAGGY_ZP = 22.5  # AB magnitude of one nanomaggy

ZeroPointKind = Literal["fixed", "header", "exptime"]


@dataclass(frozen=True)
class Calibration:
    """How a pixel value becomes an AB flux.

    kind: "fixed" (``zero_point`` is the AB magnitude of one pixel unit), "header" (the zero
    point is the header keyword ``keyword``, falling back to ``zero_point``), or "exptime"
    (``zero_point + 2.5 log10(EXPTIME)``, the PS1 convention). ``ab_offset`` turns a Vega zero
    point into AB (unWISE).
    """

    kind: ZeroPointKind
    zero_point: float
    keyword: str | None = None
    ab_offset: float = 0.0

    def zero_point_ab(self, header: Mapping | None = None) -> float:
        """AB magnitude of one pixel unit, read from ``header`` where the convention says."""
        header = header or {}
        if self.kind == "fixed":
            zp = self.zero_point
        elif self.kind == "header":
            zp = float(header.get(self.keyword, self.zero_point))
        else:
            exptime = float(header.get("EXPTIME", 0.0))
            if exptime <= 0:
                raise ValueError("EXPTIME missing or not positive: cannot set the zero point")
            zp = self.zero_point + 2.5 * math.log10(exptime)
        return zp + self.ab_offset

    def to_nanomaggies(self, pixels: np.ndarray, header: Mapping | None = None) -> np.ndarray:
        """Convert pixel values to AB nanomaggies (one common flux unit across surveys)."""
        scale = 10.0 ** (-0.4 * (self.zero_point_ab(header) - NANOMAGGY_ZP))
        return np.asarray(pixels, dtype=np.float32) * np.float32(scale)


@dataclass(frozen=True)
class Band:
    """One filter of one survey."""

    name: str  # raycat band name, e.g. "ps1_g"
    survey: str  # survey name, e.g. "ps1"
    filter_name: str  # speclite filter name, e.g. "panstarrs-g"
    psf_fwhm: float  # arcsec
    depth_ab: float  # 5-sigma point-source AB magnitude
    unit: str  # FITS BUNIT of the pixel values
    calibration: Calibration
    mock_exptime: float = 0.0  # seconds written to EXPTIME by the mock sky (PS1)

    @property
    def pixel_scale(self) -> float:
        return SURVEYS[self.survey].pixel_scale


@dataclass(frozen=True)
class Survey:
    """An imaging survey: its native pixel grid and how the mock sky tiles it."""

    name: str
    pixel_scale: float  # arcsec / px
    bands: tuple[str, ...]
    mock_tile_deg: float  # side of a mock tile (real tiles are larger; scaled for laptops)
    mock_overlap_arcsec: float  # overlap of neighbouring mock tiles, as real tilings have


def _galex(name: str, fwhm: float, depth: float, zp: float) -> Band:
    return Band(f"galex_{name}", "galex", f"galex-{name}", fwhm, depth, "cps",
                Calibration("fixed", zp))


def _ps1(name: str, fwhm: float, depth: float, exptime: float) -> Band:
    return Band(f"ps1_{name}", "ps1", f"panstarrs-{name}", fwhm, depth, "counts",
                Calibration("exptime", 25.0), mock_exptime=exptime)


def _unwise(name: str, fwhm: float, depth: float, ab_offset: float) -> Band:
    return Band(f"unwise_{name.lower()}", "unwise", f"wise2010-{name}", fwhm, depth,
                "nanomaggy", Calibration("header", NANOMAGGY_ZP, "MAGZP", ab_offset))


BANDS: dict[str, Band] = {
    b.name: b
    for b in (
        _galex("fuv", 4.2, 22.6, 18.82),
        _galex("nuv", 5.3, 22.7, 20.08),
        _ps1("g", 1.31, 23.3, 1100.0),
        _ps1("r", 1.19, 23.2, 1000.0),
        _ps1("i", 1.11, 23.1, 1300.0),
        _ps1("z", 1.07, 22.3, 850.0),
        _ps1("y", 1.02, 21.4, 650.0),
        _unwise("W1", 6.08, 20.63, 2.699),
        _unwise("W2", 6.84, 20.06, 3.339),
    )
}

SURVEYS: dict[str, Survey] = {
    "galex": Survey("galex", 1.5, ("galex_fuv", "galex_nuv"), 0.20, 30.0),
    "ps1": Survey("ps1", 0.25, ("ps1_g", "ps1_r", "ps1_i", "ps1_z", "ps1_y"), 0.12, 20.0),
    "unwise": Survey("unwise", 2.75, ("unwise_w1", "unwise_w2"), 0.25, 60.0),
}

BAND_NAMES: tuple[str, ...] = tuple(BANDS)  # canonical order: UV, optical, infrared


def get_band(name: str) -> Band:
    """The band called ``name``; a clear error listing the known ones otherwise."""
    try:
        return BANDS[name]
    except KeyError:
        raise RaycatError(f"unknown band {name!r}; known bands: {', '.join(BAND_NAMES)}") from None


def bands_of(names: list[str] | tuple[str, ...] | None = None) -> list[Band]:
    """Bands by name in the given order (all nine by default)."""
    return [get_band(n) for n in (names or BAND_NAMES)]


def sigma_pixel(band: Band, zero_point_ab: float) -> float:
    """Per-pixel Gaussian noise (in pixel units) that gives the band its 5-sigma depth.

    A PSF-fitted point source on a Gaussian PSF of width s pixels has noise
    sigma_pix * sqrt(4 pi s^2), so sigma_pix = F_5sigma / 5 / sqrt(4 pi s^2).
    """
    s_px = band.psf_fwhm / 2.3548 / band.pixel_scale
    flux_5sigma = 10.0 ** (-0.4 * (band.depth_ab - zero_point_ab))
    return flux_5sigma / 5.0 / math.sqrt(4.0 * math.pi * s_px**2)
