"""A small vectorised source detector for one calibrated image (AB nanomaggies).

raycat does not need a full photometry package to check that two surveys agree on where and
how bright things are; it needs a few dozen well-measured bright sources per field. This module
finds them with plain numpy/scipy/astropy:

1. background: a global sigma-clipped median and MAD noise; optionally a mesh of such
   medians (``background_box_arcsec``), so compact sources sitting on a large galaxy are
   found as their own segments instead of merging into the galaxy's one;
2. detection: the background-subtracted image smoothed with a Gaussian of about the PSF
   (a matched filter), thresholded at ``threshold`` sigma of the smoothed noise, split into
   connected components (``scipy.ndimage.label``) of at least ``min_pixels`` pixels;
3. centroid: first moments of each segment, refined by Gaussian-windowed moments (the
   SExtractor XWIN scheme), which are far less noisy than segment moments;
4. photometry: flux in a circular aperture of ``aperture_arcsec`` minus the local background
   (median of an annulus), with a noise estimate from the sky MAD (no source Poisson term:
   the gain of a coadd is rarely known and bright-source noise is not what is checked here);
5. size: Gaussian-equivalent FWHM (arcsec) from windowed second moments, corrected for the
   window, so stars of one image share one size and galaxies are larger.

NaN pixels never enter the background or the noise; a source with NaN or saturated pixels
in its aperture, or whose aperture leaves the image, is flagged (``nan``, ``saturated``,
``edge``) rather than dropped, so callers choose what to trust. Blended sources that share a
segment are not deblended.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from raycat.stats import mad_sigma

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
COLUMNS = (
    "x",
    "y",
    "ra",
    "dec",
    "flux",
    "flux_err",
    "snr",
    "size",
    "peak",
    "npix",
    "blended",
    "edge",
    "nan",
    "saturated",
)


@dataclass(frozen=True)
class DetectConfig:
    """How sources are found and measured; lengths in arcsec so one config fits any survey."""

    threshold: float = 5.0  # detection threshold, sigma of the smoothed image
    min_pixels: int = 5  # smallest segment kept (native pixels)
    smooth_fwhm_arcsec: float = 1.2  # matched filter, about a ground-based PSF
    aperture_arcsec: float = 2.0  # photometry aperture radius
    annulus_arcsec: tuple[float, float] = (3.0, 5.0)  # local background annulus radii
    background_box_arcsec: float | None = None  # mesh background box; None: one global level
    saturation: float | None = None  # pixel value (nanomaggies) at or above which is saturated
    clip_sigma: float = 3.0  # sigma clipping for background statistics
    window_iterations: int = 5  # windowed-centroid refinement steps


def robust_stats(values: np.ndarray, clip: float = 3.0, iterations: int = 5) -> tuple[float, float]:
    """Sigma-clipped median and MAD sigma of the finite ``values`` (sources clipped away)."""
    data = np.asarray(values, dtype=float)
    data = data[np.isfinite(data)]
    if data.size == 0:
        return float("nan"), float("nan")
    keep = data
    for _ in range(iterations):
        level = np.median(keep)
        sigma = mad_sigma(keep, level)
        if sigma == 0:
            break
        clipped = data[np.abs(data - level) <= clip * sigma]
        if clipped.size == keep.size or clipped.size == 0:
            break
        keep = clipped
    level = float(np.median(keep))
    return level, mad_sigma(keep, level)


def background_map(image: np.ndarray, box: int | None, clip: float = 3.0) -> np.ndarray:
    """Background per pixel: the global clipped median, or a bilinear mesh of box medians.

    The mesh is computed on whole boxes (edge pixels fill the last box by reflection) and
    smoothed by a 3x3 median over boxes, as SExtractor does, so one bright source cannot
    punch a hole in it.
    """
    from scipy import ndimage

    level, _ = robust_stats(image, clip)
    if box is None or box >= min(image.shape):
        return np.full(image.shape, level, dtype=float)
    ny, nx = image.shape
    my, mx = -(-ny // box), -(-nx // box)
    padded = np.pad(image.astype(float), ((0, my * box - ny), (0, mx * box - nx)), mode="reflect")
    blocks = padded.reshape(my, box, mx, box).transpose(0, 2, 1, 3).reshape(my, mx, -1)
    mesh = np.array([[robust_stats(b, clip)[0] for b in row] for row in blocks])
    mesh = np.where(np.isfinite(mesh), mesh, level)
    mesh = ndimage.median_filter(mesh, size=3, mode="nearest")
    yy = (np.arange(ny) + 0.5) / box - 0.5  # pixel position in mesh units
    xx = (np.arange(nx) + 0.5) / box - 0.5
    grid = np.meshgrid(yy, xx, indexing="ij")
    return ndimage.map_coordinates(mesh, grid, order=1, mode="nearest")


def pixel_scale_arcsec(wcs: Any) -> float:
    """Mean native pixel scale of a celestial WCS (arcsec per pixel)."""
    from astropy.wcs.utils import proj_plane_pixel_scales

    return float(np.sqrt(np.prod(proj_plane_pixel_scales(wcs.celestial)))) * 3600.0


def stamps(
    image: np.ndarray, x: np.ndarray, y: np.ndarray, half: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Square stamps (n, 2h+1, 2h+1) around rounded positions, NaN outside the image.

    Also returns dx, dy: each stamp pixel's offset from the exact position, for apertures
    and moments computed for all sources at once.
    """
    padded = np.pad(image.astype(float), half, mode="constant", constant_values=np.nan)
    ix, iy = np.rint(x).astype(int), np.rint(y).astype(int)
    offsets = np.arange(-half, half + 1)
    rows = (iy[:, None] + offsets[None, :] + half)[:, :, None]
    cols = (ix[:, None] + offsets[None, :] + half)[:, None, :]
    cut = padded[rows, cols]
    dx = (ix - x)[:, None, None] + offsets[None, None, :]
    dy = (iy - y)[:, None, None] + offsets[None, :, None]
    return cut, dx, dy


def _window(image, x, y, sigma_px: float, half: int):
    """Gaussian-weighted flux, first and (radial, per-axis) second moments about x, y."""
    cut, dx, dy = stamps(image, x, y, half)
    w = np.exp(-(dx**2 + dy**2) / (2 * sigma_px**2)) * np.nan_to_num(cut)
    total = w.sum(axis=(1, 2))
    good = total > 0
    norm = np.where(good, total, 1.0)
    mx, my = (w * dx).sum(axis=(1, 2)) / norm, (w * dy).sum(axis=(1, 2)) / norm
    m2 = (w * (dx**2 + dy**2)).sum(axis=(1, 2)) / norm / 2.0
    return good, mx, my, m2


def windowed_moments(
    image: np.ndarray, x: np.ndarray, y: np.ndarray, sigma_px: float, iterations: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian-windowed centroids and sizes (XWIN-style) for background-free ``image``.

    Each step moves the centre by twice the windowed first moment (exact for a Gaussian
    source), capped at one window sigma. Returns refined x, y and the window-corrected
    Gaussian sigma in pixels (NaN when the moments do not describe a source: noise peaks,
    sources much larger than the window).
    """
    half = int(np.ceil(4 * sigma_px))
    x, y = np.asarray(x, float).copy(), np.asarray(y, float).copy()
    for _ in range(iterations):
        good, mx, my, _ = _window(image, x, y, sigma_px, half)
        shift = 2.0 * np.hypot(mx, my)
        cap = np.where(good, np.minimum(1.0, sigma_px / np.maximum(shift, 1e-12)), 0.0)
        x, y = x + 2.0 * mx * cap, y + 2.0 * my * cap
    good, _, _, m2 = _window(image, x, y, sigma_px, half)
    with np.errstate(invalid="ignore", divide="ignore"):
        s2 = m2 * sigma_px**2 / (sigma_px**2 - m2)  # undo the window: Gaussian * Gaussian
    size = np.where(good & (m2 > 0) & (m2 < 0.95 * sigma_px**2), np.sqrt(s2), np.nan)
    return x, y, size


def aperture_photometry(
    image: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    radius: float,
    annulus: tuple[float, float],
    sky_sigma: float,
) -> dict[str, np.ndarray]:
    """Aperture flux minus the annulus median, for all positions at once (pixel units).

    Pixel weights are the clipped linear overlap ``clip(r + 0.5 - d, 0, 1)``, a cheap
    stand-in for exact circle-pixel overlap that keeps fluxes smooth in the position.
    ``flux_err`` = sky sigma x sqrt(area (1 + pi/2 area / n_annulus)): sky noise in the
    aperture plus the error of the annulus median. ``edge`` means the aperture leaves the
    image; ``nan`` that it holds NaN pixels (replaced by the local background).
    """
    half = int(np.ceil(annulus[1])) + 1
    cut, dx, dy = stamps(image, x, y, half)
    d = np.hypot(dx, dy)
    in_annulus = (d >= annulus[0]) & (d <= annulus[1]) & np.isfinite(cut)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an empty annulus gives NaN
        local = np.nanmedian(np.where(in_annulus, cut, np.nan), axis=(1, 2))
    weight = np.clip(radius + 0.5 - d, 0.0, 1.0)
    inside = weight > 0
    edge = _aperture_leaves_image(image.shape, x, y, radius)
    nan = (inside & np.isnan(cut)).any(axis=(1, 2)) & ~edge
    area = weight.sum(axis=(1, 2))
    values = np.where(np.isfinite(cut), cut, local[:, None, None]) - local[:, None, None]
    flux = (weight * values).sum(axis=(1, 2))
    n_ann = np.maximum(in_annulus.sum(axis=(1, 2)), 1)
    flux_err = sky_sigma * np.sqrt(area * (1 + np.pi / 2 * area / n_ann))
    return {"flux": flux, "flux_err": flux_err, "local_background": local, "edge": edge, "nan": nan}


def _aperture_leaves_image(
    shape: tuple[int, int], x: np.ndarray, y: np.ndarray, radius: float
) -> np.ndarray:
    ny, nx = shape
    return (
        (x - radius < -0.5)
        | (y - radius < -0.5)
        | (x + radius > nx - 0.5)
        | (y + radius > ny - 0.5)
    )


@dataclass(frozen=True)
class Prepared:
    """An image ready to measure: background-subtracted, with its noise and pixel scale."""

    residual: np.ndarray
    sky_sigma: float
    scale: float  # arcsec / px


def prepare(image: np.ndarray, wcs: Any, cfg: DetectConfig) -> Prepared:
    """Subtract the (global or mesh) background and measure the sky noise."""
    image = np.asarray(image, dtype=float)
    scale = pixel_scale_arcsec(wcs)
    box = (
        None
        if cfg.background_box_arcsec is None
        else max(4, int(round(cfg.background_box_arcsec / scale)))
    )
    residual = image - background_map(image, box, cfg.clip_sigma)
    return Prepared(residual, robust_stats(residual, cfg.clip_sigma)[1], scale)


def detect(image: np.ndarray, wcs: Any, config: DetectConfig | None = None) -> pd.DataFrame:
    """Sources in one image in AB nanomaggies: a DataFrame with the columns of ``COLUMNS``.

    x, y are 0-based pixel positions; ra, dec in degrees from ``wcs``; flux and flux_err in
    nanomaggies within the aperture; size the Gaussian-equivalent FWHM in arcsec; peak the
    source's smoothed peak in sky sigmas; npix the pixel count of its segment; ``blended``
    that the segment holds several sources. Rows are sorted by decreasing flux.
    """
    cfg = config or DetectConfig()
    image = np.asarray(image, dtype=float)
    prep = prepare(image, wcs, cfg)
    if not np.isfinite(prep.sky_sigma) or prep.sky_sigma <= 0:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in COLUMNS})
    found = _find(prep.residual, cfg, prep.scale)
    if len(found.x) == 0:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in COLUMNS})
    return _measure(image, prep, found, wcs, cfg)


def forced_photometry(
    image: np.ndarray, wcs: Any, ra: np.ndarray, dec: np.ndarray, config: DetectConfig | None = None
) -> pd.DataFrame:
    """Aperture fluxes at given sky positions, measured exactly as ``detect`` measures.

    Used for colours: the same aperture on another band's image gives a colour that is not
    biased by detection in one band only. Columns x, y, flux, flux_err, edge, nan.
    """
    cfg = config or DetectConfig()
    prep = prepare(image, wcs, cfg)
    x, y = wcs.celestial.world_to_pixel_values(np.asarray(ra, float), np.asarray(dec, float))
    x, y = np.atleast_1d(x), np.atleast_1d(y)
    phot = aperture_photometry(
        prep.residual,
        x,
        y,
        cfg.aperture_arcsec / prep.scale,
        _annulus_px(cfg, prep.scale),
        prep.sky_sigma,
    )
    return pd.DataFrame(
        {"x": x, "y": y, **{k: phot[k] for k in ("flux", "flux_err", "edge", "nan")}}
    )


def _annulus_px(cfg: DetectConfig, scale: float) -> tuple[float, float]:
    return cfg.annulus_arcsec[0] / scale, cfg.annulus_arcsec[1] / scale


@dataclass(frozen=True)
class _Found:
    """Detected peaks: seed positions, their segment labels and significance."""

    x: np.ndarray
    y: np.ndarray
    segment: np.ndarray  # label of each peak's segment in ``labels``
    significance: np.ndarray  # smoothed peak / smoothed noise
    labels: np.ndarray


def _find(residual: np.ndarray, cfg: DetectConfig, scale: float) -> _Found:
    """Peaks of the matched-filtered image inside segments above the threshold.

    A segment is a connected region above ``threshold`` sigma with at least ``min_pixels``
    pixels. Each segment gives its highest peak, plus every other local maximum (within one
    smoothing FWHM) that stands ``threshold`` sigma above the median of a ring 2-3 FWHM
    around it: a star or a nucleus on a galaxy, not a noise bump on its disc. This is the
    only deblending done.
    """
    from scipy import ndimage

    fwhm_px = cfg.smooth_fwhm_arcsec / scale
    smooth = ndimage.gaussian_filter(
        np.nan_to_num(residual), fwhm_px / FWHM_PER_SIGMA, mode="nearest"
    )
    smooth[np.isnan(residual)] = 0.0
    _, noise = robust_stats(smooth, cfg.clip_sigma)
    labels, n = ndimage.label(smooth > cfg.threshold * noise)
    sizes = ndimage.sum_labels(np.ones_like(smooth), labels, np.arange(n + 1))
    sizes[0] = 0
    labels = np.where(sizes[labels] >= cfg.min_pixels, labels, 0)
    radius = max(1, int(np.ceil(fwhm_px)))
    is_max = (smooth == ndimage.maximum_filter(smooth, size=2 * radius + 1)) & (labels > 0)
    py, px = np.nonzero(is_max)
    value = smooth[py, px]
    ring, dx, dy = stamps(smooth, px.astype(float), py.astype(float), 3 * radius)
    d = np.hypot(dx, dy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        base = np.nanmedian(
            np.where((d >= 2 * radius) & (d <= 3 * radius), ring, np.nan), axis=(1, 2)
        )
    seg = labels[py, px]
    top = np.zeros(len(seg), dtype=bool)
    if len(seg):
        order = np.lexsort((-value, seg))  # highest peak first within each segment
        first = np.r_[True, seg[order][1:] != seg[order][:-1]]
        top[order[first]] = True
    keep = top | (value - np.nan_to_num(base) >= cfg.threshold * noise)
    return _Found(
        px[keep].astype(float), py[keep].astype(float), seg[keep], value[keep] / noise, labels
    )


def _measure(image, prep: Prepared, found: _Found, wcs, cfg: DetectConfig) -> pd.DataFrame:
    from scipy import ndimage

    residual, scale = prep.residual, prep.scale
    sigma_px = cfg.smooth_fwhm_arcsec / FWHM_PER_SIGMA / scale
    x, y, size_px = windowed_moments(
        residual, found.x, found.y, sigma_px * 1.5, cfg.window_iterations
    )
    moved = np.hypot(x - found.x, y - found.y) > 2 * sigma_px  # window ran off: keep the peak
    x, y = np.where(moved, found.x, x), np.where(moved, found.y, y)
    phot = aperture_photometry(
        residual, x, y, cfg.aperture_arcsec / scale, _annulus_px(cfg, scale), prep.sky_sigma
    )
    ra, dec = wcs.celestial.pixel_to_world_values(x, y)
    n_seg = int(found.labels.max())
    npix = ndimage.sum_labels(np.ones_like(residual), found.labels, np.arange(n_seg + 1))
    peaks_per_segment = np.bincount(found.segment, minlength=n_seg + 1)
    nan_segment = _segment_has(np.isnan(image), found.labels, n_seg)
    table = pd.DataFrame(
        {
            "x": x,
            "y": y,
            "ra": np.asarray(ra) % 360.0,
            "dec": np.asarray(dec),
            "flux": phot["flux"],
            "flux_err": phot["flux_err"],
            "snr": phot["flux"] / phot["flux_err"],
            "size": size_px * FWHM_PER_SIGMA * scale,
            "peak": found.significance,
            "npix": npix[found.segment].astype(int),
            "blended": peaks_per_segment[found.segment] > 1,
            "edge": phot["edge"],
            "nan": phot["nan"] | nan_segment[found.segment],
            "saturated": _saturated(image, found, x, y, cfg, scale),
        }
    )
    return table.sort_values("flux", ascending=False, ignore_index=True)


def _segment_has(mask: np.ndarray, labels: np.ndarray, n_segments: int) -> np.ndarray:
    """Per segment label (0..n), whether any of its pixels is in ``mask``."""
    from scipy import ndimage

    return ndimage.maximum(mask.astype(float), labels, np.arange(n_segments + 1)) > 0


def _saturated(image, found: _Found, x, y, cfg: DetectConfig, scale: float) -> np.ndarray:
    """Any pixel of the source's segment or aperture at or above the saturation level."""
    if cfg.saturation is None:
        return np.zeros(len(x), dtype=bool)
    hot = np.nan_to_num(image, nan=-np.inf) >= cfg.saturation
    radius = cfg.aperture_arcsec / scale
    cut, dx, dy = stamps(hot.astype(float), x, y, int(np.ceil(radius)))
    in_aperture = (np.nan_to_num(cut) > 0) & (np.hypot(dx, dy) <= radius)
    by_segment = _segment_has(hot, found.labels, int(found.labels.max()))
    return by_segment[found.segment] | in_aperture.any(axis=(1, 2))


def psf_size(sources: pd.DataFrame, min_snr: float = 20.0) -> float:
    """Typical size (FWHM arcsec) of the most compact bright sources: about the PSF.

    The median of the smallest third of clean high-S/N sizes, so galaxies do not pull it up;
    NaN when there is no such source.
    """
    clean = sources[
        (sources["snr"] >= min_snr)
        & ~sources["edge"]
        & ~sources["saturated"]
        & np.isfinite(sources["size"])
    ]
    if clean.empty:
        return float("nan")
    sizes = np.sort(clean["size"].to_numpy())
    return float(np.median(sizes[: max(1, len(sizes) // 3)]))
