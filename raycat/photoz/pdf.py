"""Redshift grid, point estimates from binned PDFs, and photo-z quality metrics (NumPy only).

A PDF is an array ``[n_objects, n_bins]`` of bin probabilities that sum to 1. Between
bin edges the density is taken as uniform, so the CDF is piecewise linear through the
edges: percentiles, PIT and CRPS are all read from that one CDF and agree with each other.
Rows that are all NaN (objects with no prediction) give NaN everywhere and are left out
of the metrics, which count them instead.
"""

from __future__ import annotations

import numpy as np

from raycat.schema import Z_HI68, Z_LO68, Z_MEAN, Z_MEDIAN, Z_MODE, Z_STD
from raycat.stats import mad_sigma

OUTLIER_THRESHOLDS = (0.05, 0.15)


# --- the grid ---------------------------------------------------------------------------------


def bin_edges(z_min: float, z_max: float, n_bins: int) -> np.ndarray:
    """``n_bins + 1`` evenly spaced redshift bin edges from ``z_min`` to ``z_max``."""
    if not z_max > z_min or n_bins < 1:
        raise ValueError(f"bad redshift grid: z_min={z_min}, z_max={z_max}, n_bins={n_bins}")
    return np.linspace(z_min, z_max, n_bins + 1)


def bin_centres(edges: np.ndarray) -> np.ndarray:
    """Mid-points of the bins."""
    edges = np.asarray(edges, dtype=np.float64)
    return 0.5 * (edges[:-1] + edges[1:])


def z_to_bin(z: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index of each redshift; values outside the grid go to the first or last bin.

    The training target: clipping keeps every object in the loss instead of dropping the
    rare ones beyond the grid.
    """
    index = np.searchsorted(np.asarray(edges), np.asarray(z, dtype=np.float64), side="right") - 1
    return np.clip(index, 0, len(edges) - 2).astype(np.int64)


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax (the max is subtracted before exponentiating)."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = np.exp(logits - np.max(logits, axis=axis, keepdims=True))
    return shifted / np.sum(shifted, axis=axis, keepdims=True)


# --- point estimates ----------------------------------------------------------------------------


def _as_pdf(pdf: np.ndarray) -> np.ndarray:
    pdf = np.asarray(pdf, dtype=np.float64)
    return pdf[None, :] if pdf.ndim == 1 else pdf


def cdf_at_edges(pdf: np.ndarray) -> np.ndarray:
    """CDF at every bin edge, ``[n, n_bins + 1]``, starting at 0 and ending at 1."""
    pdf = _as_pdf(pdf)
    cdf = np.zeros((pdf.shape[0], pdf.shape[1] + 1))
    np.cumsum(pdf, axis=1, out=cdf[:, 1:])
    with np.errstate(invalid="ignore", divide="ignore"):  # NaN rows stay NaN
        return cdf / cdf[:, -1:]  # renormalise: float16 PDFs sum to 0.999...


def quantile(pdf: np.ndarray, edges: np.ndarray, q: float) -> np.ndarray:
    """The ``q`` quantile of each PDF, interpolated linearly inside its bin."""
    cdf = cdf_at_edges(pdf)
    edges = np.asarray(edges, dtype=np.float64)
    n_bins = cdf.shape[1] - 1
    # first bin whose upper CDF reaches q (bins with zero mass are skipped by '<')
    index = np.clip(np.sum(cdf[:, 1:] < q, axis=1), 0, n_bins - 1)
    rows = np.arange(cdf.shape[0])
    lower, upper = cdf[rows, index], cdf[rows, index + 1]
    mass = upper - lower
    fraction = np.divide(q - lower, mass, out=np.full_like(mass, 0.5), where=mass > 0)
    result = edges[index] + np.clip(fraction, 0, 1) * np.diff(edges)[index]
    return np.where(np.isnan(cdf[:, -1]), np.nan, result)


def point_estimates(pdf: np.ndarray, edges: np.ndarray) -> dict[str, np.ndarray]:
    """Point estimates of each PDF, keyed by the catalog column names.

    ``z_mean`` is the expectation (the headline estimate: it minimises the squared error
    for a calibrated PDF), ``z_mode`` the centre of the most probable bin, ``z_median``
    and ``z_lo68``/``z_hi68`` the 50th and 16th/84th percentiles, and ``z_std`` the
    standard deviation including the spread inside bins (so it never reaches 0).
    """
    pdf = _as_pdf(pdf)
    with np.errstate(invalid="ignore", divide="ignore"):  # all-zero rows become NaN rows
        pdf = pdf / np.sum(pdf, axis=1, keepdims=True)
    edges = np.asarray(edges, dtype=np.float64)
    centres, widths = bin_centres(edges), np.diff(edges)
    mean = pdf @ centres
    variance = pdf @ (widths**2 / 12) + np.sum(pdf * (centres[None, :] - mean[:, None]) ** 2, 1)
    missing = np.isnan(mean)
    mode = np.where(missing, np.nan, centres[np.argmax(np.nan_to_num(pdf, nan=-1), axis=1)])
    return {
        Z_MEAN: mean,
        Z_MODE: mode,
        Z_MEDIAN: quantile(pdf, edges, 0.5),
        Z_STD: np.sqrt(variance),
        Z_LO68: quantile(pdf, edges, 0.15865525393145707),
        Z_HI68: quantile(pdf, edges, 0.8413447460685429),
    }


# --- metrics ------------------------------------------------------------------------------------


def delta_z(z_phot: np.ndarray, z_spec: np.ndarray) -> np.ndarray:
    """Scaled residual ``(z_phot - z_spec) / (1 + z_spec)``."""
    z_phot, z_spec = np.asarray(z_phot, dtype=np.float64), np.asarray(z_spec, dtype=np.float64)
    return (z_phot - z_spec) / (1 + z_spec)


def _valid(dz: np.ndarray) -> np.ndarray:
    return dz[np.isfinite(dz)]


def nmad(z_phot: np.ndarray, z_spec: np.ndarray) -> float:
    """Normalised median absolute deviation of ``delta_z``: a scatter robust to outliers."""
    dz = _valid(delta_z(z_phot, z_spec))
    if dz.size == 0:
        return float("nan")
    return mad_sigma(dz)


def bias(z_phot: np.ndarray, z_spec: np.ndarray) -> dict[str, float]:
    """Mean and median of ``delta_z`` (the median is robust to outliers)."""
    dz = _valid(delta_z(z_phot, z_spec))
    if dz.size == 0:
        return {"bias_mean": float("nan"), "bias_median": float("nan")}
    return {"bias_mean": float(np.mean(dz)), "bias_median": float(np.median(dz))}


def outlier_fraction(z_phot: np.ndarray, z_spec: np.ndarray, threshold: float = 0.15) -> float:
    """Fraction of objects with ``|delta_z| > threshold``."""
    dz = _valid(delta_z(z_phot, z_spec))
    return float(np.mean(np.abs(dz) > threshold)) if dz.size else float("nan")


def pit(pdf: np.ndarray, edges: np.ndarray, z_spec: np.ndarray) -> np.ndarray:
    """Probability integral transform: each PDF's CDF at its true redshift.

    Uniform on [0, 1] for calibrated PDFs; a U shape means over-confident PDFs, a hump
    under-confident ones.
    """
    cdf = cdf_at_edges(pdf)
    edges = np.asarray(edges, dtype=np.float64)
    z_spec = np.asarray(z_spec, dtype=np.float64)
    index = np.clip(np.searchsorted(edges, z_spec, side="right") - 1, 0, len(edges) - 2)
    rows = np.arange(cdf.shape[0])
    fraction = np.clip((z_spec - edges[index]) / np.diff(edges)[index], 0, 1)
    values = cdf[rows, index] + fraction * (cdf[rows, index + 1] - cdf[rows, index])
    return np.where(np.isnan(z_spec), np.nan, values)


def pit_ks(pit_values: np.ndarray) -> float:
    """Kolmogorov-Smirnov distance between the PIT values and the uniform distribution."""
    values = np.sort(_valid(np.asarray(pit_values, dtype=np.float64)))
    n = values.size
    if n == 0:
        return float("nan")
    steps = np.arange(1, n + 1) / n
    return float(max(np.max(steps - values), np.max(values - (steps - 1 / n))))


def crps_per_object(pdf: np.ndarray, edges: np.ndarray, z_spec: np.ndarray) -> np.ndarray:
    """Continuous ranked probability score of each PDF, ``int (F(z) - H(z - z_spec))^2 dz``.

    Exact for the piecewise-linear CDF: inside a bin the integrand is the square of a
    linear function, split at the true redshift; beyond the grid the CDF is 0 or 1.
    """
    cdf = cdf_at_edges(pdf)
    edges = np.asarray(edges, dtype=np.float64)
    z_true = np.asarray(z_spec, dtype=np.float64)
    lo, hi = edges[None, :-1], edges[None, 1:]
    cdf_lo, cdf_hi = cdf[:, :-1], cdf[:, 1:]
    split = np.clip(z_true[:, None], lo, hi)  # the step of the truth, placed in each bin
    cdf_split = cdf_lo + (cdf_hi - cdf_lo) * (split - lo) / (hi - lo)
    below = (split - lo) * (cdf_lo**2 + cdf_lo * cdf_split + cdf_split**2) / 3
    above_lo, above_hi = 1 - cdf_split, 1 - cdf_hi
    above = (hi - split) * (above_lo**2 + above_lo * above_hi + above_hi**2) / 3
    outside = np.clip(edges[0] - z_true, 0, None) + np.clip(z_true - edges[-1], 0, None)
    return np.sum(below + above, axis=1) + outside


def crps(pdf: np.ndarray, edges: np.ndarray, z_spec: np.ndarray) -> float:
    """Mean CRPS over the objects that have a PDF and a true redshift."""
    values = _valid(crps_per_object(pdf, edges, z_spec))
    return float(np.mean(values)) if values.size else float("nan")


def summary_metrics(
    z_phot: np.ndarray,
    z_spec: np.ndarray,
    *,
    pit_values: np.ndarray | None = None,
    crps_values: np.ndarray | None = None,
) -> dict[str, float]:
    """All the headline metrics in one flat dict.

    Objects without a prediction (``z_phot`` NaN) are left out and counted in
    ``n_no_prediction``; objects without a true redshift are left out and counted in
    ``n_no_truth``. ``pit_values``/``crps_values`` are per-object arrays aligned with
    ``z_phot`` (from :func:`pit` and :func:`crps_per_object`), so a caller can compute
    them partition by partition and never hold all PDFs at once.
    """
    z_phot = np.asarray(z_phot, dtype=np.float64)
    z_spec = np.asarray(z_spec, dtype=np.float64)
    has_truth = np.isfinite(z_spec)
    used = has_truth & np.isfinite(z_phot)
    zp, zs = z_phot[used], z_spec[used]
    metrics = {
        "n_objects": int(z_phot.size),
        "n_evaluated": int(used.sum()),
        "n_no_prediction": int((has_truth & ~np.isfinite(z_phot)).sum()),
        "n_no_truth": int((~has_truth).sum()),
        "nmad": nmad(zp, zs),
        **bias(zp, zs),
    }
    for threshold in OUTLIER_THRESHOLDS:
        metrics[f"outlier_frac_{threshold:g}"] = outlier_fraction(zp, zs, threshold)
    if pit_values is not None:
        metrics["pit_ks"] = pit_ks(np.asarray(pit_values)[used])
    if crps_values is not None:
        values = np.asarray(crps_values, dtype=np.float64)[used]
        metrics["crps"] = float(np.nanmean(values)) if values.size else float("nan")
    return metrics
