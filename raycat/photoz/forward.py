"""The network as a function of a cutout batch: softmax PDFs or the PDF-mean redshift.

One wrapper for every caller that runs the trained model on tensors (the Predictor, Shapley
attributions, MC dropout, rotation checks), so they all see the same PDFs. torch is imported
inside the functions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

ValueFn = Callable[["torch.Tensor"], "torch.Tensor"]  # [B, C, H, W] -> [B]


def pdf_fn(
    model: torch.nn.Module, device: str | torch.device | None = None, bf16: bool = False
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``f(x) -> softmax PDFs [B, n_bins]`` (float32) in inference mode, on ``device``.

    The model is used in whatever mode it is in (eval for attributions). ``bf16`` autocasts
    on CUDA, as the Predictor does; leave it off where efficiency must hold to 1e-5.
    """
    import torch

    def f(x: torch.Tensor) -> torch.Tensor:
        target = torch.device(device) if device is not None else x.device
        with (
            torch.inference_mode(),
            torch.autocast(
                target.type, dtype=torch.bfloat16, enabled=bf16 and target.type == "cuda"
            ),
        ):
            logits = model(x.to(target, torch.float32))
        return torch.softmax(logits.float(), dim=1)

    return f


def z_mean_fn(
    model: torch.nn.Module,
    centres: Sequence[float] | torch.Tensor,
    device: str | torch.device | None = None,
    bf16: bool = False,
) -> ValueFn:
    """``f(x) -> z_mean [B]``: the PDF expectation over the bin ``centres``."""
    import torch

    pdf = pdf_fn(model, device, bf16)
    weights = torch.as_tensor(centres, dtype=torch.float32)

    def f(x: torch.Tensor) -> torch.Tensor:
        p = pdf(x)
        return p @ weights.to(p.device)

    return f
