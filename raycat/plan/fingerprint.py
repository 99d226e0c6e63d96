"""The fingerprint of a cutout plan: everything that changes the cutouts, by config key.

A materialised cutout dataset records the fingerprint it was made with; ``raycat train`` and
``raycat infer`` reuse the dataset only when the current config gives the same one, and
training records it in every checkpoint. It holds the cutout grid (bands, size, pixel scale,
softening, survey settings), the object list and tile index (identified by their listings:
names, sizes, ETag or modification time, which any rewrite changes; hashing the contents of
a billion-row list would read it whole), the store and the object-list columns.

Left out, because they change how the work is cut up or run, not a single pixel: the work
unit size (``healpix_order``, ``objects_per_unit``: the dataset records its own order),
``read_mode``, actors and CPUs, the output URL itself.
"""

from __future__ import annotations

import json
from typing import Any

from raycat import schema
from raycat.config import RaycatConfig
from raycat.errors import RaycatError
from raycat.fsutil import filesystem, identity, join, put_atomic, storage_errors
from raycat.plan.objects import objects_url

FINGERPRINT = "fingerprint"  # key of the plan file that holds it

CUTOUT_KEYS = ("bands", "size_px", "pixel_scale", "softening", "surveys")
DATA_KEYS = ("store", "id_column", "ra_column", "dec_column", "z_column", "duplicate_ids")


def cutout_fingerprint(cfg: RaycatConfig) -> dict[str, Any]:
    """Config key -> the value (or the file identity) the cutouts depend on, JSON-ready."""
    data = cfg.data
    parts: dict[str, Any] = {
        f"cutouts.{k}": v
        for k, v in cfg.cutouts.model_dump(mode="json", include=set(CUTOUT_KEYS)).items()
    }
    parts.update(
        (f"data.{k}", v) for k, v in data.model_dump(mode="json", include=set(DATA_KEYS)).items()
    )
    if data.ebv_column:  # only when set: fingerprints recorded before it existed still match
        parts["data.ebv_column"] = data.ebv_column
    objects, index = objects_url(data), tile_index_identity_url(data)
    with storage_errors(f"cannot list the object list {objects}"):
        parts["data.objects"] = identity(objects, data.storage_options)
    with storage_errors(f"cannot list the tile index {index}"):
        parts["data.tile_index"] = identity(index, data.storage_options)
    return json.loads(json.dumps(parts, sort_keys=True))


def tile_index_identity_url(data) -> str:
    """The file whose identity changes on any rewrite of the tile index: the metadata file of
    a partitioned index (written last), or the single-file index itself; the index's own URL
    when there is none (its identity is then "absent")."""
    from raycat.surveys.tile_index import open_tile_index, resolve_tile_index

    url = resolve_tile_index(data)
    with storage_errors(f"cannot read the tile index {url}"):
        fs, path = filesystem(url, data.storage_options)
        if not fs.exists(path):
            return url
        return open_tile_index(url, data.storage_options, []).identity_url


def changed_keys(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The keys whose values differ between two fingerprints (or that only one has)."""
    return sorted(k for k in recorded.keys() | current.keys() if recorded.get(k) != current.get(k))


def plan_file(cfg: RaycatConfig) -> str:
    """URL of the plan file of the cutout dataset at ``cutouts.output`` (which must be set)."""
    return join(cfg.cutouts.output or "", schema.CUTOUTS_PLAN_FILE)


def write_plan_record(cfg: RaycatConfig, record: dict[str, Any]) -> None:
    """Write the plan file (the summary and ``FINGERPRINT``) in one atomic write: the last
    step of a materialisation, so a dataset with a plan file is complete."""
    fs, path = filesystem(plan_file(cfg), cfg.data.storage_options)
    put_atomic(fs, path, json.dumps(record, sort_keys=True).encode())


def read_plan_record(cfg: RaycatConfig) -> dict[str, Any] | None:
    """The plan file at ``cutouts.output``, or None when unset or not (yet) written."""
    if not cfg.cutouts.output:
        return None
    url = plan_file(cfg)
    with storage_errors(f"cannot read the cutout plan {url}"):
        fs, path = filesystem(url, cfg.data.storage_options)
        if not fs.exists(path):
            return None
        return json.loads(fs.cat_file(path))


def reusable_plan(cfg: RaycatConfig) -> dict[str, Any] | None:
    """The plan record of the materialised cutouts when they fit ``cfg``; None when there are
    none; a one-line RaycatError naming the changed keys when they were made for other
    inputs (stale cutouts are never read: rebuild them with `raycat cutouts`)."""
    record = read_plan_record(cfg)
    if record is None:
        return None
    recorded = record.get(FINGERPRINT)
    if recorded is None:
        changed = ["no fingerprint: an older raycat made them"]
    else:
        changed = changed_keys(recorded, cutout_fingerprint(cfg))
    if changed:
        raise RaycatError(
            f"the cutouts at {cfg.cutouts.output} were made for other inputs (changed: "
            f"{', '.join(changed[:6])}): rebuild them with `raycat cutouts`, or set "
            "cutouts.output to another place"
        )
    return record
