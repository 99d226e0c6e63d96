"""The catalog-photometry baseline: photometry, features, regression, split, streaming."""

from __future__ import annotations

import numpy as np
import pytest

from raycat import schema
from raycat.cutouts.actor import normalise
from raycat.photoz.pdf import nmad
from raycat.photoz.train import is_validation
from raycat.quality import baseline
from raycat.quality.baseline import (
    aperture_photometry,
    aperture_softening,
    asinh_magnitudes,
    baseline_metrics,
    cube_features,
    features_from_batches,
    fit_baseline,
    photometric_features,
    predict_baseline,
)

N_BANDS = 5
SOFTENING = np.array([0.05, 0.02, 0.03, 0.1, 0.3])


def gaussian_images(
    flux: np.ndarray, size: int, sigma: float, offset: tuple[float, float] = (0.0, 0.0)
) -> np.ndarray:
    """[n, n_bands, S, S] nanomaggies: a Gaussian of total ``flux`` [n, n_bands] per band."""
    centre = (size - 1) / 2.0
    y, x = np.mgrid[:size, :size]
    r2 = (x - centre - offset[0]) ** 2 + (y - centre - offset[1]) ** 2
    profile = np.exp(-r2 / (2 * sigma**2)) / (2 * np.pi * sigma**2)
    return flux[:, :, None, None] * profile[None, None]


def synthetic_photometry(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(flux [n, N_BANDS], z): a break that moves redward through the bands as z grows.

    Colours are a smooth known function of z; a random luminosity scatters the magnitudes,
    so only the colours tell the redshift. Flux noise is one softening per band.
    """
    rng = np.random.default_rng(seed)
    z = rng.uniform(0.05, 1.5, n)
    breaks = np.linspace(0.1, 1.4, N_BANDS)
    mags = 20.5 + rng.uniform(-0.7, 0.7, n)[:, None] + 1.5 * np.tanh(3 * (z[:, None] - breaks))
    flux = 10 ** ((22.5 - mags) / 2.5) + rng.normal(0, 1, (n, N_BANDS)) * SOFTENING
    return flux, z


# --- photometry ---------------------------------------------------------------------------


def test_aperture_recovers_injected_gaussian_flux_through_asinh_normalisation():
    rng = np.random.default_rng(1)
    true_flux = np.array([[200.0, 50.0, 120.0, 400.0, 800.0]])
    image = gaussian_images(true_flux, 32, sigma=1.5)
    image += rng.normal(0, 1, image.shape) * SOFTENING[None, :, None, None]
    # a bright neighbour outside the aperture must not leak in
    image += gaussian_images(true_flux * 5, 32, sigma=1.0, offset=(13.0, 13.0))
    cube = normalise(image.astype(np.float32), SOFTENING)
    flux = aperture_photometry(cube, SOFTENING, radius_px=8.0)
    np.testing.assert_allclose(flux, true_flux, rtol=0.02)


def test_aperture_recovers_point_source_on_odd_grid():
    true_flux = np.array([[3.0, 10.0, 0.5, 30.0, 100.0]])
    image = np.zeros((1, N_BANDS, 15, 15), np.float32)
    image[:, :, 7, 7] = true_flux  # the centre pixel of an odd grid
    flux = aperture_photometry(normalise(image, SOFTENING), SOFTENING, radius_px=2.0)
    np.testing.assert_allclose(flux, true_flux, rtol=1e-4)


@pytest.mark.parametrize(
    "size, radius, expected", [(15, 0.5, [(7, 7)]), (16, 0.75, [(7, 7), (7, 8), (8, 7), (8, 8)])]
)
def test_aperture_is_centred_on_the_cutout_centre(size, radius, expected):
    mask = baseline.aperture_mask(size, radius)
    assert sorted(zip(*np.nonzero(mask))) == expected
    big = baseline.aperture_mask(size, 5.0)
    assert (big == big[::-1]).all() and (big == big[:, ::-1]).all() and (big == big.T).all()


def test_all_zero_band_gives_nan_flux_and_only_that_band():
    image = gaussian_images(np.full((2, N_BANDS), 20.0), 16, sigma=1.2)
    image[0, 2] = 0.0
    flux = aperture_photometry(normalise(image.astype(np.float32), SOFTENING), SOFTENING, 5.0)
    assert np.isnan(flux[0, 2])
    assert np.isfinite(np.delete(flux[0], 2)).all() and np.isfinite(flux[1]).all()


# --- features -----------------------------------------------------------------------------


def test_colours_are_adjacent_magnitude_differences():
    flux, _ = synthetic_photometry(50, seed=2)
    features = photometric_features(flux, SOFTENING)
    mags, colours = features[:, :N_BANDS], features[:, N_BANDS:]
    assert features.shape == (50, 2 * N_BANDS - 1)
    np.testing.assert_allclose(colours, mags[:, :-1] - mags[:, 1:])
    np.testing.assert_allclose(mags, asinh_magnitudes(flux, SOFTENING))


def test_asinh_magnitudes_match_ab_when_bright_and_stay_finite_when_faint():
    b = np.array([0.1])
    bright = np.array([[10.0], [1000.0]])
    np.testing.assert_allclose(
        asinh_magnitudes(bright, b)[:, 0], 22.5 - 2.5 * np.log10(bright[:, 0]), atol=2e-3
    )
    faint = np.array([[-1.0], [-0.1], [0.0], [0.1]])
    mags = asinh_magnitudes(faint, b)[:, 0]
    assert np.isfinite(mags).all() and np.all(np.diff(mags) < 0)  # brighter -> smaller


def test_missing_band_is_nan_in_its_magnitude_and_both_neighbouring_colours():
    flux = np.full((1, N_BANDS), 5.0)
    flux[0, 2] = np.nan
    features = photometric_features(flux, SOFTENING)[0]
    nan_at = set(np.flatnonzero(np.isnan(features)))
    assert nan_at == {2, N_BANDS + 1, N_BANDS + 2}


def test_aperture_softening_scales_with_sqrt_of_area():
    ratio = aperture_softening(SOFTENING, 32, 6.0) / SOFTENING
    area = np.pi * 6.0**2
    np.testing.assert_allclose(ratio, np.sqrt(area), rtol=0.05)


# --- regression ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gbm", "knn"])
def test_baseline_learns_redshift_from_colours(kind):
    flux, z = synthetic_photometry(3000, seed=3)
    flux[::10, 1] = np.nan  # missing bands must not break either model
    features = photometric_features(flux, SOFTENING)
    model = fit_baseline(features[:2000], z[:2000], kind=kind, seed=0)
    z_phot = predict_baseline(model, features[2000:])
    assert np.isfinite(z_phot).all() and (z_phot >= 0).all()
    median_nmad = nmad(np.full(1000, np.median(z[:2000])), z[2000:])
    assert nmad(z_phot, z[2000:]) < 0.3 * median_nmad


def test_unknown_kind_and_no_photometry():
    features = np.full((3, 2 * N_BANDS - 1), np.nan)
    with pytest.raises(ValueError, match="no training objects"):
        fit_baseline(features, np.ones(3))
    flux, z = synthetic_photometry(100, seed=4)
    with pytest.raises(ValueError, match="unknown baseline kind"):
        fit_baseline(photometric_features(flux, SOFTENING), z, kind="svm")
    model = fit_baseline(photometric_features(flux, SOFTENING), z)
    assert np.isnan(predict_baseline(model, features)).all()  # no photometry, no prediction


# --- split and streaming ------------------------------------------------------------------


def synthetic_cubes(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cubes, z, ids): normalised Gaussian galaxies with the synthetic photometry."""
    flux, z = synthetic_photometry(n, seed)
    cubes = normalise(gaussian_images(flux, 16, sigma=1.2).astype(np.float32), SOFTENING)
    ids = np.arange(1000, 1000 + n, dtype=np.int64)
    return cubes, z, ids


def test_baseline_metrics_trains_only_on_objects_is_validation_keeps(monkeypatch):
    cubes, z, ids = synthetic_cubes(600, seed=5)
    held = is_validation(ids, 0.2, seed=7)
    cubes[np.flatnonzero(held)[0]] = 0.0  # a held-out object with no pixels at all
    seen: list[np.ndarray] = []

    def spy(features, z_train, kind="gbm", seed=0):
        seen.append(np.asarray(z_train))
        return real_fit(features, z_train, kind=kind, seed=seed)

    real_fit = baseline.fit_baseline
    monkeypatch.setattr(baseline, "fit_baseline", spy)
    metrics = baseline_metrics(cubes, z, ids, SOFTENING, val_fraction=0.2, seed=7, radius_px=5)
    assert len(seen) == 1
    np.testing.assert_array_equal(np.sort(seen[0]), np.sort(z[~held]))  # z is unique per id
    assert metrics["n_test"] == held.sum() and metrics["n_objects"] == held.sum()
    assert metrics["n_train"] == (~held).sum()
    assert metrics["n_no_prediction"] == 1 and metrics["n_evaluated"] == held.sum() - 1
    for key in ("nmad", "bias_mean", "bias_median", "outlier_frac_0.15", "outlier_frac_0.05"):
        assert np.isfinite(metrics[key])
    assert metrics["nmad"] < 0.1


def test_features_from_batches_equal_the_direct_path():
    cubes, z, ids = synthetic_cubes(90, seed=6)
    batches = [
        {schema.CUBE: cubes[i : i + 32], schema.Z_SPEC: z[i : i + 32], schema.ID: ids[i : i + 32]}
        for i in range(0, 90, 32)
    ]
    ragged = np.empty(len(batches[0][schema.CUBE]), dtype=object)  # a column of row arrays
    ragged[:] = list(batches[0][schema.CUBE])
    batches[0][schema.CUBE] = ragged
    features, z_out, ids_out = features_from_batches(iter(batches), SOFTENING, radius_px=5)
    np.testing.assert_allclose(features, cube_features(cubes, SOFTENING, radius_px=5))
    np.testing.assert_array_equal(z_out, z)
    np.testing.assert_array_equal(ids_out, ids)
    with pytest.raises(ValueError, match="no cutout batches"):
        features_from_batches(iter([]), SOFTENING)
