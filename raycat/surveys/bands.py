"""Survey and band definitions: the facts about each instrument, as data.

Every band says how its pixel values become AB fluxes and where its files keep their pixels,
so readers, the mock sky and config-defined surveys share one set of conventions (the real
products' own; a new survey that follows one of them needs config only, see
``raycat.surveys.config``):

- GALEX intensity maps are counts per second; AB = -2.5 log10(cps) + 18.82 (FUV) / 20.08 (NUV);
  the detector is a 1.2 deg circle, so tile pixels beyond ~0.6 deg of the centre are not data.
- Pan-STARRS1 stacks are counts; AB zero point = 25 + 2.5 log10(EXPTIME) from the header.
  Raw stacks store asinh-compressed values (BOFFSET/BSOFTEN); fitscut cutouts are linear.
- unWISE coadds are Vega nanomaggies with MAGZP = 22.5; AB = Vega + 2.699 (W1) / 3.339 (W2);
  each image has ``-invvar-m.fits.gz`` and a per-tile ``-msk.fits.gz`` companion.
- SDSS frames and Legacy Surveys images are AB nanomaggies (zero point 22.5).
- HSC-SSP coadds carry ``FLUXMAG0`` (counts of a zero-magnitude source): zp = 2.5 log10(FLUXMAG0),
  27.0 for the released coadds; the image is in extension 1.

Depths are 5-sigma point-source AB magnitudes and PSF FWHMs median values of the real data
sets: GALEX MIS (Bianchi et al. 2017), PS1 3pi stacks (Chambers et al. 2016), unWISE
(Schlafly et al. 2019), SDSS DR7 (Abazajian et al. 2009: 95% completeness u,g,r,i,z =
22.0, 22.2, 22.2, 21.3, 20.5; seeing 1.4" in r), HSC-SSP Wide (Aihara et al. 2022, PDR3),
Legacy Surveys DR9 (Dey et al. 2019: median g,r,z = 24.7, 23.9, 23.0; seeing 1.3/1.2/1.1").
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from raycat.errors import RaycatError

NANOMAGGY_ZP = 22.5  # AB magnitude of one nanomaggy
GALEX_FOV_RADIUS_DEG = 0.6  # GALEX's field of view is a 1.2 deg circle (Morrissey et al. 2007)

ZeroPointKind = Literal["fixed", "header", "exptime", "fluxmag0"]
Decompression = Literal["none", "ps1_asinh"]


def ps1_asinh_to_linear(values: np.ndarray, boffset: float, bsoften: float) -> np.ndarray:
    """Undo the PS1 raw-stack compression: BOFFSET + BSOFTEN * 2 sinh(v ln(10) / 2.5).

    Raw PS1 stacks store 2.5 log10-like asinh values to fit a large dynamic range in 16 bits;
    fitscut cutouts are already linear and have no BSOFTEN, so this applies only with both.
    """
    v = np.asarray(values, dtype=np.float64)
    return (boffset + bsoften * 2.0 * np.sinh(v * math.log(10.0) / 2.5)).astype(np.float32)


@dataclass(frozen=True)
class Calibration:
    """How a pixel value becomes an AB flux.

    kind: "fixed" (``zero_point`` is the AB magnitude of one pixel unit), "header" (the zero
    point is the header keyword ``keyword``, falling back to ``zero_point``), "exptime"
    (``zero_point + 2.5 log10(EXPTIME)``, the PS1 convention) or "fluxmag0" (2.5 log10 of
    the header keyword ``keyword``, default FLUXMAG0, the HSC convention; ``zero_point`` is the
    fallback). ``ab_offset`` turns a Vega zero point into AB (unWISE). ``decompress``
    "ps1_asinh" linearises raw PS1 stacks (see ``ps1_asinh_to_linear``) before calibration.
    """

    kind: ZeroPointKind
    zero_point: float
    keyword: str | None = None
    ab_offset: float = 0.0
    decompress: Decompression = "none"

    def zero_point_ab(self, header: Mapping | None = None) -> float:
        """AB magnitude of one pixel unit, read from ``header`` where the convention says."""
        header = header or {}
        if self.kind == "fixed":
            zp = self.zero_point
        elif self.kind == "header":
            zp = float(header.get(self.keyword, self.zero_point))
        elif self.kind == "fluxmag0":
            zp = _fluxmag0_zero_point(header, self.keyword or "FLUXMAG0", self.zero_point)
        else:
            exptime = float(header.get("EXPTIME", 0.0))
            if exptime <= 0:
                raise ValueError("EXPTIME missing or not positive: cannot set the zero point")
            zp = self.zero_point + 2.5 * math.log10(exptime)
        return zp + self.ab_offset

    def nmgy_per_unit(self, header: Mapping | None = None) -> float:
        """AB nanomaggies of one (linear) pixel unit: the factor ``to_nanomaggies`` applies."""
        return 10.0 ** (-0.4 * (self.zero_point_ab(header) - NANOMAGGY_ZP))

    def linearise(self, pixels: np.ndarray, header: Mapping | None = None) -> np.ndarray:
        """Pixels as linear units: PS1 asinh decompression when the header says it applies."""
        header = header or {}
        if self.decompress == "ps1_asinh" and "BSOFTEN" in header and "BOFFSET" in header:
            return ps1_asinh_to_linear(pixels, float(header["BOFFSET"]), float(header["BSOFTEN"]))
        return pixels

    @property
    def is_linear(self) -> bool:
        """Whether pixels never need ``linearise`` (so callers can skip it)."""
        return self.decompress == "none"

    def to_nanomaggies(self, pixels: np.ndarray, header: Mapping | None = None) -> np.ndarray:
        """Convert pixel values to AB nanomaggies (one common flux unit across surveys)."""
        linear = self.linearise(np.asarray(pixels, dtype=np.float32), header)
        return np.asarray(linear, dtype=np.float32) * np.float32(self.nmgy_per_unit(header))


def _fluxmag0_zero_point(header: Mapping, keyword: str, fallback: float) -> float:
    """2.5 log10(FLUXMAG0): the magnitude of one count when FLUXMAG0 counts are mag 0."""
    value = header.get(keyword)
    if value is None:
        if not fallback:
            raise ValueError(f"{keyword} missing: cannot set the zero point")
        return fallback
    if float(value) <= 0:
        raise ValueError(f"{keyword} = {value} is not positive: cannot set the zero point")
    return 2.5 * math.log10(float(value))


@dataclass(frozen=True)
class Companion:
    """A file that belongs to an image, named by rewriting the image's name.

    ``pattern`` (a regular expression) is replaced by ``replacement`` in the image URI, e.g.
    unWISE ``-w1-img-m.fits`` -> ``-msk.fits.gz`` (one mask per tile, for all bands).
    """

    kind: str  # "mask" or "invvar"
    pattern: str
    replacement: str

    def uri_for(self, image_uri: str) -> str | None:
        """The companion's URI, or None when the image name does not follow the pattern."""
        uri, n = re.subn(self.pattern, self.replacement, image_uri)
        return uri if n else None


@dataclass(frozen=True)
class ReadLayout:
    """Where a survey's files keep their pixels and which pixels are data.

    ``image_hdu``: None reads the first image HDU with data (covers HSC ext 1 and compressed
    PS1 ext 1); an index forces one. ``fov_radius_deg``: pixels farther than this from the image
    centre are not data (GALEX's circular detector). ``mask_bits``: pixels of the "mask"
    companion with any of these bits set are not data (0: do not read the mask).
    ``invvar_nodata``: pixels whose "invvar" companion is 0 (no exposure: unWISE's
    inverse-variance maps) are not data. Both companions cost one more read per tile, so
    they are off unless asked for.
    """

    image_hdu: int | None = None
    companions: tuple[Companion, ...] = ()
    fov_radius_deg: float | None = None
    mask_bits: int = 0
    invvar_nodata: bool = False

    def companion(self, kind: str, image_uri: str) -> str | None:
        """URI of the ``kind`` companion of ``image_uri``; None when the survey has none."""
        for item in self.companions:
            if item.kind == kind:
                return item.uri_for(image_uri)
        return None


@dataclass(frozen=True)
class Band:
    """One filter of one survey, with everything needed to read and calibrate its tiles."""

    name: str  # raycat band name, e.g. "ps1_g"
    survey: str  # survey name, e.g. "ps1"
    filter_name: str  # speclite filter name, e.g. "panstarrs-g"
    psf_fwhm: float  # arcsec
    depth_ab: float  # 5-sigma point-source AB magnitude
    unit: str  # FITS BUNIT of the pixel values
    calibration: Calibration
    pixel_scale: float  # arcsec / px of the survey's native grid
    layout: ReadLayout = field(default_factory=ReadLayout)
    mock_exptime: float = 0.0  # seconds written to EXPTIME by the mock sky (PS1)


@dataclass(frozen=True)
class Survey:
    """An imaging survey: its native pixel grid, file layout and how the mock sky tiles it."""

    name: str
    pixel_scale: float  # arcsec / px
    bands: tuple[str, ...]
    mock_tile_deg: float = 0.0  # side of a mock tile (real tiles are larger; scaled for laptops)
    mock_overlap_arcsec: float = 0.0  # overlap of neighbouring mock tiles, as real tilings have
    layout: ReadLayout = field(default_factory=ReadLayout)


UNWISE_LAYOUT = ReadLayout(
    companions=(
        Companion("invvar", r"-img-m\.fits$", "-invvar-m.fits.gz"),
        Companion("mask", r"-w\d-img-m\.fits$", "-msk.fits.gz"),
    )
)

SURVEYS: dict[str, Survey] = {  # the default surveys: the nine bands the mock sky draws
    "galex": Survey(
        "galex",
        1.5,
        ("galex_fuv", "galex_nuv"),
        0.20,
        30.0,
        ReadLayout(fov_radius_deg=GALEX_FOV_RADIUS_DEG),
    ),
    "ps1": Survey("ps1", 0.25, ("ps1_g", "ps1_r", "ps1_i", "ps1_z", "ps1_y"), 0.12, 20.0),
    "unwise": Survey("unwise", 2.75, ("unwise_w1", "unwise_w2"), 0.25, 60.0, UNWISE_LAYOUT),
}
REAL_ONLY_SURVEYS: dict[str, Survey] = {  # read from real tiles; not in the default band list
    "sdss": Survey("sdss", 0.396, tuple(f"sdss_{b}" for b in "ugriz")),
    "hsc": Survey("hsc", 0.168, tuple(f"hsc_{b}" for b in "grizy")),
    "ls": Survey("ls", 0.262, tuple(f"ls_{b}" for b in "grz")),
}
ALL_SURVEYS: dict[str, Survey] = {**SURVEYS, **REAL_ONLY_SURVEYS}


def _band(
    survey: str,
    short: str,
    filter_name: str,
    fwhm: float,
    depth: float,
    unit: str,
    calibration: Calibration,
    **extra,
) -> Band:
    info = ALL_SURVEYS[survey]
    return Band(
        f"{survey}_{short}",
        survey,
        filter_name,
        fwhm,
        depth,
        unit,
        calibration,
        info.pixel_scale,
        info.layout,
        **extra,
    )


def _galex(name: str, fwhm: float, depth: float, zp: float) -> Band:
    return _band("galex", name, f"galex-{name}", fwhm, depth, "cps", Calibration("fixed", zp))


def _ps1(name: str, fwhm: float, depth: float, exptime: float) -> Band:
    return _band(
        "ps1",
        name,
        f"panstarrs-{name}",
        fwhm,
        depth,
        "counts",
        Calibration("exptime", 25.0, decompress="ps1_asinh"),
        mock_exptime=exptime,
    )


def _unwise(name: str, fwhm: float, depth: float, ab_offset: float) -> Band:
    return _band(
        "unwise",
        name.lower(),
        f"wise2010-{name}",
        fwhm,
        depth,
        "nanomaggy",
        Calibration("header", NANOMAGGY_ZP, "MAGZP", ab_offset),
    )


def _nanomaggies(survey: str, name: str, filter_group: str, fwhm: float, depth: float) -> Band:
    return _band(
        survey,
        name,
        f"{filter_group}-{name}",
        fwhm,
        depth,
        "nanomaggy",
        Calibration("fixed", NANOMAGGY_ZP),
    )


def _hsc(name: str, fwhm: float, depth: float) -> Band:
    return _band(
        "hsc",
        name,
        f"hsc2017-{name}",
        fwhm,
        depth,
        "counts",
        Calibration("fluxmag0", 27.0, "FLUXMAG0"),
    )


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
        # SDSS DR7 (Abazajian et al. 2009); frames are AB nanomaggies
        *(
            _nanomaggies("sdss", b, "sdss2010", fwhm, depth)
            for b, fwhm, depth in zip(
                "ugriz", (1.53, 1.44, 1.32, 1.26, 1.29), (22.0, 22.2, 22.2, 21.3, 20.5)
            )
        ),
        # HSC-SSP Wide PDR3 (Aihara et al. 2022): median seeing and 5-sigma point-source depth
        *(
            _hsc(b, fwhm, depth)
            for b, fwhm, depth in zip(
                "grizy", (0.77, 0.76, 0.58, 0.68, 0.68), (26.5, 26.5, 26.2, 25.2, 24.4)
            )
        ),
        # Legacy Surveys DR9 (Dey et al. 2019); DECam filters, nanomaggies
        *(
            _nanomaggies("ls", b, "decam2014", fwhm, depth)
            for b, fwhm, depth in zip("grz", (1.29, 1.18, 1.11), (24.7, 23.9, 23.0))
        ),
    )
}

BAND_NAMES: tuple[str, ...] = tuple(b for s in SURVEYS.values() for b in s.bands)
"""The canonical default band list (UV, optical, infrared): the mock sky's nine bands."""


def get_band(name: str, extra: Mapping[str, Band] | None = None) -> Band:
    """The band called ``name`` (``extra``, e.g. config-defined bands, first); a clear error
    listing the known ones otherwise."""
    found = (extra or {}).get(name) or BANDS.get(name)
    if found is None:
        known = ", ".join([*(extra or {}), *BANDS])
        raise RaycatError(f"unknown band {name!r}; known bands: {known}")
    return found


def bands_of(names: list[str] | tuple[str, ...] | None = None) -> list[Band]:
    """Bands by name in the given order (the nine defaults by default)."""
    return [get_band(n) for n in (names or BAND_NAMES)]


def sigma_pixel(band: Band, zero_point_ab: float) -> float:
    """Per-pixel Gaussian noise (in pixel units) that gives the band its 5-sigma depth.

    A PSF-fitted point source on a Gaussian PSF of width s pixels has noise
    sigma_pix * sqrt(4 pi s^2), so sigma_pix = F_5sigma / 5 / sqrt(4 pi s^2).
    """
    s_px = band.psf_fwhm / 2.3548 / band.pixel_scale
    flux_5sigma = 10.0 ** (-0.4 * (band.depth_ab - zero_point_ab))
    return flux_5sigma / 5.0 / math.sqrt(4.0 * math.pi * s_px**2)


# --- cutout normalisation ---------------------------------------------------------------------
# Cutouts are asinh(flux / softening) per band; the default softening is the band's sky noise,
# which follows from its depth, so it lives beside the band definitions.


def default_softening(band: str | Band, pixel_scale: float) -> float:
    """About the 1-sigma sky noise per output pixel (nanomaggies), from the band's depth.

    With r = output / native pixel scale and sigma the native per-pixel noise implied by the
    5-sigma depth (``sigma_pixel``): sigma * r when output pixels are larger (white
    noise binned into r^2 native pixels), sigma * r^2 when smaller (one native pixel's noise
    scaled to the output pixel's area; bilinear interpolation lowers it by ~1/3 more).
    """
    info = band if isinstance(band, Band) else get_band(band)
    ratio = pixel_scale / info.pixel_scale
    return sigma_pixel(info, NANOMAGGY_ZP) * (ratio if ratio >= 1.0 else ratio**2)


class CutoutBands(Protocol):
    """What ``softenings`` reads of a cutout grid (``raycat.config.CutoutConfig`` is one)."""

    @property
    def bands(self) -> Sequence[str]: ...

    @property
    def pixel_scale(self) -> float: ...

    @property
    def softening(self) -> Mapping[str, float]: ...

    def band(self, name: str) -> Band: ...


def softenings(cfg: CutoutBands) -> np.ndarray:
    """asinh softening per band, in ``cfg.bands`` order (config value, else the default)."""
    return np.array(
        [cfg.softening.get(b, default_softening(cfg.band(b), cfg.pixel_scale)) for b in cfg.bands],
        dtype=np.float32,
    )
