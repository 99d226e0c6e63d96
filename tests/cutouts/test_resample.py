"""prepare_image's own box filter against scipy's uniform_filter (what it replaced), whole
tiles against sections, and the masked-weight test built on its integer mask counts."""

import numpy as np
import pytest
from scipy.ndimage import uniform_filter

from raycat.cutouts.resample import CutoutGrid, LocalAffine, prepare_image, resample


def _tile(shape=(301, 257), seed=0, nan_fraction=0.01):
    rng = np.random.default_rng(seed)
    pixels = rng.normal(100.0, 30.0, size=shape).astype(np.float32)
    pixels[rng.random(shape) < nan_fraction] = np.nan
    return pixels


def _reference(pixels, nmgy, box):
    """The previous implementation: scipy uniform_filter on flux and on a float mask."""
    finite = np.isfinite(pixels)
    flux = np.where(finite, pixels, 0.0).astype(np.float32) * np.float32(nmgy)
    mask = (~finite).astype(np.float32)
    if box > 1:
        flux = uniform_filter(flux, size=box, mode="nearest")
        mask = uniform_filter(mask, size=box, mode="nearest")
    return flux, mask


@pytest.mark.parametrize("box", [1, 2, 3, 4, 5, 7])
def test_box_average_matches_uniform_filter(box):
    pixels = _tile()
    image = prepare_image(pixels, 0.37, box)
    flux, mask = _reference(pixels, 0.37, box)
    assert image.flux.dtype == np.float32 and image.flux.shape == pixels.shape
    np.testing.assert_allclose(image.flux, flux, rtol=0, atol=4 * np.spacing(np.abs(flux).max()))
    np.testing.assert_allclose(image.mask / np.float32(box**2), mask, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "shape, nan_rows",
    [
        ((700, 90), slice(300, 303)),  # NaNs in one strip only: the empty strips are skipped
        ((700, 90), slice(127, 129)),  # NaNs on a strip boundary: both strips see them
        ((3, 2), slice(1, 2)),  # smaller than the box
    ],
)
def test_box_average_matches_uniform_filter_strip_by_strip(shape, nan_rows):
    pixels = _tile(shape=shape, nan_fraction=0.0)
    pixels[nan_rows, :2] = np.nan
    image = prepare_image(pixels, 1.5, 4)
    flux, mask = _reference(pixels, 1.5, 4)
    np.testing.assert_allclose(image.flux, flux, rtol=0, atol=4 * np.spacing(np.abs(flux).max()))
    np.testing.assert_allclose(image.mask / np.float32(16), mask, rtol=1e-6, atol=1e-7)


def test_tile_without_nans_has_no_mask():
    assert prepare_image(_tile(nan_fraction=0.0), 1.0, 4).mask is None


def test_sections_sample_like_the_whole_tile():
    """A section with the filter and interpolation margin gives the whole tile's cutouts,
    at the tile border too (where both extend the tile by its edge values)."""
    pixels, box = _tile(shape=(400, 380), seed=3), 4
    grid = CutoutGrid(16, 1.0)
    jac = np.array([[[-4.0, 0.3], [0.2, 4.0]]] * 3)  # ~0.25"/px, slightly rotated
    affine = LocalAffine(np.array([200.0, 5.0, 370.0]), np.array([180.0, 390.0, 3.0]), jac)
    whole = resample(prepare_image(pixels, 2.0, box), affine, grid)
    boxes = affine.footprint(grid, margin=box + 2)
    for k in range(3):
        y0, y1, x0, x1 = boxes[k]
        y0, x0, y1, x1 = max(y0, 0), max(x0, 0), min(y1, 400), min(x1, 380)
        section = prepare_image(pixels[y0:y1, x0:x1], 2.0, box, (y0, x0), pixels.shape)
        part = resample(section, affine.take([k]), grid)
        np.testing.assert_allclose(part.flux[0], whole.flux[k], rtol=1e-5, atol=1e-4)
        assert part.edge[0] == whole.edge[k] and part.masked[0] == whole.masked[k]


def test_masked_output_pixels_are_those_a_float_mask_gave():
    """Integer mask counts blank exactly the output pixels scipy's float mask blanked."""
    from raycat.cutouts.resample import MASK_WEIGHT, _bilinear_weights, _gather

    pixels, box = _tile(shape=(200, 200), seed=5, nan_fraction=0.002), 4
    grid = CutoutGrid(24, 1.0)
    rng = np.random.default_rng(1)
    n = 40
    jac = np.tile(np.array([[-4.1, 0.2], [0.1, 3.9]]), (n, 1, 1))
    affine = LocalAffine(rng.uniform(50, 150, n), rng.uniform(50, 150, n), jac)
    image = prepare_image(pixels, 1.0, box)
    _, float_mask = _reference(pixels, 1.0, box)
    x, y = affine.positions(grid)
    shift = (box - 1) / 2.0 - box // 2  # as in resample
    weights = _bilinear_weights(x - shift, y - shift, pixels.shape)
    blank_then = _gather(float_mask, weights) > MASK_WEIGHT
    blank_now = _gather(image.mask, weights) * np.float32(1.0 / box**2) > MASK_WEIGHT
    assert blank_then.any() and (blank_now == blank_then).all()
    result = resample(image, affine, grid)
    assert (result.masked == blank_then.any(axis=(1, 2))).all()
    assert (result.flux[blank_then] == 0).all()
