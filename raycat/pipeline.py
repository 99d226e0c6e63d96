"""The order of the stages, and only that: manifest -> cutouts -> train / infer -> catalog.

Each function here wires pure stage code into Ray Data or Ray Train; the CLI, the demo and
the `ray job submit` entry points in jobs/ all call these.
"""

from __future__ import annotations

import importlib
import json
import sys
import threading
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from raycat import schema
from raycat.config import RaycatConfig
from raycat.errors import RaycatError
from raycat.fsutil import arrow_filesystem, filesystem
from raycat.plan.manifest import drop_units
from raycat.runtime import READ_ARGS

if TYPE_CHECKING:
    from raycat.photoz.attribute import Players
    from raycat.photoz.model import ArtifactMeta

CUTOUT_BATCH = 128  # objects per cutout call: 9 x 32 x 32 float32 cubes, ~5 MB
CUTOUTS_PLAN_FILE = "_plan.json"  # beside a materialised cutout dataset: order, unit counts


def log(message: str) -> None:
    print(f"raycat: {message}", file=sys.stderr, flush=True)


@dataclass
class PlanSummary:
    """What a materialised cutout dataset was planned with (saved beside it)."""

    order: int
    unit_counts: dict[int, int]
    bands: list[str]
    has_z_spec: bool


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
    )


def plan_and_cut(cfg: RaycatConfig):
    """(PlanSummary, lazy dataset factory) for streaming cutouts straight from the tiles."""
    from raycat.plan.manifest import plan

    manifest = plan(cfg)
    has_z = schema.Z_SPEC in manifest.columns
    summary = PlanSummary(manifest.order, manifest.unit_counts, manifest.bands, has_z)
    log(
        f"planned {manifest.n_objects} objects in {len(manifest.units)} work units "
        f"(HEALPix order {manifest.order})"
    )
    return summary, lambda skip=frozenset(): cutout_rows(cfg, manifest.rows(skip))


def cutouts_url(cfg: RaycatConfig) -> str:
    """Where the materialised cutouts live (``cutouts.output``); an error when unset."""
    if not cfg.cutouts.output:
        raise RaycatError("cutouts.output is not set: name where the cutouts are written")
    return cfg.cutouts.output


def materialise_cutouts(cfg: RaycatConfig) -> PlanSummary:
    """Write the cutouts of every object to ``cutouts.output`` as a Parquet dataset (reused
    across epochs)."""
    url = cutouts_url(cfg)
    summary, make = plan_and_cut(cfg)
    started = time.perf_counter()
    pafs, path = arrow_filesystem(url, cfg.data.storage_options)
    make().write_parquet(path, filesystem=pafs)
    fs, plan_file = _plan_file(url, cfg)
    fs.pipe_file(plan_file, json.dumps(asdict(summary)).encode())
    elapsed = time.perf_counter() - started
    n = sum(summary.unit_counts.values())
    log(f"cut {n} objects in {elapsed:.1f} s ({n / elapsed:.0f} objects/s) -> {url}")
    return summary


def read_materialised(cfg: RaycatConfig):
    """(PlanSummary, dataset factory) over the cutout dataset at ``cutouts.output``."""
    import ray.data

    url = cutouts_url(cfg)
    fs, plan_file = _plan_file(url, cfg)
    if not fs.exists(plan_file):
        raise RaycatError(f"no cutout dataset at {url} (run `raycat cutouts` first)")
    raw = json.loads(fs.cat_file(plan_file))
    raw["unit_counts"] = {int(k): v for k, v in raw["unit_counts"].items()}
    summary = PlanSummary(**raw)
    pafs, papath = arrow_filesystem(url, cfg.data.storage_options)

    def make(skip=frozenset()):
        ds = ray.data.read_parquet(
            papath, filesystem=pafs, file_extensions=["parquet"], **READ_ARGS
        )
        if skip:
            ds = ds.map_batches(drop_units, fn_kwargs={"skip": sorted(skip)}, batch_format="pandas")
        return ds

    return summary, make


def cutout_source(cfg: RaycatConfig):
    """Materialised cutouts when the config names a dataset that exists, else streaming."""
    url = cfg.cutouts.output
    if url:
        fs, plan_file = _plan_file(url, cfg)
        if fs.exists(plan_file):
            return read_materialised(cfg)
    return plan_and_cut(cfg)


def _plan_file(url: str, cfg: RaycatConfig):
    fs, path = filesystem(url, cfg.data.storage_options)
    return fs, f"{path.rstrip('/')}/{CUTOUTS_PLAN_FILE}"


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


def run_infer(cfg: RaycatConfig) -> dict:
    """Predict every object and write the HATS catalog; finished partitions are skipped.

    Runs up to ``infer.passes`` streaming passes: a node lost mid-pass can take rows in flight
    with it (or the plan's blocks), so the partitions it left unwritten are redone by the next
    pass, planned afresh. A bug in raycat's own code is not retried.
    """
    from raycat.catalog.write import CatalogWriter
    from raycat.photoz.model import read_artifact_meta

    meta = read_artifact_meta(cfg.infer.model, cfg.data.storage_options)
    _check_artifact_matches(cfg, meta)
    summary, make = cutout_source(cfg)
    players = meta.players(cfg.infer.attributions)  # once: for the schema and the Predictor
    cat_schema = _catalog_schema(cfg, meta, summary, players)
    writer = CatalogWriter(
        cfg.infer.catalog,
        cat_schema,
        summary.order,
        mode=cfg.infer.mode,
        storage_options=cfg.data.storage_options,
    )
    skipped = writer.done_pixels() & set(summary.unit_counts)
    log(
        f"inference: {len(summary.unit_counts) - len(skipped)} of {len(summary.unit_counts)} "
        f"partitions to write ({len(skipped)} already done)"
    )
    started, reported = time.perf_counter(), len(skipped)
    passes = 0
    while True:
        done = writer.done_pixels() & set(summary.unit_counts)
        todo = {u: n for u, n in summary.unit_counts.items() if u not in done}
        if not todo or passes == cfg.infer.passes:
            break
        passes += 1
        if passes > 1:
            log(f"pass {passes}: {len(todo)} partitions left unwritten; planning them again")
            summary, make = cutout_source(cfg)
        try:
            for row in _predict_pass(cfg, make(done), todo, cat_schema, players, summary.order):
                if reported == len(skipped):
                    _import_in_background("hats")  # for finalize; the driver idles meanwhile
                reported += 1
                log(
                    f"partition {row[schema.WORK_UNIT]} written ({row['rows']} rows) "
                    f"[{reported}/{len(summary.unit_counts)}]"
                )
        except Exception as err:
            if not _lost_infrastructure(err) or passes == cfg.infer.passes:
                raise
            log(f"pass {passes} failed ({type(err).__name__}): resuming the unfinished partitions")
    finished = writer.done_pixels() & set(summary.unit_counts)
    missing = set(summary.unit_counts) - finished
    if missing:
        raise RuntimeError(
            f"work units {sorted(missing)[:10]} were not written after {cfg.infer.passes} passes"
        )
    totals = writer.finalize()
    elapsed = time.perf_counter() - started
    log(f"catalog -> {cfg.infer.catalog}: {totals} in {elapsed:.1f} s ({passes} passes)")
    flagged = writer.flag_counts(finished - skipped)
    if flagged:
        log(
            "objects flagged in the partitions written: "
            + ", ".join(f"{name} {n}" for name, n in flagged.items())
        )
    return {
        "partitions_written": len(finished - skipped),
        "partitions_skipped": len(skipped),
        "passes": passes,
        "seconds": elapsed,
        "flagged": flagged,
        **totals,
    }


def _import_in_background(module: str) -> None:
    """Start importing ``module`` on a thread (hats takes about a second to import)."""
    threading.Thread(target=importlib.import_module, args=(module,), daemon=True).start()


def _catalog_schema(cfg: RaycatConfig, meta: ArtifactMeta, summary: PlanSummary, players: Players):
    """The catalog's Arrow schema for this model, plan and attribution players: every column
    the sink writes."""
    from raycat.catalog.info import schema_for_artifact

    return schema_for_artifact(
        meta,
        config_hash=cfg.config_hash(),
        pdf_dtype=cfg.infer.pdf_dtype,
        has_z_spec=summary.has_z_spec,
        attr_players=players.names,
        has_epistemic=cfg.infer.mc_dropout_passes > 1,
    )


def _predict_pass(
    cfg: RaycatConfig, cutouts, todo: dict[int, int], cat_schema, players: Players, order: int
):
    """One streaming pass: Predictor pool -> PartitionSink; yields a row per unit written."""
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
    )
    partitions = predicted.map_batches(
        PartitionSink,
        batch_size=None,
        batch_format="numpy",
        fn_constructor_kwargs={
            "root": cfg.infer.catalog,
            "storage_options": opts,
            "catalog_schema": cat_schema,
            "order": order,
            "unit_counts": todo,
        },
        compute=ray.data.ActorPoolStrategy(size=1),
        num_cpus=0.1,
    )
    yield from partitions.iter_rows()


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
