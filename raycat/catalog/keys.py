"""A catalog partition by its NUNIQ key: the one int the pipeline knows a work unit by.

A catalog holds partitions of mixed HEALPix orders (a dense pixel split into its children,
HATS-style). On disk a partition and its done marker are still named by (order, pixel)
(``raycat.schema``: ``Norder=k/Dir=d/Npix=n``), so a catalog of an older raycat, written at one
order, reads the same; everything above the file names speaks of NUNIQ keys
(``raycat.healpix.unit_key``), so partitions of every order share one set and one dict.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import numpy as np

from raycat import schema as S
from raycat.errors import RaycatError
from raycat.healpix import ORDER as MAX_ORDER
from raycat.healpix import Partitioning, unit_key, unit_order_pixel, unit_orders_pixels, unit_ranges

LAST_KEY = 16 << (2 * MAX_ORDER)  # 4 * 4**29 + 12 * 4**29: the first key past order 29


def order_pixel(key: int) -> tuple[int, int]:
    """(order, pixel) of a partition key; a one-line error for an int that is not one."""
    if not 4 <= int(key) < LAST_KEY:
        raise RaycatError(f"catalog: {key} is not a work unit (NUNIQ key of a HEALPix pixel)")
    return unit_order_pixel(int(key))


def label(key: int) -> str:
    """``ORDER/PIX`` of a key, as ``--region`` writes pixels: for messages and logs."""
    order, pixel = order_pixel(key)
    return f"{order}/{pixel}"


def partition_relpath(key: int) -> str:
    """The partition file of a key, relative to the catalog root."""
    return S.partition_relpath(*order_pixel(key))


def marker_relpath(key: int) -> str:
    """The done marker of a key, relative to the catalog root."""
    return S.done_marker_relpath(*order_pixel(key))


def key_of_partition(path: str) -> int | None:
    """The key of a partition file's path; None if the path is not one."""
    found = S.partition_of(path)
    return None if found is None else unit_key(*found)


def key_of_marker(path: str) -> int | None:
    """The key of a done marker's path; None if the path is not one."""
    found = S.done_marker_of(path)
    return None if found is None else unit_key(*found)


def overlapping_pair(keys: Iterable[int]) -> tuple[int, int] | None:
    """A pixel and one of its descendants among ``keys`` (None if they are disjoint).

    HEALPix pixels are nested ranges on the order-29 curve: sorted by start, coarser first,
    an ancestor is directly followed by one of its descendants, so one pass finds a pair.
    """
    keys = np.unique(np.fromiter((int(k) for k in keys), dtype=np.int64))
    if len(keys) < 2:
        return None
    starts, ends = unit_ranges(keys)
    by_start = np.lexsort((-ends, starts))
    starts, ends, keys = starts[by_start], ends[by_start], keys[by_start]
    inside = np.flatnonzero(starts[1:] < ends[:-1])
    return (int(keys[inside[0]]), int(keys[inside[0] + 1])) if len(inside) else None


def disjoint_keys(keys: Iterable[int]) -> list[int]:
    """``keys`` without overlaps, sorted: where a pixel and its descendant are both present
    (a second partitioning an older raycat left), the most common order wins (the lower on
    a tie), then the next, keeping only what no kept key overlaps."""
    keys = np.unique(np.fromiter((int(k) for k in keys), dtype=np.int64))
    if overlapping_pair(keys) is None:
        return keys.tolist()
    orders, _ = unit_orders_pixels(keys)
    counts = Counter(orders.tolist())
    kept = np.array([], dtype=np.int64)
    for order in sorted(counts, key=lambda o: (-counts[o], o)):
        group = keys[orders == order]  # one order: disjoint among themselves
        clash = Partitioning(kept).overlapping(*unit_ranges(group))
        kept = np.concatenate([kept, group[~clash]])
    return sorted(kept.tolist())
