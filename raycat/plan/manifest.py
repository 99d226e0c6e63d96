"""Objects -> HEALPix work units, and per object the tile to cut in each band.

A work unit is one HEALPix pixel, of the order its object density calls for
(``raycat.plan.partition``), and it is also one catalog partition: finished units are
skipped on a rerun. Within a band the object is cut from the tile that holds it farthest from
the edge (real tilings overlap), so a cutout is never clipped when a better tile exists
(``raycat.plan.tiles``); tiles are found as the rows stream, unit by unit, from the index
pixels the unit touches.

``plan`` wires this into Ray: the list is read by Ray Data, then exchanged between plain Ray
tasks (``raycat.plan.exchange``); no process holds the object list, no stage runs in a
single actor or task, and the driver holds one entry per work unit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from raycat import schema
from raycat.config import DataConfig, RaycatConfig
from raycat.errors import RaycatError
from raycat.fsutil import filesystem
from raycat.healpix import Partitioning, healpix29
from raycat.plan.idhash import id_hashes
from raycat.plan.partition import Rules, units_of_frame, units_on_ray

if TYPE_CHECKING:
    from raycat.surveys.tile_index import TileIndex

# Rows per block handed to the cutout stage. Ray Data streams block by block: a block the
# size of the whole sort output would make each stage wait for the previous one to finish.
ROWS_PER_BLOCK = 256
# Rows per block of a flat list while it is planned: a file read as one block would make one
# exchange task cut a whole sky's worth of rows.
PLAN_ROWS_PER_BLOCK = 100_000
# Object lists this small are planned in the driver: reading on Ray Data and three
# exchanges cost seconds of start-up, more than planning a few hundred thousand rows in
# one process. Larger lists stream through Ray and are never held in one process.
DRIVER_PLAN_MAX_BYTES = 16 * 2**20  # object-list files, read whole into the driver
DRIVER_PLAN_MAX_ROWS = 250_000  # ~100 MB of planned rows (positions and 9 tile names)
# Rows per share of the exchanges (raycat.plan.exchange), when more than one per CPU: a
# fixed size, so a task's memory does not grow with the list (planned rows with their tile
# names; ids in the duplicate check).
ASSIGN_SHARE_ROWS = 250_000
DUPLICATE_SHARE_ROWS = 500_000


def spatial_index(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """HATS _healpix_29 of each position; a clear error for impossible coordinates."""
    ra, dec = np.asarray(ra, dtype=float), np.asarray(dec, dtype=float)
    bad = ~np.isfinite(ra) | ~np.isfinite(dec) | (np.abs(dec) > 90)
    if bad.any():
        raise RaycatError(f"{bad.sum()} objects have invalid ra/dec (NaN or |dec| > 90)")
    return healpix29(ra, dec)


@dataclass
class Manifest:
    """The planned work: object rows, the work units they fall in, and the tile index their
    tiles are found in as the rows stream to the cutouts."""

    objects: Any  # materialised ray.data.Dataset of canonical rows with _healpix_29 and
    # flags, or a pandas DataFrame of them when the list was small enough to plan in the driver
    unit_counts: dict[int, int]  # objects per work unit (NUNIQ key: raycat.healpix)
    bands: list[str]
    # id-set hash per work unit (raycat.plan.idhash): with the counts, what a catalog
    # partition's done marker must match for a resume to keep it
    unit_hashes: dict[int, int]
    index: TileIndex
    grouped: bool = False  # rows already grouped by unit (a HATS catalog's): no sort needed

    @property
    def columns(self) -> list[str]:
        if isinstance(self.objects, pd.DataFrame):
            return list(self.objects.columns)
        return self.objects.schema().names

    @property
    def id_type(self) -> pa.DataType:
        """The Arrow type of the ids (int64, or string for text ids): the catalog's id type."""
        from raycat.plan.objects import id_arrow_type, series_id_type

        if isinstance(self.objects, pd.DataFrame):
            found = series_id_type(self.objects[schema.ID])
        else:
            types = self.objects.schema()
            found = id_arrow_type(types.types[types.names.index(schema.ID)])
        assert found is not None, "ids are int64 or text once read (raycat.plan.objects)"
        return found

    @property
    def n_objects(self) -> int:
        return sum(self.unit_counts.values())

    @property
    def units(self) -> list[int]:
        return sorted(self.unit_counts)

    def rows(self, skip_units: set[int] | frozenset = frozenset()):
        """The object rows with their work unit and tiles, grouped by unit, leaving out
        ``skip_units`` (finished ones), in blocks of ``ROWS_PER_BLOCK`` for the cutouts.

        They are materialised here (small rows, spilled to disk by Ray when large) so that
        the exchange's and the re-blocking's whole-CPU tasks never wait behind the actor
        pools of the stages that follow. A list planned in the driver stays there.
        """
        planned = self.assigned(skip_units)
        if isinstance(planned, pd.DataFrame):
            from raycat.plan.frame_source import FrameBlocks
            from raycat.runtime import READ_ARGS

            return _ray_data().read_datasource(
                FrameBlocks(planned, ROWS_PER_BLOCK), concurrency=1, **READ_ARGS
            )
        return planned.repartition(target_num_rows_per_block=ROWS_PER_BLOCK).materialize()

    def assigned(self, skip_units: set[int] | frozenset = frozenset()):
        """The rows with their work unit and tiles, grouped by unit (a dataset of large
        blocks, or a DataFrame for a list planned in the driver): ``assigned_blocks``."""
        planned = self.assigned_blocks(skip_units)
        if isinstance(planned, pd.DataFrame):
            return planned
        return _ray_data().from_arrow_refs(planned) if planned else _ray_data().from_items([])

    def assigned_blocks(self, skip_units: set[int] | frozenset = frozenset()):
        """The rows with their work unit and tiles, grouped by unit: object refs of Arrow
        tables, or a DataFrame for a list planned in the driver.

        Rows are exchanged by work unit (``raycat.plan.exchange``): each share, a run of
        consecutive units with about ``ASSIGN_SHARE_ROWS`` objects, is sorted by
        ``_healpix_29`` where it lands, which groups it by unit (a unit is a range of it)
        and orders it along the HEALPix curve: neighbours on few tiles, so the tile finder
        reads few index pixels and the cutout actors' tile cache is hit. Tiles are found on
        the whole share: per-block overheads would cost more than the lookup on the small
        blocks the cutouts get. A HATS catalog's rows are grouped already: no exchange.
        """
        import ray

        from raycat.plan.exchange import exchange, map_blocks, shares_for

        units = Partitioning(self.units)
        skip = np.array(sorted(skip_units), dtype=np.int64)
        if isinstance(self.objects, pd.DataFrame):
            rows = _in_units(pa.Table.from_pandas(self.objects, preserve_index=False), units, skip)
            return _assign_share(rows, self.index, self.bands).to_pandas()
        blocks = self.objects.to_arrow_refs()
        units_ref, index_ref = ray.put(units), ray.put(self.index)
        if self.grouped:
            refs = map_blocks(blocks, _assign_block, units_ref, skip, index_ref, self.bands)
        else:
            counts = np.array([self.unit_counts[int(k)] for k in units.keys])
            counts[np.isin(units.keys, skip)] = 0
            edges = share_edges(units, counts, shares_for(int(counts.sum()), ASSIGN_SHARE_ROWS))
            refs = exchange(
                blocks,
                _unit_share,
                _assign_share,
                len(edges) + 1,
                (units_ref, skip, edges),
                (index_ref, self.bands),
            )
        return refs


def share_edges(units: Partitioning, counts: np.ndarray, shares: int) -> np.ndarray:
    """Where each share after the first begins (a ``_healpix_29``): runs of consecutive
    units (``counts`` objects each, in ``units``' order) of about equal objects."""
    total = np.cumsum(counts)
    if not len(total) or total[-1] == 0:
        return np.zeros(0, dtype=np.int64)
    targets = total[-1] * np.arange(1, shares) / shares
    firsts = np.unique(np.searchsorted(total, targets, side="right"))
    return units.starts[firsts[(firsts > 0) & (firsts < len(total))]]


def _unit_share(block: pa.Table, units: Partitioning, skip: np.ndarray, edges: np.ndarray):
    """``exchange`` cut: the block's rows with their work unit, outside ``skip``, and the
    share of each: its unit's, as a share is a run of whole units starting at ``edges``."""
    at = units.position_of(block[schema.HEALPIX_29].to_numpy())
    unit = np.where(at >= 0, units.keys[at], -1)
    share = np.searchsorted(edges, units.starts, side="right")[at]
    rows = block.append_column(schema.WORK_UNIT, pa.array(unit))
    if len(skip):
        keep = ~np.isin(unit, skip)
        rows, share = rows.filter(pa.array(keep)), share[keep]
    return rows, share


def _assign_share(rows: pa.Table, index: TileIndex, bands: list[str]) -> pa.Table:
    """``exchange`` reduce: a share's rows sorted along the curve, with their tiles."""
    return find_tiles(rows.sort_by(schema.HEALPIX_29), index, bands)


def _assign_block(block: pa.Table, units: Partitioning, skip, index, bands) -> pa.Table:
    """Work unit and tiles of a block already grouped by unit (a HATS catalog's)."""
    return find_tiles(_in_units(block, units, skip), index, bands)


def _in_units(rows: pa.Table, units: Partitioning, skip: np.ndarray) -> pa.Table:
    """``rows`` with the NUNIQ key of each one's work unit, leaving out the units ``skip``
    (finished ones). Arrow throughout: a pandas round trip of the rows costs more than
    finding their units."""
    unit = units.unit_of(rows[schema.HEALPIX_29].to_numpy())
    rows = rows.append_column(schema.WORK_UNIT, pa.array(unit))
    return rows.filter(pa.array(~np.isin(unit, skip))) if len(skip) else rows


def find_tiles(rows: pa.Table, index: TileIndex, bands: list[str]) -> pa.Table:
    """``rows`` with per-band tile URIs ("" where no tile holds the object) and
    OFF_FOOTPRINT flagged where no band has one.

    A fresh finder loads the index pixels the rows fall in, with a bounded cache: memory
    follows the tiles the rows touch, not the sky. Rows in curve order load each pixel once.
    """
    import pyarrow.compute as pc

    from raycat.plan.tiles import TileFinder

    ra, dec = (rows[c].to_numpy() for c in (schema.RA, schema.DEC))
    tiles = TileFinder(index, bands).assign_arrow(ra, dec)
    covered = np.zeros(len(ra), dtype=bool)
    for band in bands:
        rows = rows.append_column(schema.tile_column(band), tiles[band])
        covered |= pc.not_equal(tiles[band], "").to_numpy(zero_copy_only=False)
    flags = rows[schema.FLAGS].to_numpy() | np.where(covered, 0, int(schema.Flag.OFF_FOOTPRINT))
    at = rows.schema.get_field_index(schema.FLAGS)
    return rows.set_column(at, schema.FLAGS, pa.array(flags.astype(np.int32)))


def add_spatial_index(batch: pd.DataFrame) -> pd.DataFrame:
    """``_healpix_29`` (unless the rows carry it: a HATS catalog's) and zero flags."""
    if schema.HEALPIX_29 not in batch:
        batch[schema.HEALPIX_29] = spatial_index(batch[schema.RA], batch[schema.DEC])
    else:
        batch[schema.HEALPIX_29] = batch[schema.HEALPIX_29].astype(np.int64)
    if schema.FLAGS not in batch:
        batch[schema.FLAGS] = np.zeros(len(batch), dtype=np.int32)
    return batch


def duplicate_ids(ds, limit: int = 10) -> list:
    """Up to ``limit`` ids that occur more than once, as Python ints or strings: the ids
    exchanged by hash (``raycat.plan.exchange``), each share checked by its own task."""
    import ray

    from raycat.plan.exchange import exchange, shares_for

    shares = shares_for(ds.count(), DUPLICATE_SHARE_ROWS)
    found = exchange(ds.to_arrow_refs(), _ids_by_hash, _repeated, shares, (shares,), (limit,))
    return sorted(_plain(i) for share in ray.get(found) for i in share)[:limit]


def _ids_by_hash(block: pa.Table, shares: int) -> tuple[pa.Table, np.ndarray]:
    """``exchange`` cut: the block's ids, each sent to the share its hash picks."""
    ids = block.select([schema.ID])
    return ids, id_hashes(ids.column(0).to_numpy(zero_copy_only=False)) % np.uint64(shares)


def _plain(value: Any) -> Any:
    """A NumPy scalar id as the Python int or str it holds."""
    return value.item() if isinstance(value, np.generic) else value


def _repeated(ids: pa.Table, limit: int) -> list:
    """``exchange`` reduce: up to ``limit`` ids repeated in this share."""
    values = ids.column(0).to_pandas()
    return values[values.duplicated()].unique()[:limit].tolist()


def _keep_one(group: pd.DataFrame) -> pd.DataFrame:
    """One row per id, chosen by position so reruns keep the same one; flagged if repeated."""
    row = group.sort_values([schema.RA, schema.DEC]).head(1).copy()
    if len(group) > 1:
        row[schema.FLAGS] = row[schema.FLAGS] | int(schema.Flag.DUPLICATE_ID)
    return row


def plan(cfg: RaycatConfig, keep: Sequence[int] = ()) -> Manifest:
    """Plan the cutout work: the work units, and the rows that fall in them.

    The object list is read once and its rows (ids, positions, ``_healpix_29``) materialised
    in Ray's object store (spilled to disk when large); the duplicate check and the histogram
    that cuts the work units (``raycat.plan.partition``) then run on those rows on Ray, and
    the driver receives the units alone. ``keep``: partitions that exist already (a resumed
    catalog's), reused as they are. A small list (``DRIVER_PLAN_MAX_BYTES``,
    ``DRIVER_PLAN_MAX_ROWS``) is planned in the driver instead.
    """
    from raycat.plan.objects import hats_input
    from raycat.surveys.tile_index import open_tile_index, resolve_tile_index

    bands = cfg.cutouts.bands
    index = open_tile_index(resolve_tile_index(cfg.data), cfg.data.storage_options, bands)
    hats = hats_input(cfg.data)
    rules = Rules(
        threshold=cfg.cutouts.objects_per_unit,
        fixed=cfg.cutouts.healpix_order,
        keep=tuple(int(k) for k in keep),
        floor=hats.partitions if hats is not None else (),
    )
    frame = None if hats is not None else _small_object_list(cfg.data)
    grouped = False
    if frame is not None:
        objects = _plan_in_driver(frame, cfg.data.duplicate_ids)
        units = units_of_frame(objects, rules)
    else:
        objects, deduplicated = _plan_on_ray(cfg, hats)
        units = units_on_ray(objects, rules)
        grouped = hats is not None and not deduplicated
    keys, counts, hashes = (u.tolist() for u in units)
    if not keys:
        raise RaycatError("the object list is empty")
    return Manifest(
        objects,
        dict(zip(keys, counts)),
        bands,
        dict(zip(keys, hashes)),
        index,
        grouped=grouped,
    )


def _plan_on_ray(cfg: RaycatConfig, hats) -> tuple[Any, bool]:
    """The canonical rows with ``_healpix_29`` and flags, duplicates handled, materialised
    (streamed through Ray Data tasks: no stage runs in a single actor); and whether
    duplicates were removed (which regroups the rows by id)."""
    from raycat.plan.objects import READ_BATCH_ROWS, read_objects

    objects = read_objects(cfg.data, hats).map_batches(
        add_spatial_index, batch_format="pandas", batch_size=READ_BATCH_ROWS
    )
    if hats is None:  # a flat list: blocks of a bounded size, whatever its files hold
        objects = objects.repartition(target_num_rows_per_block=PLAN_ROWS_PER_BLOCK)
    objects = objects.materialize()
    repeated = duplicate_ids(objects)
    if repeated and cfg.data.duplicate_ids == "error":
        raise _duplicates_error(repeated)
    if repeated:
        objects = (
            objects.groupby(schema.ID).map_groups(_keep_one, batch_format="pandas").materialize()
        )
    return objects, bool(repeated)


def _small_object_list(data: DataConfig) -> pd.DataFrame | None:
    """The canonical object rows when the list is small enough to plan in the driver."""
    from raycat.plan.objects import objects_url, read_small_objects

    fs, path = filesystem(objects_url(data), data.storage_options)
    if not fs.exists(path) or fs.du(path) > DRIVER_PLAN_MAX_BYTES:
        return None  # a missing list is reported by read_objects on the Ray path
    frame = read_small_objects(data)
    return frame if len(frame) <= DRIVER_PLAN_MAX_ROWS else None


def _plan_in_driver(frame: pd.DataFrame, duplicates: str) -> pd.DataFrame:
    """The rows ``_plan_on_ray`` makes, for a small list held in the driver."""
    frame = add_spatial_index(frame.reset_index(drop=True))
    ids = frame[schema.ID]
    repeated = np.unique(ids[ids.duplicated()].to_numpy())
    if len(repeated) and duplicates == "error":
        raise _duplicates_error(repeated[:10].tolist())
    if len(repeated):  # as _keep_one: the first by (ra, dec), flagged
        dup = ids.duplicated(keep=False).to_numpy()
        flag = np.where(dup, int(schema.Flag.DUPLICATE_ID), 0)
        frame[schema.FLAGS] = (frame[schema.FLAGS].to_numpy() | flag).astype(np.int32)
        frame = frame.sort_values([schema.ID, schema.RA, schema.DEC], kind="stable")
        frame = frame.drop_duplicates(schema.ID, keep="first").reset_index(drop=True)
    return frame


def _ray_data():
    import ray.data

    return ray.data


def _duplicates_error(repeated: list) -> RaycatError:
    """One line naming the repeated ids; text ids quoted, as they may hold commas or spaces."""
    shown = (repr(i) if isinstance(i, str) else str(i) for i in map(_plain, repeated))
    return RaycatError(
        f"duplicate object ids: {', '.join(shown)}"
        " (set data.duplicate_ids: keep_one to keep each once)"
    )
