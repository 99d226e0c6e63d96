"""FITS file layouts: where an image's pixels are, how they are encoded, whole-file compression.

Split out of ``raycat.surveys.store`` (which does the fetching) so the format knowledge lives in one
place. Real survey products bring conventions a reader must honour:

- whole-file compression: gzip (unWISE companions) and bzip2 (SDSS ``frame-*.fits.bz2``); such
  files have no random access, so they are read whole (``TileLayout.range_readable``);
- header inheritance (HSC coadds: the image extension says INHERIT = T and its zero point
  FLUXMAG0 is in the primary header), merged here so callers see one header;
- old-style ``PC00i00j`` WCS keywords (PS1 fitscut cutouts), renamed to ``PCi_j``: wcslib
  still accepts the old form with a deprecation warning, the rename keeps that from mattering.
"""

from __future__ import annotations

import bz2
import gzip
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, Literal, cast

import numpy as np

GZIP_MAGIC = b"\x1f\x8b"
BZIP2_MAGIC = b"BZh"
Compression = Literal["gzip", "bz2"]
TileKind = Literal["raw", "compressed", "gzip", "bz2"]
_OLD_PC = re.compile(r"^PC0*(\d)0*(\d)$")
_NOT_INHERITED = {
    "SIMPLE",
    "XTENSION",
    "BITPIX",
    "NAXIS",
    "NAXIS1",
    "NAXIS2",
    "EXTEND",
    "PCOUNT",
    "GCOUNT",
    "COMMENT",
    "HISTORY",
    "",
    "EXTNAME",
    "CHECKSUM",
    "DATASUM",
}


def compression_of(magic: bytes) -> Compression | None:
    """Whole-file compression from a file's first bytes (None: plain FITS)."""
    if magic.startswith(GZIP_MAGIC):
        return "gzip"
    if magic.startswith(BZIP2_MAGIC):
        return "bz2"
    return None


BinaryFile = IO[bytes] | io.RawIOBase  # a local file or a RangeFile over an object store


def decompressing(f: BinaryFile, compression: Compression | None) -> BinaryFile:
    """A file object that yields the FITS bytes of ``f`` (streamed, for header reads)."""
    if compression == "gzip":
        return cast(IO[bytes], gzip.GzipFile(fileobj=f))
    if compression == "bz2":
        return bz2.BZ2File(f)
    return f


def decompressed(raw: bytes) -> bytes:
    """The FITS bytes of a whole file, whatever its whole-file compression."""
    kind = compression_of(raw[:3])
    if kind == "gzip":
        return gzip.decompress(raw)
    if kind == "bz2":
        return bz2.decompress(raw)
    return raw


def modern_wcs_keywords(header) -> None:
    """Rename old-style ``PC00i00j`` keywords (PS1 fitscut) to ``PCi_j`` in place."""
    for key in list(header):  # a copy: the loop adds keywords
        old = _OLD_PC.match(key)
        if old is None:
            continue
        i, j = old.groups()
        if f"PC{i}_{j}" not in header:
            header[f"PC{i}_{j}"] = header[key]
        del header[key]


def normalised_header(header, primary=None):
    """A copy of an image header with inherited primary keywords and modern WCS keywords."""
    header = header.copy()
    if primary is not None and header.get("INHERIT", False):
        for card in primary.cards:
            if card.keyword not in _NOT_INHERITED and card.keyword not in header:
                header.append(card)
    modern_wcs_keywords(header)
    return header


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

        Whole-file gzip and bzip2 have no random access. For tile-compressed images astropy's
        ``.section`` decompresses only the tiles a box touches but, on anything but a local
        memory map, first loads the HDU's whole compressed table and heap, so a section
        costs the bytes of the whole file: such tiles are better read once, in full.
        """
        return self.kind == "raw"


class RangeFile(io.RawIOBase):
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
            self._block = self._fetch(
                self._pos, min(self._size, max(end, self._pos + self._block_size))
            )
        chunk = self._block[self._pos - self._block_start : end - self._block_start]
        buffer[: len(chunk)] = chunk
        self._pos += len(chunk)
        return len(chunk)


def layout_of(hdu, index: int, compression: Compression | None, primary=None) -> TileLayout:
    """The layout of image HDU ``hdu`` (number ``index``); ``primary`` is the file's primary
    header, whose keywords the image header inherits when it says INHERIT = T."""
    from astropy.io import fits

    header = normalised_header(hdu.header, primary)
    shape = (int(hdu.shape[-2]), int(hdu.shape[-1]))
    if len(hdu.shape) > 2 and int(np.prod(hdu.shape[:-2])) != 1:
        raise ValueError(f"image has shape {hdu.shape}; raycat reads 2-D images")
    if compression is not None:
        return TileLayout(header, index, shape, compression)
    if isinstance(hdu, fits.CompImageHDU):
        return TileLayout(header, index, shape, "compressed")
    dtype = np.dtype(
        {8: "u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}[int(header["BITPIX"])]
    )
    return TileLayout(
        header,
        index,
        shape,
        "raw",
        int(hdu.fileinfo()["datLoc"]),
        dtype,
        float(header.get("BSCALE", 1.0)),
        float(header.get("BZERO", 0.0)),
    )


def checked_size(layout: TileLayout, file_size: int) -> TileLayout:
    """Refuse a raw image whose file ends before its pixels do (a truncated upload), so
    every read of it fails alike instead of only the sections past the cut."""
    if layout.kind == "raw":
        end = layout.data_offset + layout.shape[0] * layout.shape[1] * layout.disk_dtype.itemsize
        if file_size < end:
            raise EOFError(f"file has {file_size} bytes, its image ends at byte {end}: truncated")
    return layout


def decode(raw: bytes | memoryview, layout: TileLayout, shape: tuple[int, int]) -> np.ndarray:
    """Big-endian FITS pixels -> native float32, applying BSCALE/BZERO in double and then
    rounding, as cfitsio does for a full local read: a section and the whole image give the
    same values, bit for bit."""
    count = shape[0] * shape[1]
    if len(raw) < count * layout.disk_dtype.itemsize:
        raise EOFError("image data shorter than the header says: file truncated")
    pixels = np.frombuffer(raw, dtype=layout.disk_dtype, count=count).reshape(shape)
    if layout.bscale != 1.0 or layout.bzero != 0.0:
        return (pixels * layout.bscale + layout.bzero).astype(np.float32)
    return pixels.astype(np.float32)


def image_layout(
    hdus, compression: Compression | None, file_size: int, hdu: int | None = None
) -> TileLayout:
    """Layout of image HDU ``hdu``, or (None) of the first image HDU with data."""
    primary = hdus[0].header
    candidates = enumerate(hdus) if hdu is None else [(hdu, hdus[hdu])]
    for index, item in candidates:
        if item.is_image and len(item.shape) >= 2 and item.shape[-1] > 0:
            return checked_size(layout_of(item, index, compression, primary), file_size)
    raise ValueError("no image HDU with data" if hdu is None else f"HDU {hdu} holds no image")
