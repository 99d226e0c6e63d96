"""Fine-tuning: start training from a trained artifact (``train.init_from``), with the first
blocks frozen (``train.freeze``) and its own learning rate (``train.finetune_lr``).

The use case is sim-to-real: train on a large mock sky, then fine-tune on a small real set
with the same bands and grid. The driver checks the artifact against the config before Ray
Train starts (:func:`init_artifact_meta`, one line naming the mismatch); each worker loads
the weights with :func:`raycat.photoz.model.load_artifact` (``weights_only``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from raycat.config import RaycatConfig
from raycat.errors import RaycatError
from raycat.fsutil import has_scheme

if TYPE_CHECKING:
    import torch

    from raycat.photoz.model import ArtifactMeta

# Blocks in network order; freezing one freezes every block before it too.
BLOCKS = ("stem", "layer1", "layer2", "layer3", "layer4")
# The tiny twin (an nn.Sequential): the last module index of each block. It has a stem and
# two strided blocks, so layer2..layer4 all freeze the whole feature extractor.
_TINY_BLOCK_END = {"stem": 2, "layer1": 5, "layer2": 8, "layer3": 8, "layer4": 8}


def init_artifact_path(cfg: RaycatConfig) -> str | None:
    """``train.init_from`` as the workers must see it (absolute when a local path)."""
    import os

    path = cfg.train.init_from
    return path if path is None or has_scheme(path) else os.path.abspath(path)


def init_artifact_meta(cfg: RaycatConfig) -> ArtifactMeta | None:
    """The ``init_from`` artifact's meta, its weights checked against its id; None without
    one. A model the config could not train (other bands, arch, stem or redshift grid) is a
    one-line RaycatError naming the difference."""
    from raycat.photoz.model import verified_weights

    path = init_artifact_path(cfg)
    if path is None:
        return None
    _, meta = verified_weights(path, cfg.data.storage_options)
    if meta.bands != cfg.cutouts.bands:
        raise RaycatError(
            f"train.init_from {cfg.train.init_from}: the model's bands {meta.bands} differ from "
            f"cutouts.bands {cfg.cutouts.bands}"
        )
    if meta.ebv_input != bool(cfg.data.ebv_column):
        raise RaycatError(
            f"train.init_from {cfg.train.init_from}: the model "
            f"{'takes' if meta.ebv_input else 'does not take'} E(B-V) as an input and "
            f"data.ebv_column is {cfg.data.ebv_column!r}"
        )
    for key in ("arch", "stem", "n_bins", "z_min", "z_max"):
        theirs, ours = getattr(meta.model, key), getattr(cfg.model, key)
        if theirs != ours:
            raise RaycatError(
                f"train.init_from {cfg.train.init_from}: the model's {key} is {theirs!r}, "
                f"model.{key} is {ours!r}"
            )
    return meta


def load_init_weights(model: torch.nn.Module, path: str, storage_options: dict | None) -> None:
    """Copy an artifact's weights into ``model`` (same architecture: checked by the driver)."""
    from raycat.photoz.model import load_artifact

    trained, _ = load_artifact(path, storage_options)
    model.load_state_dict(trained.state_dict())


def frozen_modules(model: torch.nn.Module, arch: str, upto: str) -> list[torch.nn.Module]:
    """The modules of ``model`` up to and including block ``upto`` (none for "none")."""
    if upto == "none":
        return []
    if upto not in BLOCKS:
        raise RaycatError(f"train.freeze: unknown block {upto!r}; use none or {', '.join(BLOCKS)}")
    if arch == "tiny":
        return list(model)[: _TINY_BLOCK_END[upto] + 1]  # type: ignore[call-overload]
    names = ["conv1", "bn1", *BLOCKS[1 : BLOCKS.index(upto) + 1]]
    return [getattr(model, name) for name in names]


def freeze(model: torch.nn.Module, arch: str, upto: str) -> list[torch.nn.Module]:
    """Stop the gradients of the blocks up to ``upto``; returns the frozen modules, which
    :func:`keep_frozen_in_eval` must put back in eval mode after every ``model.train()``."""
    modules = frozen_modules(model, arch, upto)
    for module in modules:
        for parameter in module.parameters():
            parameter.requires_grad_(False)
    keep_frozen_in_eval(modules)
    return modules


def keep_frozen_in_eval(modules: list[torch.nn.Module]) -> None:
    """Frozen blocks keep their BatchNorm running statistics (eval mode), or the statistics of
    the new data would silently change what the frozen weights compute."""
    for module in modules:
        module.eval()
