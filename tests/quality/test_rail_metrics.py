"""RAIL's metrics: the definitions against hand-worked examples, the streamed sums against the
definitions, and (with qp installed) both against qp's own implementation."""

from __future__ import annotations

import numpy as np
import pytest

from raycat.photoz.pdf import bin_centres, bin_edges, pit
from raycat.quality import rail_metrics as R


def test_point_metrics_by_hand_with_the_0_06_floor():
    # z_true = 1, so ez = (z_point - 1) / 2: ez = -0.02, -0.01, 0, 0.01, 0.02, 0.5
    z_point = np.array([0.96, 0.98, 1.0, 1.02, 1.04, 2.0])
    ez = R.scaled_residual(z_point, np.ones(6))
    np.testing.assert_allclose(ez, [-0.02, -0.01, 0, 0.01, 0.02, 0.5], atol=1e-15)
    # percentiles (linear, rank (n-1)q): Q25 at rank 1.25 = -0.01 + 0.25*0.01 = -0.0075,
    # Q75 at rank 3.75 = 0.01 + 0.75*0.01 = 0.0175; IQR 0.025; sigma = 0.025/1.349 = 0.018532
    assert R.sigma_iqr_of_samples(ez) == pytest.approx(0.018532246, rel=1e-8)
    # 3 sigma = 0.0556 < 0.06: the floor is the cut; only 0.5 is beyond it -> 1/6
    assert R.outlier_rate_of_samples(ez) == pytest.approx(1 / 6)
    # median of the six: (0 + 0.01) / 2
    assert R.bias_of_samples(ez) == pytest.approx(0.005)


def test_outlier_cut_is_three_sigma_when_that_is_wider():
    ez = np.array([-0.1, -0.05, 0.0, 0.05, 0.1, 0.3])
    # Q25 = -0.05 + 0.25*0.05 = -0.0375, Q75 = 0.05 + 0.75*0.05 = 0.0875: IQR 0.125,
    # sigma 0.092661, 3 sigma 0.27798 > 0.06: 0.1 is no outlier (it would be under the
    # floor alone), 0.3 is -> 1/6
    assert R.sigma_iqr_of_samples(ez) == pytest.approx(0.125 / 1.349)
    assert R.outlier_rate_of_samples(ez) == pytest.approx(1 / 6)


def test_pit_statistics_by_hand():
    x = np.array([0.625, 0.125, 0.875, 0.375])  # sorted: the mid-points of four quarters
    # CvM: 1/(12n) + sum((2i-1)/(2n) - x_(i))^2 with (2i-1)/8 = x_(i): 1/48 exactly
    assert R.pit_cvm_of_samples(x) == pytest.approx(1 / 48)
    # AD: -n - (1/n) sum (2i-1)[ln x_(i) + ln(1 - x_(n+1-i))]; 1 - x_(5-i) = x_(i) here, so
    # the sum is 2[1 ln .125 + 3 ln .375 + 5 ln .625 + 7 ln .875]
    #   = 2[-2.0794415 - 2.9424878 - 2.3500181 - 0.9347197] = -16.6133344
    # A^2 = -4 + 16.6133344 / 4 = 0.1533336
    assert R.pit_ad_of_samples(x) == pytest.approx(0.1533336, abs=1e-7)
    # outliers: below 1e-4 or above 0.9999 -> 2 of 4
    assert R.pit_outlier_rate_of_samples(np.array([5e-5, 0.5, 0.99995, 0.3])) == 0.5


def test_cde_loss_by_hand():
    edges = np.array([0.0, 0.5, 1.0])  # widths 0.5: density = probability / 0.5
    pdf = np.array([[0.5, 0.5], [1.0, 0.0]])
    z_true = np.array([0.25, 0.75])
    # object 1: int f^2 = 2 * 0.5 * 1^2 = 1, f(0.25) = 1; object 2: int f^2 = 0.5 * 2^2 = 2,
    # f(0.75) = 0. loss = mean(1, 2) - 2 mean(1, 0) = 1.5 - 1 = 0.5
    assert R.cde_loss_of_samples(pdf, edges, z_true) == pytest.approx(0.5)
    # a true z beyond the grid has density 0 there
    assert R.cde_terms(pdf[:1], edges, np.array([3.0]))[1][0] == 0.0


def test_binned_pit_statistics_are_exact_at_bin_centres():
    centres = (np.array([1250, 3750, 6250, 8750, 8750, 12]) + 0.5) / R.PIT_BINS
    sums = R.RailSums.empty(1.0)
    edges = np.array([0.0, 1.0])
    sums.add(np.zeros(6), np.zeros(6), centres, np.full((6, 1), 1.0), edges)
    metrics = sums.metrics()
    assert metrics["rail_pit_cvm"] == pytest.approx(R.pit_cvm_of_samples(centres), rel=1e-12)
    assert metrics["rail_pit_ad"] == pytest.approx(R.pit_ad_of_samples(centres), rel=1e-12)


@pytest.fixture(scope="module")
def sample():
    """A realistic sample: Gaussian PDFs on a grid, 5% catastrophic outliers."""
    rng = np.random.default_rng(7)
    n, edges = 20_000, bin_edges(0.0, 3.0, 300)
    z_true = rng.uniform(0.1, 2.5, n)
    peak = z_true + rng.normal(0, 0.04, n) * (1 + z_true)
    wrong = rng.random(n) < 0.05
    peak[wrong] = rng.uniform(0.1, 2.5, wrong.sum())
    width = 0.05 * (1 + z_true)
    pdf = np.exp(-0.5 * ((bin_centres(edges)[None, :] - peak[:, None]) / width[:, None]) ** 2)
    pdf /= pdf.sum(axis=1, keepdims=True)
    z_mode = bin_centres(edges)[np.argmax(pdf, axis=1)]
    return edges, pdf, z_true, z_mode, pit(pdf, edges, z_true)


def _streamed(sample, parts=4) -> dict:
    edges, pdf, z_true, z_mode, pits = sample
    total = R.RailSums.empty(edges[-1])
    for rows in np.array_split(np.arange(len(z_true)), parts):
        part = R.RailSums.empty(edges[-1])
        part.add(z_mode[rows], z_true[rows], pits[rows], pdf[rows], edges)
        total = total + part
    return total.metrics()


def test_streamed_sums_match_the_definitions(sample):
    edges, pdf, z_true, z_mode, pits = sample
    ez = R.scaled_residual(z_mode, z_true)
    streamed = _streamed(sample)
    # quantiles interpolated inside 2e-4 bins
    assert streamed["rail_sigma_iqr"] == pytest.approx(R.sigma_iqr_of_samples(ez), abs=2e-4)
    assert streamed["rail_bias"] == pytest.approx(R.bias_of_samples(ez), abs=2e-4)
    assert streamed["rail_outlier_rate"] == pytest.approx(R.outlier_rate_of_samples(ez), abs=5e-4)
    assert streamed["rail_outlier_rate"] > 0.03  # the planted 5% (some land near the truth)
    # PIT at bin centres (1e-4 wide): CvM/AD move by far less than their size here. A PIT of
    # exactly 0 or 1 (truth where the PDF has no mass: the planted outliers) makes the exact
    # AD infinite; binned, it counts as the outer bins' centres
    assert np.isinf(R.pit_ad_of_samples(pits)) and np.any(pits == 0)
    clipped = np.clip(pits, 0.5 / R.PIT_BINS, 1 - 0.5 / R.PIT_BINS)
    assert streamed["rail_pit_cvm"] == pytest.approx(R.pit_cvm_of_samples(pits), rel=1e-2)
    assert streamed["rail_pit_ad"] == pytest.approx(R.pit_ad_of_samples(clipped), rel=1e-2)
    assert streamed["rail_pit_outlier_rate"] == pytest.approx(
        R.pit_outlier_rate_of_samples(pits), abs=1 / len(pits)
    )
    assert streamed["rail_cde_loss"] == pytest.approx(
        R.cde_loss_of_samples(pdf, edges, z_true), rel=1e-10
    )


def test_empty_sums_are_nan_not_an_error():
    metrics = R.RailSums.empty(1.6).metrics()
    assert all(np.isnan(v) for v in metrics.values())


def test_against_qp_own_implementation(sample):
    qp = pytest.importorskip("qp")
    from qp.metrics.concrete_metric_classes import CDELossMetric
    from qp.metrics.goodness_of_fit import _anderson_darling
    from qp.metrics.pit import PIT
    from qp.metrics.point_estimate_metric_classes import (
        PointBias,
        PointOutlierRate,
        PointSigmaIQR,
    )
    from scipy import stats

    edges, *arrays = sample
    pdf, z_true, z_mode, pits = (a[:4000] for a in arrays)  # qp's PIT is slow on many
    ez = R.scaled_residual(z_mode, z_true)
    assert R.sigma_iqr_of_samples(ez) == pytest.approx(PointSigmaIQR().evaluate(z_mode, z_true))
    assert R.outlier_rate_of_samples(ez) == pytest.approx(
        PointOutlierRate().evaluate(z_mode, z_true)
    )
    assert R.bias_of_samples(ez) == pytest.approx(PointBias().evaluate(z_mode, z_true))

    ensemble = qp.Ensemble(qp.hist, data={"bins": edges, "pdfs": pdf / np.diff(edges)})
    pit_object = PIT(ensemble, z_true)
    np.testing.assert_allclose(pit_object.pit_samps, pits, atol=1e-9)  # the same PIT
    assert R.pit_cvm_of_samples(pits) == pytest.approx(
        pit_object.evaluate_PIT_CvM().statistic, rel=1e-9
    )
    clipped = np.clip(pits, 1e-6, 1 - 1e-6)  # both are infinite with a PIT of 0 or 1
    assert R.pit_ad_of_samples(clipped) == pytest.approx(
        _anderson_darling(stats.uniform, clipped), rel=1e-9
    )
    # (no comparison of the PIT outlier rate: qp reads it off a 100-quantile fit of the PIT
    # distribution that drops PITs of exactly 0 and 1, 0.020 here against 0.034 counted)
    # qp integrates on a grid (trapezoid, nearest grid point): a fine one approaches ours
    grid, few = np.linspace(0.0, 3.0, 3_001), slice(0, 400)  # qp's hist.pdf is slow
    assert R.cde_loss_of_samples(pdf[few], edges, z_true[few]) == pytest.approx(
        CDELossMetric(eval_grid=grid).evaluate(ensemble[few], z_true[few]), rel=5e-3
    )
