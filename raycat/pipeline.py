"""The order of the stages, and only that: manifest -> cutouts -> train / infer -> catalog.

Each function here wires pure stage code into Ray Data or Ray Train; the CLI, the demo and
the `ray job submit` entry points in jobs/ all call these.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from raycat import schema
from raycat.background import import_in_background, imported, in_background
from raycat.config import RaycatConfig
from raycat.errors import RaycatError

if TYPE_CHECKING:
    import pyarrow as pa

    from raycat.photoz.attribute import Players
    from raycat.photoz.model import ArtifactMeta

CUTOUT_BATCH = 128  # objects per cutout call: 9 x 32 x 32 float32 cubes, ~5 MB
# Object store memory one inference pass may use, in batches per actor (cutout and Predictor
# actors), and at least STORE_FLOOR bytes: enough for every actor's batches in flight and a
# few queued. Without a cap Ray Data lets cutouts queue for a slower Predictor up to half the
# object store, so the queue, and the shared pages each actor maps, grew with the objects
# (benchmarks/memory_scale.py on 2 CPUs: 200 MiB queued at 20k objects; 90 MiB with the cap).
STORE_BATCHES, STORE_FLOOR = 4, 256 * 2**20


def log(message: str) -> None:
    print(f"raycat: {message}", file=sys.stderr, flush=True)


def _int64_ids() -> pa.DataType:
    import pyarrow as pa

    return pa.int64()


@dataclass
class PlanSummary:
    """What a materialised cutout dataset was planned with (saved beside it)."""

    unit_counts: dict[int, int]  # objects per work unit, by NUNIQ key (raycat.healpix)
    bands: list[str]
    has_z_spec: bool
    unit_hashes: dict[int, int] = field(default_factory=dict)  # id-set hash per work unit
    # the ids' Arrow type (int64, or string for text ids): the catalog's id column type.
    # A plan file without one was written when every id was an integer.
    id_type: pa.DataType = field(default_factory=_int64_ids)

    def to_record(self) -> dict:
        """The summary as JSON-ready values (the id type by its Arrow name)."""
        return {**asdict(self), "id_type": str(self.id_type)}

    @property
    def units(self) -> list[int]:
        return sorted(self.unit_counts)

    @classmethod
    def from_record(cls, record: dict) -> PlanSummary:
        """The summary saved by ``to_record`` (per-unit maps get their int keys back)."""
        import pyarrow as pa

        from raycat.healpix import unit_key

        raw = dict(record)
        order = raw.pop("order", None)  # an older raycat: pixels of one order, not NUNIQ keys
        for key, value in raw.items():  # JSON keys are strings
            if key.startswith("unit_") and isinstance(value, dict):
                raw[key] = {
                    int(k) if order is None else unit_key(order, int(k)): v
                    for k, v in value.items()
                }
        if "id_type" in raw:
            raw["id_type"] = pa.type_for_alias(raw["id_type"])
        return cls(**raw)


# --- cutouts ------------------------------------------------------------------------------


def cutout_rows(cfg: RaycatConfig, rows):
    """Cutout cubes for manifest rows, by an autoscaling pool of CutoutActors."""
    import ray.data

    from raycat.cutouts.actor import CutoutActor

    return rows.map_batches(
        CutoutActor,
        batch_size=CUTOUT_BATCH,
        batch_format="numpy",
        fn_constructor_kwargs={
            "store": cfg.data.store,
            "storage_options": cfg.data.storage_options,
            "cutout_cfg": cfg.cutouts,
            "read_attempts": cfg.data.read_attempts,
        },
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=cfg.cutouts.actors),
        num_cpus=cfg.cutouts.cpus_per_actor,
        resources=dict(cfg.cutouts.resources),  # placement: only node types that declare them
    )


def plan_and_cut(cfg: RaycatConfig, keep: Sequence[int] = ()):
    """(PlanSummary, lazy dataset factory) for streaming cutouts straight from the tiles;
    ``keep``: existing catalog partitions the plan reuses."""
    from raycat.plan.manifest import plan

    manifest = plan(cfg, keep)
    has_z = schema.Z_SPEC in manifest.columns
    summary = PlanSummary(
        manifest.unit_counts,
        manifest.bands,
        has_z,
        manifest.unit_hashes,
        manifest.id_type,
    )
    log(
        f"planned {manifest.n_objects} objects in {len(manifest.units)} work units "
        f"(HEALPix orders {_orders(_shape(summary))})"
    )
    return summary, lambda skip=frozenset(): cutout_rows(cfg, manifest.rows(skip))


def cutouts_url(cfg: RaycatConfig) -> str:
    """Where the materialised cutouts live (``cutouts.output``); an error when unset."""
    if not cfg.cutouts.output:
        raise RaycatError("cutouts.output is not set: name where the cutouts are written")
    return cfg.cutouts.output


def materialise_cutouts(cfg: RaycatConfig) -> PlanSummary:
    """Write the cutouts of every object to ``cutouts.output``, one set of parts per work unit
    (reused across epochs); a rerun rebuilds the dataset, never appends to it.

    The plan file (summary and fingerprint of the inputs) is written last, once every unit
    holds all its rows: a dataset without one is never read.
    """
    from raycat.cutouts.dataset import clear_dataset, write_units
    from raycat.plan.fingerprint import FINGERPRINT, cutout_fingerprint, write_plan_record
    from raycat.progress import Progress

    url = cutouts_url(cfg)
    fingerprint = cutout_fingerprint(cfg)  # of the inputs as they are before planning
    summary, make = plan_and_cut(cfg)
    started = time.perf_counter()
    clear_dataset(url, cfg.data.storage_options)
    progress = Progress(sum(summary.unit_counts.values()), "objects", stage="cutouts")
    written = write_units(make(), url, cfg.data.storage_options, on_rows=progress.update)
    short = {u: (written.get(u, 0), n) for u, n in summary.unit_counts.items() if written[u] != n}
    if short or set(written) - set(summary.unit_counts):
        raise RuntimeError(f"cutouts of work units (written, planned) {short} do not match")
    write_plan_record(cfg, {**summary.to_record(), FINGERPRINT: fingerprint})
    elapsed = time.perf_counter() - started
    n = sum(summary.unit_counts.values())
    log(f"cut {n} objects in {elapsed:.1f} s ({n / elapsed:.0f} objects/s) -> {url}")
    return summary


def read_materialised(cfg: RaycatConfig):
    """(PlanSummary, dataset factory) over the cutout dataset at ``cutouts.output``; a
    one-line error when there is none or it was made for other inputs."""
    from raycat.plan.fingerprint import reusable_plan

    record = reusable_plan(cfg)
    if record is None:
        raise RaycatError(f"no cutout dataset at {cutouts_url(cfg)} (run `raycat cutouts` first)")
    return _materialised(cfg, record)


def _materialised(cfg: RaycatConfig, record: dict):
    from raycat.cutouts.dataset import read_units
    from raycat.plan.fingerprint import FINGERPRINT

    summary = PlanSummary.from_record({k: v for k, v in record.items() if k != FINGERPRINT})
    read = partial(read_units, cutouts_url(cfg), cfg.data.storage_options)
    return summary, _keyed(read, summary.units)


def _keyed(read, units: Sequence[int]):
    """A rows factory over ``read()`` that keys each row by its unit among ``units`` (from
    its ``_healpix_29``: rows cut by an older raycat carry pixels, not NUNIQ keys) and leaves
    out the units ``skip``."""
    from raycat.healpix import Partitioning

    partitioning = Partitioning(units)

    def make(skip=frozenset()):
        return read().map_batches(
            _at_units,
            fn_kwargs={"units": partitioning, "skip": np.array(sorted(skip), dtype=np.int64)},
            batch_format="numpy",
        )

    return make


def cutout_source(cfg: RaycatConfig, keep: Sequence[int] = ()):
    """Materialised cutouts when ``cutouts.output`` holds a finished dataset made for these
    inputs, streaming from the tiles when it holds none (planned to reuse the partitions
    ``keep``); stale cutouts are refused (one line naming what changed), never read."""
    from raycat.plan.fingerprint import reusable_plan

    record = reusable_plan(cfg)
    return plan_and_cut(cfg, keep) if record is None else _materialised(cfg, record)


# --- train --------------------------------------------------------------------------------


def run_train(cfg: RaycatConfig) -> dict:
    """Train on the cutouts (materialised or streamed); writes the model artifact."""
    from raycat.photoz.train import fit

    _, make = cutout_source(cfg)
    started = time.perf_counter()
    metrics = fit(cfg, make())
    log(
        f"trained in {time.perf_counter() - started:.0f} s: "
        + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float))
    )
    log(f"model artifact -> {cfg.train.model_out}")
    return metrics


# --- infer + catalog ----------------------------------------------------------------------


def _check_artifact_matches(cfg: RaycatConfig, meta) -> None:
    grid = (meta.bands, meta.size_px, meta.pixel_scale)
    wanted = (cfg.cutouts.bands, cfg.cutouts.size_px, cfg.cutouts.pixel_scale)
    if grid != wanted:
        raise RaycatError(
            f"the model was trained on bands/size/scale {grid}, the config asks for {wanted}"
        )
    if meta.ebv_input and not cfg.data.ebv_column:
        raise RaycatError(
            "the model takes E(B-V) as an input (it was trained with data.ebv_column): set "
            "data.ebv_column to the object list's E(B-V) column"
        )


def run_infer(cfg: RaycatConfig) -> dict:
    """Predict the planned objects and write the HATS catalog, or bring it up to date.

    The catalog is a contract with its plan (``raycat.catalog.job``): partitions whose done
    marker matches the plan (objects, id hash, model, config) are kept, changed ones are
    rewritten and vanished ones removed, at the catalog's own HEALPix order; one job at a time
    holds its lease; an overwrite writes a new version beside the old one and switches to it
    once complete. Runs up to ``infer.passes`` streaming passes: a node lost mid-pass can take
    rows in flight with it, so the next pass redoes what it left unwritten. A bug in raycat's
    own code is not retried.
    """
    from raycat.catalog.job import CatalogJob
    from raycat.photoz.model import check_weights, read_artifact_meta

    if cfg.infer.use_gpu:  # before anything starts: Ray would wait for ever for a GPU
        from raycat.photoz.infer import require_gpus

        require_gpus("infer.use_gpu")
    meta = read_artifact_meta(cfg.infer.model, cfg.data.storage_options)
    # a corrupt model is a one-line error before anything changes (no torch in the driver);
    # the weights are hashed on a thread while the plan runs (hashing releases the GIL)
    weights = in_background(check_weights, cfg.infer.model, cfg.data.storage_options)
    _check_artifact_matches(cfg, meta)
    players = meta.players(cfg.infer.attributions)  # once: for the schema and the Predictor
    started, infer = time.perf_counter(), cfg.infer
    job = CatalogJob(
        infer.catalog,
        cfg.data.storage_options,
        model_id=meta.model_id,
        config_hash=cfg.config_hash(),
        mode=infer.mode,
        lease_seconds=infer.lease_seconds,
        region=infer.region,
        catalog_name=infer.hats_name,
        margin_arcsec=infer.margin_arcsec,
    )
    with job:
        summary, make = _plan_at(cfg, job.partitioning)
        cat_schema = _catalog_schema(cfg, meta, summary, players)
        rec = job.reconcile(
            cat_schema, summary.unit_counts, summary.unit_hashes, infer.retry_read_errors
        )
        shape = _orders(_shape(summary))
        log(
            f"catalog {infer.catalog}, {len(summary.units)} partitions at orders {shape}: "
            f"{rec.describe()}"
        )
        if rec.todo:
            weights.result()  # raises for a corrupt model
        job.begin(rec)
        writer = job.writer(cat_schema)
        passes = _write_partitions(cfg, job, writer, rec.todo, (summary, make), players)
        imported("hats")  # finalize imports hats' submodules
        totals = job.finish(rec, infer.max_error_fraction)
    for note in job.notes:
        log(note)
    elapsed = time.perf_counter() - started
    log(f"catalog -> {infer.catalog}: {totals} in {elapsed:.1f} s ({passes} passes)")
    flagged = writer.flag_counts(rec.todo)
    if flagged:
        log(
            "objects flagged in the partitions written: "
            + ", ".join(f"{name} {n}" for name, n in flagged.items())
        )
    return {
        "partitions_written": len(rec.todo),
        "partitions_skipped": len(rec.unchanged),
        **{f"partitions_{kind}": n for kind, n in rec.counts().items()},
        "orders": _shape(summary)["partitions_by_order"],
        "passes": passes,
        "seconds": elapsed,
        "flagged": flagged,
        **totals,
    }


def _plan_at(cfg: RaycatConfig, keep: Sequence[int] | None):
    """(PlanSummary, rows factory) whose work units reuse the partitions ``keep`` (a
    catalog's own: a resume never writes a second, overlapping set).

    Materialised cutouts cut into other units (or without id hashes: an older raycat) are
    regrouped: units, counts and hashes from their ``_healpix_29`` and id columns."""
    from raycat.plan.partition import Rules, units_on_ray

    summary, make = cutout_source(cfg, keep or ())
    if summary.unit_hashes and _reuses(summary.units, keep or ()):
        return summary, make
    rules = Rules(cfg.cutouts.objects_per_unit, cfg.cutouts.healpix_order, tuple(keep or ()))
    keys, counts, hashes = (u.tolist() for u in units_on_ray(make(), rules))
    regrouped = replace(
        summary, unit_counts=dict(zip(keys, counts)), unit_hashes=dict(zip(keys, hashes))
    )
    return regrouped, _keyed(make, keys)


def _reuses(units: Sequence[int], keep: Sequence[int]) -> bool:
    """Whether ``units`` keep each existing partition whole: every unit is one of ``keep``
    or overlaps none of them."""
    from raycat.healpix import Partitioning, unit_ranges

    new = np.setdiff1d(np.asarray(units, dtype=np.int64), np.asarray(keep, dtype=np.int64))
    if not len(keep) or not len(new):
        return True
    return not Partitioning(keep).overlapping(*unit_ranges(new)).any()


def _at_units(batch: dict, units, skip: np.ndarray) -> dict:
    """Cutout rows keyed by their unit in the Partitioning ``units``, leaving out ``skip``."""
    keys = units.unit_of(batch[schema.HEALPIX_29])
    keep = ~np.isin(keys, skip)
    rows = {name: np.asarray(values)[keep] for name, values in batch.items()}
    rows[schema.WORK_UNIT] = keys[keep]
    return rows


def _shape(summary: PlanSummary) -> dict:
    from raycat.plan.partition import summary_of

    return summary_of(np.array(summary.units), np.array(list(summary.unit_counts.values())))


def _orders(shape: dict) -> str:
    """ "6-8" for the orders of a plan's units (one figure when they share one)."""
    orders = sorted(shape["partitions_by_order"])
    return str(orders[0]) if len(orders) == 1 else f"{orders[0]}-{orders[-1]}"


def _write_partitions(cfg: RaycatConfig, job, writer, todo: set[int], plan, players) -> int:
    """Write the partitions ``todo`` in up to ``infer.passes`` passes; returns the passes run.

    A pass that a lost node or process failed is followed by another for what it left
    unwritten, planned afresh at the same order; any other failure ends the job."""
    from raycat.catalog.keys import label
    from raycat.progress import Progress

    (summary, make), passes = plan, 0
    progress = Progress(len(todo), "partitions")
    keep = summary.units  # the units of the first pass: later passes plan the same ones
    while True:
        left = todo - writer.done_units()
        if not left or passes == cfg.infer.passes:
            break
        passes += 1
        if passes > 1:
            log(f"pass {passes}: {len(left)} partitions left unwritten; planning them again")
            summary, make = _plan_at(cfg, keep)
        units = {u: summary.unit_counts[u] for u in left if u in summary.unit_counts}
        sink = _sink_kwargs(cfg, job, writer, units, {u: summary.unit_hashes[u] for u in units})
        try:
            skip = frozenset(summary.unit_counts) - frozenset(units)
            for row in _predict_pass(cfg, make(skip), players, sink):
                # finalize needs hats (about a second of imports): imported while partitions
                # stream, not while the stream starts (the driver's GIL, busy cores)
                import_in_background("hats")
                job.check_held()
                log(
                    f"partition {label(row[schema.WORK_UNIT])} written ({row['rows']} rows) "
                    f"[{progress.advance()}]"
                )
        except Exception as err:
            if not _lost_infrastructure(err) or passes == cfg.infer.passes:
                raise
            log(f"pass {passes} failed ({type(err).__name__}): resuming the unfinished partitions")
    missing = todo - writer.done_units()
    if missing:
        raise RuntimeError(
            f"work units {[label(k) for k in sorted(missing)[:10]]} were not written after "
            f"{cfg.infer.passes} passes"
        )
    return passes


def _sink_kwargs(cfg: RaycatConfig, job, writer, units: dict, hashes: dict) -> dict:
    """What the PartitionSink of one pass is built with: where it writes, the units it
    expects (objects and id hashes), the lease it checks, and HATS' Parquet settings, worked
    out here once (neither the sink nor the driver imports hats for them)."""
    from raycat.catalog.parquet import parquet_settings

    return {
        "root": job.target_url,
        "storage_options": cfg.data.storage_options,
        "catalog_schema": writer.schema,
        "unit_counts": units,
        "unit_hashes": hashes,
        "lease_url": cfg.infer.catalog,
        "job_id": job.job_id,
        "parquet_kwargs": parquet_settings(writer.schema),
    }


def _catalog_schema(cfg: RaycatConfig, meta: ArtifactMeta, summary: PlanSummary, players: Players):
    """The catalog's Arrow schema for this model, plan and attribution players: every column
    the sink writes."""
    from raycat.catalog.info import schema_for_artifact

    return schema_for_artifact(
        meta,
        config_hash=cfg.config_hash(),
        tta=cfg.infer.tta,
        pdf_dtype=cfg.infer.pdf_dtype,
        has_z_spec=summary.has_z_spec,
        id_type=summary.id_type,
        attr_players=players.names,
        has_epistemic=cfg.infer.mc_dropout_passes > 1,
    )


def _predict_pass(cfg: RaycatConfig, cutouts, players: Players, sink: dict):
    """One streaming pass: Predictor pool -> PartitionSink (built with ``sink``); yields a
    row per unit written."""
    import ray.data

    from raycat.catalog.sink import PartitionSink
    from raycat.photoz.infer import Predictor

    opts, gpu = cfg.data.storage_options, cfg.infer.use_gpu
    predicted = cutouts.map_batches(
        Predictor,
        batch_size=cfg.infer.batch_size,
        batch_format="numpy",
        fn_constructor_kwargs={"infer": cfg.infer, "storage_options": opts, "players": players},
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=cfg.infer.actors),
        num_gpus=1 if gpu else 0,
        num_cpus=0.25 if gpu else cfg.infer.cpus_per_actor,
        resources=dict(cfg.infer.resources),  # placement: only node types that declare them
    )
    partitions = predicted.map_batches(
        PartitionSink,
        batch_size=None,
        batch_format="numpy",
        fn_constructor_kwargs=sink,
        compute=ray.data.ActorPoolStrategy(size=1),
        num_cpus=0.1,
    )
    options = partitions.context.execution_options  # this pass's copy, not the global one
    options.resource_limits = options.resource_limits.copy(object_store_memory=_pass_store(cfg))
    yield from partitions.iter_rows()


def _pass_store(cfg: RaycatConfig) -> int:
    """The object store bytes an inference pass may use (``STORE_BATCHES``): a bound that
    depends on the batches and actors, not on the number of objects."""
    row = 4 * len(cfg.cutouts.bands) * cfg.cutouts.size_px**2  # a float32 cube
    rows = cfg.cutouts.actors * CUTOUT_BATCH + cfg.infer.actors * cfg.infer.batch_size
    return max(STORE_FLOOR, STORE_BATCHES * rows * row)


def _lost_infrastructure(err: BaseException) -> bool:
    """True for failures a lost node or process causes (worth another pass), false for
    errors raised by code (a bug, bad input: another pass would fail the same way)."""
    import ray.exceptions as rex

    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, rex.RayActorError):
            return not cause.actor_init_failed
        if isinstance(
            cause,
            (
                rex.ObjectLostError,
                rex.NodeDiedError,
                rex.WorkerCrashedError,
                rex.LocalRayletDiedError,
                rex.RaySystemError,
            ),
        ):
            return True
        cause = cause.__cause__
    return False
