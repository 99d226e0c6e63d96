"""An order-independent hash of a set of object ids, and per-pixel counts and hashes of rows.

A catalog partition's done marker records the number of objects it holds and the hash of
their ids; the planner computes the same two figures for each work unit. A resume compares
them to tell a partition that still holds exactly the planned objects from one whose objects
changed, without reading either object list back.

The hash of a set is the sum, modulo 2^64, of a 64-bit hash of each id: exact for "the same
set" (up to a 2^-64 collision), independent of row order, and additive, so blocks and child
pixels combine by addition. Nothing here holds more than one block of ids: on Ray Data each
block is summarised where it lies and only the per-pixel sums reach the driver.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

MASK = (1 << 64) - 1  # hashes are unsigned 64-bit integers; sums wrap around
# How a text id is hashed: SipHash-2-4 of its UTF-8 bytes under a fixed key (pandas'
# ``hash_array``, in C), never Python's ``hash()``, which is salted per process. Written here
# so that the value of an id cannot move with a library default.
TEXT_ENCODING = "utf8"
TEXT_HASH_KEY = "0123456789123456"


def _as_ids(ids) -> np.ndarray:
    """``ids`` as an int64 array when they are integers (any integer dtype, or an object
    array of Python ints such as a null-free pandas Int64 gives), else as an object array
    of their values (text)."""
    values = np.asarray(ids)
    if values.dtype.kind in "iub":
        return values.astype(np.int64)
    values = values.astype(object)
    if len(values) and isinstance(values[0], (int, np.integer)):
        return values.astype(np.int64)
    return values


def text_hashes(values: np.ndarray) -> np.ndarray:
    """A stable 64-bit hash (uint64) of each text id: the same in every process and run."""
    return pd.util.hash_array(
        np.asarray(values, dtype=object), encoding=TEXT_ENCODING, hash_key=TEXT_HASH_KEY
    )


def id_hashes(ids) -> np.ndarray:
    """A stable 64-bit hash (uint64) of each id: integer ids by their int64 value, text ids
    by their UTF-8 bytes (``text_hashes``), with pandas' fixed-key hash, so a catalog's done
    markers match its plan in every process and run."""
    values = _as_ids(ids)
    if values.dtype == np.int64:
        return pd.util.hash_array(values)
    return text_hashes(values)


def id_keys(ids) -> np.ndarray:
    """A uint64 key per id, for what mixes ids arithmetically (the train/validation split,
    the Predictor's per-batch seed): an integer id is its own key (its two's complement, so
    integer ids split and seed as they always have), a text id the hash of its UTF-8 bytes."""
    values = _as_ids(ids)
    if values.dtype == np.int64:
        return values.view(np.uint64)
    return text_hashes(values)


def id_set_hash(ids) -> int:
    """The hash of the set ``ids``: the sum of their hashes modulo 2^64."""
    return int(np.sum(id_hashes(ids), dtype=np.uint64))


def format_hash(value: int) -> str:
    """A set hash as 16 hex digits (how markers store it)."""
    return f"{value & MASK:016x}"


def pixel_summary(healpix_29, ids, shift: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pixels, object counts, id-set hashes) of one block, pixel = ``healpix_29 >> shift``."""
    pixels = np.asarray(healpix_29, dtype=np.int64) >> shift
    order = np.argsort(pixels)  # sums do not depend on the order: no stable sort needed
    ordered = pixels[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]]) if len(ordered) else order
    if not len(starts):
        return ordered, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.uint64)
    counts = np.diff(np.r_[starts, len(ordered)])
    hashes = np.add.reduceat(id_hashes(np.asarray(ids)[order]), starts).astype(np.uint64)
    return ordered[starts], counts, hashes


PIXEL, COUNT, HASH = "pixel", "count", "id_hash"  # columns of a block's pixel summary
