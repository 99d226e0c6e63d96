"""Adaptive work units, HATS-style: a pixel is split into its children until it holds at most
``cutouts.objects_per_unit`` objects.

Object density varies 30x and more across the sky (the Galactic plane, survey depth, deep
patches), so one HEALPix order for the whole sky makes partitions of a handful of objects in
one place and of millions in another. Here each pixel is taken at the coarsest order at which
it holds no more than the target, as hats-import does: a catalog then holds partitions of
mixed orders (hats and lsdb read them), each a work unit, keyed by NUNIQ
(``raycat.healpix.unit_key``).

The decision needs only a histogram: objects (and id-set hashes, ``raycat.plan.idhash``) per
pixel at ``FINE_ORDER``. On Ray it is reduced and split per ``MIN_ORDER`` pixel in separate
tasks (a unit never spans two of them), so the driver receives the units alone: O(units),
never O(objects) nor O(sky pixels).

Two constraints can be given. ``keep``: partitions that already exist (a catalog being resumed
keeps its partitioning; new objects outside them get new units that overlap none). ``floor``:
the partitions of a HATS catalog read as input; a unit then lies inside one of them, so its
rows come from one input file and need no global sort.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from raycat import schema
from raycat.healpix import ORDER as HEALPIX_ORDER
from raycat.healpix import Partitioning, unit_key, unit_orders_pixels
from raycat.plan.idhash import COUNT, HASH, PIXEL, pixel_summary

MIN_ORDER = 3  # coarsest adaptive unit (54 deg2); also the pixel one Ray task splits alone
FINE_ORDER = 10  # histogram order (12 arcmin2): the finest unit where density allows none
# Objects per splitting task (when more than one per CPU): their histogram rows are at most
# as many (a sparse sky gives one per object), 24 bytes each
SHARE_ROWS = 2_000_000


@dataclass(frozen=True)
class Rules:
    """How units are cut: adaptive below ``threshold`` objects, or one ``fixed`` order; with
    existing partitions to ``keep`` and input partitions to nest in (``floor``)."""

    threshold: int
    fixed: int | None = None
    keep: tuple[int, ...] = ()
    floor: tuple[int, ...] = ()

    @property
    def fine_order(self) -> int:
        """The histogram order: deep enough for every order a unit may need."""
        orders = [FINE_ORDER if self.fixed is None else self.fixed]
        for keys in (self.keep, self.floor):
            if keys:
                orders.append(int(unit_orders_pixels(np.array(keys))[0].max()))
        return max(orders)

    @property
    def min_order(self) -> int:
        return MIN_ORDER if self.fixed is None else min(self.fixed, MIN_ORDER)


def split(pixels, counts, hashes, rules: Rules) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(unit keys, objects, id-set hashes) of the units covering a histogram.

    ``pixels`` (nested, at ``rules.fine_order``) may repeat (one row per block that saw them);
    top-down from ``rules.min_order``, a pixel becomes a unit at the first order at which it
    holds at most ``threshold`` objects (any count at the fine order, or at the fixed order),
    overlaps no kept partition and lies inside one floor partition.
    """
    pixels, counts, hashes = _merge(pixels, counts, hashes)
    fine = rules.fine_order
    units = np.full(len(pixels), -1, dtype=np.int64)
    if rules.keep:
        units = Partitioning(rules.keep).unit_of(pixels << 2 * (HEALPIX_ORDER - fine))
    keep = Partitioning(rules.keep) if rules.keep else None
    floor = Partitioning(rules.floor) if rules.floor else None
    first = rules.min_order if rules.fixed is None else rules.fixed
    for order in range(first, fine + 1):
        todo = np.flatnonzero(units < 0)
        if not len(todo):
            break
        parents = pixels[todo] >> 2 * (fine - order)
        unique, starts = np.unique(parents, return_index=True)  # pixels sorted: parents too
        totals = np.add.reduceat(counts[todo], starts)
        last = order == fine or order == rules.fixed
        accept = (totals <= rules.threshold) | last
        accept &= _allowed(unique, order, keep, floor)
        chosen = accept[np.searchsorted(unique, parents)]
        units[todo[chosen]] = unit_key(order, parents[chosen])
    if (units < 0).any():  # only a floor finer than the histogram could leave some
        raise ValueError("some objects fit no unit: the input partitions overlap")
    return _merge(units, counts, hashes)


def _allowed(pixels: np.ndarray, order: int, keep, floor) -> np.ndarray:
    """Pixels at ``order`` that may be units: overlapping no kept partition, inside one input
    partition."""
    shift = 2 * (HEALPIX_ORDER - order)
    start, end = pixels << shift, (pixels + 1) << shift
    ok = np.ones(len(pixels), dtype=bool)
    if keep is not None:
        ok &= ~keep.overlapping(start, end)
    if floor is not None:
        inside = floor.unit_of(start)
        ok &= (inside >= 0) & (inside == floor.unit_of(end - 1))
    return ok


def _merge(keys, counts, hashes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted unique ``keys`` with their counts and hashes summed (hashes modulo 2^64)."""
    keys = np.asarray(keys, dtype=np.int64)
    order = np.argsort(keys, kind="stable")
    unique, starts = np.unique(keys[order], return_index=True)
    if not len(unique):
        return unique, np.zeros(0, np.int64), np.zeros(0, np.uint64)
    counts = np.add.reduceat(np.asarray(counts, dtype=np.int64)[order], starts)
    hashes = np.add.reduceat(np.asarray(hashes, dtype=np.uint64)[order], starts)
    return unique, counts, hashes.astype(np.uint64)


# --- on rows ------------------------------------------------------------------------------


def units_of_frame(frame, rules: Rules) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`split` of the rows of a list held in the driver (small lists)."""
    shift = 2 * (HEALPIX_ORDER - rules.fine_order)
    return split(*pixel_summary(frame[schema.HEALPIX_29], frame[schema.ID], shift), rules)


def units_on_ray(ds, rules: Rules) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`split` of a dataset's rows on Ray: each block summarised where it lies and its
    summary cut by ``MIN_ORDER`` pixel in the same task, the pieces exchanged
    (``raycat.plan.exchange``) and each share split by its own task. Units of a fixed order
    coarser than ``MIN_ORDER`` (or kept ones) come from several shares and are added up
    here; the driver holds the units only."""
    import ray

    from raycat.plan.exchange import exchange, shares_for

    # never more shares than MIN_ORDER pixels, the smallest part one task splits alone
    shares = min(shares_for(ds.count(), SHARE_ROWS), 12 * 4**MIN_ORDER)
    blocks = ds.to_arrow_refs()
    found = exchange(blocks, _block_histogram, _split_share, shares, (rules, shares), (rules,))
    parts = ray.get(found)
    if not parts:
        return _merge([], [], [])
    return _merge(*(np.concatenate([p[i] for p in parts]) for i in range(3)))


def _block_histogram(block: pa.Table, rules: Rules, shares: int) -> tuple[pa.Table, np.ndarray]:
    """``exchange`` cut: a block's histogram rows (pixel, objects, id hash), each
    ``MIN_ORDER`` pixel to one share."""
    fine = rules.fine_order
    pixels, counts, hashes = pixel_summary(
        block[schema.HEALPIX_29].to_numpy(),
        block[schema.ID].to_numpy(zero_copy_only=False),
        2 * (HEALPIX_ORDER - fine),
    )
    group = pixels >> 2 * (fine - min(rules.min_order, fine))
    return pa.table({PIXEL: pixels, COUNT: counts, HASH: hashes}), group % shares


def _split_share(summary: pa.Table, rules: Rules) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``exchange`` reduce: the units of the ``MIN_ORDER`` pixels of one share."""
    pixels, counts, hashes = (summary[c].to_numpy() for c in (PIXEL, COUNT, HASH))
    return split(pixels, counts, hashes, rules)


def summary_of(keys: np.ndarray, counts: np.ndarray) -> dict:
    """Partitions by order and objects per partition (min, median, max): the plan's shape."""
    orders, _ = unit_orders_pixels(keys)
    found, per_order = np.unique(orders, return_counts=True)
    sizes = np.asarray(counts) if len(counts) else np.zeros(1, np.int64)
    return {
        "partitions": len(keys),
        "partitions_by_order": {int(o): int(n) for o, n in zip(found, per_order)},
        "objects_per_partition": {
            "min": int(sizes.min()),
            "median": float(np.median(sizes)),
            "max": int(sizes.max()),
        },
    }
