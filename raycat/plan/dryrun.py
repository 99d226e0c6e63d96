"""`raycat plan`: the planning stage alone, as a dry run, and what it would hand the cutouts.

It plans exactly as a run does (work units from the object density, tiles found per unit
from the tile index pixels it touches), streams the planned rows to the end instead of to the
cutout actors, and checks on the way that every unit receives exactly its planned objects
(count and id-set hash, as the catalog's done markers will): every id once, none lost.
Nothing is written.
"""

from __future__ import annotations

import resource
import time

import numpy as np
import pandas as pd
import pyarrow as pa

from raycat import schema
from raycat.config import RaycatConfig
from raycat.errors import RaycatError
from raycat.plan.idhash import COUNT, HASH, PIXEL, pixel_summary

OFF = "off_footprint"
COVERED = "covered_"  # + band: objects with a tile in that band


def dry_run(cfg: RaycatConfig) -> dict:
    """Plan ``cfg``'s objects and stream the planned rows; a JSON-ready summary.

    Objects, partitions by order, objects per partition, tiles per band in the index,
    objects per band with a tile, objects off every footprint, wall time and the driver's
    peak memory (RSS: the workers' is the benchmark's to sample).
    """
    from raycat.plan.manifest import plan
    from raycat.plan.partition import summary_of

    started = time.perf_counter()
    manifest = plan(cfg)
    planned = time.perf_counter() - started
    totals = _stream(manifest)
    _check_units(manifest, totals)
    keys = np.array(manifest.units, dtype=np.int64)
    counts = np.array([manifest.unit_counts[k] for k in manifest.units])
    return {
        "objects": manifest.n_objects,
        **summary_of(keys, counts),
        "partitions_over_2x": int((counts > 2 * cfg.cutouts.objects_per_unit).sum()),
        "tiles_per_band": manifest.index.tiles_per_band(),
        "objects_with_tile": {b: totals[COVERED + b] for b in manifest.bands},
        OFF: totals[OFF],
        "every_id_once": True,  # _check_units raised otherwise
        "plan_s": round(planned, 2),
        "wall_s": round(time.perf_counter() - started, 2),
        "peak_rss_mib": round(_peak_rss_mib(), 1),
    }


def _stream(manifest) -> dict:
    """Per-unit counts and id hashes of the rows as planned, and the tile totals: each block
    summarised where it lies, the driver adding up one row per unit."""
    import ray

    from raycat.plan.exchange import map_blocks

    planned = manifest.assigned_blocks()
    if isinstance(planned, pd.DataFrame):  # a list planned in the driver
        blocks = iter([_block_totals(planned, manifest.bands)])
    else:  # summarised where each block lies; fetched one at a time
        blocks = (ray.get(r) for r in map_blocks(planned, _block_totals, manifest.bands))
    units: dict[int, list[int]] = {}
    totals = {OFF: 0, **{COVERED + b: 0 for b in manifest.bands}}
    for block in blocks:
        for key, count, value in zip(block[PIXEL], block[COUNT], block[HASH]):
            seen = units.setdefault(int(key), [0, 0])
            seen[0] += int(count)
            seen[1] = (seen[1] + int(value)) % 2**64
        for name in totals:  # on the block's first row
            totals[name] += int(block[name][0]) if len(block[name]) else 0
    totals["units"] = units  # type: ignore[assignment]
    return totals


def _block_totals(batch, bands: list[str]) -> dict:
    """One row per work unit of a block (key, objects, id hash) and the block's tile totals
    (on its first row; 0 on the others). Arrow in: the tile columns are never converted."""
    import pyarrow.compute as pc

    if isinstance(batch, pd.DataFrame):  # a list planned in the driver
        batch = pa.Table.from_pandas(batch, preserve_index=False)
    ids = batch[schema.ID].to_numpy(zero_copy_only=False)
    keys, counts, hashes = pixel_summary(batch[schema.WORK_UNIT].to_numpy(), ids, 0)
    firsts = np.zeros(len(keys), dtype=np.int64)
    out = {PIXEL: keys, COUNT: counts, HASH: hashes, OFF: firsts.copy()}
    flags = batch[schema.FLAGS].to_numpy()
    totals = {OFF: int(((flags & int(schema.Flag.OFF_FOOTPRINT)) != 0).sum())}
    for band in bands:
        out[COVERED + band] = firsts.copy()
        column = batch[schema.tile_column(band)]
        totals[COVERED + band] = int(pc.sum(pc.not_equal(column, "")).as_py() or 0)
    if len(keys):
        for name, value in totals.items():
            out[name][0] = value
    return out


def _check_units(manifest, totals: dict) -> None:
    """Every unit received exactly its planned objects: same count, same id-set hash."""
    seen = totals["units"]
    wrong = [
        k
        for k in manifest.units
        if seen.get(k, [0, 0]) != [manifest.unit_counts[k], manifest.unit_hashes[k]]
    ]
    extra = sorted(set(seen) - set(manifest.unit_counts))
    if wrong or extra:
        raise RaycatError(
            f"the planned rows do not match the plan: {len(wrong)} work units differ "
            f"(e.g. {wrong[:3]}), {len(extra)} unplanned"
        )


def _peak_rss_mib() -> float:
    """This process's peak resident memory (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
