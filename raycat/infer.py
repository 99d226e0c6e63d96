"""Inference: a Predictor actor for ``map_batches`` that turns cutouts into redshift PDFs.

Every input row leaves with a row: objects without usable pixels (off the footprint, every
band missing or unreadable) get NO_PREDICTION and a NaN PDF, which the catalog writes as null.
"""

from __future__ import annotations

import numpy as np

from raycat import schema

PASS_THROUGH = (schema.ID, schema.RA, schema.DEC, schema.HEALPIX_29, schema.WORK_UNIT,
                schema.Z_SPEC)


def has_pixels(cube: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """Rows with at least one band of real pixels."""
    off = (np.asarray(flags) & int(schema.Flag.OFF_FOOTPRINT)) != 0
    return ~off & np.any(cube.reshape(len(cube), -1) != 0, axis=1)


class Predictor:
    """Ray Data actor: PDF and flags for a batch of cutout rows (the catalog writer derives
    the point estimates from the PDF)."""

    def __init__(self, model: str, storage_options: dict | None = None,
                 use_gpu: bool = False, pdf_dtype: str = "float32"):
        import torch

        from raycat.model import load_artifact

        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        self.model, self.meta = load_artifact(model, storage_options, device=str(self.device))
        self.n_bins = self.meta.model.n_bins
        self.pdf_dtype = np.dtype(pdf_dtype)

    def __call__(self, batch: dict) -> dict:
        cube, flags = batch[schema.CUBE], np.asarray(batch[schema.FLAGS], dtype=np.int32)
        usable = has_pixels(cube, flags)
        pdf = np.full((len(flags), self.n_bins), np.nan, dtype=np.float32)
        if usable.any():
            pdf[usable] = self.predict(cube[usable])
        out = {k: batch[k] for k in PASS_THROUGH if k in batch}
        out[schema.FLAGS] = flags | np.where(usable, 0, int(schema.Flag.NO_PREDICTION))
        out[schema.PDF] = pdf.astype(self.pdf_dtype)
        return out

    def predict(self, cube: np.ndarray) -> np.ndarray:
        """Softmax PDFs for a stack of cutouts [n, bands, S, S]."""
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(cube, dtype=np.float32)).to(self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16,
                                enabled=self.device.type == "cuda"):
                logits = self.model(x)
            return torch.softmax(logits.float(), dim=1).cpu().numpy()
