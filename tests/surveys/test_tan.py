"""The one gnomonic projection, checked against astropy's TAN and through the cutout grid."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.wcs import WCS

from raycat.cutouts.resample import offset_sky
from raycat.surveys.tan import tan_deproject, tan_project


@pytest.mark.parametrize("ra0, dec0", [(150.0, 2.0), (0.5, -45.0), (359.8, 89.0)])
def test_tan_matches_astropy_and_round_trips(ra0, dec0):
    wcs = WCS(naxis=2)
    wcs.wcs.ctype, wcs.wcs.crval = ["RA---TAN", "DEC--TAN"], [ra0, dec0]
    wcs.wcs.crpix, wcs.wcs.cdelt = [0.0, 0.0], [-1.0, 1.0]  # 1-based pixel = (-xi, eta), deg
    rng = np.random.default_rng(0)
    xi, eta = rng.uniform(-3, 3, 50), rng.uniform(-3, 3, 50)
    ra, dec = tan_deproject(xi, eta, ra0, dec0)
    want_ra, want_dec = wcs.wcs_pix2world(-xi, eta, 1)
    np.testing.assert_allclose(dec, want_dec, atol=1e-9)
    np.testing.assert_allclose((ra - want_ra + 180) % 360 - 180, 0, atol=1e-9)
    back_xi, back_eta = tan_project(ra, dec, ra0, dec0)
    np.testing.assert_allclose(back_xi, xi, atol=1e-9)
    np.testing.assert_allclose(back_eta, eta, atol=1e-9)


def test_far_side_has_no_image_and_cutout_offsets_are_arcsec():
    xi, eta = tan_project([10.0, 190.0], [0.0, 0.0], 10.0, 0.0)
    assert np.isfinite(xi[0]) and np.isinf(xi[1]) and np.isinf(eta[1])
    ra, dec = offset_sky(np.array(150.0), np.array(2.0), np.array(36.0), np.array(-72.0))
    assert (ra, dec) == pytest.approx(tan_deproject(0.01, -0.02, 150.0, 2.0), abs=1e-12)
