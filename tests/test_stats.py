"""One robust scatter for the photo-z metrics and the image checks."""

from __future__ import annotations

import numpy as np
import pytest

from raycat.photoz.pdf import nmad
from raycat.quality.crosscheck import robust_centre
from raycat.quality.detect import robust_stats
from raycat.stats import MAD_TO_SIGMA, mad_sigma


def test_mad_sigma_is_the_sigma_of_a_gaussian_and_ignores_outliers():
    rng = np.random.default_rng(1)
    values = rng.normal(3.0, 2.0, 200_000)
    assert abs(MAD_TO_SIGMA * 0.6744897501960817 - 1) < 1e-4  # 1 / Phi^-1(3/4)
    assert mad_sigma(values) == pytest.approx(2.0, rel=0.01)
    values[:20_000] = 1e6  # a tenth of the values anywhere moves it little
    assert mad_sigma(values) < 2.5


def test_mad_sigma_about_a_given_centre():
    assert mad_sigma([1.0, 2.0, 4.0]) == pytest.approx(MAD_TO_SIGMA * 1.0)
    assert mad_sigma([1.0, 2.0, 4.0], centre=0.0) == pytest.approx(MAD_TO_SIGMA * 2.0)


def test_every_robust_scatter_is_mad_sigma():
    values = np.random.default_rng(2).standard_t(3, 501)
    assert nmad(values, np.zeros_like(values)) == mad_sigma(values)  # delta_z is z_phot here
    assert robust_centre(values) == (np.median(values), mad_sigma(values))
    assert robust_stats(values, clip=np.inf) == (np.median(values), mad_sigma(values))
