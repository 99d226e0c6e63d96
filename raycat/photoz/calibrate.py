"""Calibrated redshift PDFs: undo the training prior, then recalibrate on the validation split.

Training weights each redshift bin k by ``w_k`` (inverse frequency, ``train.max_class_weight``)
to flatten n(z), so the softmax learns ``w_k p(k|x)`` up to normalisation: a prior that
favours rare redshifts. Three steps, in this order, turn a softmax PDF into a catalog PDF:

1. prior correction: ``p_k / w_k``, renormalised (the weights stored in the artifact);
2. temperature: ``p_k ** (1 / T)``, renormalised, with ``T`` the minimiser of the validation
   CRPS over ``TEMPERATURES`` (not of the NLL: the NLL is ruled by the few catastrophic
   outliers, and on the demo model it chose T = 2, which blurred every PDF and cost NMAD;
   the CRPS chose 1.3, with the lowest CRPS and PIT KS on an unseen sky);
3. PIT map: the CDF at every bin edge goes through ``G``, the (smoothed) empirical CDF of
   the validation PITs after steps 1-2, so the PITs become uniform (``F' = G(F)``: if
   ``P(F(z) <= u) = G(u)`` then ``P(G(F(z)) <= v) = v``). ``G`` is monotone with
   ``G(0) = 0`` and ``G(1) = 1``, so the PDFs stay non-negative and normalised.

The fit is streaming and distributed: each Ray Train worker adds batches into a
:class:`CalibrationSums` (CRPS, NLL and a fine PIT histogram per temperature), the
sums are all-reduced, and :meth:`CalibrationSums.fit` picks ``T`` and builds ``G`` from them.
:func:`calibrate_pdfs` is the one function that applies a :class:`Calibration` (Predictor,
attributions, report). torch is imported inside the functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import torch

# Softmax temperatures tried on the validation split (1.0 included: no change).
TEMPERATURES = tuple(float(t) for t in np.round(np.geomspace(0.25, 16.0, 49), 5))
PIT_BINS = 1000  # histogram resolution of the accumulated PITs
MIN_PER_KNOT = 20  # validation objects per PIT-map interval, on average (fewer: fewer knots)
MIN_TINY = 1e-300  # floor of a probability before its log (float64)


class Calibration(BaseModel):
    """How the artifact's softmax PDFs are turned into catalog PDFs (``model.json``
    ``calibration``). The defaults change nothing: an artifact without this record (an older
    raycat) gets uncorrected PDFs."""

    model_config = ConfigDict(extra="forbid")

    class_weights: list[float] = Field(
        default_factory=list,
        description="Per-bin weights of the training loss (inverse frequency); the PDFs are "
        "divided by them and renormalised. Empty: no prior correction.",
    )
    temperature: float = Field(
        1.0, gt=0, description="Softmax temperature fitted on the validation split (CRPS)."
    )
    pit_map: list[float] = Field(
        default_factory=list,
        description="G at evenly spaced CDF values 0..1 (first 0, last 1, non-decreasing): the "
        "validation PITs' CDF, applied to each PDF's CDF. Empty: none.",
    )
    validation_objects: int = Field(0, ge=0, description="Objects the fit used.")

    @property
    def steps(self) -> list[str]:
        """The steps that change a PDF, in the order they are applied."""
        steps = ["prior"] if self.class_weights else []
        steps += ["temperature"] if self.temperature != 1.0 else []
        return steps + (["pit_map"] if self.pit_map else [])

    def summary(self) -> dict:
        """What the catalog metadata records (``raycat.calibration``)."""
        return {
            "steps": self.steps,
            "temperature": self.temperature,
            "pit_map_knots": len(self.pit_map),
            "validation_objects": self.validation_objects,
        }


# --- applying a calibration -------------------------------------------------------------------


def log_prior(class_weights, like: torch.Tensor) -> torch.Tensor:
    """``log w`` as a tensor like ``like`` (zeros without weights). A bin no training object
    fell in has weight 0; it gets the largest weight, the correction of the rarest bin."""
    import torch

    if not len(class_weights):
        return torch.zeros(like.shape[-1], dtype=like.dtype, device=like.device)
    w = torch.as_tensor(class_weights, dtype=like.dtype, device=like.device)
    w = torch.where(w > 0, w, w.max())
    return torch.log(w)


def tempered(log_pdf: torch.Tensor, log_w: torch.Tensor, temperature) -> torch.Tensor:
    """Log PDFs after the prior correction and temperature: ``log_softmax((log p - log w)/T)``.
    ``temperature`` may be a tensor ``[n_T, 1, 1]`` to get ``[n_T, n, n_bins]`` at once."""
    import torch

    return torch.log_softmax((log_pdf - log_w) / temperature, dim=-1)


def apply_pit_map(pdf: torch.Tensor, pit_map) -> torch.Tensor:
    """New bin masses from ``G(CDF at the edges)``, G piecewise linear on even knots."""
    import torch

    g = torch.as_tensor(pit_map, dtype=pdf.dtype, device=pdf.device)
    knots = len(g) - 1
    cdf = torch.cumsum(pdf, dim=-1).clamp(0, 1)
    scaled = cdf * knots
    index = scaled.floor().clamp(0, knots - 1)
    mapped = g[index.long()] + (scaled - index) * (g[index.long() + 1] - g[index.long()])
    mapped = torch.cat([torch.zeros_like(mapped[..., :1]), mapped], dim=-1)
    mapped[..., -1] = 1.0  # the last edge holds all the mass, whatever the rounding
    return torch.diff(mapped, dim=-1).clamp_min(0)


def calibrate_pdfs(pdf: torch.Tensor, calibration: Calibration | None) -> torch.Tensor:
    """Calibrated PDFs ``[n, n_bins]`` (same dtype and device) from softmax PDFs: prior
    correction, temperature, PIT map. Rows that hold a NaN stay NaN; the others stay
    non-negative and sum to 1."""
    import torch

    if calibration is None or not calibration.steps:
        return pdf
    work = pdf.to(torch.float64)
    missing = torch.isnan(work).any(dim=-1, keepdim=True)
    work = torch.nan_to_num(work, nan=1.0)
    log_w = log_prior(calibration.class_weights, work)
    work = tempered(torch.log(work.clamp_min(MIN_TINY)), log_w, calibration.temperature).exp()
    if calibration.pit_map:
        work = apply_pit_map(work, calibration.pit_map)
    work = work / work.sum(dim=-1, keepdim=True)
    return torch.where(missing, torch.nan, work).to(pdf.dtype)


# --- fitting one on the validation split ------------------------------------------------------


def pit_of(pdf: torch.Tensor, edges: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """PIT ``[..., n]`` of PDFs ``[..., n, n_bins]`` at redshifts ``z`` [n]: the CDF, linear
    inside each bin (as :func:`raycat.photoz.pdf.pit`)."""
    import torch

    z = z.to(edges.dtype).clamp(edges[0], edges[-1])
    index = torch.bucketize(z, edges[1:-1]).clamp(0, len(edges) - 2)
    fraction = ((z - edges[index]) / (edges[index + 1] - edges[index])).clamp(0, 1)
    below = torch.cumsum(pdf, dim=-1) - pdf  # the CDF at each bin's lower edge
    at = index.expand(*pdf.shape[:-1]).unsqueeze(-1)
    return (below.gather(-1, at) + fraction.to(pdf.dtype).unsqueeze(-1) * pdf.gather(-1, at))[
        ..., 0
    ].clamp(0, 1)


def crps_of(pdf: torch.Tensor, edges: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """CRPS ``[n]`` of PDFs ``[n, n_bins]`` at redshifts ``z`` [n], exact for the piecewise
    linear CDF (as :func:`raycat.photoz.pdf.crps_per_object`)."""
    import torch

    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, dim=1)], dim=1).clamp(0, 1)
    lo, hi, z = edges[None, :-1], edges[None, 1:], z.to(edges.dtype)[:, None]
    cdf_lo, cdf_hi = cdf[:, :-1], cdf[:, 1:]
    split = torch.minimum(torch.maximum(z, lo), hi)  # the truth's step, placed in each bin
    cdf_split = cdf_lo + (cdf_hi - cdf_lo) * (split - lo) / (hi - lo)
    below = (split - lo) * (cdf_lo**2 + cdf_lo * cdf_split + cdf_split**2) / 3
    above_lo, above_hi = 1 - cdf_split, 1 - cdf_hi
    above = (hi - split) * (above_lo**2 + above_lo * above_hi + above_hi**2) / 3
    outside = (edges[0] - z[:, 0]).clamp_min(0) + (z[:, 0] - edges[-1]).clamp_min(0)
    return (below + above).sum(dim=1) + outside


@dataclass
class CalibrationSums:
    """Sums over validation batches (one worker's, or all of them after ``all_reduce``):
    row 0 the raw softmax, row ``1 + i`` the prior-corrected PDFs at ``TEMPERATURES[i]``."""

    crps: torch.Tensor  # [1 + n_T]: sum of the CRPS
    nll: torch.Tensor  # [1 + n_T]: sum of -log p(true bin)
    pit_counts: torch.Tensor  # [1 + n_T, PIT_BINS]
    objects: int = 0

    @classmethod
    def zeros(cls, device=None) -> CalibrationSums:
        import torch

        rows = 1 + len(TEMPERATURES)
        return cls(
            torch.zeros(rows, dtype=torch.float64, device=device),
            torch.zeros(rows, dtype=torch.float64, device=device),
            torch.zeros(rows, PIT_BINS, dtype=torch.float64, device=device),
        )

    def add(self, logits: torch.Tensor, z: torch.Tensor, edges: torch.Tensor, class_weights):
        """Add a batch: ``logits`` [n, n_bins], true redshifts ``z`` [n] (one row at a
        time: memory stays that of one batch of PDFs)."""
        import torch

        log_pdf = torch.log_softmax(logits.to(torch.float64), dim=-1)
        log_w = log_prior(class_weights, log_pdf)
        edges = edges.to(device=log_pdf.device, dtype=torch.float64)
        z = z.to(device=log_pdf.device, dtype=torch.float64)
        target = torch.bucketize(z.clamp(edges[0], edges[-1]), edges[1:-1])
        for row, temperature in enumerate((None, *TEMPERATURES)):
            logs = log_pdf if temperature is None else tempered(log_pdf, log_w, temperature)
            pdf = logs.exp()
            self.nll[row] -= logs.gather(1, target[:, None]).sum()
            self.crps[row] += crps_of(pdf, edges, z).sum()
            index = (pit_of(pdf, edges, z) * PIT_BINS).long().clamp(0, PIT_BINS - 1)
            self.pit_counts[row] += torch.bincount(index, minlength=PIT_BINS).to(torch.float64)
        self.objects += len(z)

    def all_reduce(self) -> CalibrationSums:
        """The sums over every Ray Train worker (torch.distributed is up when there are
        several); unchanged with one."""
        import torch
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return self
        # gloo and nccl both reduce float64 sums; the count travels as one
        count = torch.tensor([self.objects], dtype=torch.float64, device=self.nll.device)
        flat = torch.cat([self.crps, self.nll, self.pit_counts.ravel(), count])
        dist.all_reduce(flat)
        rows = len(self.nll)
        return CalibrationSums(
            flat[:rows].clone(),
            flat[rows : 2 * rows].clone(),
            flat[2 * rows : -1].reshape(self.pit_counts.shape).clone(),
            int(round(float(flat[-1]))),
        )

    def fit(self, class_weights) -> tuple[Calibration, dict[str, float]]:
        """The calibration these sums give, and validation metrics (means over objects): CRPS,
        NLL and PIT KS of the raw PDFs and of the prior-corrected ones at the temperature of
        least CRPS (before the PIT map, which makes the validation PITs uniform)."""
        counts = self.pit_counts.cpu().numpy()
        crps = self.crps.cpu().numpy() / max(self.objects, 1)
        nll = self.nll.cpu().numpy() / max(self.objects, 1)
        best = 1 + int(np.argmin(crps[1:]))
        calibration = Calibration(
            class_weights=[float(w) for w in class_weights],
            temperature=TEMPERATURES[best - 1],
            pit_map=pit_map_from_counts(counts[best]).tolist(),
            validation_objects=self.objects,
        )
        metrics = {
            "val_crps_raw": float(crps[0]),
            "val_crps": float(crps[best]),
            "val_nll_raw": float(nll[0]),
            "val_nll": float(nll[best]),
            "val_pit_ks_raw": ks_from_counts(counts[0]),
            "val_pit_ks_prior_temperature": ks_from_counts(counts[best]),
            "val_temperature": calibration.temperature,
        }
        return calibration, metrics


def pit_map_from_counts(counts: np.ndarray) -> np.ndarray:
    """G at evenly spaced knots from a PIT histogram: the empirical CDF on as many knots as
    the objects support (``MIN_PER_KNOT`` per interval; a divisor of ``PIT_BINS``), with one
    pseudo-object per interval spread evenly, so G rises everywhere (no bin is emptied by a
    gap in a small validation set). Empty without objects."""
    total = float(counts.sum())
    if total <= 0:
        return np.empty(0)
    divisors = [k for k in range(2, len(counts) + 1) if len(counts) % k == 0]
    knots = max([k for k in divisors if total / k >= MIN_PER_KNOT], default=divisors[0])
    per_interval = counts.reshape(knots, -1).sum(axis=1) + 1.0
    g = np.concatenate([[0.0], np.cumsum(per_interval)]) / per_interval.sum()
    g[-1] = 1.0
    return g


def ks_from_counts(counts: np.ndarray) -> float:
    """KS distance to the uniform from a PIT histogram (exact at the bin edges)."""
    total = float(counts.sum())
    if total <= 0:
        return float("nan")
    cdf = np.concatenate([[0.0], np.cumsum(counts)]) / total
    return float(np.max(np.abs(cdf - np.linspace(0, 1, len(cdf)))))
