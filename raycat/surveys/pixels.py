"""A band's reading conventions applied to the pixels a store returns.

The store reads bytes and decodes FITS; what the values *mean* is the band's business
(``raycat.surveys.bands.Band``): PS1 raw stacks must be decompressed from asinh values before any
arithmetic, GALEX tiles are squares around a round detector (corners are not data), unWISE
has a per-tile mask and per-image inverse-variance companions. Pixels that are not data
become NaN, so the cutout engine flags them (NAN_PIXELS / EDGE) exactly as it does for NaNs
in the file itself.
"""

from __future__ import annotations

import logging

import numpy as np

from raycat.surveys.bands import Band
from raycat.surveys.fits_layout import TileLayout

log = logging.getLogger(__name__)
Box = tuple[int, int, int, int]  # y0, y1, x0, x1 (0-based, end exclusive)


def read_pixels(
    store,
    uri: str,
    band: Band,
    layout: TileLayout,
    native_scale: float,
    box: Box | None = None,
    one_request: bool = False,
) -> np.ndarray:
    """The tile's pixels (all, or ``box``) as linear float32 units, non-data pixels NaN.

    ``store`` is a ``raycat.surveys.store.TileStore``; ``native_scale`` the tile's arcsec/px;
    ``one_request`` as in ``TileStore.read_section`` (companions are read the same way).
    """
    hdu = band.layout.image_hdu
    read = _reader(store, box, one_request)
    pixels = read(uri, hdu)
    pixels = np.asarray(band.calibration.linearise(pixels, layout.header), dtype=np.float32)
    rules = band.layout
    if (
        rules.fov_radius_deg or rules.mask_bits or rules.invvar_nodata
    ) and not pixels.flags.writeable:
        pixels = pixels.copy()  # masks are applied in place; no copy on the common path
    origin = (0, 0) if box is None else (box[0], box[2])
    if rules.fov_radius_deg:
        radius_px = rules.fov_radius_deg * 3600.0 / native_scale
        pixels[outside_circle(pixels.shape, origin, layout.shape, radius_px)] = np.nan
    if rules.mask_bits:
        _apply_companion(
            pixels,
            read,
            uri,
            band,
            "mask",
            lambda mask: (np.nan_to_num(mask).astype(np.int64) & rules.mask_bits) != 0,
        )
    if rules.invvar_nodata:
        _apply_companion(
            pixels, read, uri, band, "invvar", lambda invvar: ~(np.nan_to_num(invvar) > 0)
        )
    return pixels


def companion_uris(band: Band, uri: str) -> list[str]:
    """The companions ``read_pixels`` reads with the tile at ``uri`` (mask, inverse variance)."""
    rules = band.layout
    kinds = [
        kind for kind, used in (("mask", rules.mask_bits), ("invvar", rules.invvar_nodata)) if used
    ]
    return [c for c in (rules.companion(kind, uri) for kind in kinds) if c is not None]


def _reader(store, box: Box | None, one_request: bool):
    """``read(uri, hdu=None)``: the whole image, or ``box``, as float32."""
    if box is None:
        return lambda uri, hdu=None: store.read_full(uri, hdu)[0]
    return lambda uri, hdu=None: store.read_section(uri, *box, hdu=hdu, one_request=one_request)[0]


def outside_circle(
    shape: tuple[int, int], origin: tuple[int, int], full_shape: tuple[int, int], radius_px: float
) -> np.ndarray:
    """Which pixels of a ``shape`` section at ``origin`` lie farther than ``radius_px`` from
    the centre of the ``full_shape`` image (GALEX's circular field of view)."""
    cy, cx = (full_shape[0] - 1) / 2.0, (full_shape[1] - 1) / 2.0
    y = np.arange(origin[0], origin[0] + shape[0])[:, None] - cy
    x = np.arange(origin[1], origin[1] + shape[1])[None, :] - cx
    return y**2 + x**2 > radius_px**2


def _apply_companion(pixels: np.ndarray, read, uri: str, band: Band, kind: str, not_data) -> None:
    """NaN the pixels where ``not_data(companion pixels)`` holds, for the ``kind`` companion
    (mask, inverse variance), read by ``read`` (the image's own box). Companions are
    optional: a tile without one (or with an unreadable one) keeps its pixels, with a
    warning."""
    from raycat.surveys.store import StorePathError, TileReadError

    companion_uri = band.layout.companion(kind, uri)
    if companion_uri is None:
        return
    try:
        values = read(companion_uri)
    except (TileReadError, StorePathError, ValueError) as err:
        log.warning("%s companion of %s not used: %s", kind, uri, err)
        return
    if values.shape != pixels.shape:
        log.warning(
            "%s companion %s has shape %s, image %s: not used",
            kind,
            companion_uri,
            values.shape,
            pixels.shape,
        )
        return
    pixels[not_data(values)] = np.nan
