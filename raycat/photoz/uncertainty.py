"""Epistemic uncertainty (MC dropout) and rotation stability (the 8 dihedral transforms).

MC dropout: the network's dropout layers stay stochastic at inference while everything
else (BatchNorm above all) keeps its eval behaviour; the spread of ``z_mean`` over the
passes estimates how unsure the *weights* are (the PDF width is the aleatoric part).

Rotation stability: galaxies have no preferred orientation, so a good model gives the
same redshift for all 8 rotations and flips of a cutout (the GaMPEN robustness check).
torch is imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Literal

import numpy as np

from raycat.photoz.forward import TTA, dihedral_images, pdf_fn, z_mean_fn

if TYPE_CHECKING:
    import torch

    from raycat.photoz.calibrate import Calibration

N_DIHEDRAL = 8


# --- MC dropout -------------------------------------------------------------------------------


@contextmanager
def _inference_modes(model: torch.nn.Module, dropout: bool) -> Iterator[None]:
    """Eval mode for every module, except dropout layers when ``dropout`` (MC dropout);
    each module's own mode is restored afterwards."""
    from torch.nn.modules.dropout import _DropoutNd

    modes = {module: module.training for module in model.modules()}
    try:
        model.eval()
        for module in model.modules():
            if dropout and isinstance(module, _DropoutNd):
                module.train()
        yield
    finally:
        for module, training in modes.items():
            module.training = training


def mc_dropout(
    model: torch.nn.Module,
    x: torch.Tensor,
    centres: Sequence[float] | torch.Tensor,
    passes: int,
    generator: torch.Generator | None = None,
    max_batch: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of ``z_mean`` over ``passes`` stochastic passes.

    Returns ``(z_mean_mean [n], z_std_epistemic [n])``, float64 on the CPU (the catalog's
    ``z_std_epistemic``; std with ddof=1). Passes run as one big batch (repeats of ``x``,
    at most ``max_batch`` inputs per call; dropout masks are drawn per input). With
    ``passes <= 1`` (or a network without active dropout) the spread is exactly zero and
    the mean is the deterministic eval-mode prediction. ``generator`` seeds the dropout
    masks reproducibly without touching the global RNG.
    """
    import torch

    n, f = x.shape[0], z_mean_fn(model, centres)
    if passes <= 1:
        with _inference_modes(model, dropout=False):
            z = f(x).to("cpu", torch.float64)
        return z, torch.zeros(n, dtype=torch.float64)
    seed = (
        None
        if generator is None
        else int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
    )
    devices = [x.device] if x.device.type == "cuda" else []
    with (
        _inference_modes(model, dropout=True),
        torch.random.fork_rng(devices=devices, enabled=seed is not None),
    ):
        if seed is not None:
            torch.manual_seed(seed)
        repeated = x.repeat(passes, *([1] * (x.dim() - 1)))  # pass-major: [passes * n, ...]
        z = torch.cat([f(chunk).to("cpu", torch.float64) for chunk in repeated.split(max_batch)])
    z = z.reshape(passes, n)
    return z.mean(0), z.std(0, correction=1)


# --- dihedral transforms ----------------------------------------------------------------------


def dihedral_transforms(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 images of ``x`` [..., H, W] under 4 rotations x (no flip, flip); identity first
    (the same images ``infer.tta: dihedral`` averages over)."""
    return dihedral_images(x)


def dihedral_predictions(
    f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor
) -> torch.Tensor:
    """``f`` on each dihedral transform of ``x``: ``[8, n, ...]`` (identity first).

    ``f`` is any batch function, e.g. :func:`raycat.photoz.forward.z_mean_fn` (-> ``[8, n]``)
    or :func:`raycat.photoz.forward.pdf_fn` (-> ``[8, n, n_bins]``).
    """
    import torch

    return torch.stack([f(image) for image in dihedral_transforms(x)])


def dihedral_pdfs(
    model: torch.nn.Module,
    x: torch.Tensor,
    device: str | torch.device | None = None,
    tta: TTA = "none",
    calibration: Calibration | None = None,
) -> torch.Tensor:
    """PDFs of the 8 dihedral transforms of ``x``: ``[8, n, n_bins]``; softmax ones by
    default, else :func:`raycat.photoz.forward.pdf_fn`'s with ``tta`` and ``calibration``."""
    return dihedral_predictions(pdf_fn(model, device, tta=tta, calibration=calibration), x)


def point_from_pdfs(
    pdfs: torch.Tensor | np.ndarray,
    centres: Sequence[float] | np.ndarray,
    estimator: Literal["mode", "mean"] = "mode",
) -> np.ndarray:
    """Point redshifts ``[..., n]`` from PDFs ``[..., n, n_bins]``: the mode (centre of the
    most probable bin, the catalog's ``z_mode``) or the mean (``z_mean``)."""
    pdfs = np.asarray(pdfs.cpu() if hasattr(pdfs, "cpu") else pdfs, dtype=np.float64)
    centres = np.asarray(centres, dtype=np.float64)
    if estimator == "mode":
        return centres[np.argmax(pdfs, axis=-1)]
    if estimator == "mean":
        return pdfs @ centres
    raise ValueError(f"unknown estimator {estimator!r}; use 'mode' or 'mean'")


def rotation_shifts(z8: torch.Tensor | np.ndarray, sigma: float | np.ndarray) -> np.ndarray:
    """Per object, the largest ``|z_t - z_identity|`` over the 7 other transforms / sigma."""
    z8 = np.asarray(z8.cpu() if hasattr(z8, "cpu") else z8, dtype=np.float64)
    if z8.ndim != 2 or z8.shape[0] != N_DIHEDRAL:
        raise ValueError(f"z8 must be [8, n], got shape {z8.shape}")
    sigma = np.broadcast_to(np.asarray(sigma, dtype=np.float64), z8.shape[1:])
    if np.any(sigma <= 0):
        raise ValueError("sigma must be positive")
    return np.max(np.abs(z8[1:] - z8[0]), axis=0) / sigma


def rotation_stability(
    z8: torch.Tensor | np.ndarray, sigma: float | np.ndarray
) -> dict[str, float]:
    """How far rotations and flips move a point redshift, in units of ``sigma``.

    ``z8``: ``[8, n]`` point estimates (identity first), e.g. ``point_from_pdfs(...,
    "mode")`` for the ``|dz_mode| / sigma`` criterion or ``z_mean_fn`` outputs for
    ``|dz_mean| / sigma``. ``sigma``: a scalar or per-object width (e.g. ``z_std``).
    Per object, the shift is the largest ``|z_t - z_identity|`` over the 7 other
    transforms. Returns the ``mean``, ``p95`` and ``max`` of shift/sigma over objects, and
    ``n_objects``; all zero for an exactly invariant model, NaN for no objects.
    """
    shift = rotation_shifts(z8, sigma)
    if not shift.size:  # no object to measure: nothing moved, and nothing to say so
        return {"mean": float("nan"), "p95": float("nan"), "max": float("nan"), "n_objects": 0}
    return {
        "mean": float(shift.mean()),
        "p95": float(np.percentile(shift, 95)),
        "max": float(shift.max()),
        "n_objects": int(shift.size),
    }
