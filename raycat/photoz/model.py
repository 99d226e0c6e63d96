"""The redshift classifier (ResNet50 or a tiny twin) and its on-disk artifact.

The network maps a cutout cube ``[B, n_bands, S, S]`` to ``n_bins`` logits, one per
redshift bin; a softmax over them is the redshift PDF. The artifact is a directory (path
or fsspec URL) holding the weights (``model.pt``, a plain state_dict) and ``model.json``
(:class:`ArtifactMeta`): everything inference needs to rebuild the network and to cut
the same cutouts it was trained on.

torch is imported inside the functions that need it, so importing this module (for
:class:`ArtifactMeta`) stays cheap.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from raycat import __version__, fsutil
from raycat.config import ModelConfig, RaycatConfig
from raycat.errors import RaycatError
from raycat.photoz.attribute import Players, players_for
from raycat.photoz.calibrate import Calibration
from raycat.schema import MODEL_META_FILE, MODEL_WEIGHTS_FILE
from raycat.surveys.bands import softenings

if TYPE_CHECKING:
    import torch

ARTIFACT_FORMAT = 1
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DDP and torch.compile wrap the real model


class ArtifactMeta(BaseModel):
    """What ``model.json`` says about a trained model."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    format: int = Field(ARTIFACT_FORMAT, description="Artifact layout version.")
    model_id: str = Field(
        "",
        description="First 16 hex digits of the sha256 of model.pt; "
        "filled in by save_artifact, checked by load_artifact.",
    )
    model: ModelConfig = Field(
        description="Architecture and redshift grid "
        "(z_min, z_max, n_bins) the network was built with."
    )
    bands: list[str] = Field(min_length=1, description="Bands, in input-channel order.")
    band_surveys: dict[str, str] = Field(
        default_factory=dict,
        description="Survey of each band, as resolved at training "
        "(config-defined bands included). Artifacts without it use the built-in bands.",
    )
    size_px: int = Field(gt=0, description="Cutout side in pixels.")
    pixel_scale: float = Field(gt=0, description="Cutout pixel scale (arcsec/px).")
    softening: dict[str, float] = Field(
        default_factory=dict, description="asinh softening per band used to normalise the cutouts."
    )
    config_hash: str = Field("", description="RaycatConfig.config_hash() of the training run.")
    metrics: dict[str, float | int | str | bool | None] = Field(
        default_factory=dict,
        description="Final training and validation metrics (loss, NMAD, object counts...).",
    )
    train_median_z: float | None = Field(
        None, description="Median training redshift: the 'always predict the median' baseline."
    )
    ebv_input: bool = Field(
        False,
        description="The network takes the objects' E(B-V) (data.ebv_column) as one more "
        "input plane after the bands (raycat.photoz.inputs).",
    )
    calibration: Calibration = Field(
        default_factory=Calibration,
        description="Prior correction (the training class weights) and recalibration fitted "
        "on the validation split, applied to every PDF (raycat.photoz.calibrate); the default "
        "(older artifacts) changes nothing.",
    )
    raycat_version: str = Field(__version__, description="raycat version that trained it.")
    created: str = Field(
        default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"),
        description="UTC time the artifact was made.",
    )

    @property
    def input_channels(self) -> int:
        """The network's input channels (bands, then the E(B-V) plane if it takes one)."""
        from raycat.photoz.inputs import input_channels

        return input_channels(len(self.bands), self.ebv_input)

    @property
    def bin_edges(self) -> np.ndarray:
        """Redshift bin edges, ``n_bins + 1`` values (derived from ``model``)."""
        from raycat.photoz.pdf import bin_edges

        return bin_edges(self.model.z_min, self.model.z_max, self.model.n_bins)

    def players(self, kind: Literal["off", "bands", "surveys"]) -> Players:
        """Attribution players of this model's input channels, from the surveys recorded at
        training: a band defined only in the training config needs no config here."""
        return players_for(self.bands, kind, self.band_surveys)

    @classmethod
    def from_config(
        cls,
        cfg: RaycatConfig,
        *,
        metrics: Mapping[str, Any] | None = None,
        edges: Sequence[float] | None = None,
    ) -> ArtifactMeta:
        """Meta for a model trained with ``cfg``; ``metrics`` keeps its JSON scalars, and
        its ``train_median_z`` (if any) becomes the baseline field. ``edges``, if given,
        must be the config's grid (a guard against training on another grid). The softening
        recorded is the one the cutouts used (config values, else the depth defaults), and
        so is each band's survey (config-defined bands included)."""
        used = dict(zip(cfg.cutouts.bands, softenings(cfg.cutouts).tolist()))
        surveys = {name: cfg.cutouts.band(name).survey for name in cfg.cutouts.bands}
        scalars = {
            k: v
            for k, v in (metrics or {}).items()
            if v is None or isinstance(v, (bool, int, float, str))
        }
        meta = cls(
            model=cfg.model,
            bands=cfg.cutouts.bands,
            band_surveys=surveys,
            size_px=cfg.cutouts.size_px,
            pixel_scale=cfg.cutouts.pixel_scale,
            softening=used,
            config_hash=cfg.config_hash(),
            metrics=scalars,
            train_median_z=scalars.get("train_median_z"),
            ebv_input=bool(cfg.data.ebv_column),
        )
        if edges is not None and not np.allclose(edges, meta.bin_edges):
            raise ValueError("bin edges differ from the config's redshift grid")
        return meta


# --- networks ---------------------------------------------------------------------------------


def build_model(cfg: ModelConfig, n_bands: int) -> torch.nn.Module:
    """A classifier from ``[B, n_bands, S, S]`` cutouts to ``[B, cfg.n_bins]`` logits.

    ``resnet50`` is torchvision's layout (``raycat.photoz.resnet``: the same state_dict
    without importing torchvision), randomly initialised (weights are never downloaded: the
    inputs are not RGB photos), with the stem adapted to ``n_bands`` channels and, for
    ``stem="small"``, to cutouts of tens of pixels. ``tiny`` is a few-layer twin with the
    same interface, for tests.
    """
    if n_bands < 1:
        raise RaycatError(f"model: need at least one band, got {n_bands}")
    if cfg.arch == "tiny":
        return _tiny_net(n_bands, cfg.n_bins, cfg.dropout)
    return _resnet50(n_bands, cfg.n_bins, cfg.stem, cfg.dropout)


def _resnet50(n_bands: int, n_bins: int, stem: str, dropout: float) -> torch.nn.Module:
    from torch import nn

    from raycat.photoz.resnet import resnet50  # not torchvision's: 0.8 s of imports

    net = resnet50(num_classes=n_bins)
    if stem == "imagenet":
        net.conv1 = nn.Conv2d(n_bands, 64, kernel_size=7, stride=2, padding=3, bias=False)
    else:
        # A 32 px cutout through the 7x7/2 conv + maxpool is 8 px before the first block and
        # 1 px at the last: keep the full resolution instead, as CIFAR ResNets do (16x the
        # compute of the imagenet stem: a GPU setting).
        net.conv1 = nn.Conv2d(n_bands, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    if not net.conv1.weight.is_meta:  # on meta (load_artifact) an init imports torch._dynamo
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    net.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(net.fc.in_features, n_bins))
    return net


def _tiny_net(n_bands: int, n_bins: int, dropout: float) -> torch.nn.Module:
    from torch import nn

    def block(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
        return [
            nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        ]

    return nn.Sequential(
        *block(n_bands, 16, 1),
        *block(16, 32, 2),
        *block(32, 64, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(64, n_bins),
    )


# --- artifact ---------------------------------------------------------------------------------


def _plain_state_dict(model: torch.nn.Module) -> dict[str, Any]:
    """The state_dict without DDP / torch.compile prefixes, on the CPU."""
    state = {}
    for key, tensor in model.state_dict().items():
        for prefix in _WRAPPER_PREFIXES:
            while key.startswith(prefix):
                key = key[len(prefix) :]
        state[key] = tensor.detach().cpu()
    return state


def _weights_id(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()[:16]


def save_artifact(
    model: torch.nn.Module, path: str, meta: ArtifactMeta, storage_options: dict | None = None
) -> ArtifactMeta:
    """Write ``model.pt`` and ``model.json`` under ``path`` (a directory or URL).

    The JSON goes last, so a reader that finds it also finds complete weights. Returns
    ``meta`` with ``model_id`` set to the weights' hash.
    """
    import torch

    buffer = io.BytesIO()
    torch.save(_plain_state_dict(model), buffer)
    blob = buffer.getvalue()
    meta = meta.model_copy(update={"model_id": _weights_id(blob)})
    fs, root = fsutil.filesystem(path, storage_options)
    fs.makedirs(root, exist_ok=True)
    fs.pipe_file(f"{root.rstrip('/')}/{MODEL_WEIGHTS_FILE}", blob)
    fs.pipe_file(f"{root.rstrip('/')}/{MODEL_META_FILE}", meta.model_dump_json(indent=2).encode())
    return meta


def _artifact_file(path: str, storage_options: dict | None, name: str) -> bytes:
    """The bytes of one file of the artifact at ``path``; a missing one is a one-line error."""
    fs, root = fsutil.filesystem(path, storage_options)
    try:
        return fs.cat_file(f"{root.rstrip('/')}/{name}")
    except FileNotFoundError:
        raise RaycatError(
            f"model artifact {path}: {name} not found (missing or not yet written)"
        ) from None


def read_artifact_meta(path: str, storage_options: dict | None = None) -> ArtifactMeta:
    """Read and validate ``model.json`` only (no torch), e.g. to plan a catalog."""
    text = _artifact_file(path, storage_options, MODEL_META_FILE)
    try:
        return ArtifactMeta.model_validate_json(text)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "json"
        raise RaycatError(
            f"model artifact {path}: bad {MODEL_META_FILE} ({where}: {first['msg']})"
        ) from None


def verified_weights(path: str, storage_options: dict | None = None) -> tuple[bytes, ArtifactMeta]:
    """The weights file and meta of an artifact, checked against ``model_id`` without torch:
    a truncated, corrupt or swapped ``model.pt`` is a one-line error (the driver checks this
    before a job changes a catalog, without paying torch's import)."""
    meta = read_artifact_meta(path, storage_options)
    blob = _artifact_file(path, storage_options, MODEL_WEIGHTS_FILE)
    if _weights_id(blob) != meta.model_id:
        raise RaycatError(
            f"model artifact {path}: {MODEL_WEIGHTS_FILE} does not match "
            f"model_id {meta.model_id} (corrupt or partly written)"
        )
    return blob, meta


def check_weights(path: str, storage_options: dict | None = None) -> None:
    """``verified_weights`` without keeping the bytes (a background check holds no model):
    raises its one-line error for unsound weights."""
    verified_weights(path, storage_options)


def load_artifact(
    path: str, storage_options: dict | None = None, device: str = "cpu"
) -> tuple[torch.nn.Module, ArtifactMeta]:
    """Rebuild the model from an artifact; returns ``(model in eval mode, meta)``.

    The weights are loaded with ``weights_only=True`` (no pickled code runs) and checked
    against ``model_id``, so a truncated or swapped ``model.pt`` is an error, not a
    silently different catalog.
    """
    import torch

    blob, meta = verified_weights(path, storage_options)
    try:
        state = torch.load(io.BytesIO(blob), map_location=device, weights_only=True)
        with torch.device("meta"):  # no random initialisation to overwrite (0.15-0.3 s)
            model = build_model(meta.model, meta.input_channels)
        model.load_state_dict(state, assign=True)  # strict: every parameter and buffer
    except Exception as err:
        reason = str(err).splitlines()[0][:200]
        raise RaycatError(f"model artifact {path}: weights do not load ({reason})") from None
    return model.to(device).eval(), meta
