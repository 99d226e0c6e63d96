"""RAIL's photo-z metrics, as LSST DESC's RAIL and qp define them, in NumPy (no qp needed).

Definitions, from ``qp.metrics`` (qp-prob 1.1.4, which RAIL's evaluators call):

- ``ez = (z_point - z_true) / (1 + z_true)``; RAIL's point estimate is ``zmode`` by default
  (``point_estimate_key`` of rail's PointToPointEvaluator).
- sigma_IQR: ``(Q75(ez) - Q25(ez)) / 1.349`` (``PointSigmaIQR``).
- outlier rate: fraction with ``|ez| > max(0.06, 3 sigma_IQR)`` (``PointOutlierRate``, the
  LSST Science Book's catastrophic outliers).
- bias: ``median(ez)`` (``PointBias``).
- PIT CvM: the one-sample Cramér-von Mises statistic of the PIT values against U(0, 1),
  ``1/(12n) + sum_i ((2i-1)/(2n) - pit_(i))^2`` (``PIT.evaluate_PIT_CvM``, i.e.
  ``scipy.stats.cramervonmises``).
- PIT AD: the one-sample Anderson-Darling statistic against U(0, 1),
  ``-n - sum_i (2i-1)/n [ln pit_(i) + ln(1 - pit_(n+1-i))]`` (qp's
  ``goodness_of_fit._anderson_darling``). RAIL's ``PIT.evaluate_PIT_anderson_ksamp`` reports
  the standardised *k-sample* statistic against an even grid instead, which needs every PIT
  value at once; the one-sample form is the same test and streams.
- PIT outlier rate: fraction of PIT values below 0.0001 or above 0.9999
  (``PIT.evaluate_PIT_outlier_rate``'s limits; qp reads it off a 100-quantile fit of the
  PIT distribution, which leaves out PITs of exactly 0 and 1; this counts them).
- CDE loss (Izbicki & Lee 2017): ``mean_i int f_i(z)^2 dz - 2 mean_i f_i(z_true_i)``
  (``CDELossMetric``). qp evaluates it on a grid with the trapezoid rule; here it is exact
  for the histogram density (probability / bin width) the catalog's PDFs are.

The catalog can hold 10^9 objects, so :class:`RailSums` keeps sufficient statistics that add
up partition by partition: a histogram of ``ez`` (bins of ``EZ_BIN_WIDTH``: its quantiles are
interpolated inside a bin, so sigma_IQR, the bias and the outlier threshold are good to a
small fraction of it), a histogram of PIT (``PIT_BINS`` bins; CvM and AD take each value at
its bin's centre, so a PIT of exactly 0 or 1, a truth where the PDF has no mass, counts as
0.00005 or 0.99995 instead of making AD infinite; the outlier bins are exactly the limits) and
the two CDE sums. The
``*_of_samples`` functions are the definitions on plain arrays, for tests and small samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IQR_TO_SIGMA = 1.349  # IQR of a unit Gaussian, as qp rounds it
OUTLIER_FLOOR = 0.06
OUTLIER_SIGMAS = 3.0
PIT_OUTLIER_LIMITS = (1e-4, 0.9999)
EZ_BIN_WIDTH = 2e-4
EZ_LOWER = -1.0  # ez > -1 for any z_point >= 0
PIT_BINS = 10_000  # bin width 1e-4: the PIT outlier limits are bin edges


def scaled_residual(z_point: np.ndarray, z_true: np.ndarray) -> np.ndarray:
    """``ez = (z_point - z_true) / (1 + z_true)`` (qp's ``PointStatsEz``)."""
    z_point, z_true = np.asarray(z_point, np.float64), np.asarray(z_true, np.float64)
    return (z_point - z_true) / (1.0 + z_true)


# --- the definitions, on samples ------------------------------------------------------------


def sigma_iqr_of_samples(ez: np.ndarray) -> float:
    q75, q25 = np.percentile(ez, [75.0, 25.0])
    return float((q75 - q25) / IQR_TO_SIGMA)


def outlier_rate_of_samples(ez: np.ndarray) -> float:
    threshold = max(OUTLIER_FLOOR, OUTLIER_SIGMAS * sigma_iqr_of_samples(ez))
    return float(np.mean(np.abs(ez) > threshold))


def bias_of_samples(ez: np.ndarray) -> float:
    return float(np.median(ez))


def pit_cvm_of_samples(pit: np.ndarray) -> float:
    x = np.sort(np.asarray(pit, np.float64))
    n = x.size
    u = (2 * np.arange(1, n + 1) - 1) / (2 * n)
    return float(1 / (12 * n) + np.sum((u - x) ** 2))


def pit_ad_of_samples(pit: np.ndarray) -> float:
    x = np.sort(np.asarray(pit, np.float64))
    n = x.size
    i = np.arange(1, n + 1)
    with np.errstate(divide="ignore"):  # a PIT of exactly 0 or 1 gives an infinite AD
        terms = (2 * i - 1) / n * (np.log(x) + np.log1p(-x[::-1]))
    return float(-n - np.sum(terms))


def pit_outlier_rate_of_samples(pit: np.ndarray) -> float:
    pit = np.asarray(pit, np.float64)
    low, high = PIT_OUTLIER_LIMITS
    return float(np.mean((pit < low) | (pit > high)))


def cde_terms(pdf: np.ndarray, edges: np.ndarray, z_true: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per object ``int f^2 dz`` and ``f(z_true)`` of the histogram density ``pdf / width``."""
    pdf = np.atleast_2d(np.asarray(pdf, np.float64))
    edges = np.asarray(edges, np.float64)
    widths = np.diff(edges)
    z_true = np.asarray(z_true, np.float64)
    square = np.sum(pdf**2 / widths, axis=1)
    index = np.searchsorted(edges, z_true, side="right") - 1
    inside = (index >= 0) & (index < widths.size)
    index = np.clip(index, 0, widths.size - 1)
    at_truth = np.where(inside, pdf[np.arange(len(pdf)), index] / widths[index], 0.0)
    return square, at_truth


def cde_loss_of_samples(pdf: np.ndarray, edges: np.ndarray, z_true: np.ndarray) -> float:
    square, at_truth = cde_terms(pdf, edges, z_true)
    return float(np.mean(square) - 2 * np.mean(at_truth))


# --- the same, from sums that add up over partitions ----------------------------------------


@dataclass
class RailSums:
    """Sufficient statistics of the RAIL metrics; ``+`` merges two partitions' sums."""

    ez_upper: float  # ez histogram: [EZ_LOWER, ez_upper) in EZ_BIN_WIDTH bins, + under/over
    ez_counts: np.ndarray  # int64 [n + 2]: underflow, the bins, overflow
    pit_counts: np.ndarray  # int64 [PIT_BINS]
    cde_square: float = 0.0
    cde_at_truth: float = 0.0
    n_cde: int = 0

    @classmethod
    def empty(cls, z_max: float) -> RailSums:
        """Sums for a catalog whose grid ends at ``z_max`` (z_point <= z_max: ez < z_max)."""
        n = int(np.ceil((max(1.0, z_max) - EZ_LOWER) / EZ_BIN_WIDTH))
        upper = EZ_LOWER + n * EZ_BIN_WIDTH
        return cls(upper, np.zeros(n + 2, np.int64), np.zeros(PIT_BINS, np.int64))

    @property
    def ez_edges(self) -> np.ndarray:
        return np.linspace(EZ_LOWER, self.ez_upper, self.ez_counts.size - 1)

    def add(
        self,
        z_point: np.ndarray,
        z_true: np.ndarray,
        pit: np.ndarray,
        pdf: np.ndarray,
        edges: np.ndarray,
    ) -> None:
        """Add objects (rows without a point estimate, truth or PDF are left out)."""
        ez = scaled_residual(z_point, z_true)
        ez = ez[np.isfinite(ez)]
        bins = np.floor((ez - EZ_LOWER) / EZ_BIN_WIDTH).astype(np.int64) + 1
        n_ez = self.ez_counts.size
        self.ez_counts += np.bincount(np.clip(bins, 0, n_ez - 1), minlength=n_ez)
        pit = np.asarray(pit, np.float64)
        pit = pit[np.isfinite(pit)]
        index = np.clip((pit * PIT_BINS).astype(np.int64), 0, PIT_BINS - 1)
        self.pit_counts += np.bincount(index, minlength=PIT_BINS)
        used = np.all(np.isfinite(pdf), axis=1) & np.isfinite(z_true)
        square, at_truth = cde_terms(pdf[used], edges, np.asarray(z_true)[used])
        self.cde_square += float(square.sum())
        self.cde_at_truth += float(at_truth.sum())
        self.n_cde += int(used.sum())

    def __add__(self, other: RailSums) -> RailSums:
        return RailSums(
            self.ez_upper,
            self.ez_counts + other.ez_counts,
            self.pit_counts + other.pit_counts,
            self.cde_square + other.cde_square,
            self.cde_at_truth + other.cde_at_truth,
            self.n_cde + other.n_cde,
        )

    def metrics(self) -> dict[str, float]:
        """The RAIL metrics, keyed ``rail_*`` (NaN where there is nothing to score)."""
        sigma = _sigma_iqr(self.ez_counts, self.ez_edges)
        threshold = max(OUTLIER_FLOOR, OUTLIER_SIGMAS * sigma) if np.isfinite(sigma) else np.nan
        n_pit = int(self.pit_counts.sum())
        nan = float("nan")
        return {
            "rail_sigma_iqr": sigma,
            "rail_outlier_rate": _fraction_beyond(self.ez_counts, self.ez_edges, threshold),
            "rail_outlier_threshold": float(threshold),
            "rail_bias": _histogram_quantile(self.ez_counts, self.ez_edges, 0.5),
            "rail_pit_cvm": _binned_cvm(self.pit_counts) if n_pit else nan,
            "rail_pit_ad": _binned_ad(self.pit_counts) if n_pit else nan,
            "rail_pit_outlier_rate": (
                float(self.pit_counts[0] + self.pit_counts[-1]) / n_pit if n_pit else nan
            ),
            "rail_cde_loss": (
                (self.cde_square - 2 * self.cde_at_truth) / self.n_cde if self.n_cde else nan
            ),
        }


def _histogram_quantile(counts: np.ndarray, edges: np.ndarray, q: float) -> float:
    """The ``q`` quantile of values binned in ``counts`` (underflow, bins, overflow), linear
    inside its bin; clamped to the histogram's range when it falls in the under/overflow."""
    total = counts.sum()
    if total == 0:
        return float("nan")
    below = np.concatenate([[counts[0]], counts[0] + np.cumsum(counts[1:-1])])  # at each edge
    target = q * total
    k = int(np.clip(np.searchsorted(below, target, side="left"), 1, len(edges) - 1))
    inside = counts[k]
    fraction = (target - below[k - 1]) / inside if inside else 0.0
    return float(edges[k - 1] + np.clip(fraction, 0, 1) * (edges[k] - edges[k - 1]))


def _sigma_iqr(counts: np.ndarray, edges: np.ndarray) -> float:
    q75 = _histogram_quantile(counts, edges, 0.75)
    q25 = _histogram_quantile(counts, edges, 0.25)
    return (q75 - q25) / IQR_TO_SIGMA


def _fraction_beyond(counts: np.ndarray, edges: np.ndarray, threshold: float) -> float:
    """Fraction of values with ``|v| > threshold``, splitting the boundary bins linearly."""
    total = counts.sum()
    if total == 0 or not np.isfinite(threshold):
        return float("nan")
    bins = counts[1:-1].astype(np.float64)
    lo, hi = edges[:-1], edges[1:]
    width = hi - lo
    above = np.clip((hi - threshold) / width, 0, 1)  # share of each bin above +threshold
    below = np.clip((-threshold - lo) / width, 0, 1)  # share below -threshold
    beyond = np.sum(bins * np.minimum(above + below, 1.0)) + counts[0] + counts[-1]
    return float(beyond / total)


def _blocks(counts: np.ndarray) -> tuple[np.ndarray, ...]:
    """(centre, count m, objects before a) of each non-empty PIT bin: the sorted sample is
    m copies of each centre, at ranks a+1..a+m."""
    n_bins = counts.size
    filled = np.flatnonzero(counts)
    m = counts[filled].astype(np.float64)
    before = np.concatenate([[0.0], np.cumsum(m)[:-1]])
    return (filled + 0.5) / n_bins, m, before


def _binned_cvm(counts: np.ndarray) -> float:
    """CvM with each PIT at its bin's centre: per block, sum_t (d + t/n)^2, t = 0..m-1, where
    d = (2a+1)/(2n) - centre (closed form, so 10^9 objects cost as much as 10)."""
    centre, m, a = _blocks(counts)
    n = m.sum()
    d = (2 * a + 1) / (2 * n) - centre
    t1, t2 = m * (m - 1) / 2, (m - 1) * m * (2 * m - 1) / 6
    total = m * d**2 + 2 * d * t1 / n + t2 / n**2
    return float(1 / (12 * n) + total.sum())


def _binned_ad(counts: np.ndarray) -> float:
    """AD with each PIT at its bin's centre: ranks a+1..a+m weigh ln(centre) by
    sum(2i-1) = m(2a+m) and ln(1-centre) by sum(2n+1-2i) = m(2n-2a-m)."""
    centre, m, a = _blocks(counts)
    n = m.sum()
    weighted = m * (2 * a + m) * np.log(centre) + m * (2 * n - 2 * a - m) * np.log1p(-centre)
    return float(-n - weighted.sum() / n)
