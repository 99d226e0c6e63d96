"""Cross-survey consistency: do two images of one field agree on positions and fluxes?

A wrong WCS (a cutout that kept its parent frame's CRPIX, a mis-solved tile) or a wrong zero
point silently corrupts every cutout raycat cuts from it, and nothing downstream notices. This
check catches both on any field with two surveys: detect bright sources in each image
(``raycat.quality.detect``), match them on the sky, and compare

- astrometry: the median offset (image minus reference, arcsec) and its robust scatter;
- photometry: the median flux ratio (image / reference) of bright compact sources, after the
  published bandpass colour term between the two filters (``COLOUR_TERMS``), and its scatter.

The verdict is not ok when the footprints do not overlap, too few bright sources match, the
median offset exceeds ``max_offset_arcsec`` or the flux ratio is off by more than
``max_flux_deviation``. ``check_field`` runs it for every band of a field against one
reference survey; ``main`` is the command line (a JSON report on stdout).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from raycat.errors import RaycatError
from raycat.quality.detect import DetectConfig, detect, forced_photometry, psf_size
from raycat.stats import mad_sigma


@dataclass(frozen=True)
class ColourTerm:
    """m_target - m_reference = c0 + c1 x + c2 x^2, x = m_blue - m_red of the reference."""

    reference: str
    target: str
    blue: str
    red: str
    coeffs: tuple[float, float, float]
    source: str

    def delta_mag(self, colour: np.ndarray) -> np.ndarray:
        c0, c1, c2 = self.coeffs
        return c0 + c1 * colour + c2 * colour**2


_TONRY = "Tonry et al. 2012, ApJ 750, 99, Table 6 (quadratic, x = (g-r)_P1)"
COLOUR_TERMS: dict[tuple[str, str], ColourTerm] = {
    (t.reference, t.target): t
    for t in (
        ColourTerm("ps1_g", "sdss_g", "ps1_g", "ps1_r", (0.013, 0.145, 0.019), _TONRY),
        ColourTerm("ps1_r", "sdss_r", "ps1_g", "ps1_r", (-0.001, 0.004, 0.007), _TONRY),
        ColourTerm("ps1_i", "sdss_i", "ps1_g", "ps1_r", (-0.005, 0.011, 0.010), _TONRY),
        ColourTerm("ps1_z", "sdss_z", "ps1_g", "ps1_r", (0.013, -0.039, -0.012), _TONRY),
    )
}


@dataclass(frozen=True, eq=False)
class SurveyImage:
    """One calibrated image: pixels in AB nanomaggies, its celestial WCS, its band."""

    pixels: np.ndarray
    wcs: Any  # astropy.wcs.WCS
    band: str
    label: str = ""  # where it came from (a path), for reports


@dataclass(frozen=True)
class CrossCheckConfig:
    """Thresholds of the check; lengths in arcsec."""

    max_offset_arcsec: float = 1.0  # a WCS off by more than this fails
    match_radius_arcsec: float = 2.0  # sources farther apart are different sources
    min_matches: int = 2  # fewer matched bright sources: the WCS cannot be trusted
    min_snr: float = 20.0  # "bright": aperture S/N in both images
    compact_factor: float = 2.0  # "compact": size <= factor x the image's PSF size
    max_flux_deviation: float | None = 0.2  # |flux ratio - 1| beyond this fails; None: off
    # mesh background so knots and nuclei on a galaxy are their own sources; a 3" aperture
    # (after PSF matching) so residual seeing and centroid differences barely move fluxes
    detect: DetectConfig = field(
        default_factory=lambda: DetectConfig(
            background_box_arcsec=6.0, aperture_arcsec=3.0, annulus_arcsec=(4.5, 6.5)
        )
    )


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str


@dataclass(frozen=True)
class CrossCheck:
    """The result of checking one image against a reference image of the same field."""

    reference_band: str
    band: str
    label: str
    n_reference: int  # bright sources of the reference inside the image's footprint
    n_image: int  # bright sources of the image
    n_matched: int
    offset_ra_arcsec: float  # median (image - reference), RA x cos(dec)
    offset_dec_arcsec: float
    offset_arcsec: float
    offset_scatter_arcsec: float  # robust 1-D scatter of the offsets about the median
    n_flux: int  # bright compact matches used for the flux ratio
    flux_ratio_raw: float  # median image / reference flux
    flux_ratio: float  # the same after the colour term: 1 when consistent
    flux_ratio_scatter: float
    colour_term: str
    verdict: Verdict

    def to_dict(self) -> dict:
        out = asdict(self)
        out.update(out.pop("verdict"))
        return {
            k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in out.items()
        }


# --- reading --------------------------------------------------------------------------------


def read_image(path: str, band: str, calibration: Any = None) -> SurveyImage:
    """Read a FITS image through raycat's tile store and calibrate it to AB nanomaggies.

    The band's ``Calibration`` (``raycat.surveys.bands``) is used unless ``calibration`` is given
    (for files in a known unit whose band raycat does not define).
    """
    import warnings

    from astropy.utils.exceptions import AstropyWarning
    from astropy.wcs import WCS

    from raycat.surveys.bands import get_band
    from raycat.surveys.store import TileReadError, open_store

    calibration = calibration or get_band(band).calibration
    root, name = os.path.split(os.path.abspath(path))
    try:
        pixels, header = open_store(root, read_attempts=1).read_full(name)
    except TileReadError as err:
        raise RaycatError(str(err)) from err
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)  # old-style PC001001 etc. are fine
        wcs = WCS(header, naxis=2)
    if not wcs.has_celestial:
        raise RaycatError(f"{path}: no celestial WCS in the header")
    return SurveyImage(calibration.to_nanomaggies(pixels, header), wcs, band, path)


# --- matching and statistics ----------------------------------------------------------------


def robust_centre(values: np.ndarray) -> tuple[float, float]:
    """Median and MAD sigma (NaN, NaN when empty)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    median = float(np.median(values))
    return median, mad_sigma(values, median)


def match_sources(
    reference: pd.DataFrame, other: pd.DataFrame, radius_arcsec: float
) -> pd.DataFrame:
    """One-to-one nearest matches within ``radius_arcsec``: pairs of row numbers and offsets.

    Columns ``ref``, ``other`` (positional indices), ``dra``, ``ddec`` (other - reference,
    arcsec, RA x cos dec) and ``sep``. A source claimed by several is kept by the closest.
    """
    from astropy import units as u
    from astropy.coordinates import SkyCoord, match_coordinates_sky

    empty = pd.DataFrame({"ref": [], "other": [], "dra": [], "ddec": [], "sep": []})
    if len(reference) == 0 or len(other) == 0:
        return empty
    a = SkyCoord(reference["ra"].to_numpy(), reference["dec"].to_numpy(), unit="deg")
    b = SkyCoord(other["ra"].to_numpy(), other["dec"].to_numpy(), unit="deg")
    idx, sep, _ = match_coordinates_sky(a, b)
    pairs = pd.DataFrame({"ref": np.arange(len(a)), "other": idx, "sep": sep.arcsec})
    pairs = pairs[pairs["sep"] <= radius_arcsec].sort_values("sep")
    pairs = pairs.drop_duplicates("other").sort_values("ref", ignore_index=True)
    dra, ddec = a[pairs["ref"]].spherical_offsets_to(b[pairs["other"]])
    pairs["dra"], pairs["ddec"] = dra.to_value(u.arcsec), ddec.to_value(u.arcsec)
    return pairs


def inside_footprint(
    sources: pd.DataFrame, image: SurveyImage, margin_px: float = 0.0
) -> np.ndarray:
    """Which sources (by ra, dec) fall on ``image``, ``margin_px`` inside its edge."""
    if len(sources) == 0:
        return np.zeros(0, dtype=bool)
    x, y = image.wcs.celestial.world_to_pixel_values(
        sources["ra"].to_numpy(), sources["dec"].to_numpy()
    )
    ny, nx = image.pixels.shape
    return (
        (x >= margin_px - 0.5)
        & (x <= nx - 0.5 - margin_px)
        & (y >= margin_px - 0.5)
        & (y <= ny - 0.5 - margin_px)
    )


def bright(sources: pd.DataFrame, cfg: CrossCheckConfig) -> pd.DataFrame:
    """Clean bright sources (no edge, NaN or saturation flag), with a ``compact`` column."""
    keep = sources[
        (sources["snr"] >= cfg.min_snr) & ~sources["edge"] & ~sources["nan"] & ~sources["saturated"]
    ].reset_index(drop=True)
    keep["compact"] = keep["size"] <= cfg.compact_factor * psf_size(sources, cfg.min_snr)
    return keep


# --- the check ------------------------------------------------------------------------------


def colour_of(
    images: dict[str, SurveyImage], term: ColourTerm, sources: pd.DataFrame, cfg: CrossCheckConfig
) -> np.ndarray:
    """The colour term's reference colour (mag) of each source, by forced photometry."""
    blue, red = images[term.blue], images[term.red]
    fb = forced_photometry(blue.pixels, blue.wcs, sources["ra"], sources["dec"], cfg.detect)
    fr = forced_photometry(red.pixels, red.wcs, sources["ra"], sources["dec"], cfg.detect)
    with np.errstate(invalid="ignore", divide="ignore"):
        colour = -2.5 * np.log10(fb["flux"].to_numpy() / fr["flux"].to_numpy())
    return np.where(fb["edge"] | fr["edge"], np.nan, colour)


def check_pair(
    reference: SurveyImage,
    image: SurveyImage,
    cfg: CrossCheckConfig | None = None,
    colour_images: dict[str, SurveyImage] | None = None,
) -> CrossCheck:
    """Check ``image`` against ``reference`` (see the module docstring).

    ``colour_images`` (band -> image) supply the colour of a colour term between the two
    bands; without them, or for bands with no known term, fluxes are compared as they are.
    """
    cfg = cfg or CrossCheckConfig()
    ref = bright(detect(reference.pixels, reference.wcs, cfg.detect), cfg)
    other = bright(detect(image.pixels, image.wcs, cfg.detect), cfg)
    ref = ref[inside_footprint(ref, image)].reset_index(drop=True)
    pairs = match_sources(ref, other, cfg.match_radius_arcsec)
    dra, sra = robust_centre(pairs["dra"])
    ddec, sdec = robust_centre(pairs["ddec"])
    r, o = ref.iloc[pairs["ref"]], other.iloc[pairs["other"]]
    compact = r["compact"].to_numpy() & o["compact"].to_numpy()
    flux = _flux_ratios(reference, image, r[compact], o[compact], colour_images or {}, cfg)
    partial = CrossCheck(
        reference.band,
        image.band,
        image.label,
        len(ref),
        len(other),
        len(pairs),
        dra,
        ddec,
        float(np.hypot(dra, ddec)),
        float(np.sqrt((sra**2 + sdec**2) / 2)),
        *flux,
        Verdict(True, ""),
    )
    return _with_verdict(partial, cfg)


def psf_matched(
    a: SurveyImage, b: SurveyImage, size_a: np.ndarray, size_b: np.ndarray
) -> tuple[SurveyImage, SurveyImage, float]:
    """Both images blurred to the broader PSF, so one aperture holds the same light in each.

    The Gaussian kernel FWHM is sqrt(median(size_a^2 - size_b^2)) over the same sources:
    sizes add in quadrature under convolution, so resolved sources (knots, nuclei) measure
    the PSF difference as well as stars do. Returns the images and the signed kernel FWHM
    (positive: ``b`` was blurred).
    """
    diff = np.asarray(size_a, float) ** 2 - np.asarray(size_b, float) ** 2
    diff = diff[np.isfinite(diff)]
    if diff.size == 0:
        return a, b, 0.0
    median = float(np.median(diff))
    kernel = float(np.sqrt(abs(median)))
    if median > 0:
        return a, _blurred(b, kernel), kernel
    return _blurred(a, kernel), b, -kernel


def _blurred(image: SurveyImage, fwhm_arcsec: float) -> SurveyImage:
    from scipy import ndimage

    from raycat.quality.detect import FWHM_PER_SIGMA, pixel_scale_arcsec

    sigma = fwhm_arcsec / FWHM_PER_SIGMA / pixel_scale_arcsec(image.wcs)
    nan = np.isnan(image.pixels)
    pixels = ndimage.gaussian_filter(np.where(nan, 0.0, image.pixels), sigma, mode="nearest")
    return SurveyImage(np.where(nan, np.nan, pixels), image.wcs, image.band, image.label)


def _flux_ratios(
    reference: SurveyImage,
    image: SurveyImage,
    r: pd.DataFrame,
    o: pd.DataFrame,
    colour_images: dict[str, SurveyImage],
    cfg: CrossCheckConfig,
) -> tuple[int, float, float, float, str]:
    """n, median raw ratio, median colour-corrected ratio, its scatter, the term applied.

    Fluxes are re-measured on PSF-matched images (``psf_matched``), each source at its own
    position in each image, so seeing differences and astrometric offsets do not leak in.
    """
    if len(r) == 0:
        return 0, float("nan"), float("nan"), float("nan"), "none"
    a, b, _ = psf_matched(reference, image, r["size"].to_numpy(), o["size"].to_numpy())
    fa = forced_photometry(a.pixels, a.wcs, r["ra"], r["dec"], cfg.detect)["flux"].to_numpy()
    fb = forced_photometry(b.pixels, b.wcs, o["ra"], o["dec"], cfg.detect)["flux"].to_numpy()
    ratio = fb / fa
    term = COLOUR_TERMS.get((reference.band, image.band))
    applied, expected = "none", np.ones(len(r))
    if term is not None and {term.blue, term.red} <= set(colour_images):
        expected = 10 ** (-0.4 * term.delta_mag(colour_of(colour_images, term, r, cfg)))
        applied = (
            f"{term.target} - {term.reference} = {term.coeffs} in ({term.blue} - "
            f"{term.red}); {term.source}"
        )
    use = np.isfinite(expected) & np.isfinite(ratio)
    raw, _ = robust_centre(ratio[use])
    corrected, scatter = robust_centre((ratio / expected)[use])
    return int(use.sum()), raw, corrected, scatter, applied


def _with_verdict(check: CrossCheck, cfg: CrossCheckConfig) -> CrossCheck:
    from dataclasses import replace

    return replace(check, verdict=verdict(check, cfg))


def verdict(check: CrossCheck, cfg: CrossCheckConfig) -> Verdict:
    """Whether the image's WCS (and, when asked, its flux scale) agrees with the reference."""
    if check.n_reference == 0:
        return Verdict(
            False,
            "no bright reference source falls on the image: the footprints "
            "do not overlap (wrong WCS or wrong field)",
        )
    if check.n_matched < cfg.min_matches:
        return Verdict(
            False,
            f"only {check.n_matched} of {check.n_reference} bright reference "
            f'sources matched within {cfg.match_radius_arcsec}" (need '
            f"{cfg.min_matches}): WCS wrong by more than the match radius?",
        )
    if check.offset_arcsec > cfg.max_offset_arcsec:
        return Verdict(
            False, f'median offset {check.offset_arcsec:.2f}" exceeds {cfg.max_offset_arcsec}"'
        )
    deviation = abs(check.flux_ratio - 1.0)
    if cfg.max_flux_deviation is not None and check.n_flux and deviation > cfg.max_flux_deviation:
        return Verdict(
            False,
            f"flux ratio {check.flux_ratio:.3f} is off by more than {cfg.max_flux_deviation:.0%}",
        )
    return Verdict(True, f'{check.n_matched} matches, offset {check.offset_arcsec:.3f}"')


def reference_band_for(band: str, reference: dict[str, SurveyImage], survey: str) -> str:
    """Same filter letter in the reference survey when there is one, else its first band."""
    same = f"{survey}_{band.split('_', 1)[-1]}"
    if same in reference:
        return same
    if not reference:
        raise RaycatError(f"no image of the reference survey {survey!r}")
    return next(iter(reference))


def check_field(
    images: Sequence[SurveyImage],
    reference_survey: str = "ps1",
    cfg: CrossCheckConfig | None = None,
) -> list[CrossCheck]:
    """Check every image not of ``reference_survey`` against that survey's images."""
    prefix = f"{reference_survey}_"
    reference = {i.band: i for i in images if i.band.startswith(prefix)}
    return [
        check_pair(
            reference[reference_band_for(i.band, reference, reference_survey)], i, cfg, reference
        )
        for i in images
        if not i.band.startswith(prefix)
    ]


def report(checks: list[CrossCheck], reference_survey: str) -> dict:
    """The JSON-ready field report: every check and whether all passed."""
    return {
        "reference_survey": reference_survey,
        "ok": all(c.verdict.ok for c in checks),
        "checks": [c.to_dict() for c in checks],
    }


# --- command line ---------------------------------------------------------------------------


def _band_file(text: str) -> tuple[str, str]:
    band, sep, path = text.partition("=")
    if not sep or not band or not path:
        raise argparse.ArgumentTypeError(f"expected BAND=FILE, got {text!r}")
    return band, path


def build_parser(prog: str = "python -m raycat.quality.crosscheck") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Cross-survey consistency check of one field: detect bright sources in "
        "every image, match them to the reference survey's, and report the astrometric offset "
        "and colour-corrected flux ratio per band as JSON. Exit status 0 when every image "
        "agrees with the reference, 1 when one does not, 2 for bad input.",
    )
    p.add_argument(
        "images",
        nargs="+",
        type=_band_file,
        metavar="BAND=FILE",
        help="an image and its raycat band, e.g. ps1_r=PS1_r.fits sdss_r=SDSS_r.fits",
    )
    p.add_argument("--reference-survey", default="ps1", help="survey checked against (ps1)")
    defaults = CrossCheckConfig()
    p.add_argument(
        "--max-offset",
        type=float,
        default=defaults.max_offset_arcsec,
        help="largest acceptable median offset, arcsec (%(default)s)",
    )
    p.add_argument(
        "--match-radius",
        type=float,
        default=defaults.match_radius_arcsec,
        help="match radius, arcsec (%(default)s)",
    )
    p.add_argument(
        "--min-matches",
        type=int,
        default=defaults.min_matches,
        help="fewest matched bright sources (%(default)s)",
    )
    p.add_argument(
        "--min-snr",
        type=float,
        default=defaults.min_snr,
        help="S/N of a bright source (%(default)s)",
    )
    p.add_argument(
        "--max-flux-deviation",
        type=float,
        default=defaults.max_flux_deviation,
        help="largest |flux ratio - 1|; negative turns the flux test off (%(default)s)",
    )
    return p


def main(
    argv: Sequence[str] | None = None, prog: str = "python -m raycat.quality.crosscheck"
) -> int:
    """Run the field check and print the JSON report; see ``build_parser``."""
    args = build_parser(prog).parse_args(argv)
    cfg = CrossCheckConfig(
        max_offset_arcsec=args.max_offset,
        match_radius_arcsec=args.match_radius,
        min_matches=args.min_matches,
        min_snr=args.min_snr,
        max_flux_deviation=None if args.max_flux_deviation < 0 else args.max_flux_deviation,
    )
    try:
        images = [read_image(path, band) for band, path in args.images]
        result = report(check_field(images, args.reference_survey, cfg), args.reference_survey)
    except RaycatError as err:
        print(f"raycat crosscheck: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
