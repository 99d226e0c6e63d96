"""Writing the partitioned tile index: parts per chunk and pixel, then the metadata last.

Rows arrive in chunks (a ring of computed tiles, a batch of header reads) and no process
holds them all: each chunk is listed by pixel and written as one part per pixel it touches
(``part-<chunk>``), so chunks written by parallel tasks never collide and no group-by or
shuffle is needed; a pixel ends up with a few parts (one per chunk that reaches it), read
together. The parts of one run go into a fresh build directory; the metadata file, written
last and atomically, switches readers to it, and only then are the builds it replaces
deleted (only ``build-<hex>`` directories: nothing raycat did not write).
"""

from __future__ import annotations

import contextlib
import io
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from raycat import schema
from raycat.errors import RaycatError
from raycat.fsutil import filesystem, put_atomic, storage_errors
from raycat.surveys.tile_index import (
    INDEX_COLUMNS,
    INDEX_ORDER,
    TileIndexMeta,
    complete_rows,
    index_pixels,
    read_meta,
)


@dataclass
class PartStats:
    """What one chunk wrote (small: summed by the writer into the metadata)."""

    rows: int = 0
    entries: int = 0
    files: int = 0
    bytes: int = 0
    pixels: list[int] = field(default_factory=list)
    tiles_per_band: dict[str, int] = field(default_factory=dict)
    surveys: list[str] = field(default_factory=list)


def new_build() -> str:
    """A fresh build directory name (one writer run)."""
    return f"{schema.TILE_INDEX_BUILD_PREFIX}{uuid.uuid4().hex}"


def write_parts(
    out: str, storage_options: dict | None, build: str, chunk: int, frame: pd.DataFrame
) -> PartStats:
    """Write one chunk of rows as one Parquet part per pixel it touches (pure: runs in a
    Ray task as well as in the caller)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if frame.empty:
        return PartStats()
    frame = complete_rows(frame, out)
    rows, pixels = index_pixels(frame)
    # no pandas metadata, no statistics (min/max of header strings), no Arrow schema copy:
    # a part of a few rows is ~4 KB instead of ~19 KB
    table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)
    order = np.argsort(pixels, kind="stable")
    rows, pixels = rows[order], pixels[order]
    cuts = np.flatnonzero(np.diff(pixels)) + 1
    stats = _chunk_stats(frame, len(rows))
    with storage_errors(f"cannot write the tile index {out}"):
        fs, root = filesystem(out, storage_options)
        for group in np.split(np.arange(len(rows)), cuts):
            pixel = int(pixels[group[0]])
            buffer = io.BytesIO()
            pq.write_table(
                table.take(rows[group]),
                buffer,
                compression="zstd",
                write_statistics=False,
                store_schema=False,
            )
            path = f"{root.rstrip('/')}/{schema.tile_index_part_relpath(build, pixel, chunk)}"
            fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            fs.pipe_file(path, buffer.getvalue())
            stats.files += 1
            stats.bytes += buffer.tell()
            stats.pixels.append(pixel)
    return stats


def _chunk_stats(frame: pd.DataFrame, entries: int) -> PartStats:
    bands = frame[schema.TILE_BAND].value_counts()
    return PartStats(
        rows=len(frame),
        entries=entries,
        tiles_per_band={str(b): int(n) for b, n in bands.items()},
        surveys=sorted(set(frame[schema.TILE_SURVEY].astype(str)) - {""}),
    )


def commit(
    out: str, storage_options: dict | None, build: str, parts: list[PartStats], append=False
) -> TileIndexMeta:
    """Write the metadata (last, atomically) naming ``build`` (and, with ``append``, the
    builds already there), then delete the builds it replaces."""
    fs, root = filesystem(out, storage_options)
    root = root.rstrip("/")
    old = _old_meta(fs, root, out)
    meta = _merged_meta(build, parts, old if append else None)
    if meta.rows == 0:
        raise RaycatError(f"no tile rows to write to the tile index {out}")
    with storage_errors(f"cannot write the tile index {out}"):
        put_atomic(
            fs, f"{root}/{schema.TILE_INDEX_META_FILE}", meta.model_dump_json(indent=1).encode()
        )
        _delete_builds(fs, root, keep=set(meta.builds))
    return meta


def _old_meta(fs, root: str, out: str) -> TileIndexMeta | None:
    if not fs.exists(f"{root}/{schema.TILE_INDEX_META_FILE}"):
        return None
    return read_meta(fs, root, out)


def _merged_meta(build: str, parts: list[PartStats], old: TileIndexMeta | None) -> TileIndexMeta:
    """The metadata of ``parts`` (one build), added to ``old`` when appending."""
    per_band: dict[str, int] = dict(old.tiles_per_band) if old else {}
    new_bands: dict[str, int] = {}
    for part in parts:
        for band, n in part.tiles_per_band.items():
            new_bands[band] = new_bands.get(band, 0) + n
    clash = sorted(set(per_band) & set(new_bands))
    if clash:
        raise RaycatError(
            f"the tile index already has band(s) {', '.join(clash)}: rebuild it without "
            "--append to replace them"
        )
    per_band.update(new_bands)
    surveys = {s for p in parts for s in p.surveys} | set(old.surveys if old else [])
    return TileIndexMeta(
        index_order=INDEX_ORDER,
        builds=[*(old.builds if old else []), build],
        rows=sum(p.rows for p in parts) + (old.rows if old else 0),
        entries=sum(p.entries for p in parts) + (old.entries if old else 0),
        pixel_dirs=len({px for p in parts for px in p.pixels}) + (old.pixel_dirs if old else 0),
        files=sum(p.files for p in parts) + (old.files if old else 0),
        bytes=sum(p.bytes for p in parts) + (old.bytes if old else 0),
        tiles_per_band=per_band,
        surveys=sorted(surveys),
        columns=list(INDEX_COLUMNS),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def _delete_builds(fs, root: str, keep: set[str]) -> None:
    """Remove build directories not in ``keep``: the replaced ones and any a crashed run
    left (only names raycat gives builds; one writer per index at a time)."""
    with contextlib.suppress(FileNotFoundError):
        for path in fs.ls(root, detail=False):
            name = path.rstrip("/").rsplit("/", 1)[-1]
            if schema.TILE_INDEX_BUILD_RE.match(name) and name not in keep:
                fs.rm(path, recursive=True)


def abort(out: str, storage_options: dict | None, build: str) -> None:
    """Remove a build that will not be committed (the index stays as it was)."""
    fs, root = filesystem(out, storage_options)
    with contextlib.suppress(FileNotFoundError):
        fs.rm(f"{root.rstrip('/')}/{build}", recursive=True)


def write_tile_index(
    rows: pd.DataFrame | Iterable[pd.DataFrame],
    out: str,
    storage_options: dict | None = None,
    append: bool = False,
) -> TileIndexMeta:
    """Write rows (one frame, or an iterable of chunks, streamed) as the partitioned index
    at ``out``, replacing the one there (or adding to it with ``append``); on any failure
    the index stays as it was."""
    chunks = [rows] if isinstance(rows, pd.DataFrame) else rows
    build = new_build()
    try:
        parts = [
            write_parts(out, storage_options, build, i, frame) for i, frame in enumerate(chunks)
        ]
        return commit(out, storage_options, build, parts, append)
    except BaseException:
        abort(out, storage_options, build)
        raise
