"""Tile stores over fsspec: safe relative URIs, header / full / section reads, byte counting.

A store is a root (a directory, ``file://``, ``s3://``, ``gs://`` or ``https://`` URL) and
tiles are addressed by URIs relative to it, exactly as the tile index and the manifest list
them. Three reads serve the cutout engine:

- ``read_header``: the image header (cached per tile; a few KiB from the start of the file).
- ``read_full`` (dense, whole tiles): the whole image; fitsio for local files (fastest),
  otherwise one whole-object GET, decoded directly (uncompressed) or by astropy (gzip,
  tile-compressed).
- ``read_section`` (sparse, and dense sections): only the pixels of a box. Uncompressed
  images are read as one byte range per image row, fetched together (``cat_ranges``:
  concurrent requests on object stores, one open file locally), or as one range of whole
  rows when the box is wide or the caller asks (``one_request``). astropy's ``.section``
  issues the same ranges as one blocking read per row (one HTTP round trip each), and for
  tile-compressed images it loads the whole compressed heap first unless the file is a
  local memory map; so gzip and tile-compressed tiles are not range-readable here
  (``TileLayout.range_readable``) and a section of one is cut from a full read. bzip2
  files (SDSS frames) are read like gzip ones.

Every read takes an optional ``hdu`` (None: the first image HDU with data), the surveys'
``ReadLayout.image_hdu``. File-format details (layouts, compression, header normalisation)
live in ``raycat.surveys.fits_layout``.

Every byte fetched is added to ``TileStore.bytes_read`` so benchmarks can report bytes per
object. Any failure to read or decode a tile raises ``TileReadError`` naming the URI.
"""

from __future__ import annotations

import io
import os
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from raycat import schema
from raycat.errors import RaycatError, StorePathError
from raycat.surveys.fits_layout import (
    RangeFile,
    TileKind,
    TileLayout,
    compression_of,
    decode,
    decompressed,
    decompressing,
    image_layout,
)
from raycat.surveys.retry import RetryPolicy, call_with_retries, is_transient

HEADER_BLOCK = 32 * 1024  # one fetch covers the headers of most tiles (a few 2880-byte blocks)
__all__ = [
    "LRUCache",
    "StorePathError",
    "TileKind",
    "TileLayout",
    "TileReadError",
    "TileStore",
    "open_store",
]


class TileReadError(RaycatError):
    """A tile that cannot be read or decoded: missing, truncated, corrupt, unreachable."""


class LRUCache:
    """Least-recently-used mapping bounded by item count and by total ``nbytes``."""

    def __init__(
        self,
        max_items: int,
        max_bytes: int | None = None,
        sizeof: Callable[[Any], int] = lambda value: 0,
    ):
        self.max_items, self.max_bytes, self._sizeof = max_items, max_bytes, sizeof
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self.nbytes = 0

    def get(self, key: Any) -> Any | None:
        if key not in self._items:
            return None
        self._items.move_to_end(key)
        return self._items[key]

    def put(self, key: Any, value: Any) -> None:
        if key in self._items:
            self.nbytes -= self._sizeof(self._items.pop(key))
        self._items[key] = value
        self.nbytes += self._sizeof(value)
        while self._items and (
            len(self._items) > self.max_items
            or (self.max_bytes is not None and self.nbytes > self.max_bytes)
        ):
            _, old = self._items.popitem(last=False)
            self.nbytes -= self._sizeof(old)

    def __len__(self) -> int:
        return len(self._items)


@contextmanager
def _tile_errors(uri: str) -> Iterator[None]:
    """Turn any failure to read or decode a tile into one TileReadError naming the URI.

    The catch is broad on purpose: fsspec backends, astropy, fitsio and zlib each raise their
    own types for a missing, truncated or corrupt file, and the caller only needs to know
    that this tile is unusable. astropy's truncation warning becomes an error too.
    """
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module="astropy")  # header-fix chatter
            warnings.filterwarnings("error", message=".*truncated.*")  # checked first
            yield
    except TileReadError:
        raise
    except Exception as err:
        reason = (str(err).strip().splitlines() or [""])[0]  # cfitsio appends its error stack
        raise TileReadError(f"cannot read tile {uri}: {type(err).__name__}: {reason}") from err


class TileStore:
    """Tiles under one root, read through fsspec; see the module docstring.

    ``header_cache_size`` headers are kept (an LRU): the memory of a long-lived reader is set
    by this bound, not by the tiles it has seen (a full sky has about a million)."""

    def __init__(
        self,
        root: str,
        storage_options: dict | None = None,
        header_cache_size: int = 128,
        retry: RetryPolicy | None = None,
    ):
        import fsspec

        self.retry = retry or RetryPolicy()
        self.root_url = root
        self.storage_options = dict(storage_options or {})
        self.fs, root_path = fsspec.core.url_to_fs(root, **self.storage_options)
        self.root = root_path.rstrip("/") or "/"
        self.is_local = "file" in _protocols(self.fs)
        self.bytes_read = 0
        self._layouts = LRUCache(header_cache_size)

    # --- paths ------------------------------------------------------------------------------
    def resolve(self, uri: str) -> str:
        """Full filesystem path of a relative tile URI (as ``self.fs`` addresses it).

        Checked by ``schema.relative_tile_uri``, so an index cannot make the store read elsewhere.
        """
        return f"{self.root.rstrip('/')}/{schema.relative_tile_uri(uri)}"

    # --- reads ------------------------------------------------------------------------------
    def layout(self, uri: str, hdu: int | None = None) -> TileLayout:
        """Header and pixel layout of a tile (cached: read once per tile per store)."""
        cached = self._layouts.get((uri, hdu))
        if cached is None:
            path = self.resolve(uri)
            cached = self._guarded(uri, lambda: self._read_layout(path, hdu))
            self._layouts.put((uri, hdu), cached)
        return cached

    def read_header(self, uri: str, hdu: int | None = None):
        """The tile's image header (astropy ``Header``)."""
        return self.layout(uri, hdu).header

    def read_full(self, uri: str, hdu: int | None = None) -> tuple[np.ndarray, Any]:
        """The whole image as native float32 (NaNs kept) and its header."""
        layout = self.layout(uri, hdu)
        path = self.resolve(uri)

        def read() -> np.ndarray:
            data = (
                self._read_local_full(path, layout)
                if self.is_local
                else self._read_remote_full(path, layout)
            )
            data = np.asarray(data, dtype=np.float32)
            if data.shape != layout.shape:
                raise ValueError(f"image shape {data.shape}, header says {layout.shape}")
            return data

        return self._guarded(uri, read), layout.header

    def read_section(
        self,
        uri: str,
        y0: int,
        y1: int,
        x0: int,
        x1: int,
        hdu: int | None = None,
        *,
        one_request: bool = False,
    ) -> tuple[np.ndarray, Any]:
        """Pixels ``[y0:y1, x0:x1]`` (0-based, inside the image) as float32, and the header.

        ``one_request``: on an object store, fetch whole rows y0..y1 in one byte range (one
        GET) even when the box is narrow: for a section many cutouts share, requests cost
        more than bytes. No effect on a local file (a read call is cheap; a box wider than
        half the image is one range there too).
        """
        layout = self.layout(uri, hdu)
        ny, nx = layout.shape
        if not (0 <= y0 < y1 <= ny and 0 <= x0 < x1 <= nx):
            raise ValueError(f"section [{y0}:{y1}, {x0}:{x1}] outside image {layout.shape}")
        if not layout.range_readable:
            data, header = self.read_full(uri, hdu)
            return data[y0:y1, x0:x1].copy(), header
        path = self.resolve(uri)
        merge = one_request and not self.is_local
        data = self._guarded(
            uri, lambda: self._read_raw_section(path, layout, (y0, y1, x0, x1), merge)
        )
        return np.asarray(data, dtype=np.float32), layout.header

    # --- internals --------------------------------------------------------------------------
    def _guarded(self, uri: str, read: Callable[[], Any]) -> Any:
        """``read()`` with transient store errors retried (bounded, with backoff); any
        failure left is one TileReadError naming the tile."""

        def attempt() -> Any:
            with _tile_errors(uri):
                return read()

        return call_with_retries(
            attempt, self.retry, f"tile {uri}", transient=lambda err: is_transient(err.__cause__)
        )

    def _fetch(self, path: str, start: int, end: int) -> bytes:
        chunk = self.fs.cat_file(path, start=start, end=end)
        self.bytes_read += len(chunk)
        return chunk

    def _open_counted(self, path: str) -> RangeFile:
        """A seekable file over counted ranged fetches of the file at ``path``."""
        size = self.fs.size(path)
        return RangeFile(lambda start, end: self._fetch(path, start, end), size, HEADER_BLOCK)

    def _read_layout(self, path: str, hdu: int | None) -> TileLayout:
        from astropy.io import fits

        with self._open_counted(path) as f:
            compression = compression_of(f.read(3))
            f.seek(0)
            with fits.open(decompressing(f, compression), lazy_load_hdus=True) as hdus:
                return image_layout(hdus, compression, f.size, hdu)

    def _read_local_full(self, path: str, layout: TileLayout) -> np.ndarray:
        import fitsio

        if layout.kind == "bz2":  # cfitsio builds do not all read bzip2
            return self._read_remote_full(path, layout)
        self.bytes_read += os.path.getsize(path)
        return fitsio.read(path, ext=layout.hdu_index)

    def _read_remote_full(self, path: str, layout: TileLayout) -> np.ndarray:
        from astropy.io import fits

        raw = self.fs.cat_file(path)
        self.bytes_read += len(raw)
        raw = decompressed(raw)
        if layout.kind == "raw":  # no astropy parse needed: decode the pixels in place
            return decode(memoryview(raw)[layout.data_offset :], layout, layout.shape)
        with fits.open(io.BytesIO(raw)) as hdus:
            return np.array(hdus[layout.hdu_index].data, dtype=np.float32)

    def _read_raw_section(
        self, path: str, layout: TileLayout, box: tuple[int, int, int, int], merge: bool
    ) -> np.ndarray:
        """One byte range per row, or one range for all rows when the gaps are small (or
        ``merge``)."""
        y0, y1, x0, x1 = box
        nx = layout.shape[1]
        item = layout.disk_dtype.itemsize
        width = (x1 - x0) * item
        if merge or (nx - (x1 - x0)) * item <= width:  # merged: at most 2x the box, or asked
            start = layout.data_offset + (y0 * nx) * item
            chunk = self._fetch_ranges(path, [start], [start + (y1 - y0) * nx * item])[0]
            return decode(chunk, layout, (y1 - y0, nx))[:, x0:x1]
        starts = [layout.data_offset + (y * nx + x0) * item for y in range(y0, y1)]
        chunks = self._fetch_ranges(path, starts, [s + width for s in starts])
        return decode(b"".join(chunks), layout, (y1 - y0, x1 - x0))

    def _fetch_ranges(self, path: str, starts: list[int], ends: list[int]) -> list[bytes]:
        if self.is_local:  # one open file; fsspec would reopen it per range
            with open(path, "rb") as f:
                chunks = [
                    os.pread(f.fileno(), end - start, start) for start, end in zip(starts, ends)
                ]
        else:
            chunks = self.fs.cat_ranges([path] * len(starts), starts, ends)
        for chunk, start, end in zip(chunks, starts, ends):
            if isinstance(chunk, Exception):
                raise chunk
            if len(chunk) != end - start:
                raise EOFError(f"read of bytes {start}-{end} returned {len(chunk)} bytes")
        self.bytes_read += sum(len(c) for c in chunks)
        return chunks


def _protocols(fs) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def open_store(root: str, storage_options: dict | None = None, read_attempts: int = 5) -> TileStore:
    """Open the tile store at ``root`` (path or URL) with explicit fsspec options.

    Never put credentials in ``storage_options``: the AWS/GCS credential chains supply them.
    """
    try:
        return TileStore(root, storage_options, retry=RetryPolicy(attempts=read_attempts))
    except (ImportError, ValueError) as err:
        raise RaycatError(f"cannot open tile store {root!r}: {err}") from err
