"""Geometry and resampling: the common cutout grid, mapped into a tile with the tile's WCS.

The output grid is S x S pixels of ``pixel_scale`` arcsec, north up and east left (row index
grows to the north, column index to the west), on the tangent plane at the object, which
sits at pixel coordinate ((S-1)/2, (S-1)/2): the centre of the grid, so 90-degree rotations
and flips of a cutout keep the object in place.

Mapping. Per band, each object's grid is mapped into the tile by a local affine map: the
object's tile pixel position plus the Jacobian d(x, y)/d(xi, eta), both from one vectorised
astropy ``world2pix`` call over 5 points per object (the centre and +-h east and north,
h = half the cutout side). The tile's own WCS supplies rotation, parity, scale and any
distortion. What the affine map leaves out is the curvature of going from the object's
tangent plane to the tile's: of order r^2 * d / 2 for a point r from the object and a tile
tangent point d away (radians), i.e. ~4e-5 arcsec at the corners of a 32" cutout a degree
from the tile centre (a test checks it against exact astropy to < 1e-3 tile px). Distortion (SIP)
enters through the position and the Jacobian; its own second-order terms leave a residual
of about A r^2 (A the SIP coefficient per pixel, r the cutout half-diagonal in pixels), e.g.
0.04 output px at the corners of a PS1 cutout for A = 4e-5 (a test keeps a source centred
on such a tile).

Resampling (flux per output pixel). Tiles hold flux per native pixel. When output pixels are
larger than native ones (PS1: 1" vs 0.25"), the tile is first box-averaged over k x k native
pixels, k = the rounded scale ratio, so each sample averages the light of about one output
pixel instead of aliasing it (the box follows the tile's axes, not a rotated output pixel: a
difference of shape, not of flux); otherwise (GALEX 1.5", unWISE 2.75") k = 1. The (smoothed)
tile is then sampled bilinearly at each output pixel centre, and the mean flux per native
pixel is multiplied by the native pixels per output pixel (|det J| * pixel_scale^2), so the
sum over the cutout is the source's flux (surface brightness is conserved, and with it the
total: within ~1% for sources whose light is inside the cutout).

Masks. Non-finite tile pixels are set to 0 (sky) before filtering; an output pixel whose
sample has any weight (> 1e-4) on a masked pixel is set to 0 and reported. Output pixels
whose centres fall outside the tile are set to 0 and reported (EDGE); near the border the
tile is extended by its edge values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from raycat.surveys.tan import tan_deproject

MASK_WEIGHT = 1e-4  # sampled weight of masked pixels above which an output pixel is masked
OFF_TILE = -1e9  # tile pixel coordinate given to objects the tile's projection cannot place


@dataclass(frozen=True)
class CutoutGrid:
    """The common output grid: tangent-plane offsets (arcsec) of pixel centres."""

    size: int
    pixel_scale: float

    @property
    def xi(self) -> np.ndarray:
        """East offsets of the columns (east left: decreasing with column index)."""
        return -(np.arange(self.size) - (self.size - 1) / 2.0) * self.pixel_scale

    @property
    def eta(self) -> np.ndarray:
        """North offsets of the rows (north up: increasing with row index)."""
        return (np.arange(self.size) - (self.size - 1) / 2.0) * self.pixel_scale

    @property
    def half_extent(self) -> float:
        """Half the side of the grid in arcsec (to the outer pixel edges)."""
        return self.size * self.pixel_scale / 2.0


@dataclass(frozen=True)
class LocalAffine:
    """Tile pixel position (0-based) of each object and the Jacobian d(x, y)/d(xi, eta)."""

    x: np.ndarray  # (n,)
    y: np.ndarray  # (n,)
    jac: np.ndarray  # (n, 2, 2), tile px per arcsec

    def take(self, index) -> LocalAffine:
        return LocalAffine(self.x[index], self.y[index], self.jac[index])

    def positions(self, grid: CutoutGrid) -> tuple[np.ndarray, np.ndarray]:
        """Tile pixel coordinates (x, y) of every output pixel centre, each (n, S, S)."""
        xi, eta = grid.xi[None, None, :], grid.eta[None, :, None]
        j = self.jac[:, :, :, None, None]
        x = self.x[:, None, None] + j[:, 0, 0] * xi + j[:, 0, 1] * eta
        y = self.y[:, None, None] + j[:, 1, 0] * xi + j[:, 1, 1] * eta
        return x, y

    def pixel_area(self, grid: CutoutGrid) -> np.ndarray:
        """Native pixels per output pixel, (n,)."""
        return np.abs(np.linalg.det(self.jac)) * grid.pixel_scale**2

    def footprint(self, grid: CutoutGrid, margin: int) -> np.ndarray:
        """Integer pixel box (y0, y1, x0, x1) holding every output pixel plus ``margin``,
        (n, 4), not clipped to the tile."""
        h = grid.half_extent
        corners = np.array([[-h, -h], [-h, h], [h, -h], [h, h]])  # (xi, eta)
        dx = corners @ self.jac[:, 0, :].T  # (4, n)
        dy = corners @ self.jac[:, 1, :].T
        x0 = np.floor(self.x + dx.min(axis=0)) - margin
        x1 = np.ceil(self.x + dx.max(axis=0)) + margin + 1
        y0 = np.floor(self.y + dy.min(axis=0)) - margin
        y1 = np.ceil(self.y + dy.max(axis=0)) + margin + 1
        return np.stack([y0, y1, x0, x1], axis=1).astype(np.int64)


def offset_sky(
    ra: np.ndarray, dec: np.ndarray, xi: np.ndarray, eta: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Sky position (deg) of tangent-plane offsets (xi east, eta north; arcsec) from (ra, dec).

    The inverse gnomonic projection about the object, exact for any offset: the cutout grid
    is a tangent plane like a TAN tile's, so it is the tilings' own function, in arcsec.
    """
    return tan_deproject(np.asarray(xi) / 3600.0, np.asarray(eta) / 3600.0, ra, dec)


def local_affine(wcs, ra: np.ndarray, dec: np.ndarray, step_arcsec: float) -> LocalAffine:
    """Local affine map of each object's grid into the tile (see the module docstring).

    Central differences over +-``step_arcsec`` give the mean slope across the cutout.
    """
    ra, dec = np.asarray(ra, dtype=float), np.asarray(dec, dtype=float)
    h = float(step_arcsec)
    xi = np.array([0.0, h, -h, 0.0, 0.0])
    eta = np.array([0.0, 0.0, 0.0, h, -h])
    sky_ra, sky_dec = offset_sky(ra[:, None], dec[:, None], xi[None, :], eta[None, :])
    world = np.column_stack([sky_ra.ravel(), sky_dec.ravel()])
    if wcs.has_distortion:  # quiet: a point that does not converge is off the tile anyway
        pix = wcs.all_world2pix(world, 0, quiet=True)
    else:
        pix = wcs.wcs_world2pix(world, 0)
    pix = np.asarray(pix).reshape(len(ra), 5, 2)
    # a point the projection cannot place (far side of the sky) goes far off the tile
    pix[~np.isfinite(pix).all(axis=(1, 2))] = OFF_TILE
    jac = np.empty((len(ra), 2, 2))
    jac[:, :, 0] = (pix[:, 1] - pix[:, 2]) / (2 * h)  # d(x, y)/d xi
    jac[:, :, 1] = (pix[:, 3] - pix[:, 4]) / (2 * h)  # d(x, y)/d eta
    return LocalAffine(pix[:, 0, 0], pix[:, 0, 1], jac)


def smoothing_box(native_scale_arcsec: float, pixel_scale: float) -> int:
    """Box-average width k (native pixels) before sampling: the rounded output/native scale
    ratio when output pixels are at least 1.5x larger, else 1 (no smoothing)."""
    ratio = pixel_scale / native_scale_arcsec
    return int(round(ratio)) if ratio >= 1.5 else 1


@dataclass(frozen=True)
class PreparedImage:
    """A tile, or a section of one, ready to sample: box-averaged flux (nanomaggies per
    native pixel, masked pixels 0) and, when anything is masked, the number of masked
    pixels in each box (an integer: a quarter of a float32 mask's bytes in the tile cache,
    and exact)."""

    flux: np.ndarray  # float32 (h, w)
    mask: np.ndarray | None  # uint16 (h, w) masked pixels per box, or None: none masked
    origin: tuple[int, int]  # tile (y, x) of element [0, 0]
    tile_shape: tuple[int, int]  # (ny, nx) of the whole tile
    box: int

    @property
    def nbytes(self) -> int:
        return self.flux.nbytes + (0 if self.mask is None else self.mask.nbytes)


def prepare_image(
    pixels: np.ndarray,
    nmgy_per_unit: float,
    box: int,
    origin: tuple[int, int] = (0, 0),
    tile_shape: tuple[int, int] | None = None,
) -> PreparedImage:
    """Calibrate to nanomaggies, zero and record masked pixels, box-average by ``box``.

    The box average is scipy's ``uniform_filter(size=box, mode="nearest")`` (same window,
    same edge rule, equal within float32 rounding), done as ``box`` shifted adds per axis:
    about 2.5x faster for the small boxes used here (PS1: 4), and the dense cutout path
    prepares whole tiles, so this is most of its time.
    """
    finite = np.isfinite(pixels)
    masked = not finite.all()
    flux = np.multiply(pixels, np.float32(nmgy_per_unit), dtype=np.float32)
    mask = None
    if masked:
        flux[~finite] = 0.0
        mask = (~finite).astype(np.uint16)  # box <= 255, so box**2 counts fit
    if box > 1:  # 'nearest' at tile borders, which sections share with the full tile
        flux = _box_sum(flux, box)
        flux *= np.float32(1.0 / box**2)
        mask = None if mask is None else _box_sum(mask, box, sparse=True)
    return PreparedImage(flux, mask, origin, tile_shape or pixels.shape, box)


STRIP_ROWS = 128  # rows summed per pass: a strip and its partial sums stay in the L2 cache


def _box_sum(image: np.ndarray, box: int, sparse: bool = False) -> np.ndarray:
    """Sum over the box x box window of uniform_filter(size=box): rows and columns
    i - box//2 .. i - box//2 + box - 1, the image extended by its edge values.

    Done strip by strip (whole tiles do not fit in cache: 1.4x faster on PS1-sized tiles
    than whole-image passes). ``sparse``: the image is mostly 0 (a mask), so strips whose
    window holds no nonzero value are left 0 without being summed.
    """
    n, before = image.shape[0], box // 2
    out = np.zeros_like(image) if sparse else np.empty_like(image)
    for r0 in range(0, n, STRIP_ROWS):
        r1 = min(r0 + STRIP_ROWS, n)
        window = image[np.clip(np.arange(r0 - before, r1 - before + box - 1), 0, n - 1)]
        if sparse and not window.any():
            continue
        rows = window[: r1 - r0].copy()
        for j in range(1, box):
            rows += window[j : j + r1 - r0]
        _column_sum(rows, box, out[r0:r1])
    return out


def _column_sum(rows: np.ndarray, box: int, out: np.ndarray) -> None:
    """``out`` = ``rows`` summed over columns shifted by -box//2 .. box - 1 - box//2, the
    edge columns repeated beyond the border."""
    n = rows.shape[1]
    out[...] = rows
    for shift in range(-(box // 2), box - box // 2):
        k = min(abs(shift), n)
        if shift > 0:  # out[:, i] += rows[:, min(i + shift, n - 1)]
            out[:, : n - k] += rows[:, k:]
            out[:, n - k :] += rows[:, n - 1 :]
        elif shift < 0:  # out[:, i] += rows[:, max(i + shift, 0)]
            out[:, k:] += rows[:, : n - k]
            out[:, :k] += rows[:, :1]


@dataclass(frozen=True)
class Resampled:
    """Cutouts of n objects in one band, before normalisation."""

    flux: np.ndarray  # float32 (n, S, S), nanomaggies per output pixel, NaN-free
    edge: np.ndarray  # bool (n,): some output pixel fell outside the tile
    masked: np.ndarray  # bool (n,): some output pixel touched masked tile pixels


def resample(image: PreparedImage, affine: LocalAffine, grid: CutoutGrid) -> Resampled:
    """Sample ``image`` on each object's output grid (see the module docstring)."""
    x, y = affine.positions(grid)
    # an even box centres element i of the filtered image on tile pixel i - 1/2
    shift = (image.box - 1) / 2.0 - image.box // 2
    weights = _bilinear_weights(
        x - (image.origin[1] + shift), y - (image.origin[0] + shift), image.flux.shape
    )
    flux = _gather(image.flux, weights)
    flux *= affine.pixel_area(grid).astype(np.float32)[:, None, None]
    outside = _outside(x, y, image.tile_shape)
    blank = outside
    if image.mask is not None:
        masked_weight = _gather(image.mask, weights) * np.float32(1.0 / image.box**2)
        blank = outside | (masked_weight > MASK_WEIGHT)
    flux[blank] = 0.0
    touched = (blank & ~outside).any(axis=(1, 2))
    return Resampled(flux, np.asarray(outside.any(axis=(1, 2))), np.asarray(touched))


def _outside(x: np.ndarray, y: np.ndarray, tile_shape: tuple[int, int]) -> np.ndarray:
    """Output pixels whose centres are off the tile, (n, S, S) bool.

    The grid is a parallelogram in the tile, so an object whose 4 corner pixels are inside
    has every pixel inside; only the others are tested pixel by pixel (a speed-up: most
    objects are well inside their tile).
    """
    ny, nx = tile_shape

    def inside(xs, ys):
        return (xs >= -0.5) & (xs <= nx - 0.5) & (ys >= -0.5) & (ys <= ny - 0.5)

    corners_in = inside(
        x[:, :: x.shape[1] - 1, :: x.shape[2] - 1], y[:, :: y.shape[1] - 1, :: y.shape[2] - 1]
    ).all(axis=(1, 2))
    outside = np.zeros(x.shape, dtype=bool)
    near_edge = np.flatnonzero(~corners_in)
    if len(near_edge):
        outside[near_edge] = ~inside(x[near_edge], y[near_edge])
    return outside


def _bilinear_weights(x: np.ndarray, y: np.ndarray, shape: tuple[int, int]):
    """Flat index of the lower-left neighbour and the fractional offsets; positions are
    clamped to the image, so samples beyond its border take the edge values."""
    h, w = shape
    x = np.clip(x, 0.0, w - 1.0)
    y = np.clip(y, 0.0, h - 1.0)
    x0 = np.minimum(x.astype(np.intp), max(w - 2, 0))
    y0 = np.minimum(y.astype(np.intp), max(h - 2, 0))
    fx = (x - x0).astype(np.float32)
    fy = (y - y0).astype(np.float32)
    step_x, step_y = (1 if w > 1 else 0), (w if h > 1 else 0)
    return y0 * w + x0, fx, fy, step_x, step_y


def _gather(image: np.ndarray, weights) -> np.ndarray:
    """Bilinear interpolation of ``image`` at precomputed weights (float32)."""
    index, fx, fy, step_x, step_y = weights
    flat = image.ravel()
    bottom = flat[index] * (1 - fx) + flat[index + step_x] * fx
    top = flat[index + step_y] * (1 - fx) + flat[index + step_y + step_x] * fx
    return bottom * (1 - fy) + top * fy
