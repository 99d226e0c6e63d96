"""Inference: a Predictor actor for ``map_batches`` that turns cutouts into redshift PDFs.

Every input row leaves with a row: objects without usable pixels (off the footprint, every
band missing or unreadable) get NO_PREDICTION and a NaN PDF, which the catalog writes as null.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from raycat import schema
from raycat.errors import RaycatError
from raycat.photoz.attribute import Players, shapley
from raycat.photoz.forward import pdf_fn, z_mean_fn
from raycat.photoz.pdf import bin_centres
from raycat.plan.idhash import id_keys

if TYPE_CHECKING:
    import torch

    from raycat.config import InferConfig

# Rows per forward pass on a CPU. A ResNet50 layer's activations for 256 32-px cutouts
# (16 MB) overflow the caches; 64 rows at a time run 16% faster on one core (782 against
# 673 objects/s, measured side by side). A GPU takes the whole batch at once.
CPU_CHUNK = 64

# Where `ray up` leaves the autoscaler's config on the head, which is where a job's driver
# runs (Ray's path, not raycat's: cluster.yaml's head start command names it too).
RAY_BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"
NO_GPU_HELP = "set it to false, or run on a Ray cluster with GPU nodes"


def require_gpus(setting: str) -> None:
    """A one-line error when ``setting`` (``infer.use_gpu``, ``train.use_gpu``) asks for GPUs
    that the Ray cluster has not and cannot get. Ray would queue a GPU actor no node can host
    and wait for ever; a CPU run in its place would be silent and slow. A GPU counts when a
    node has one now or when a node type of the cluster's autoscaler declares one."""
    import ray

    if ray.cluster_resources().get("GPU", 0) > 0 or autoscaler_gpus() > 0:
        return
    raise RaycatError(
        f"{setting} is true but the Ray cluster has no GPU and no node type that could "
        f"add one: {NO_GPU_HELP}"
    )


def autoscaler_gpus(bootstrap: str = RAY_BOOTSTRAP_CONFIG) -> float:
    """The most GPUs the cluster's autoscaler could add: from the cluster config it reports to
    the GCS (autoscaler v2), else from the config `ray up` leaves on the head; 0 without
    either (a fixed cluster, a laptop)."""
    import ray
    import ray._private.state

    limits: dict[str, int] = {}
    if ray.is_initialized():
        limits = ray._private.state.state.get_max_resources_from_cluster_config() or {}
    if limits.get("GPU"):
        return float(limits["GPU"])
    path = Path(bootstrap).expanduser()
    return node_type_gpus(path.read_text()) if path.is_file() else 0.0


def node_type_gpus(cluster_yaml: str) -> float:
    """The GPUs of a Ray cluster launcher config's node types at their ``max_workers``."""
    import yaml

    config = yaml.safe_load(cluster_yaml) or {}
    types = (config.get("available_node_types") or {}).values()
    return float(
        sum(
            t.get("resources", {}).get("GPU", 0)
            * t.get("max_workers", config.get("max_workers", 0))
            for t in types
        )
    )


def has_pixels(cube: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """Rows with at least one band of real pixels."""
    off = (np.asarray(flags) & int(schema.Flag.OFF_FOOTPRINT)) != 0
    return ~off & np.any(cube.reshape(len(cube), -1) != 0, axis=1)


class Predictor:
    """Ray Data actor: PDF and flags for a batch of cutout rows (the catalog writer derives
    the point estimates from the PDF), and the extra columns ``infer`` asks for.

    ``infer`` is the config section itself (model, device, PDF dtype, attribution and MC
    dropout settings), so a renamed field is an error, not a silent default. ``players``
    are the attribution players the driver worked out once for the catalog schema; by
    default the artifact's own for ``infer.attributions``.
    """

    def __init__(
        self,
        infer: InferConfig,
        storage_options: dict | None = None,
        players: Players | None = None,
    ):
        import torch

        from raycat.photoz.model import load_artifact

        self.infer = infer
        gpu = infer.use_gpu
        if gpu and not torch.cuda.is_available():  # a node that declares a GPU it has not
            raise RaycatError(f"infer.use_gpu is true but this node has no CUDA GPU: {NO_GPU_HELP}")
        self.device = torch.device("cuda" if gpu else "cpu")
        self.model, self.meta = load_artifact(infer.model, storage_options, device=str(self.device))
        self.players = players if players is not None else self.meta.players(infer.attributions)
        self.n_bins = self.meta.model.n_bins
        self.pdf_dtype = np.dtype(infer.pdf_dtype)
        self.centres = torch.tensor(
            bin_centres(self.meta.bin_edges), dtype=torch.float32, device=self.device
        )
        # the catalog's PDFs: test-time symmetry, then the artifact's calibration; the
        # attributions explain the z_mean of those same PDFs
        calibration = self.meta.calibration
        self.pdf = pdf_fn(self.model, self.device, bf16=gpu, tta=infer.tta, calibration=calibration)
        self.z_mean = z_mean_fn(
            self.model, self.centres, self.device, tta=infer.tta, calibration=calibration
        )

    @property
    def wanted(self) -> bool:
        """Whether rows get columns beyond the PDF (attributions, epistemic spread)."""
        return bool(self.players.names) or self.infer.mc_dropout_passes > 1

    def __call__(self, batch: dict) -> dict:
        from raycat.photoz.inputs import network_input

        flags = np.asarray(batch[schema.FLAGS], dtype=np.int32)
        usable = has_pixels(batch[schema.CUBE], flags)  # the pixels, not the E(B-V) plane
        cube = network_input(batch, self.meta.ebv_input)
        pdf = np.full((len(flags), self.n_bins), np.nan, dtype=np.float32)
        if usable.any():
            pdf[usable] = self.predict(cube[usable])
        out = {k: batch[k] for k in schema.PASS_THROUGH if k in batch}
        out[schema.FLAGS] = flags | np.where(usable, 0, int(schema.Flag.NO_PREDICTION))
        out[schema.PDF] = pdf.astype(self.pdf_dtype)
        if self.wanted:
            out.update(self.extra_columns(cube, usable, batch[schema.ID]))
        return out

    def extra_columns(self, cube: np.ndarray, usable: np.ndarray, ids: np.ndarray) -> dict:
        """Attributions and epistemic spread of the usable rows (NaN elsewhere)."""
        import torch

        from raycat.photoz.uncertainty import mc_dropout

        x = torch.from_numpy(np.ascontiguousarray(cube[usable], np.float32)).to(self.device)
        # seeded by the batch's ids (integer or text: their stable keys), so a rerun of the
        # same objects gives the same catalog
        seed = int(np.sum(id_keys(ids), dtype=np.uint64) % np.uint64(2**63))
        generator = torch.Generator().manual_seed(seed)
        columns = self.attributions(x, generator) if self.players.names else {}
        if self.infer.mc_dropout_passes > 1:
            _, spread = mc_dropout(
                self.model, x, self.centres, self.infer.mc_dropout_passes, generator
            )
            columns[schema.Z_STD_EPISTEMIC] = spread.numpy()
        return {name: _fill(values, usable) for name, values in columns.items()}

    def attributions(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> dict[str, np.ndarray]:
        """``attr_<player>`` and ``attr_baseline`` of z_mean for cutouts ``x`` [n, C, S, S],
        by this predictor's players and settings (the catalog's and the report's)."""
        phi, base = shapley(
            self.z_mean,
            x,
            self.players.groups,
            method=self.infer.attribution_method,
            permutations=self.infer.attribution_permutations,
            baseline=self.infer.attribution_baseline,
            generator=generator,
        )
        columns = {
            schema.attr_column(name): phi[:, i].numpy() for i, name in enumerate(self.players.names)
        }
        columns[schema.ATTR_BASELINE] = base.numpy()
        return columns

    def predict(self, cube: np.ndarray) -> np.ndarray:
        """The catalog's PDFs for a stack of network inputs [n, channels, S, S] (the
        cutouts, and the E(B-V) plane if the model takes one: ``raycat.photoz.inputs``):
        softmax (averaged over the 8 rotations and flips with ``infer.tta: dihedral``), then
        the artifact's calibration (prior correction, temperature, PIT map)."""
        import torch

        chunk = len(cube) if self.device.type == "cuda" else CPU_CHUNK
        x = torch.from_numpy(np.ascontiguousarray(cube, dtype=np.float32))
        return torch.cat([self.pdf(part) for part in x.split(max(chunk, 1))]).cpu().numpy()


def _fill(values: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """A float32 column with ``values`` at the usable rows and NaN elsewhere."""
    column = np.full(len(usable), np.nan, dtype=np.float32)
    column[usable] = np.asarray(values, dtype=np.float32)
    return column
