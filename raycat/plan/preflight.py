"""Pre-flight: a stage's inputs that need no Ray, checked before Ray starts.

Starting Ray costs ~18 s on a laptop and a stage then streams for minutes before it touches
a bad input; these checks take a second and end in one line naming the problem: the store's
scheme (gs:// needs gcsfs), credentials and reachability, the object list (present, readable,
with the configured columns), the tile index (readable, every WCS usable), stale
materialised cutouts, and for inference the model artifact.
"""

from __future__ import annotations

from raycat import schema
from raycat.config import DataConfig, RaycatConfig
from raycat.errors import RaycatError
from raycat.fsutil import filesystem, join, storage_errors
from raycat.plan.fingerprint import reusable_plan
from raycat.plan.objects import CSV_SUFFIXES, FITS_SUFFIXES, column_map, objects_url

STAGES = ("plan", "cutouts", "train", "infer")


def check_inputs(cfg: RaycatConfig, stage: str) -> None:
    """Raise a one-line RaycatError for the first input of ``stage`` (one of ``STAGES``)
    that cannot work.

    ``plan`` and ``cutouts`` (which rebuilds its dataset) need the objects and the tile
    index; ``train`` and ``infer`` need them only when no materialised cutouts fit the config
    (stale ones are refused here); ``infer`` also needs the model artifact.
    """
    if stage not in STAGES:
        raise ValueError(f"no pre-flight for stage {stage!r}")
    if stage == "cutouts" and not cfg.cutouts.output:
        raise RaycatError("cutouts.output is not set: where should the cutouts go? (--out)")
    with storage_errors(f"cannot open the tile store {cfg.data.store}"):
        filesystem(cfg.data.store, cfg.data.storage_options)
    if stage in ("plan", "cutouts") or reusable_plan(cfg) is None:
        check_object_list(cfg.data)
        check_tile_index(cfg)
    if stage == "infer":
        check_model(cfg.infer.model, cfg.data.storage_options)


def check_tile_index(cfg: RaycatConfig) -> None:
    """The tile index opens: present, with the columns and WCS planning needs (the
    partitioned kind checks its metadata here, each pixel's rows as they are read)."""
    from raycat.surveys.tile_index import open_tile_index, resolve_tile_index

    url = resolve_tile_index(cfg.data)
    open_tile_index(url, cfg.data.storage_options, cfg.cutouts.bands)


def check_object_list(data: DataConfig) -> None:
    """The object list exists, reads as its format says, and has the configured columns."""
    url = objects_url(data)
    with storage_errors(f"cannot read the object list {url}"):
        fs, path = filesystem(url, data.storage_options)
        if not fs.exists(path):
            raise RaycatError(f"object list not found: {url}")
        names = _column_names(fs, path, url.lower())
    missing = [c for c in column_map(data) if c not in names]
    if missing:
        raise RaycatError(
            f"object list {url} has no column(s) {', '.join(missing)}; columns are: "
            f"{', '.join(names[:20])} (set data.*_column)"
        )


def _column_names(fs, path: str, lower_url: str) -> list[str]:
    """Column names from the list's header alone (Parquet footer, CSV header, FITS header)."""
    if fs.isdir(path):
        parts = sorted(p for p in fs.find(path) if p.endswith(".parquet"))
        if not parts:
            raise RaycatError("a directory without Parquet files")
        path = parts[0]
    with fs.open(path, "rb", compression="infer") as f:
        if lower_url.endswith(CSV_SUFFIXES):
            import pyarrow.csv as pcsv

            return pcsv.open_csv(f).schema.names
        if lower_url.endswith(FITS_SUFFIXES):
            from astropy.io import fits

            with fits.open(f) as hdus:
                return list(hdus[1].columns.names)
        import pyarrow.parquet as pq

        return pq.read_schema(f).names


def check_model(url: str, storage_options: dict | None = None) -> None:
    """The model artifact holds its weights and its metadata file."""
    for name in (schema.MODEL_META_FILE, schema.MODEL_WEIGHTS_FILE):
        with storage_errors(f"cannot read the model {url}"):
            fs, path = filesystem(join(url, name), storage_options)
            present = fs.exists(path)
        if not present:
            raise RaycatError(
                f"no model at {url} ({name} is missing): train one with `raycat train`, "
                "or set infer.model"
            )
