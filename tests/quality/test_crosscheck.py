"""Source detection, sky matching and the cross-survey consistency check.

Synthetic images test that known injected sources and a known WCS shift are recovered; the
real Stripe 82 field (Pan-STARRS1 and SDSS cutouts in ../shared/realdata, read-only) tests
that raycat's conventions make the two surveys agree, and that a broken WCS is caught.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from realdata import REALDATA

from raycat.quality.crosscheck import (
    COLOUR_TERMS,
    CrossCheckConfig,
    SurveyImage,
    check_field,
    check_pair,
    main,
    match_sources,
    read_image,
)
from raycat.quality.detect import DetectConfig, detect, forced_photometry, robust_stats

BANDS = "griz"


# --- synthetic images -----------------------------------------------------------------------


def tan_wcs(n: int, scale: float, ra: float = 30.0, dec: float = 0.5, shift_arcsec=(0.0, 0.0)):
    """A north-up TAN WCS; ``shift_arcsec`` moves the sky under the pixels (a WCS error)."""
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crpix = [(n + 1) / 2, (n + 1) / 2]
    w.wcs.cdelt = [-scale / 3600, scale / 3600]
    w.wcs.crval = [
        ra + shift_arcsec[0] / 3600 / np.cos(np.radians(dec)),
        dec + shift_arcsec[1] / 3600,
    ]
    return w


def render(
    wcs, n: int, scale: float, sky: pd.DataFrame, fwhm: float, noise: float, seed: int = 0
) -> np.ndarray:
    """Gaussian point sources (flux in nanomaggies) on a flat sky with white noise."""
    rng = np.random.default_rng(seed)
    image = rng.normal(0.05, noise, (n, n))
    x, y = wcs.world_to_pixel_values(sky["ra"].to_numpy(), sky["dec"].to_numpy())
    s = fwhm / 2.3548 / scale
    yy, xx = np.mgrid[:n, :n]
    for xi, yi, f in zip(x, y, sky["flux"]):
        image += f / (2 * np.pi * s * s) * np.exp(-((xx - xi) ** 2 + (yy - yi) ** 2) / (2 * s * s))
    return image


@pytest.fixture(scope="module")
def sky() -> pd.DataFrame:
    """Well separated point sources over a 50" field (positions in degrees, flux in nmgy)."""
    rng = np.random.default_rng(3)
    side = np.arange(5) * 9.0 - 18.0  # a 5 x 5 grid, 9" apart, jittered
    gx, gy = np.meshgrid(side, side)
    dx = gx.ravel() + rng.uniform(-2, 2, gx.size)
    dy = gy.ravel() + rng.uniform(-2, 2, gx.size)
    return pd.DataFrame(
        {
            "ra": 30.0 + dx / 3600 / np.cos(np.radians(0.5)),
            "dec": 0.5 + dy / 3600,
            "flux": rng.uniform(3.0, 60.0, gx.size),
        }
    )


def test_robust_stats_ignore_sources_and_nans():
    rng = np.random.default_rng(0)
    data = rng.normal(2.0, 0.5, 10_000)
    data[:500] = 1e4  # sources
    data[500:600] = np.nan
    level, sigma = robust_stats(data)
    assert level == pytest.approx(2.0, abs=0.03) and sigma == pytest.approx(0.5, rel=0.05)


def test_detect_recovers_injected_sources(sky):
    n, scale, fwhm = 240, 0.25, 1.2
    wcs = tan_wcs(n, scale)
    found = detect(render(wcs, n, scale, sky, fwhm, noise=0.01), wcs)
    pairs = match_sources(sky, found, 0.5)
    assert len(pairs) == len(sky) and len(found) == len(sky)  # no misses, no spurious
    assert np.hypot(pairs["dra"], pairs["ddec"]).max() < 0.05  # arcsec
    flux = found["flux"].to_numpy()[pairs["other"]]
    # a 2" aperture holds 1 - exp(-r^2 / 2 s^2) of a Gaussian's flux
    s = fwhm / 2.3548
    expected = sky["flux"].to_numpy()[pairs["ref"]] * (1 - np.exp(-(2.0**2) / (2 * s * s)))
    np.testing.assert_allclose(flux, expected, rtol=0.03)
    np.testing.assert_allclose(found["size"], fwhm, rtol=0.05)
    assert not found[["edge", "nan", "saturated", "blended"]].any().any()


def test_detect_flags_nan_edge_and_saturation():
    n, scale = 120, 0.4
    wcs = tan_wcs(n, scale)
    centre = wcs.pixel_to_world_values([60.0, 2.0], [60.0, 60.0])
    sky = pd.DataFrame({"ra": centre[0], "dec": centre[1], "flux": [200.0, 50.0]})
    image = render(wcs, n, scale, sky, 1.3, noise=0.01)
    image[58:60, 61] = np.nan
    cfg = DetectConfig(saturation=float(np.nanmax(image[50:70, 50:70])) * 0.9)
    found = detect(image, wcs, cfg).sort_values("x", ignore_index=True)
    assert len(found) == 2
    edge_source, centre_source = found.iloc[0], found.iloc[1]
    assert edge_source["edge"] and not edge_source["saturated"]
    assert centre_source["nan"] and centre_source["saturated"] and not centre_source["edge"]
    assert np.isfinite(found["flux"]).all()


def test_detect_empty_image_gives_empty_table():
    wcs = tan_wcs(64, 0.25)
    found = detect(np.random.default_rng(1).normal(0, 1, (64, 64)), wcs)
    assert found.empty and "flux" in found.columns


def test_forced_photometry_matches_detection(sky):
    n, scale = 240, 0.25
    wcs = tan_wcs(n, scale)
    image = render(wcs, n, scale, sky, 1.2, noise=0.01)
    found = detect(image, wcs)
    forced = forced_photometry(image, wcs, found["ra"], found["dec"])
    np.testing.assert_allclose(forced["flux"], found["flux"], rtol=1e-6)


def test_matcher_measures_a_known_shift(sky):
    """Two surveys (different pixel scales and seeing); the second's WCS is off by a known
    amount: the check measures it and fails the tile only beyond the threshold."""
    shift = (0.6, -0.4)  # arcsec: sky coordinates of the second image are off by this
    a_wcs = tan_wcs(240, 0.25)
    a = SurveyImage(render(a_wcs, 240, 0.25, sky, 1.2, 0.01, seed=1), a_wcs, "ps1_r")
    b_true = tan_wcs(160, 0.396)
    b_wcs = tan_wcs(160, 0.396, shift_arcsec=shift)
    b = SurveyImage(render(b_true, 160, 0.396, sky, 1.5, 0.01, seed=2), b_wcs, "sdss_r")
    check = check_pair(a, b)
    assert check.n_matched == len(sky)
    assert check.offset_ra_arcsec == pytest.approx(shift[0], abs=0.03)
    assert check.offset_dec_arcsec == pytest.approx(shift[1], abs=0.03)
    assert check.offset_scatter_arcsec < 0.05
    assert check.flux_ratio_raw == pytest.approx(1.0, abs=0.02)  # PSF-matched apertures
    assert check.verdict.ok
    strict = check_pair(a, b, CrossCheckConfig(max_offset_arcsec=0.5))
    assert not strict.verdict.ok and "offset" in strict.verdict.reason


def test_tonry_colour_terms_agree_with_synthetic_photometry():
    """The published PS1 -> SDSS terms match speclite's filter curves on blackbody stars."""
    from raycat.sky.sed import blackbody_flam, redshifted_maggies

    wave = np.geomspace(2500.0, 20000.0, 20000)
    for teff in (4000.0, 6000.0, 9000.0):
        flam = blackbody_flam(wave, teff)
        mag = {
            f: -2.5 * np.log10(redshifted_maggies(wave, flam, np.array([0.0]), f)[0])
            for f in [f"{s}-{b}" for s in ("panstarrs", "sdss2010") for b in BANDS]
        }
        colour = mag["panstarrs-g"] - mag["panstarrs-r"]
        for b in BANDS:
            term = COLOUR_TERMS[(f"ps1_{b}", f"sdss_{b}")]
            synthetic = mag[f"sdss2010-{b}"] - mag[f"panstarrs-{b}"]
            assert term.delta_mag(colour) == pytest.approx(synthetic, abs=0.03)


# --- the real Stripe 82 field ---------------------------------------------------------------

needs_realdata = pytest.mark.skipif(
    not (REALDATA / "ps1" / "PS1_r.fits").exists(), reason="no ../shared/realdata"
)


def sdss_image(band: str, suffix: str = "_wcsfixed") -> SurveyImage:
    """An SDSS cutout, read with the sdss band's own calibration (nanomaggies)."""
    return read_image(str(REALDATA / "sdss" / f"SDSS_{band}{suffix}.fits"), f"sdss_{band}")


@pytest.fixture(scope="module")
def field() -> dict[str, SurveyImage]:
    images = {
        f"ps1_{b}": read_image(str(REALDATA / "ps1" / f"PS1_{b}.fits"), f"ps1_{b}") for b in BANDS
    }
    images.update({f"sdss_{b}": sdss_image(b) for b in BANDS})
    return images


@needs_realdata
def test_ps1_old_style_pc_keywords_read_right(field):
    """PC001001 = -1 with CDELT = 0.25"/px: RA grows to the left, centre as documented."""
    wcs = field["ps1_r"].wcs
    assert wcs.wcs.pc[0, 0] == -1.0 and wcs.wcs.pc[1, 1] == 1.0
    ra, dec = wcs.pixel_to_world_values(119.5, 119.5)
    assert ra == pytest.approx(27.952, abs=2e-4) and dec == pytest.approx(0.2635, abs=2e-4)
    ra_left, _ = wcs.pixel_to_world_values(0.0, 119.5)
    assert (ra_left - ra) * 3600 == pytest.approx(119.5 * 0.25, rel=1e-3)


@needs_realdata
@pytest.mark.parametrize("band", list(BANDS))
def test_ps1_and_sdss_agree_on_the_stripe82_field(field, band):
    check = check_pair(field[f"ps1_{band}"], field[f"sdss_{band}"], CrossCheckConfig(), field)
    assert check.verdict.ok, check.verdict.reason
    assert check.n_matched >= 2
    assert check.offset_arcsec < 0.3
    assert check.n_flux >= 1
    if band == "g":
        # The bright compact sources here are a galaxy nucleus and a knot in its arm, red
        # in g - r (about 1): Tonry's stellar g term predicts SDSS 0.16 mag fainter, which
        # these sources do not follow (measured: docs/real_data.md). The raw ratio agrees.
        assert check.flux_ratio_raw == pytest.approx(1.0, abs=0.10)
    else:
        assert check.flux_ratio == pytest.approx(1.0, abs=0.10)


@needs_realdata
def test_broken_sdss_wcs_is_caught(field):
    """The original SDSS cutouts keep the parent frame's CRPIX: ~5.8' off, so not ok."""
    for band in BANDS:
        check = check_pair(field[f"ps1_{band}"], sdss_image(band, ""), CrossCheckConfig(), field)
        assert not check.verdict.ok
        assert check.n_matched == 0


@needs_realdata
def test_check_field_and_cli_report(field, capsys):
    checks = check_field(list(field.values()))
    assert [c.band for c in checks] == [f"sdss_{b}" for b in BANDS]
    assert [c.reference_band for c in checks] == [f"ps1_{b}" for b in BANDS]
    assert all(c.verdict.ok for c in checks)
    from raycat.cli import main as raycat

    args = [f"ps1_{b}={REALDATA}/ps1/PS1_{b}.fits" for b in "gr"]
    assert raycat(["crosscheck", *args, f"sdss_r={REALDATA}/sdss/SDSS_r_wcsfixed.fits"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    assert raycat(["crosscheck", *args, f"sdss_r={REALDATA}/sdss/SDSS_r.fits"]) == 1
    report = json.loads(capsys.readouterr().out)  # the broken WCS
    assert report["ok"] is False and report["checks"][0]["ok"] is False


def test_cli_help_and_bad_input(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0 and "BAND=FILE" in capsys.readouterr().out
    assert main([f"ps1_r={tmp_path}/missing.fits"]) == 2
    assert "missing.fits" in capsys.readouterr().err
