"""Tile stores over fsspec: safe relative URIs, header / full / section reads, byte counting.

A store is a root (a directory, ``file://``, ``s3://``, ``gs://`` or ``https://`` URL) and
tiles are addressed by URIs relative to it, exactly as the tile index and the manifest list
them. Three reads serve the cutout engine:

- ``read_header``: the image header (cached per tile; a few KiB from the start of the file).
- ``read_full`` (dense): the whole image; fitsio for local files (fastest), otherwise one
  whole-object GET, decoded directly (uncompressed) or by astropy (gzip, tile-compressed).
- ``read_section`` (sparse): only the pixels of a box. Uncompressed images are read as one
  byte range per image row, fetched together (``cat_ranges``: concurrent requests on object
  stores, one open file locally). astropy's ``.section`` issues the same ranges as one
  blocking read per row (one HTTP round trip each), and for tile-compressed images it loads
  the whole compressed heap first unless the file is a local memory map; so gzip and
  tile-compressed tiles are not range-readable here (``TileLayout.range_readable``) and a
  section of one is cut from a full read.

Every byte fetched is added to ``TileStore.bytes_read`` so benchmarks can report bytes per
object. Any failure to read or decode a tile raises ``TileReadError`` naming the URI.
"""

from __future__ import annotations

import gzip
import io
import os
import posixpath
import re
import warnings
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Literal

import numpy as np

from raycat.errors import RaycatError
from raycat.retry import RetryPolicy, call_with_retries, is_transient

HEADER_BLOCK = 32 * 1024  # one fetch covers the headers of most tiles (a few 2880-byte blocks)
GZIP_MAGIC = b"\x1f\x8b"
TileKind = Literal["raw", "compressed", "gzip"]


class StorePathError(RaycatError):
    """A tile URI that is not a plain path inside the store root."""


class TileReadError(RaycatError):
    """A tile that cannot be read or decoded: missing, truncated, corrupt, unreachable."""


class LRUCache:
    """Least-recently-used mapping bounded by item count and by total ``nbytes``."""

    def __init__(self, max_items: int, max_bytes: int | None = None,
                 sizeof: Callable[[Any], int] = lambda value: 0):
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
        while self._items and (len(self._items) > self.max_items or (
                self.max_bytes is not None and self.nbytes > self.max_bytes)):
            _, old = self._items.popitem(last=False)
            self.nbytes -= self._sizeof(old)

    def __len__(self) -> int:
        return len(self._items)


@dataclass(frozen=True)
class TileLayout:
    """Where a tile's image is in its file and how its pixels are encoded.

    ``header`` is the image header (for tile-compressed images, the uncompressed image's),
    ``shape`` is (ny, nx). ``data_offset``, ``disk_dtype``, ``bscale`` and ``bzero`` describe
    the raw pixels of uncompressed images; they are unused for the other kinds.
    """

    header: Any  # astropy.io.fits.Header
    hdu_index: int
    shape: tuple[int, int]
    kind: TileKind
    data_offset: int = 0
    disk_dtype: np.dtype = np.dtype(">f4")
    bscale: float = 1.0
    bzero: float = 0.0

    @property
    def range_readable(self) -> bool:
        """Whether a section can be read without reading the whole file (raw images only).

        Whole-file gzip has no random access. For tile-compressed images astropy's
        ``.section`` decompresses only the tiles a box touches but, on anything but a local
        memory map, first loads the HDU's whole compressed table and heap, so a section
        costs the bytes of the whole file: such tiles are better read once, in full.
        """
        return self.kind == "raw"


class _RangeFile(io.RawIOBase):
    """A seekable read-only file whose reads are ranged fetches of at least ``block`` bytes.

    The last block is kept, so astropy's seeks back and forth over a header cost one fetch.
    """

    def __init__(self, fetch: Callable[[int, int], bytes], size: int, block: int):
        self._fetch, self._size, self._block_size, self._pos = fetch, size, block, 0
        self._block_start, self._block = 0, b""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    @property
    def size(self) -> int:
        return self._size

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer) -> int:
        end = min(self._size, self._pos + len(buffer))
        if end <= self._pos:
            return 0
        block_end = self._block_start + len(self._block)
        if not (self._block_start <= self._pos and end <= block_end):
            self._block_start = self._pos
            self._block = self._fetch(self._pos, min(self._size, max(end, self._pos +
                                                                     self._block_size)))
        chunk = self._block[self._pos - self._block_start: end - self._block_start]
        buffer[: len(chunk)] = chunk
        self._pos += len(chunk)
        return len(chunk)


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
    except Exception as err:  # noqa: BLE001 - see docstring
        reason = (str(err).strip().splitlines() or [""])[0]  # cfitsio appends its error stack
        raise TileReadError(f"cannot read tile {uri}: {type(err).__name__}: {reason}") from err


_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


class TileStore:
    """Tiles under one root, read through fsspec; see the module docstring."""

    def __init__(self, root: str, storage_options: dict | None = None,
                 header_cache_size: int = 1024, retry: RetryPolicy | None = None):
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

        Rejects empty URIs, absolute paths, URLs with a scheme, backslashes and anything whose
        normalised path leaves the root, so an index cannot make the store read elsewhere.
        """
        if not isinstance(uri, str) or not uri.strip():
            raise StorePathError(f"tile uri must be a non-empty relative path, got {uri!r}")
        if uri.startswith(("/", "~")) or "\\" in uri or _SCHEME.match(uri):
            raise StorePathError(f"tile uri {uri!r} is not relative to the store root")
        normal = posixpath.normpath(uri)
        if normal in (".", "..") or normal.startswith("../"):
            raise StorePathError(f"tile uri {uri!r} escapes the store root")
        return f"{self.root.rstrip('/')}/{normal}"

    # --- reads ------------------------------------------------------------------------------
    def layout(self, uri: str) -> TileLayout:
        """Header and pixel layout of a tile (cached: read once per tile per store)."""
        cached = self._layouts.get(uri)
        if cached is None:
            path = self.resolve(uri)
            cached = self._guarded(uri, lambda: self._read_layout(path))
            self._layouts.put(uri, cached)
        return cached

    def read_header(self, uri: str):
        """The tile's image header (astropy ``Header``)."""
        return self.layout(uri).header

    def read_full(self, uri: str) -> tuple[np.ndarray, Any]:
        """The whole image as native float32 (NaNs kept) and its header."""
        layout = self.layout(uri)
        path = self.resolve(uri)

        def read() -> np.ndarray:
            data = self._read_local_full(path, layout) if self.is_local \
                else self._read_remote_full(path, layout)
            data = np.asarray(data, dtype=np.float32)
            if data.shape != layout.shape:
                raise ValueError(f"image shape {data.shape}, header says {layout.shape}")
            return data
        return self._guarded(uri, read), layout.header

    def read_section(self, uri: str, y0: int, y1: int, x0: int, x1: int
                     ) -> tuple[np.ndarray, Any]:
        """Pixels ``[y0:y1, x0:x1]`` (0-based, inside the image) as float32, and the header."""
        layout = self.layout(uri)
        ny, nx = layout.shape
        if not (0 <= y0 < y1 <= ny and 0 <= x0 < x1 <= nx):
            raise ValueError(f"section [{y0}:{y1}, {x0}:{x1}] outside image {layout.shape}")
        if not layout.range_readable:
            data, header = self.read_full(uri)
            return data[y0:y1, x0:x1].copy(), header
        path = self.resolve(uri)
        data = self._guarded(uri, lambda: self._read_raw_section(path, layout, y0, y1, x0, x1))
        return np.asarray(data, dtype=np.float32), layout.header

    # --- internals --------------------------------------------------------------------------
    def _guarded(self, uri: str, read: Callable[[], Any]) -> Any:
        """``read()`` with transient store errors retried (bounded, with backoff); any
        failure left is one TileReadError naming the tile."""
        def attempt() -> Any:
            with _tile_errors(uri):
                return read()
        return call_with_retries(attempt, self.retry, f"tile {uri}",
                                 transient=lambda err: is_transient(err.__cause__))

    def _fetch(self, path: str, start: int, end: int) -> bytes:
        chunk = self.fs.cat_file(path, start=start, end=end)
        self.bytes_read += len(chunk)
        return chunk

    def _open_counted(self, path: str) -> _RangeFile:
        """A seekable file over counted ranged fetches of the file at ``path``."""
        size = self.fs.size(path)
        return _RangeFile(lambda start, end: self._fetch(path, start, end), size, HEADER_BLOCK)

    def _read_layout(self, path: str) -> TileLayout:
        from astropy.io import fits

        with self._open_counted(path) as f:
            is_gzip = f.read(2) == GZIP_MAGIC
            f.seek(0)
            source = gzip.GzipFile(fileobj=f) if is_gzip else f
            with fits.open(source, lazy_load_hdus=True) as hdus:
                for index, hdu in enumerate(hdus):
                    if hdu.is_image and len(hdu.shape) >= 2 and hdu.shape[-1] > 0:
                        return _checked_size(_layout_of(hdu, index, is_gzip), f.size)
        raise ValueError("no image HDU with data")

    def _read_local_full(self, path: str, layout: TileLayout) -> np.ndarray:
        import fitsio

        self.bytes_read += os.path.getsize(path)
        return fitsio.read(path, ext=layout.hdu_index)

    def _read_remote_full(self, path: str, layout: TileLayout) -> np.ndarray:
        from astropy.io import fits

        raw = self.fs.cat_file(path)
        self.bytes_read += len(raw)
        if raw[:2] == GZIP_MAGIC:
            raw = gzip.decompress(raw)
        if layout.kind == "raw":  # no astropy parse needed: decode the pixels in place
            return _decode(memoryview(raw)[layout.data_offset:], layout, layout.shape)
        with fits.open(io.BytesIO(raw)) as hdus:
            return np.array(hdus[layout.hdu_index].data, dtype=np.float32)

    def _read_raw_section(self, path: str, layout: TileLayout, y0: int, y1: int, x0: int,
                          x1: int) -> np.ndarray:
        """One byte range per row, or one range for all rows when the gaps are small."""
        nx = layout.shape[1]
        item = layout.disk_dtype.itemsize
        width = (x1 - x0) * item
        if (nx - (x1 - x0)) * item <= width:  # merged read costs at most 2x the box
            start = layout.data_offset + (y0 * nx) * item
            chunk = self._fetch_ranges(path, [start], [start + (y1 - y0) * nx * item])[0]
            return _decode(chunk, layout, (y1 - y0, nx))[:, x0:x1]
        starts = [layout.data_offset + (y * nx + x0) * item for y in range(y0, y1)]
        chunks = self._fetch_ranges(path, starts, [s + width for s in starts])
        return _decode(b"".join(chunks), layout, (y1 - y0, x1 - x0))

    def _fetch_ranges(self, path: str, starts: list[int], ends: list[int]) -> list[bytes]:
        if self.is_local:  # one open file; fsspec would reopen it per range
            with open(path, "rb") as f:
                chunks = [os.pread(f.fileno(), end - start, start)
                          for start, end in zip(starts, ends)]
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


def _layout_of(hdu, index: int, is_gzip: bool) -> TileLayout:
    from astropy.io import fits

    header = hdu.header.copy()
    shape = tuple(int(n) for n in hdu.shape[-2:])
    if len(hdu.shape) > 2 and int(np.prod(hdu.shape[:-2])) != 1:
        raise ValueError(f"image has shape {hdu.shape}; raycat reads 2-D images")
    if is_gzip:
        return TileLayout(header, index, shape, "gzip")
    if isinstance(hdu, fits.CompImageHDU):
        return TileLayout(header, index, shape, "compressed")
    dtype = np.dtype({8: "u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4",
                      -64: ">f8"}[int(header["BITPIX"])])
    return TileLayout(header, index, shape, "raw", int(hdu.fileinfo()["datLoc"]), dtype,
                      float(header.get("BSCALE", 1.0)), float(header.get("BZERO", 0.0)))


def _checked_size(layout: TileLayout, file_size: int) -> TileLayout:
    """Refuse a raw image whose file ends before its pixels do (a truncated upload), so
    every read of it fails alike instead of only the sections past the cut."""
    if layout.kind == "raw":
        end = layout.data_offset + layout.shape[0] * layout.shape[1] * layout.disk_dtype.itemsize
        if file_size < end:
            raise EOFError(f"file has {file_size} bytes, its image ends at byte {end}: truncated")
    return layout


def _decode(raw: bytes | memoryview, layout: TileLayout, shape: tuple[int, int]) -> np.ndarray:
    """Big-endian FITS pixels -> native float32, applying BSCALE/BZERO."""
    count = shape[0] * shape[1]
    if len(raw) < count * layout.disk_dtype.itemsize:
        raise EOFError("image data shorter than the header says: file truncated")
    pixels = np.frombuffer(raw, dtype=layout.disk_dtype, count=count).reshape(shape)
    data = pixels.astype(np.float32)
    if layout.bscale != 1.0 or layout.bzero != 0.0:
        data = data * np.float32(layout.bscale) + np.float32(layout.bzero)
    return data


def open_store(root: str, storage_options: dict | None = None,
               read_attempts: int = 5) -> TileStore:
    """Open the tile store at ``root`` (path or URL) with explicit fsspec options.

    Never put credentials in ``storage_options``: the AWS/GCS credential chains supply them.
    """
    try:
        return TileStore(root, storage_options, retry=RetryPolicy(attempts=read_attempts))
    except (ImportError, ValueError) as err:
        raise RaycatError(f"cannot open tile store {root!r}: {err}") from err
