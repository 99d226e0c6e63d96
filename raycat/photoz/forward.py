"""The network as a function of a cutout batch: softmax PDFs or the PDF-mean redshift.

One wrapper for every caller that runs the trained model on tensors (the Predictor, Shapley
attributions, MC dropout, rotation checks), so they all see the same PDFs. Two options make
them the catalog's PDFs: ``tta="dihedral"`` averages the softmax PDFs of the 8 rotations and
flips of each cutout (8x the model cost; the result is exactly the same for every rotation or
flip of a cutout), and ``calibration`` (:mod:`raycat.photoz.calibrate`) then applies the
artifact's prior correction and recalibration. torch is imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

    from raycat.photoz.calibrate import Calibration

TTA = Literal["none", "dihedral"]

ValueFn = Callable[["torch.Tensor"], "torch.Tensor"]  # [B, C, H, W] -> [B]


def pdf_fn(
    model: torch.nn.Module,
    device: str | torch.device | None = None,
    bf16: bool = False,
    tta: TTA = "none",
    calibration: Calibration | None = None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``f(x) -> PDFs [B, n_bins]`` (float32) in inference mode, on ``device``.

    The model is used in whatever mode it is in (eval for attributions). ``bf16`` autocasts
    on CUDA, as the Predictor does; leave it off where efficiency must hold to 1e-5.
    ``tta="dihedral"`` averages the softmax over the 8 dihedral transforms; ``calibration``
    is applied after that (None: the softmax as it is).
    """
    import torch

    from raycat.photoz.calibrate import calibrate_pdfs

    def softmax(x: torch.Tensor) -> torch.Tensor:
        target = torch.device(device) if device is not None else x.device
        with (
            torch.inference_mode(),
            torch.autocast(
                target.type, dtype=torch.bfloat16, enabled=bf16 and target.type == "cuda"
            ),
        ):
            logits = model(x.to(target, torch.float32))
        return torch.softmax(logits.float(), dim=1)

    def f(x: torch.Tensor) -> torch.Tensor:
        pdf = dihedral_mean(softmax, x) if tta == "dihedral" else softmax(x)
        return calibrate_pdfs(pdf, calibration)

    if tta not in ("none", "dihedral"):
        raise ValueError(f"unknown tta {tta!r}; use 'none' or 'dihedral'")
    return f


def dihedral_images(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 images of ``x`` [..., H, W] under 4 rotations x (no flip, flip); identity first."""
    import torch

    return [
        torch.rot90(image, k, dims=(-2, -1)).contiguous()
        for image in (x, x.flip(-1))
        for k in range(4)
    ]


def dihedral_mean(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The mean of ``f`` over the 8 dihedral transforms of ``x``, summed in sorted order per
    value, so any rotation or flip of ``x`` (the same 8 images, in another order) gives the
    same bits, not just the same value to rounding."""
    import torch

    stacked = torch.stack([f(image) for image in dihedral_images(x)])
    return torch.sort(stacked, dim=0).values.sum(dim=0) / stacked.shape[0]


def z_mean_fn(
    model: torch.nn.Module,
    centres: Sequence[float] | torch.Tensor,
    device: str | torch.device | None = None,
    bf16: bool = False,
    tta: TTA = "none",
    calibration: Calibration | None = None,
) -> ValueFn:
    """``f(x) -> z_mean [B]``: the expectation over the bin ``centres`` of
    :func:`pdf_fn`'s PDFs (same options)."""
    import torch

    pdf = pdf_fn(model, device, bf16, tta, calibration)
    weights = torch.as_tensor(centres, dtype=torch.float32)

    def f(x: torch.Tensor) -> torch.Tensor:
        p = pdf(x)
        return p @ weights.to(p.device)

    return f
