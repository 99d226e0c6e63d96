"""Redshift grid, point estimates and metrics on inputs whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from raycat import schema as S
from raycat.photoz import pdf as P

EDGES = P.bin_edges(0.0, 2.0, 200)  # width 0.01
CENTRES = P.bin_centres(EDGES)
WIDTH = 0.01


def gaussian_pdfs(mu: np.ndarray, sigma: float | np.ndarray) -> np.ndarray:
    """Exact bin probabilities of Gaussians (CDF differences at the edges)."""
    from math import erf

    sigma = np.broadcast_to(sigma, np.shape(mu))
    cdf = np.vectorize(lambda x: 0.5 * (1 + erf(x / math.sqrt(2))))(
        (EDGES[None, :] - np.asarray(mu)[:, None]) / np.asarray(sigma)[:, None]
    )
    probs = np.diff(cdf, axis=1)
    return probs / probs.sum(axis=1, keepdims=True)


def test_grid_and_binning():
    assert len(EDGES) == 201 and CENTRES[0] == pytest.approx(0.005)
    bins = P.z_to_bin(np.array([-1.0, 0.0, 0.0149, 0.015, 1.999, 2.0, 5.0]), EDGES)
    assert bins.tolist() == [0, 0, 1, 1, 199, 199, 199]  # clipped at both ends
    with pytest.raises(ValueError):
        P.bin_edges(1.0, 1.0, 10)


def test_softmax_is_a_pdf_and_stable():
    logits = np.array([[1000.0, 1000.0, -1000.0], [0.0, math.log(3), 0.0]])
    probs = P.softmax(logits)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    np.testing.assert_allclose(probs[0], [0.5, 0.5, 0.0])
    np.testing.assert_allclose(probs[1], [0.2, 0.6, 0.2])


def test_delta_pdf_estimates_are_the_bin_centre():
    pdf = np.zeros((1, 200))
    pdf[0, 57] = 1.0
    est = P.point_estimates(pdf, EDGES)
    for name in (S.Z_MEAN, S.Z_MODE, S.Z_MEDIAN):
        assert est[name][0] == pytest.approx(CENTRES[57]), name
    # percentiles stay inside the one bin; the std is the bin's own spread
    assert EDGES[57] <= est[S.Z_LO68][0] < est[S.Z_HI68][0] <= EDGES[58]
    assert est[S.Z_STD][0] == pytest.approx(WIDTH / math.sqrt(12))


def test_gaussian_pdf_estimates_match_the_gaussian():
    mu, sigma = np.array([0.5, 1.2]), 0.08
    est = P.point_estimates(gaussian_pdfs(mu, sigma), EDGES)
    tol = WIDTH / 2
    np.testing.assert_allclose(est[S.Z_MEAN], mu, atol=1e-3)
    np.testing.assert_allclose(est[S.Z_MEDIAN], mu, atol=1e-3)
    np.testing.assert_allclose(est[S.Z_MODE], mu, atol=tol)
    np.testing.assert_allclose(est[S.Z_STD], sigma, atol=1e-3)
    np.testing.assert_allclose(est[S.Z_LO68], mu - sigma, atol=1e-3)
    np.testing.assert_allclose(est[S.Z_HI68], mu + sigma, atol=1e-3)


def test_quantile_interpolates_inside_a_bin():
    pdf = np.zeros((1, 200))
    pdf[0, 10] = pdf[0, 20] = 0.5
    # half the mass sits in bin 10: the median is its upper edge, 0.3 is 60% into bin 20
    assert P.quantile(pdf, EDGES, 0.5)[0] == pytest.approx(EDGES[11])
    assert P.quantile(pdf, EDGES, 0.8)[0] == pytest.approx(EDGES[20] + 0.6 * WIDTH)


def test_missing_pdf_rows_give_nan_not_errors():
    pdf = gaussian_pdfs(np.array([0.5, 0.7]), 0.05)
    pdf[1] = np.nan
    est = P.point_estimates(pdf, EDGES)
    for values in est.values():
        assert np.isfinite(values[0]) and np.isnan(values[1])
    assert np.isnan(P.pit(pdf, EDGES, np.array([0.5, 0.7]))[1])
    assert np.isnan(P.crps_per_object(pdf, EDGES, np.array([0.5, 0.7]))[1])


def test_nmad_bias_and_outliers_on_known_residuals():
    rng = np.random.default_rng(1)
    z_spec = rng.uniform(0.1, 1.5, 40_000)
    dz = rng.normal(0.01, 0.03, z_spec.size)
    z_phot = z_spec + dz * (1 + z_spec)
    assert P.nmad(z_phot, z_spec) == pytest.approx(0.03, rel=0.03)
    assert P.bias(z_phot, z_spec)["bias_median"] == pytest.approx(0.01, abs=1e-3)
    # the median-subtracted MAD ignores a constant offset; a shifted copy has the same NMAD
    assert P.nmad(z_phot + 0.2 * (1 + z_spec), z_spec) == pytest.approx(P.nmad(z_phot, z_spec))

    z_spec = np.zeros(10)
    z_phot = np.array([0, 0.01, -0.04, 0.06, -0.1, 0.2, 0.3, 0, 0, 0])
    assert P.outlier_fraction(z_phot, z_spec, 0.05) == pytest.approx(0.4)
    assert P.outlier_fraction(z_phot, z_spec, 0.15) == pytest.approx(0.2)


def test_pit_of_calibrated_pdfs_is_uniform_and_of_overconfident_is_not():
    rng = np.random.default_rng(2)
    mu = rng.uniform(0.4, 1.6, 3000)
    sigma = 0.05
    z_true = mu + rng.normal(0, sigma, mu.size)  # truth drawn from the PDFs themselves
    calibrated = P.pit(gaussian_pdfs(mu, sigma), EDGES, z_true)
    assert P.pit_ks(calibrated) < 0.04
    overconfident = P.pit(gaussian_pdfs(mu, sigma / 4), EDGES, z_true)
    assert P.pit_ks(overconfident) > 0.2


def test_crps_of_a_perfect_delta_is_bin_limited_and_grows_with_error():
    pdf = np.zeros((3, 200))
    pdf[:, 80] = 1.0
    z_true = np.array([CENTRES[80], CENTRES[80] + 0.3, 3.0])
    values = P.crps_per_object(pdf, EDGES, z_true)
    assert values[0] == pytest.approx(WIDTH / 12)  # a uniform bin around the truth
    assert values[1] == pytest.approx(0.3, abs=WIDTH)  # a delta off by d scores d
    assert values[2] == pytest.approx(3.0 - CENTRES[80], abs=WIDTH)  # truth beyond the grid
    assert P.crps(pdf[:1], EDGES, z_true[:1]) < 1e-3


def test_crps_of_a_gaussian_matches_the_closed_form():
    mu, sigma, z = 1.0, 0.1, 1.07
    x = (z - mu) / sigma
    phi = math.exp(-x * x / 2) / math.sqrt(2 * math.pi)
    expected = sigma * (x * math.erf(x / math.sqrt(2)) + 2 * phi - 1 / math.sqrt(math.pi))
    got = P.crps_per_object(gaussian_pdfs(np.array([mu]), sigma), EDGES, np.array([z]))[0]
    assert got == pytest.approx(expected, rel=0.02)


def test_summary_excludes_and_counts_missing_rows():
    z_spec = np.array([0.5, 0.5, 0.5, np.nan])
    z_phot = np.array([0.5, 0.5, np.nan, 0.5])
    metrics = P.summary_metrics(
        z_phot,
        z_spec,
        pit_values=np.array([0.5, 0.5, 0.1, 0.9]),
        crps_values=np.array([0.0, 0.2, 9.0, 9.0]),
    )
    assert metrics["n_objects"] == 4 and metrics["n_evaluated"] == 2
    assert metrics["n_no_prediction"] == 1 and metrics["n_no_truth"] == 1
    assert metrics["nmad"] == 0 and metrics["outlier_frac_0.15"] == 0
    assert metrics["crps"] == pytest.approx(0.1)
    assert {"bias_mean", "bias_median", "outlier_frac_0.05", "pit_ks"} <= metrics.keys()
