"""Objects x tiles -> HEALPix work units: which tile each object is cut from, band by band.

A work unit is one HEALPix pixel at an order chosen from the object density, and it is also
one catalog partition: finished units are skipped on a rerun. Within a band the object is cut
from the tile that holds it farthest from the edge (real tilings overlap), so a cutout is
never clipped when a better tile exists.

The pure parts (``TileFinder``, ``choose_order``, ``work_units``) need no Ray; ``plan`` wires
them into a Ray Data pipeline that never holds the object list in one process.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from raycat import schema
from raycat.config import DataConfig, RaycatConfig
from raycat.errors import RaycatError
from raycat.fsutil import filesystem, join, storage_errors
from raycat.healpix import healpix29, pixel_at_order
from raycat.plan.idhash import frame_tally, pixel_tally

if TYPE_CHECKING:
    import pyarrow as pa

HISTOGRAM_ORDER = 9  # 47 arcmin^2 pixels: fine enough to size units, coarse enough to count
# Rows per block handed to the cutout stage. Ray Data streams block by block: a block the
# size of the whole sort output would make each stage wait for the previous one to finish.
ROWS_PER_BLOCK = 256
# Object lists this small are planned in the driver: Ray Data's per-stage start-up (an
# assigner actor importing astropy, a group-by shuffle for the duplicate check) costs
# seconds, far more than planning a few hundred thousand rows in one process. Larger lists
# stream through Ray Data and are never held in one process.
DRIVER_PLAN_MAX_BYTES = 16 * 2**20  # object-list files, read whole into the driver
DRIVER_PLAN_MAX_ROWS = 250_000  # ~100 MB of planned rows (positions and 9 tile names)


# --- tile index ---------------------------------------------------------------------------


def load_tile_index(data: DataConfig, bands: list[str]) -> pd.DataFrame:
    """The tile index rows for ``bands`` (small: one row per tile and band); one-line errors
    for an index that cannot be read, lacks columns, or holds a WCS planning cannot use."""
    url = join(data.store, data.tile_index)
    with storage_errors(f"cannot read the tile index {url}"):
        fs, path = filesystem(url, data.storage_options)
        if not fs.exists(path):
            raise RaycatError(f"tile index not found: {url}")
        with fs.open(path, "rb") as f:
            index = pd.read_parquet(f)
    missing = {schema.TILE_BAND, schema.TILE_URI, schema.TILE_WCS} - set(index.columns)
    if missing:
        raise RaycatError(f"tile index {url} lacks columns: {', '.join(sorted(missing))}")
    index = index[index[schema.TILE_BAND].isin(bands)].reset_index(drop=True)
    index[schema.TILE_URI] = index[schema.TILE_URI].map(schema.relative_tile_uri)
    _check_wcs(index, url)
    return index


WCS_KEYWORDS = ("NAXIS1", "NAXIS2", "CTYPE1", "CTYPE2", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2")


def _check_wcs(index: pd.DataFrame, url: str) -> None:
    """Every WCS string parses as a FITS header with the keywords TileFinder reads (a header
    parse is ~0.1 ms, a full WCS ~2 ms: the full one is left to TileFinder)."""
    import warnings

    from astropy.io import fits

    bad = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # astropy warns on each malformed card
        for uri, text in zip(index[schema.TILE_URI], index[schema.TILE_WCS]):
            try:
                header = fits.Header.fromstring(text) if isinstance(text, str) else {}
            except Exception:
                header = {}
            if any(k not in header for k in WCS_KEYWORDS):
                bad.append(uri)
    if bad:
        raise RaycatError(
            f"tile index {url}: {len(bad)} row(s) hold no usable WCS (e.g. {', '.join(bad[:3])}): "
            f"each needs {', '.join(WCS_KEYWORDS)}; rebuild it with `raycat index`"
        )


class TileFinder:
    """Picks, per object and band, the tile that holds the object farthest from its edge."""

    def __init__(self, index: pd.DataFrame, bands: list[str]):
        from astropy.io import fits
        from astropy.wcs import WCS
        from scipy.spatial import cKDTree

        self.bands = list(bands)
        self.index = index.reset_index(drop=True)
        headers = [fits.Header.fromstring(h) for h in self.index[schema.TILE_WCS]]
        self.wcs = [WCS(h) for h in headers]
        self.shape = np.array([(h["NAXIS1"], h["NAXIS2"]) for h in headers], dtype=float)
        centres = [
            w.pixel_to_world_values((nx - 1) / 2, (ny - 1) / 2)
            for w, (nx, ny) in zip(self.wcs, self.shape)
        ]
        self.xyz = _unit_vectors(*np.array(centres, dtype=float).reshape(-1, 2).T)
        # circle through the farthest corner, so every pixel of every tile is inside it
        self.radius = max(
            (_max_corner_distance(w, s, c) for w, s, c in zip(self.wcs, self.shape, self.xyz)),
            default=0.0,
        )
        self.tree = cKDTree(self.xyz) if len(self.index) else None

    def assign(self, ra: np.ndarray, dec: np.ndarray) -> dict[str, np.ndarray]:
        """Tile URI per object for each band; "" where no tile of that band holds it."""
        best = {b: np.full(len(ra), "", dtype=object) for b in self.bands}
        if self.tree is None or len(ra) == 0:
            return best
        obj, tile = self._candidate_pairs(np.asarray(ra, float), np.asarray(dec, float))
        margin = self._edge_margin(obj, tile, ra, dec)
        inside = margin >= 0
        pairs = pd.DataFrame({"obj": obj[inside], "tile": tile[inside], "margin": margin[inside]})
        pairs["band"] = self.index[schema.TILE_BAND].to_numpy()[pairs["tile"]]
        winners = pairs.loc[pairs.groupby(["band", "obj"])["margin"].idxmax()]
        uris = self.index[schema.TILE_URI].to_numpy()
        for band, rows in winners.groupby("band"):
            best[band][rows["obj"].to_numpy()] = uris[rows["tile"].to_numpy()]
        return best

    def _candidate_pairs(self, ra, dec) -> tuple[np.ndarray, np.ndarray]:
        chord = 2 * np.sin(np.radians(self.radius) / 2) * 1.0001
        assert self.tree is not None  # callers return early on an empty index
        lists = self.tree.query_ball_point(_unit_vectors(ra, dec), chord)
        obj = np.repeat(np.arange(len(ra)), [len(x) for x in lists])
        tile = np.fromiter((t for x in lists for t in x), dtype=np.int64, count=len(obj))
        return obj, tile

    def _edge_margin(self, obj, tile, ra, dec) -> np.ndarray:
        """Distance to the nearest tile edge in native pixels (negative: outside)."""
        margin = np.empty(len(obj))
        order = np.argsort(tile, kind="stable")
        splits = np.flatnonzero(np.diff(tile[order])) + 1
        for group in np.split(order, splits):
            if len(group) == 0:
                continue
            t = tile[group[0]]
            x, y = self.wcs[t].world_to_pixel_values(ra[obj[group]], dec[obj[group]])
            nx, ny = self.shape[t]
            margin[group] = np.minimum.reduce([x + 0.5, nx - 0.5 - x, y + 0.5, ny - 0.5 - y])
        return margin


def _unit_vectors(ra, dec) -> np.ndarray:
    ra, dec = np.radians(ra), np.radians(dec)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)


def _max_corner_distance(wcs, shape, centre_xyz) -> float:
    nx, ny = shape
    corners = np.array(
        wcs.pixel_to_world_values(
            [-0.5, nx - 0.5, nx - 0.5, -0.5], [-0.5, -0.5, ny - 0.5, ny - 0.5]
        )
    )
    cos = np.clip(_unit_vectors(*corners) @ centre_xyz, -1, 1)
    return float(np.degrees(np.arccos(cos)).max())


# --- work units ---------------------------------------------------------------------------


def choose_order(histogram: Counter, target: int, max_order: int = HISTOGRAM_ORDER) -> int:
    """The HEALPix order whose mean objects per non-empty pixel is closest to ``target``.

    ``histogram`` counts objects per pixel at ``max_order``; coarser orders merge 4 children
    per level, so no second pass over the objects is needed.
    """
    pixels = np.fromiter(histogram.keys(), dtype=np.int64, count=len(histogram))
    counts = np.fromiter(histogram.values(), dtype=np.int64, count=len(histogram))
    best, best_gap = 0, np.inf
    for order in range(max_order, -1, -1):
        parents = pixels >> (2 * (max_order - order))
        mean = counts.sum() / max(len(np.unique(parents)), 1)
        gap = abs(np.log(mean / target))
        if gap < best_gap:
            best, best_gap = order, gap
    return best


def work_units(healpix_29: np.ndarray, order: int) -> np.ndarray:
    """Work unit (HEALPix pixel at ``order``, nested) of each object from its _healpix_29."""
    return pixel_at_order(healpix_29, order)


def spatial_index(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """HATS _healpix_29 of each position; a clear error for impossible coordinates."""
    ra, dec = np.asarray(ra, dtype=float), np.asarray(dec, dtype=float)
    bad = ~np.isfinite(ra) | ~np.isfinite(dec) | (np.abs(dec) > 90)
    if bad.any():
        raise RaycatError(f"{bad.sum()} objects have invalid ra/dec (NaN or |dec| > 90)")
    return healpix29(ra, dec)


@dataclass
class Manifest:
    """The planned work: object rows with their tiles, and the work units they fall in."""

    objects: Any  # materialised ray.data.Dataset of object rows with tile_<band> columns,
    # or a pandas DataFrame of them when the list was small enough to plan in the driver
    order: int  # HEALPix order of the work units (= catalog partitions)
    unit_counts: dict[int, int]  # objects per work unit
    bands: list[str]
    # id-set hash per work unit (raycat.plan.idhash): with the counts, what a catalog
    # partition's done marker must match for a resume to keep it
    unit_hashes: dict[int, int] = field(default_factory=dict)

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
        """The object rows sorted by work unit, leaving out ``skip_units`` (finished ones).

        Sorting by ``_healpix_29`` sorts by work unit (a unit is a prefix of it) and also
        orders each unit along the HEALPix curve: a batch then holds neighbours on a few
        tiles, so the cutout actors' tile cache is hit instead of re-reading every tile of
        the unit for every batch. The sort runs to completion here (the rows are small:
        ids, positions, tile names, spilled to disk by Ray when large) so that its whole-CPU
        shuffle tasks never wait behind the actor pools of the stages that follow; a list
        planned in the driver is sorted there (a shuffle's tasks take seconds to start).
        """
        if isinstance(self.objects, pd.DataFrame):
            from raycat.plan.frame_source import FrameBlocks
            from raycat.runtime import READ_ARGS

            rows = _with_work_unit(self.objects.copy(), self.order, sorted(skip_units))
            rows = rows.sort_values(schema.HEALPIX_29, kind="stable").reset_index(drop=True)
            return _ray_data().read_datasource(
                FrameBlocks(rows, ROWS_PER_BLOCK), concurrency=1, **READ_ARGS
            )
        ds = self.objects.map_batches(
            _with_work_unit,
            batch_format="pandas",
            fn_kwargs={"order": self.order, "skip": sorted(skip_units)},
        )
        sorted_rows = ds.sort(schema.HEALPIX_29)
        return sorted_rows.repartition(target_num_rows_per_block=ROWS_PER_BLOCK).materialize()


def _with_work_unit(batch: pd.DataFrame, order: int, skip: Sequence[int] = ()) -> pd.DataFrame:
    batch[schema.WORK_UNIT] = work_units(batch[schema.HEALPIX_29].to_numpy(), order)
    return drop_units(batch, skip)


def drop_units(batch: pd.DataFrame, skip: Sequence[int]) -> pd.DataFrame:
    """The rows of ``batch`` outside the work units ``skip`` (finished ones)."""
    return batch[~batch[schema.WORK_UNIT].isin(skip)] if len(skip) else batch


# --- the Ray Data pipeline ----------------------------------------------------------------


class TileAssigner:
    """Ray Data actor: adds the HEALPix index, per-band tile URIs and OFF_FOOTPRINT."""

    def __init__(self, index: pd.DataFrame, bands: list[str]):
        self.finder = TileFinder(index, bands)
        self.bands = bands

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        batch = _add_spatial_index(batch)
        tiles = self.finder.assign(batch[schema.RA].to_numpy(), batch[schema.DEC].to_numpy())
        covered = np.zeros(len(batch), dtype=bool)
        for band in self.bands:
            batch[schema.tile_column(band)] = tiles[band].astype(str)
            covered |= tiles[band] != ""
        flags = batch[schema.FLAGS].to_numpy() | np.where(
            covered, 0, int(schema.Flag.OFF_FOOTPRINT)
        )
        batch[schema.FLAGS] = flags.astype(np.int32)
        return batch


def _add_spatial_index(batch: pd.DataFrame) -> pd.DataFrame:
    batch[schema.HEALPIX_29] = spatial_index(batch[schema.RA], batch[schema.DEC])
    if schema.FLAGS not in batch:
        batch[schema.FLAGS] = np.zeros(len(batch), dtype=np.int32)
    return batch


def duplicate_ids(ds, limit: int = 10) -> list:
    """Up to ``limit`` ids that occur more than once (a distributed group-by, no collect),
    as Python ints or strings."""
    counts = ds.groupby(schema.ID).count()
    repeated = counts.map_batches(_repeated, batch_format="pandas")
    return sorted(_plain(row[schema.ID]) for row in repeated.take(limit))


def _plain(value: Any) -> Any:
    """A NumPy scalar id as the Python int or str it holds."""
    return value.item() if isinstance(value, np.generic) else value


def _repeated(counts: pd.DataFrame) -> pd.DataFrame:
    return counts[counts["count()"] > 1]


def _keep_one(group: pd.DataFrame) -> pd.DataFrame:
    """One row per id, chosen by position so reruns keep the same one; flagged if repeated."""
    row = group.sort_values([schema.RA, schema.DEC]).head(1).copy()
    if len(group) > 1:
        row[schema.FLAGS] = row[schema.FLAGS] | int(schema.Flag.DUPLICATE_ID)
    return row


def plan(cfg: RaycatConfig, assign_cpus: float = 0.25) -> Manifest:
    """Plan the cutout work: work units, and per object the tile to cut in each band.

    The object list is read once, given its tiles and materialised in Ray's object store
    (spilled to disk when large); the duplicate check and the density histogram that sizes
    the work units then run on those rows without reading the files again. A small list
    (``DRIVER_PLAN_MAX_BYTES``, ``DRIVER_PLAN_MAX_ROWS``) is planned in the driver instead.
    """
    bands = cfg.cutouts.bands
    index = load_tile_index(cfg.data, bands)
    fine_order = max(HISTOGRAM_ORDER, cfg.cutouts.healpix_order or 0)
    frame = _small_object_list(cfg.data)
    if frame is not None:
        objects = _plan_in_driver(frame, index, bands, cfg.data.duplicate_ids)
        fine = frame_tally(objects, fine_order)
    else:
        objects = _plan_on_ray(cfg, index, bands, assign_cpus)
        fine = pixel_tally(objects, fine_order)
    if not fine.counts:
        raise RaycatError("the object list is empty")
    # a set order (a resumed catalog's own partitioning, or the config's) wins over density
    order = cfg.cutouts.healpix_order
    if order is None:
        order = choose_order(Counter(fine.counts), cfg.cutouts.objects_per_unit, fine_order)
    units = fine.coarser(fine_order - order)
    return Manifest(objects, order, units.counts, bands, units.hashes)


def _plan_on_ray(cfg: RaycatConfig, index: pd.DataFrame, bands: list[str], assign_cpus: float):
    """Tiles and duplicate handling streamed through Ray Data (a materialised dataset)."""
    import ray.data

    from raycat.plan.objects import read_objects

    objects = (
        read_objects(cfg.data)
        .map_batches(
            TileAssigner,
            fn_constructor_kwargs={"index": index, "bands": bands},
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=1),
            num_cpus=assign_cpus,
            batch_format="pandas",
        )
        .materialize()
    )
    repeated = duplicate_ids(objects)
    if repeated and cfg.data.duplicate_ids == "error":
        raise _duplicates_error(repeated)
    if repeated:
        objects = (
            objects.groupby(schema.ID).map_groups(_keep_one, batch_format="pandas").materialize()
        )
    return objects


def _small_object_list(data: DataConfig) -> pd.DataFrame | None:
    """The canonical object rows when the list is small enough to plan in the driver."""
    from raycat.plan.objects import objects_url, read_small_objects

    fs, path = filesystem(objects_url(data), data.storage_options)
    if not fs.exists(path) or fs.du(path) > DRIVER_PLAN_MAX_BYTES:
        return None  # a missing list is reported by read_objects on the Ray path
    frame = read_small_objects(data)
    return frame if len(frame) <= DRIVER_PLAN_MAX_ROWS else None


def _plan_in_driver(frame: pd.DataFrame, index: pd.DataFrame, bands: list[str], duplicates: str):
    """The rows ``_plan_on_ray`` makes, for a small list held in the driver."""
    frame = TileAssigner(index, bands)(frame.reset_index(drop=True))
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
