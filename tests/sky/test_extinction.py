"""The Milky Way E(B-V) field of the mock sky: smooth, seeded, a function of (ra, dec)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from raycat import schema
from raycat.sky.extinction import (
    EBV_COLUMN,
    EXTINCTION_R,
    ExtinctionField,
    apply_extinction,
    ebv_at,
    smooth_noise,
)
from raycat.sky.objects import galactic_to_icrs, sin_abs_b
from raycat.sky.population import bulge_mag_column, disk_mag_column
from raycat.sky.sed import MAG_NO_FLUX
from raycat.surveys.bands import BAND_NAMES

FIELD = ExtinctionField(ebv_pole=0.03, scatter=0.4, scale_deg=0.1)


def _random_points(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 360, n), np.degrees(np.arcsin(rng.uniform(-1, 1, n)))


def test_coefficients_cover_every_mock_band_and_fall_with_wavelength():
    assert set(EXTINCTION_R) == set(BAND_NAMES)
    optical_ir = [EXTINCTION_R[b] for b in BAND_NAMES if not b.startswith("galex")]
    assert optical_ir == sorted(optical_ir, reverse=True)  # g > r > ... > W1 > W2
    assert EXTINCTION_R["galex_nuv"] > EXTINCTION_R["galex_fuv"] > EXTINCTION_R["ps1_g"]


def test_field_is_seeded_and_a_function_of_position_alone():
    ra, dec = _random_points(500)
    values = ebv_at(ra, dec, FIELD, seed=5)
    assert np.array_equal(values, ebv_at(ra, dec, FIELD, seed=5))
    # one object on its own gets the value it has among others (no map, no batch effects)
    assert ebv_at(ra[17], dec[17], FIELD, seed=5)[0] == pytest.approx(values[17], rel=1e-12)
    order = np.random.default_rng(1).permutation(500)
    assert np.allclose(ebv_at(ra[order], dec[order], FIELD, seed=5), values[order], rtol=1e-12)
    other = ebv_at(ra, dec, FIELD, seed=6)
    assert np.all(values > 0) and np.corrcoef(np.log(values), np.log(other))[0, 1] < 0.9


def test_field_is_smooth_below_its_scale_and_decorrelates_beyond_it():
    ra, dec = _random_points(4000, seed=2)
    dec = np.clip(dec, -80, 80)
    here = smooth_noise(ra, dec, seed=3, scale_deg=0.1)
    assert np.std(here) == pytest.approx(1.0, abs=0.1)  # unit variance over the sky
    for step_deg, low, high in ((0.001, 0.999, 1.0), (0.01, 0.98, 1.0), (0.5, -0.2, 0.2)):
        there = smooth_noise(ra, dec + step_deg, seed=3, scale_deg=0.1)
        expected = np.exp(-((step_deg / 0.1) ** 2) / 2)  # the field's Gaussian covariance
        corr = np.corrcoef(here, there)[0, 1]
        assert low <= corr <= high and corr == pytest.approx(expected, abs=0.05)
    # no jumps: over 1/100 of the scale the field moves by ~ 1/100 of its spread
    nearby = smooth_noise(ra, dec + 0.001, seed=3, scale_deg=0.1)
    assert np.max(np.abs(nearby - here)) < 0.1


def test_field_follows_the_galactic_latitude_law_on_average():
    ra, dec = galactic_to_icrs(np.linspace(0, 360, 3000), np.full(3000, 30.0))
    values = ebv_at(ra, dec, FIELD, seed=0)
    law = FIELD.ebv_pole / np.sin(np.radians(30.0))
    assert np.mean(values) == pytest.approx(law, rel=0.1)  # exp(s f - s^2/2) has mean 1
    assert np.std(np.log(values)) == pytest.approx(FIELD.scatter, rel=0.25)
    ra_p, dec_p = galactic_to_icrs(np.linspace(0, 360, 400), np.full(400, 5.0))
    plane = ebv_at(ra_p, dec_p, FIELD, seed=0).mean()
    assert plane / np.mean(values) == pytest.approx(0.5 / np.sin(np.radians(5.0)), rel=0.2)
    smooth = FIELD.model_copy(update={"scatter": 0.0})
    exact = ebv_at(ra, dec, smooth, seed=0)
    assert np.allclose(exact, FIELD.ebv_pole / sin_abs_b(ra, dec), rtol=1e-9)


def test_off_field_is_zero_everywhere():
    ra, dec = _random_points(50)
    assert not ExtinctionField().is_on
    assert np.array_equal(ebv_at(ra, dec, ExtinctionField(), seed=1), np.zeros(50))


def _sources() -> pd.DataFrame:
    table: dict = {schema.ID: [1, 2, 3]}
    for b, band in enumerate(BAND_NAMES):
        table[schema.truth_mag(band)] = [20.0 + b * 0.1, MAG_NO_FLUX, 18.0]
        table[bulge_mag_column(band)] = [21.0, MAG_NO_FLUX, 18.0]
        table[disk_mag_column(band)] = [20.5, MAG_NO_FLUX, MAG_NO_FLUX]
    return pd.DataFrame(table)


def test_extinction_dims_every_band_by_its_coefficient():
    sources, ebv = _sources(), np.array([0.05, 0.1, 0.2])
    dimmed = apply_extinction(sources, ebv, BAND_NAMES)
    assert np.array_equal(dimmed[EBV_COLUMN], ebv)
    for band in BAND_NAMES:
        for column in (schema.truth_mag(band), bulge_mag_column(band), disk_mag_column(band)):
            before, after = sources[column].to_numpy(), dimmed[column].to_numpy()
            has_flux = before < MAG_NO_FLUX
            flux_ratio = 10.0 ** (-0.4 * (after - before))[has_flux]
            assert np.allclose(flux_ratio, 10.0 ** (-0.4 * EXTINCTION_R[band] * ebv[has_flux]))
            assert np.all(after[~has_flux] == MAG_NO_FLUX)  # no flux stays no flux
    untouched = apply_extinction(sources, np.zeros(3), BAND_NAMES)
    pd.testing.assert_frame_equal(untouched.drop(columns=EBV_COLUMN), sources, check_exact=True)
