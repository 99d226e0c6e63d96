"""Tomographic n(z): the stacked PDFs of each tomographic bin against its true redshifts.

Objects are put in tomographic bins by ``z_mode`` (as RAIL's uniform binning does with its
default point estimate), equal-width bins across the catalog's redshift grid unless edges are
given. Per bin, the sum of the PDFs (bin probabilities on the catalog grid) and the histogram
of true z on the same grid add up partition by partition, so the catalog is never held; only
objects with a PDF, a ``z_mode`` and a true redshift count, the same sample on both sides.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from raycat.photoz.pdf import bin_centres

N_TOMOGRAPHIC_BINS = 5
PLOT_NZ = "nz_tomographic.png"


def tomographic_edges(grid_edges: np.ndarray, n_bins: int = N_TOMOGRAPHIC_BINS) -> np.ndarray:
    """``n_bins`` equal-width bins in z_mode across the catalog's redshift grid."""
    return np.linspace(float(grid_edges[0]), float(grid_edges[-1]), n_bins + 1)


@dataclass
class TomographicNz:
    """Per tomographic bin: summed PDFs, true-z histogram (catalog grid), objects."""

    tomo_edges: np.ndarray
    grid_edges: np.ndarray
    stacked: np.ndarray  # [n_tomo, n_grid_bins] summed bin probabilities
    true_counts: np.ndarray  # [n_tomo, n_grid_bins] true z on the grid
    true_outside: np.ndarray  # [n_tomo] true z beyond the grid (in the count, not the plot)
    objects: np.ndarray  # [n_tomo]

    @classmethod
    def empty(cls, grid_edges: np.ndarray, tomo_edges: np.ndarray | None = None) -> TomographicNz:
        grid_edges = np.asarray(grid_edges, np.float64)
        tomo = tomographic_edges(grid_edges) if tomo_edges is None else np.asarray(tomo_edges)
        n_tomo, n_grid = len(tomo) - 1, len(grid_edges) - 1
        return cls(
            tomo,
            grid_edges,
            np.zeros((n_tomo, n_grid)),
            np.zeros((n_tomo, n_grid), np.int64),
            np.zeros(n_tomo, np.int64),
            np.zeros(n_tomo, np.int64),
        )

    def add(self, z_mode: np.ndarray, pdf: np.ndarray, z_true: np.ndarray) -> None:
        """Add objects; those without a PDF, z_mode or truth, or outside the bins, are left out."""
        z_mode, z_true = np.asarray(z_mode, np.float64), np.asarray(z_true, np.float64)
        used = np.isfinite(z_mode) & np.isfinite(z_true) & np.all(np.isfinite(pdf), axis=1)
        tomo = np.searchsorted(self.tomo_edges, z_mode, side="right") - 1
        tomo[z_mode == self.tomo_edges[-1]] = len(self.tomo_edges) - 2  # the top edge is in
        for b in range(len(self.objects)):
            rows = used & (tomo == b)
            counts = np.histogram(z_true[rows], self.grid_edges)[0]
            self.stacked[b] += pdf[rows].sum(axis=0)
            self.true_counts[b] += counts
            self.objects[b] += int(rows.sum())
            self.true_outside[b] += int(rows.sum()) - int(counts.sum())

    def __add__(self, other: TomographicNz) -> TomographicNz:
        return TomographicNz(
            self.tomo_edges,
            self.grid_edges,
            self.stacked + other.stacked,
            self.true_counts + other.true_counts,
            self.true_outside + other.true_outside,
            self.objects + other.objects,
        )

    def densities(self) -> tuple[np.ndarray, np.ndarray]:
        """(stacked, true) n(z) of each bin as densities in z (each integrates to 1 over the
        grid; rows of empty bins are NaN)."""
        widths = np.diff(self.grid_edges)
        with np.errstate(invalid="ignore", divide="ignore"):
            stacked = self.stacked / self.stacked.sum(axis=1, keepdims=True) / widths
            true = self.true_counts / self.true_counts.sum(axis=1, keepdims=True) / widths
        return stacked, true

    def metrics(self) -> dict[str, list]:
        """Objects and mean redshift of the stacked and the true n(z) in each bin."""
        centres = bin_centres(self.grid_edges)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_stacked = self.stacked @ centres / self.stacked.sum(axis=1)
            mean_true = self.true_counts @ centres / self.true_counts.sum(axis=1)
        return {
            "nz_tomo_edges": self.tomo_edges.tolist(),
            "nz_tomo_objects": self.objects.tolist(),
            "nz_tomo_mean_z_stacked": [_number(v) for v in mean_stacked],
            "nz_tomo_mean_z_true": [_number(v) for v in mean_true],
        }


def _number(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None  # JSON has no NaN


def nz_figure(nz: TomographicNz):
    """Stacked PDFs (lines) against the true-z histogram (steps), one colour per bin."""
    from raycat.quality.plots import figure_class

    fig = figure_class()(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    stacked, true = nz.densities()
    centres = bin_centres(nz.grid_edges)
    for b in range(len(nz.objects)):
        if nz.objects[b] == 0:
            continue
        lo, hi = nz.tomo_edges[b], nz.tomo_edges[b + 1]
        line = ax.plot(centres, stacked[b], lw=1.5, label=f"{lo:.2f}-{hi:.2f} ({nz.objects[b]})")
        ax.stairs(true[b], nz.grid_edges, color=line[0].get_color(), ls="--", lw=1)
    ax.set(
        xlabel="redshift",
        ylabel="n(z) (normalised)",
        title="tomographic bins by z_mode: stacked PDFs (solid) against true z (dashed)",
    )
    ax.title.set_fontsize(9)
    if ax.lines:
        ax.legend(fontsize=7, title="z_mode bin (objects)", title_fontsize=7)
    return fig
