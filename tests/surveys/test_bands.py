import math

import numpy as np
import pytest

from raycat.errors import RaycatError
from raycat.surveys.bands import BAND_NAMES, BANDS, SURVEYS, get_band, sigma_pixel


def test_nine_bands_in_three_surveys_with_real_scales():
    assert BAND_NAMES == (
        "galex_fuv",
        "galex_nuv",
        "ps1_g",
        "ps1_r",
        "ps1_i",
        "ps1_z",
        "ps1_y",
        "unwise_w1",
        "unwise_w2",
    )
    assert {s: v.pixel_scale for s, v in SURVEYS.items()} == {
        "galex": 1.5,
        "ps1": 0.25,
        "unwise": 2.75,
    }
    assert sorted(b for s in SURVEYS.values() for b in s.bands) == sorted(BAND_NAMES)


def test_filter_curves_exist_in_speclite():
    import speclite.filters

    for band in BANDS.values():
        curve = speclite.filters.load_filter(band.filter_name)
        assert curve.effective_wavelength.value > 1000


def test_zero_point_conventions():
    assert get_band("galex_fuv").calibration.zero_point_ab({}) == pytest.approx(18.82)
    assert get_band("galex_nuv").calibration.zero_point_ab({}) == pytest.approx(20.08)
    ps1 = get_band("ps1_r").calibration
    assert ps1.zero_point_ab({"EXPTIME": 1000.0}) == pytest.approx(25 + 7.5)
    with pytest.raises(ValueError, match="EXPTIME"):
        ps1.zero_point_ab({})
    w1 = get_band("unwise_w1").calibration
    assert w1.zero_point_ab({"MAGZP": 22.5}) == pytest.approx(22.5 + 2.699)
    w2 = get_band("unwise_w2").calibration
    assert w2.zero_point_ab({"MAGZP": 22.5}) == pytest.approx(22.5 + 3.339)


def test_to_nanomaggies_one_nanomaggy_is_ab_22_5():
    cal = get_band("ps1_g").calibration
    header = {"EXPTIME": 100.0}
    counts_for_ab_22_5 = 10 ** (-0.4 * (22.5 - cal.zero_point_ab(header)))
    assert cal.to_nanomaggies(np.array([counts_for_ab_22_5]), header)[0] == pytest.approx(1.0)


def test_sigma_pixel_reproduces_the_5_sigma_depth():
    band = get_band("ps1_i")
    zp = 30.0
    s_px = band.psf_fwhm / 2.3548 / band.pixel_scale
    noise = sigma_pixel(band, zp) * math.sqrt(4 * math.pi * s_px**2)
    assert -2.5 * math.log10(5 * noise) + zp == pytest.approx(band.depth_ab)


def test_unknown_band_names_the_known_ones():
    with pytest.raises(RaycatError, match="ps1_g"):
        get_band("ps1_q")


def test_real_only_surveys_are_registered_but_not_default():
    from raycat.surveys.bands import ALL_SURVEYS

    assert {"sdss", "hsc", "ls"} <= set(ALL_SURVEYS) and not {"sdss", "hsc", "ls"} & set(SURVEYS)
    assert get_band("sdss_r").pixel_scale == 0.396 and get_band("ls_z").pixel_scale == 0.262
    assert get_band("hsc_i").pixel_scale == 0.168 and not set(BAND_NAMES) & {"sdss_r", "hsc_i"}


def test_fluxmag0_and_ps1_asinh_conventions():
    hsc = get_band("hsc_r").calibration
    assert hsc.zero_point_ab({"FLUXMAG0": 10**10.8}) == pytest.approx(27.0)
    with pytest.raises(ValueError, match="FLUXMAG0"):
        hsc.zero_point_ab({"FLUXMAG0": -1.0})
    ps1 = get_band("ps1_g").calibration
    values = np.array([0.0, 1.0, 5.0], np.float32)
    assert ps1.linearise(values, {"EXPTIME": 1.0}) is values  # fitscut: linear already
    raw = ps1.linearise(values, {"BOFFSET": 10.0, "BSOFTEN": 2.0})
    np.testing.assert_allclose(raw, 10 + 4 * np.sinh(values * math.log(10) / 2.5), rtol=1e-6)


def test_config_survey_errors_name_the_problem():
    from raycat.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match="like 'nosuch'"):
        parse_config({"cutouts": {"surveys": {"x": {"like": "nosuch"}}}})
    with pytest.raises(ConfigError, match="needs `like` or"):
        parse_config({"cutouts": {"surveys": {"x": {"pixel_scale": 1.0, "bands": {"x_r": {}}}}}})
    with pytest.raises(ConfigError, match=r"cutouts\.bands"):
        parse_config({"cutouts": {"bands": ["x_r"]}})
