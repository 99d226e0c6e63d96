"""Training on Ray Train: cross-entropy over redshift bins, flattened n(z), dihedral augmentation.

``train_loop_per_worker`` is the whole loop, short enough to read in one sitting. ``fit`` builds
the datasets (training objects only: the validation split is chosen by a hash of the id, so
held-out objects are never trained on), runs the TorchTrainer and writes the model artifact.
Rerunning with the same ``run_name`` and ``storage_path`` resumes from the last checkpoint,
but only with the settings that made it: every checkpoint carries them (``run_identity``:
the model section, the cutout grid and data of the plan fingerprint, the validation split),
and a resume with other ones is refused with one line naming the changed keys, before any
worker starts. Epochs, learning rate, batch size and workers may change on a resume.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
import time

import numpy as np

from raycat import schema
from raycat.config import RaycatConfig, TrainConfig
from raycat.errors import RaycatError
from raycat.fsutil import filesystem, has_scheme, join, storage_errors
from raycat.plan.idhash import id_keys

CHECKPOINT_FILE = "state.pt"
UNUSABLE = int(schema.Flag.OFF_FOOTPRINT | schema.Flag.READ_ERROR)
SHUFFLE_BATCHES = 16  # rows mixed before batching, in batches: 37 MB of 9x32x32 cutouts at 64


# --- pure helpers -------------------------------------------------------------------------


def is_validation(ids: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """Deterministic split by a hash of the id: the same objects are held out on every run,
    in every process (integer or text ids: ``raycat.plan.idhash.id_keys``)."""
    mixed = (id_keys(ids) + np.uint64(seed)) * np.uint64(0x9E3779B97F4A7C15)
    return (mixed >> np.uint64(40)).astype(np.float64) / float(1 << 24) < fraction


def class_weights(z: np.ndarray, edges: np.ndarray, cap: float) -> np.ndarray:
    """Inverse-frequency weight per bin, capped and normalised to a mean of 1 per object.

    This flattens n(z) so the rare high-redshift objects are not drowned by the common ones.
    """
    counts = np.histogram(np.clip(z, edges[0], edges[-1]), bins=edges)[0].astype(float)
    weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / len(counts), 0.0)
    weights = np.minimum(weights, cap * np.median(weights[counts > 0]))
    return weights / (weights * counts).sum() * counts.sum()


def dihedral_augment(x, generator=None):
    """A random flip and 90-degree rotation per image, on the tensor's own device.

    Galaxies have no preferred orientation, so the 8 dihedral transforms are free data.
    """
    import torch

    n = x.shape[0]
    flip = torch.rand(n, device=x.device, generator=generator) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    turns = torch.randint(0, 4, (n,), device=x.device, generator=generator)
    out = x.clone()
    for k in (1, 2, 3):
        chosen = turns == k
        out[chosen] = torch.rot90(x[chosen], k, dims=(-2, -1))
    return out


def cosine_lr(peak: float, epoch: int, epochs: int) -> float:
    """Learning rate of ``epoch``: cosine from ``peak`` to 5% of it; resumes need no state."""
    return float(peak * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * epoch / max(epochs, 1)))))


def usable_for_training(batch: dict) -> np.ndarray:
    """Rows with pixels and a finite spectroscopic redshift."""
    z = np.asarray(batch[schema.Z_SPEC], dtype=float)
    return np.isfinite(z) & ((np.asarray(batch[schema.FLAGS]) & UNUSABLE) == 0)


# --- the loop -----------------------------------------------------------------------------


def train_loop_per_worker(config: dict) -> None:
    import ray.train
    import ray.train.torch
    import torch
    import torch.nn.functional as F

    from raycat.photoz.finetune import freeze, keep_frozen_in_eval, load_init_weights
    from raycat.photoz.model import build_model

    cfg = RaycatConfig.model_validate(config["cfg"])
    _quiet_report_lines()
    device = ray.train.torch.get_device()
    if cfg.train.use_gpu and device.type != "cuda":  # a node that declares a GPU it has not
        raise RaycatError("train.use_gpu is true but this worker has no CUDA GPU")
    edges = torch.tensor(config["edges"], dtype=torch.float32, device=device)
    centres = (edges[1:] + edges[:-1]) / 2
    weights = torch.tensor(config["class_weights"], dtype=torch.float32, device=device)
    model = build_model(cfg.model, network_channels(cfg))
    init_from = config.get("init_from")  # fine-tuning (raycat.photoz.finetune)
    if init_from:
        load_init_weights(model, init_from, cfg.data.storage_options)
    frozen = freeze(model, cfg.model.arch, cfg.train.freeze if init_from else "none")
    peak_lr = cfg.train.finetune_lr if init_from else cfg.train.lr
    optimiser = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=peak_lr,
        weight_decay=cfg.train.weight_decay,
    )
    start_epoch = _restore(model, optimiser, config["identity"])
    model = ray.train.torch.prepare_model(model)
    gpu = device.type == "cuda"
    if gpu:
        model = model.to(memory_format=torch.channels_last)

    # one epoch's stream starts while the last one's validation and checkpoint run
    ingest = WarmEpochs(lambda e: _batches("train", cfg, device, e), cfg.train.epochs)
    for epoch in range(start_epoch, cfg.train.epochs):
        for group in optimiser.param_groups:  # cosine decay, a function of the epoch alone
            group["lr"] = cosine_lr(peak_lr, epoch, cfg.train.epochs)
        model.train()
        keep_frozen_in_eval(frozen)
        started, seen, total_loss, first_batch_s = time.perf_counter(), 0, 0.0, None
        for batch in ingest.epoch(epoch):
            first_batch_s = first_batch_s or time.perf_counter() - started  # ingest start-up
            x = dihedral_augment(batch[schema.CUBE])
            x = x.to(memory_format=torch.channels_last) if gpu else x
            target = torch.bucketize(batch[schema.Z_SPEC].clamp(edges[0], edges[-1]), edges[1:-1])
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=gpu):
                loss = F.cross_entropy(model(x).float(), target, weight=weights)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            seen += len(target)
            total_loss += loss.item() * len(target)
        metrics = {
            "epoch": epoch,
            "start_epoch": start_epoch,
            "train_loss": total_loss / max(seen, 1),
            "images_per_s": seen / (time.perf_counter() - started),
            "first_batch_s": first_batch_s or 0.0,
        }
        validation, calibration = _validate(
            model, cfg, device, centres, edges, config["class_weights"]
        )
        metrics.update(validation)
        _report(model, optimiser, epoch, metrics, config["identity"], calibration)
        if ray.train.get_context().get_world_rank() == 0:
            # not print(): Ray Train patches it and, with the worker's redirected streams,
            # every printed line reaches the driver twice
            sys.stderr.write(_epoch_line(metrics, cfg.train.epochs) + "\n")
            sys.stderr.flush()


def _quiet_report_lines() -> None:
    """Ray Train 2.60 logs every report (the metrics dict and checkpoint path) at INFO on a
    logger named after its file path, which the run's LoggingConfig does not reach."""
    with contextlib.suppress(ImportError):  # a private module: gone in a later Ray is fine
        from ray.train.v2._internal.execution import context

        logging.getLogger(context.__file__).setLevel(logging.WARNING)


def _epoch_line(metrics: dict, epochs: int) -> str:
    """One progress line per epoch (Ray Train's own report lines are turned off)."""
    line = (
        f"raycat: epoch {metrics['epoch'] + 1}/{epochs}: train loss "
        f"{metrics['train_loss']:.3f}, {metrics['images_per_s']:.0f} images/s"
    )
    if "val_nmad" in metrics:
        line += (
            f", validation NMAD {metrics['val_nmad']:.4f}, outliers "
            f"{metrics['val_outliers_015']:.1%} ({metrics['val_objects']} objects)"
        )
    return line


def _batches(split: str, cfg: RaycatConfig, device, epoch: int = 0):
    import ray.train
    import torch

    shard = ray.train.get_dataset_shard(split)
    train = split == "train"
    # The cutouts arrive in HEALPix order: a batch would hold neighbours from a few tiles
    # (shared depth and PSF), skewing BatchNorm's batch statistics, and the same batches
    # every epoch. A bounded buffer mixes SHUFFLE_BATCHES batches' worth of rows, with a
    # seed per epoch so a rerun trains on the same batches.
    shuffle = (
        {
            "local_shuffle_buffer_size": SHUFFLE_BATCHES * cfg.train.batch_size,
            "local_shuffle_seed": cfg.train.seed + epoch,
        }
        if train
        else {}
    )
    # Training drops a last partial batch: BatchNorm cannot train on a batch of one.
    return shard.iter_torch_batches(
        batch_size=cfg.train.batch_size,
        device=device,
        drop_last=train,
        prefetch_batches=4,  # keep the next batches decoding while the step runs
        dtypes={schema.CUBE: torch.float32, schema.Z_SPEC: torch.float32},
        **shuffle,
    )


class WarmEpochs:
    """The batches of epoch after epoch from ``batches(epoch)`` (an iterable per epoch), each
    epoch's stream started as soon as the one before is drained, on a thread that waits for
    its first batch.

    A Ray Train shard starts a fresh streaming execution every epoch: 1.7-1.9 s before its
    first batch on 2 cores. Started ahead, that start-up runs while the training loop
    validates and checkpoints; every epoch still reads each row once, in its own order.
    """

    def __init__(self, batches, epochs: int):
        self.batches, self.epochs = batches, epochs
        self._ahead: tuple | None = None  # (epoch, thread, {"first": [...], "rest": it})

    def epoch(self, epoch: int):
        first, rest = self._take(epoch)
        yield from first
        yield from rest
        if epoch + 1 < self.epochs:
            self._start(epoch + 1)

    def _start(self, epoch: int) -> None:
        import threading

        stream = self.batches(epoch)  # made here: on the training context's thread
        started: dict = {}

        def first_batch() -> None:
            try:
                rest = iter(stream)
                started["first"], started["rest"] = [next(rest)], rest
            except StopIteration:
                started["first"], started["rest"] = [], iter(())
            except BaseException as err:  # raised where the loop reads the epoch
                started["error"] = err

        thread = threading.Thread(target=first_batch, name=f"ingest-epoch-{epoch}", daemon=True)
        thread.start()
        self._ahead = (epoch, thread, started)

    def _take(self, epoch: int) -> tuple:
        if self._ahead is None or self._ahead[0] != epoch:
            return [], iter(self.batches(epoch))
        _, thread, started = self._ahead
        self._ahead = None
        thread.join()
        if "error" in started:
            raise started["error"]
        return started["first"], started["rest"]


def _validate(
    model, cfg: RaycatConfig, device, centres, edges, weights: list[float]
) -> tuple[dict, dict | None]:
    """Validation metrics of this worker's shard (NMAD, outliers of the raw z_mean) and, from
    the sums of every worker, the PDF calibration (``raycat.photoz.calibrate``) with its
    metrics; the calibration is None without validation objects."""
    import torch

    from raycat.photoz.calibrate import CalibrationSums
    from raycat.photoz.pdf import nmad, outlier_fraction

    model.eval()
    z_mean, z_spec = [], []
    sums = CalibrationSums.zeros(device)
    with torch.no_grad():
        for batch in _batches("val", cfg, device):
            logits = model(batch[schema.CUBE]).float()
            pdf = torch.softmax(logits, dim=1)
            z_mean.append((pdf @ centres).cpu().numpy())
            z_spec.append(batch[schema.Z_SPEC].cpu().numpy())
            sums.add(logits, batch[schema.Z_SPEC], edges, weights)
    sums = sums.all_reduce()  # on every worker, an empty shard's too: it is a collective
    metrics: dict = {}
    calibration = None
    if sums.objects:
        fitted, metrics = sums.fit(weights)
        calibration = fitted.model_dump()
    if not z_mean:
        return metrics, calibration
    z_pred, z_true = np.concatenate(z_mean), np.concatenate(z_spec)
    metrics |= {
        "val_nmad": float(nmad(z_pred, z_true)),
        "val_outliers_015": float(outlier_fraction(z_pred, z_true, 0.15)),
        "val_objects": len(z_true),
    }
    return metrics, calibration


def _load_checkpoint(checkpoint) -> dict:
    """The state ``_report`` saved in a Ray Train checkpoint (model, optimiser, epoch), on
    the CPU; ``weights_only``, so no pickled code runs."""
    import torch

    with checkpoint.as_directory() as path:
        return torch.load(
            os.path.join(path, CHECKPOINT_FILE), weights_only=True, map_location="cpu"
        )


def _restore(model, optimiser, identity: dict) -> int:
    """Load the last checkpoint if this run has one; the epoch to start from. The driver
    checked the checkpoint's settings already (``check_resume``); this is the last guard."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0
    with checkpoint.as_directory() as path:
        recorded = _read_record(os.path.join(path, schema.CHECKPOINT_CONFIG_FILE))
    _refuse_changed(recorded, identity, "this run's checkpoint")
    state = _load_checkpoint(checkpoint)
    model.load_state_dict(state["model"])
    optimiser.load_state_dict(state["optimiser"])
    return int(state["epoch"]) + 1


def _report(
    model, optimiser, epoch: int, metrics: dict, identity: dict, calibration: dict | None = None
) -> None:
    import ray.train
    import torch

    with tempfile.TemporaryDirectory() as path:
        checkpoint = None
        if ray.train.get_context().get_world_rank() == 0:
            plain = getattr(model, "module", model)  # unwrap DDP
            state = {"model": plain.state_dict(), "optimiser": optimiser.state_dict()}
            # the epoch's PDF calibration travels with its weights (plain lists: weights_only)
            state |= {"epoch": epoch, "calibration": calibration}
            torch.save(state, os.path.join(path, CHECKPOINT_FILE))
            with open(os.path.join(path, schema.CHECKPOINT_CONFIG_FILE), "w") as f:
                json.dump(identity, f, sort_keys=True)
            checkpoint = ray.train.Checkpoint.from_directory(path)
        ray.train.report(metrics, checkpoint=checkpoint)


# --- what a checkpoint is valid for -------------------------------------------------------


def run_identity(cfg: RaycatConfig) -> dict:
    """The settings a training run's checkpoints are valid for, by config key.

    The whole model section (n_bins, arch and stem shape the tensors; z range and dropout
    change what the weights mean), the plan fingerprint (bands, cutout size, pixel scale,
    softening, survey settings; the object list and tile index as stored), and the
    validation split (``val_fraction``, ``seed``: another split would train on objects held
    out before). Epochs, learning rate, batch size and workers are left out: they may change.
    """
    from raycat.photoz.finetune import init_artifact_meta
    from raycat.plan.fingerprint import cutout_fingerprint

    model = cfg.model.model_dump(mode="json")
    identity = {
        **{f"model.{k}": v for k, v in model.items()},
        **cutout_fingerprint(cfg),
        "train.val_fraction": cfg.train.val_fraction,
        "train.seed": cfg.train.seed,
    }
    init = init_artifact_meta(cfg)  # checks the artifact against the config, before Ray
    if init is not None:  # a fine-tuning run: which model it starts from, what it freezes
        identity |= {"train.init_from": init.model_id, "train.freeze": cfg.train.freeze}
    return identity


def check_resume(cfg: RaycatConfig, identity: dict | None = None) -> None:
    """Refuse, in one line naming the changed keys, to resume a run whose checkpoints were
    made with other settings (or by a raycat that recorded none); a new run passes."""
    identity = run_identity(cfg) if identity is None else identity
    run_dir = join(storage_path(cfg.train.storage_path), cfg.train.run_name)
    with storage_errors(f"cannot read the training run {run_dir}"):
        fs, path = filesystem(run_dir, cfg.data.storage_options)
        found = fs.glob(f"{path.rstrip('/')}/{schema.RAY_CHECKPOINT_GLOB}", detail=True)
        checkpoints = [name for name, info in found.items() if info["type"] == "directory"]
        records = [_read_record(f"{c}/{schema.CHECKPOINT_CONFIG_FILE}", fs) for c in checkpoints]
    for recorded in records:
        _refuse_changed(recorded, identity, f"run {cfg.train.run_name!r} in {run_dir}")


def _read_record(path: str, fs=None) -> dict | None:
    """A checkpoint's settings record; None when it has none."""
    try:
        with fs.open(path, "r") if fs is not None else open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def _refuse_changed(recorded: dict | None, identity: dict, where: str) -> None:
    from raycat.plan.fingerprint import changed_keys

    if recorded is None:
        changed = ["no settings recorded: an older raycat wrote it"]
    else:
        changed = changed_keys(recorded, identity)
    if changed:
        raise RaycatError(
            f"cannot resume {where}: its checkpoints were made with other settings (changed: "
            f"{', '.join(changed[:6])}); set train.run_name to start a new run"
        )


# --- driver side --------------------------------------------------------------------------


def network_channels(cfg: RaycatConfig) -> int:
    """Input channels of the network ``cfg`` trains: the bands, and the E(B-V) plane with
    ``data.ebv_column``."""
    from raycat.photoz.inputs import input_channels

    return input_channels(len(cfg.cutouts.bands), bool(cfg.data.ebv_column))


def _keep_split(
    batch: dict, validation: bool, fraction: float, seed: int, ebv: bool = False
) -> dict:
    """The rows of one split, the cube replaced by the network's input (the E(B-V) plane
    added here, once per row, not in every epoch's loop)."""
    from raycat.photoz.inputs import network_input

    keep = usable_for_training(batch)
    keep &= is_validation(batch[schema.ID], fraction, seed) == validation
    kept = {k: v[keep] for k, v in batch.items()}
    return {schema.CUBE: network_input(kept, ebv), schema.Z_SPEC: kept[schema.Z_SPEC]}


def split_datasets(cutouts, cfg: RaycatConfig) -> dict:
    """Training and validation datasets from cutout rows (streamed, never collected)."""
    ebv = bool(cfg.data.ebv_column)
    columns = [schema.ID, schema.CUBE, schema.Z_SPEC, schema.FLAGS] + ([schema.EBV] if ebv else [])
    rows = cutouts.select_columns(columns)
    return {
        name: rows.map_batches(
            _keep_split,
            batch_format="numpy",
            fn_kwargs={
                "validation": name == "val",
                "fraction": cfg.train.val_fraction,
                "seed": cfg.train.seed,
                "ebv": ebv,
            },
        )
        for name in ("train", "val")
    }


def training_redshifts(train_ds) -> np.ndarray:
    """The training set's redshifts (one float per object, for the n(z) weights)."""
    return np.concatenate(
        [
            b[schema.Z_SPEC]
            for b in train_ds.select_columns([schema.Z_SPEC]).iter_batches(batch_format="numpy")
        ]
        or [np.empty(0)]
    )


def storage_path(path: str) -> str:
    """Ray Train wants an absolute local path or a URL."""
    return path if has_scheme(path) else os.path.abspath(path)


def fit(cfg: RaycatConfig, cutouts) -> dict:
    """Train on the cutout dataset, write the model artifact, return the final metrics."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from raycat.photoz.finetune import init_artifact_path
    from raycat.photoz.pdf import bin_edges

    if cfg.train.use_gpu:  # before anything starts: Ray would wait for ever for the GPUs
        from raycat.photoz.infer import require_gpus

        require_gpus("train.use_gpu")
    identity = run_identity(cfg)
    check_resume(cfg, identity)  # before any data streams or worker starts
    datasets = split_datasets(cutouts, cfg)
    z = training_redshifts(datasets["train"])
    if len(z) == 0:
        raise RaycatError("no usable training objects (need z_spec and pixels)")
    edges = bin_edges(cfg.model.z_min, cfg.model.z_max, cfg.model.n_bins)
    loop_config = {
        "cfg": cfg.model_dump(mode="json"),
        "edges": edges.tolist(),
        "class_weights": class_weights(z, edges, cfg.train.max_class_weight).tolist(),
        "identity": identity,
        "init_from": init_artifact_path(cfg),
    }
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        datasets=datasets,
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.train.num_workers,
            use_gpu=cfg.train.use_gpu,
            resources_per_worker=worker_resources(cfg.train),
        ),
        run_config=ray.train.RunConfig(
            name=cfg.train.run_name,
            storage_path=storage_path(cfg.train.storage_path),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            # Ray Train logs every report (the whole metrics dict and the checkpoint path)
            # at INFO: the loop prints one line per epoch instead
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
            failure_config=ray.train.FailureConfig(max_failures=cfg.train.max_failures),
        ),
    )
    result = trainer.fit()
    metrics = dict(result.metrics or {})
    metrics["train_objects"] = len(z)
    metrics["train_median_z"] = float(np.median(z))
    _write_artifact(cfg, result.checkpoint, metrics)
    return metrics


def worker_resources(train: TrainConfig) -> dict[str, float] | None:
    """What each training worker requests: Ray Train's default (one GPU, or one CPU) plus
    ``train.resources``, which place the workers on the node types that declare them; None
    (Ray's default) without custom resources. Ray Train drops its default once any are given,
    hence the explicit one."""
    if not train.resources:
        return None
    return {("GPU" if train.use_gpu else "CPU"): 1.0, **train.resources}


def _write_artifact(cfg: RaycatConfig, checkpoint, metrics: dict) -> None:
    """The model artifact from the run's last checkpoint, with that epoch's PDF calibration
    (none from a checkpoint an older raycat made)."""
    from raycat.photoz.calibrate import Calibration
    from raycat.photoz.model import ArtifactMeta, build_model, save_artifact

    state = _load_checkpoint(checkpoint)
    model = build_model(cfg.model, network_channels(cfg))
    model.load_state_dict(state["model"])
    meta = ArtifactMeta.from_config(cfg, metrics=metrics)
    meta.calibration = Calibration.model_validate(state.get("calibration") or {})
    save_artifact(model, cfg.train.model_out, meta, storage_options=cfg.data.storage_options)
