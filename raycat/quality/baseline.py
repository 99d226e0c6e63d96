"""Catalog-photometry photo-z baseline on the same objects and split as the CNN.

Pasquet et al. (2019) judge their image CNN against a classical photo-z fitted to catalog
photometry of the same galaxies; this module is that yardstick, in pure numpy/sklearn:

1. ``aperture_photometry``: undo the cutout normalisation (flux = softening * sinh(x)) and
   sum a circular aperture on the cutout centre: one flux per band, in nanomaggies.
2. ``photometric_features``: asinh (Lupton et al. 1999) magnitudes plus adjacent-band
   colours. Asinh magnitudes equal AB magnitudes for bright sources and stay finite and
   monotonic for faint, zero or negative aperture fluxes (common in GALEX and unWISE), so
   no arbitrary clip or floor decides where faint objects land in feature space.
3. ``fit_baseline`` / ``predict_baseline``: HistGradientBoosting (default; takes NaN for a
   missing band natively) or kNN on standardised, median-imputed features.
4. ``baseline_metrics``: train on the objects ``raycat.photoz.train.is_validation`` keeps for
   training, score on the held-out ones with ``raycat.photoz.pdf.summary_metrics``.

Features are a few floats per object, so ``features_from_batches`` builds them from a stream
of cutout batches (e.g. ``Dataset.iter_batches``) and never keeps a cube.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

import numpy as np

from raycat import schema
from raycat.extras import optional
from raycat.photoz.pdf import summary_metrics
from raycat.photoz.train import is_validation
from raycat.surveys.bands import NANOMAGGY_ZP

DEFAULT_RADIUS_PX = 6.0  # ~1.8x the widest PSF FWHM (unWISE W2, 6.8") at 1"/px
POGSON = 2.5 / np.log(10.0)  # magnitudes per e-fold of flux
BaselineKind = Literal["gbm", "knn"]


# --- photometry -----------------------------------------------------------------------------


def aperture_mask(size: int, radius_px: float) -> np.ndarray:
    """Boolean [S, S]: pixels whose centre lies within ``radius_px`` of ``(S-1)/2``."""
    centre = (size - 1) / 2.0
    y, x = np.mgrid[:size, :size]
    return (x - centre) ** 2 + (y - centre) ** 2 <= radius_px**2


def aperture_photometry(
    cubes: np.ndarray, softening: np.ndarray, radius_px: float = DEFAULT_RADIUS_PX
) -> np.ndarray:
    """Flux [n, n_bands] in nanomaggies inside a circular aperture on the cutout centre.

    ``cubes`` are [n, n_bands, S, S] asinh-normalised cutouts; the normalisation is inverted
    pixel by pixel before summing, so the flux is linear again. A band whose channel is all
    zero was filled (missing or unreadable) and gets NaN rather than a fake zero flux.
    """
    cubes = np.asarray(cubes)
    if cubes.ndim != 4:
        raise ValueError(f"cubes must be [n, n_bands, S, S], got shape {cubes.shape}")
    mask = aperture_mask(cubes.shape[-1], radius_px)
    scale = np.asarray(softening, dtype=np.float64)[None, :]
    flux = np.sinh(cubes[..., mask].astype(np.float64)).sum(axis=-1) * scale
    missing = ~np.any(cubes.reshape(*cubes.shape[:2], -1) != 0, axis=-1)
    return np.where(missing, np.nan, flux)


def aperture_softening(
    softening: np.ndarray, size: int, radius_px: float = DEFAULT_RADIUS_PX
) -> np.ndarray:
    """Per-band 1-sigma sky noise of the aperture flux: per-pixel softening * sqrt(area)."""
    area = int(aperture_mask(size, radius_px).sum())
    return np.asarray(softening, dtype=np.float64) * np.sqrt(area)


def asinh_magnitudes(flux: np.ndarray, softening: np.ndarray) -> np.ndarray:
    """Lupton asinh magnitudes of nanomaggy fluxes; equal to 22.5 - 2.5 log10(flux) if bright.

    ``m = 22.5 - POGSON * (asinh(f / 2b) + ln b)`` with ``b`` the per-band softening (the
    aperture's sky noise is the natural choice): finite for f <= 0, NaN stays NaN.
    """
    b = np.asarray(softening, dtype=np.float64)
    return NANOMAGGY_ZP - POGSON * (np.arcsinh(np.asarray(flux, float) / (2 * b)) + np.log(b))


def photometric_features(flux: np.ndarray, softening: np.ndarray) -> np.ndarray:
    """[n, 2 n_bands - 1]: asinh magnitudes then adjacent-band colours (m_i - m_{i+1}).

    ``softening`` is the per-band magnitude softening (``aperture_softening``). Colours carry
    the redshift (spectral breaks moving through the filters), magnitudes the brightness
    prior; a missing band gives NaN in its magnitude and both neighbouring colours.
    """
    mags = asinh_magnitudes(flux, softening)
    return np.concatenate([mags, mags[:, :-1] - mags[:, 1:]], axis=1)


def cube_features(
    cubes: np.ndarray, softening: np.ndarray, radius_px: float = DEFAULT_RADIUS_PX
) -> np.ndarray:
    """Features straight from normalised cubes: photometry, then magnitudes and colours."""
    flux = aperture_photometry(cubes, softening, radius_px)
    return photometric_features(flux, aperture_softening(softening, cubes.shape[-1], radius_px))


def features_from_batches(
    batches: Iterable[Mapping[str, Any]],
    softening: np.ndarray,
    radius_px: float = DEFAULT_RADIUS_PX,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, z_spec, ids) from an iterator of cutout batches with cube, z_spec and id.

    Only the per-object features are kept, never the cubes, so this runs over a whole
    ``Dataset.iter_batches(batch_format="numpy")`` in constant memory per batch.
    """
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for batch in batches:
        cubes = batch[schema.CUBE]
        if getattr(cubes, "dtype", None) == np.dtype(object):  # a column of per-row arrays
            cubes = np.stack(list(cubes))
        parts.append(
            (
                cube_features(np.asarray(cubes), softening, radius_px),
                np.asarray(batch[schema.Z_SPEC], dtype=np.float64),
                np.asarray(batch[schema.ID]),
            )
        )
    if not parts:
        raise ValueError("no cutout batches")
    return tuple(np.concatenate(column) for column in zip(*parts))  # type: ignore[return-value]


# --- regression -----------------------------------------------------------------------------


def _regressor(kind: BaselineKind, seed: int):
    """The sklearn estimator for ``kind``.

    GBM splits on NaN natively (a missing band is information, not noise). kNN needs a
    distance on every feature, so NaN is imputed with the training median (neutral, robust)
    and features are standardised so magnitudes and colours weigh alike.
    """
    optional("sklearn", "report", "the photometry baseline (raycat demo)")
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.neighbors import KNeighborsRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "gbm":
        return HistGradientBoostingRegressor(
            max_iter=300, learning_rate=0.1, early_stopping=True, random_state=seed
        )
    if kind == "knn":
        return make_pipeline(
            SimpleImputer(strategy="median"),
            StandardScaler(),
            KNeighborsRegressor(n_neighbors=15, weights="distance"),
        )
    raise ValueError(f"unknown baseline kind {kind!r}; use 'gbm' or 'knn'")


def _has_photometry(features: np.ndarray) -> np.ndarray:
    return np.any(np.isfinite(features), axis=1)


def fit_baseline(features: np.ndarray, z: np.ndarray, kind: BaselineKind = "gbm", seed: int = 0):
    """Fit z from features; rows without z or without any photometry are skipped.

    The target is ln(1 + z), so squared error weighs residuals like delta_z = dz / (1 + z),
    the scale every photo-z metric uses.
    """
    features, z = np.asarray(features, dtype=np.float64), np.asarray(z, dtype=np.float64)
    keep = np.isfinite(z) & _has_photometry(features)
    if not keep.any():
        raise ValueError("no training objects with a redshift and photometry")
    return _regressor(kind, seed).fit(features[keep], np.log1p(z[keep]))


def predict_baseline(model, features: np.ndarray) -> np.ndarray:
    """Point redshifts (>= 0); NaN for objects with no photometry at all (no prediction)."""
    features = np.asarray(features, dtype=np.float64)
    z = np.full(len(features), np.nan)
    usable = _has_photometry(features)
    if usable.any():
        z[usable] = np.clip(np.expm1(model.predict(features[usable])), 0.0, None)
    return z


# --- evaluation -----------------------------------------------------------------------------


def baseline_metrics_from_features(
    features: np.ndarray,
    z: np.ndarray,
    ids: np.ndarray,
    val_fraction: float,
    seed: int = 0,
    kind: BaselineKind = "gbm",
) -> dict[str, Any]:
    """Fit on the training split, score on the held-out split of ``is_validation``.

    Same ids, fraction and seed as the CNN (``cfg.train``) give the same held-out objects,
    so the two models are compared on exactly the same galaxies.
    """
    held_out = is_validation(np.asarray(ids), val_fraction, seed)
    model = fit_baseline(features[~held_out], z[~held_out], kind=kind, seed=seed)
    metrics = summary_metrics(predict_baseline(model, features[held_out]), z[held_out])
    n_train = int((np.isfinite(z) & _has_photometry(features))[~held_out].sum())
    return {**metrics, "n_train": n_train, "n_test": int(held_out.sum()), "kind": kind}


def baseline_metrics(
    cubes: np.ndarray,
    z: np.ndarray,
    ids: np.ndarray,
    softening: np.ndarray,
    val_fraction: float,
    seed: int = 0,
    radius_px: float = DEFAULT_RADIUS_PX,
    kind: BaselineKind = "gbm",
) -> dict[str, Any]:
    """Held-out metrics of the baseline on in-memory cubes [n, n_bands, S, S]."""
    features = cube_features(cubes, softening, radius_px)
    return baseline_metrics_from_features(
        features, np.asarray(z, dtype=np.float64), np.asarray(ids), val_fraction, seed, kind
    )
