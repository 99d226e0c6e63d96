"""What the network sees: the cutout cube and, with ``data.ebv_column``, an E(B-V) plane.

Mantis Shrimp feeds the Milky Way reddening to the network beside the pixels: the same
colours mean another redshift behind more dust. Here it is one constant plane after the
bands, so the model is still ``build_model(cfg, in_chans)`` (a timm-style channel count, no
new layers); rotations and flips leave the plane unchanged (augmentation, TTA), and no
attribution player holds it, so the Shapley values share out the bands only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from raycat import schema
from raycat.errors import RaycatError


def input_channels(n_bands: int, ebv: bool) -> int:
    """The network's input channels: the bands, plus the E(B-V) plane when it takes one."""
    return n_bands + int(ebv)


def with_ebv_plane(cube: np.ndarray, ebv: np.ndarray) -> np.ndarray:
    """``cube`` [n, C, S, S] with a last channel holding each object's E(B-V)."""
    cube = np.asarray(cube, dtype=np.float32)
    values = np.asarray(ebv, dtype=np.float32).reshape(len(cube), 1, 1, 1)
    plane = np.broadcast_to(values, (len(cube), 1, *cube.shape[2:]))
    return np.concatenate([cube, plane], axis=1)


def network_input(batch: Mapping[str, Any], ebv: bool) -> np.ndarray:
    """The network's input for a batch of cutout rows: the cube, with the E(B-V) plane when
    the model takes one (``ebv``)."""
    if not ebv:
        return batch[schema.CUBE]
    if schema.EBV not in batch:
        raise RaycatError(
            "the model takes E(B-V) as an input but the cutout rows have none: set "
            "data.ebv_column and make the cutouts again"
        )
    return with_ebv_plane(batch[schema.CUBE], batch[schema.EBV])
