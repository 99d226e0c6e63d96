"""Spectral energy distributions of the mock sky, and their magnitudes through real filters.

Galaxies use the Coleman, Wu & Weedman (1980) templates E, Sbc, Scd and Im as shipped with
GalSim (``CWW_<type>_ext.sed``: f_lambda, rest frame, 91 A to 2.205 um). unWISE W2 reaches
5.55 um observed, so every template is extended to 6 um rest with a Rayleigh-Jeans stellar
tail (f_lambda ~ lambda^-4, matched at the last tabulated point): the near-IR light of a
galaxy is old stars on the Rayleigh-Jeans side of their spectrum (no hot dust, no PAHs).

Observed-frame magnitudes follow from physics, not from colour tables: the rest-frame SED is
stretched by (1 + z), attenuated by the intergalactic medium (zero flux blueward of the
Lyman limit, 912 A rest, and the Madau 1995 Lyman-alpha forest between 912 and 1216 A rest),
dimmed by the luminosity distance of Planck18 and integrated through each band's speclite
filter curve. K-corrections therefore emerge from the SED.

A galaxy's brightness is its absolute magnitude M_r in rest-frame PS1 r, so in band b

    m_b = M_r + DM(z) + K_b(z),   K_b(z) = m_b[T(lambda / (1+z))] - m_r[T] + 2.5 log10(1 + z)

Integrating every galaxy through nine filters would dominate the run time, so
:func:`colour_grid` tabulates 10^(-0.4 K_b(z)) once on a redshift grid (0..2, step 0.005)
and galaxies interpolate it; :func:`kcorrection_direct` is the per-object integration the
grid replaces (tests compare the two; the benchmark times both).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache, lru_cache

import numpy as np

from raycat.extras import MOCK_SKY, missing_extra
from raycat.surveys.bands import BAND_NAMES, BANDS

try:
    import galsim
    import speclite.filters
except ImportError as err:  # the [sim] extra: `pip install raycat` leaves the mock sky out
    raise missing_extra("sim", MOCK_SKY, err) from None

TEMPLATES: tuple[str, ...] = ("E", "Sbc", "Scd", "Im")
REFERENCE_FILTER = "panstarrs-r"  # absolute magnitudes are rest-frame PS1 r
REST_WAVE_MAX = 60_000.0  # A: W2's red edge (55,500 A) at z = 0 is still covered
LYMAN_LIMIT = 911.8  # A
LYMAN_ALPHA = 1215.67  # A
Z_GRID_MAX = 2.0
Z_GRID_STEP = 0.005
MAG_NO_FLUX = 99.0  # magnitude written where a band receives no flux (Lyman break)
_SAMPLES_PER_LN_WAVE = 1000  # observed-frame sampling: 0.1% in wavelength


@cache
def load_template(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Rest-frame (wavelength in A, f_lambda) of a CWW template, extended to 6 um."""
    if name not in TEMPLATES:
        raise ValueError(f"unknown SED template {name!r}; known: {', '.join(TEMPLATES)}")
    path = os.path.join(galsim.meta_data.share_dir, "SEDs", f"CWW_{name}_ext.sed")
    wave, flam = np.loadtxt(path, unpack=True)
    return extend_rayleigh_jeans(wave, flam, REST_WAVE_MAX)


def extend_rayleigh_jeans(
    wave: np.ndarray, flam: np.ndarray, wave_max: float, n_points: int = 200
) -> tuple[np.ndarray, np.ndarray]:
    """Append an f_lambda ~ lambda^-4 tail from the last tabulated point out to ``wave_max``."""
    tail = np.geomspace(wave[-1], wave_max, n_points)[1:]
    return (
        np.concatenate([wave, tail]),
        np.concatenate([flam, flam[-1] * (tail / wave[-1]) ** -4]),
    )


def igm_transmission(wave_obs: np.ndarray, z: np.ndarray | float) -> np.ndarray:
    """Crude IGM transmission: 0 below the Lyman limit, Madau (1995) Ly-alpha forest above.

    ``wave_obs`` and ``z`` broadcast against each other (e.g. z as a column).
    """
    wave_obs = np.asarray(wave_obs, dtype=float)
    rest = wave_obs / (1.0 + np.asarray(z, dtype=float))
    forest = np.exp(-0.0036 * (wave_obs / LYMAN_ALPHA) ** 3.46)
    transmission = np.where(rest < LYMAN_ALPHA, forest, 1.0)
    return np.where(rest < LYMAN_LIMIT, 0.0, transmission)


@cache
def load_filter(filter_name: str) -> speclite.filters.FilterResponse:
    return speclite.filters.load_filter(filter_name)


def _observed_grid(filt: speclite.filters.FilterResponse) -> np.ndarray:
    """The filter's own samples plus a fine log grid, so SED features are resolved."""
    lo, hi = filt.wavelength[0], filt.wavelength[-1]
    fine = np.exp(np.arange(np.log(lo), np.log(hi), 1.0 / _SAMPLES_PER_LN_WAVE))
    return np.unique(np.concatenate([filt.wavelength, fine, [hi]]))


def redshifted_maggies(
    wave_rest: np.ndarray, flam: np.ndarray, z: np.ndarray, filter_name: str
) -> np.ndarray:
    """AB maggies of the SED seen at each redshift through one filter (no distance dimming).

    The SED is evaluated at lambda_obs / (1 + z) on one observed wavelength grid for all
    redshifts, so speclite integrates every redshift in a single vectorised call.
    """
    filt = load_filter(filter_name)
    wave_obs = _observed_grid(filt)
    z_col = np.asarray(z, dtype=float)[:, None]
    values = np.interp(wave_obs[None, :] / (1.0 + z_col), wave_rest, flam, left=0.0, right=0.0)
    values = values * igm_transmission(wave_obs[None, :], z_col)
    return np.asarray(filt.get_ab_maggies(values, wave_obs))


def _rest_reference_maggies(wave_rest: np.ndarray, flam: np.ndarray) -> float:
    return float(redshifted_maggies(wave_rest, flam, np.zeros(1), REFERENCE_FILTER)[0])


def kflux_of_sed(
    wave_rest: np.ndarray, flam: np.ndarray, z: np.ndarray, filter_names: list[str]
) -> np.ndarray:
    """10^(-0.4 K_b(z)) for each filter (rows) and redshift (columns); see the module doc."""
    reference = _rest_reference_maggies(wave_rest, flam)
    stretch = 1.0 + np.asarray(z, dtype=float)
    return np.stack(
        [
            redshifted_maggies(wave_rest, flam, z, name) * stretch / reference
            for name in filter_names
        ]
    )


@cache
def _cosmology():
    from astropy.cosmology import Planck18

    return Planck18


@dataclass(frozen=True)
class ColourGrid:
    """K-corrections and distances tabulated on a redshift grid, for fast interpolation.

    ``kflux[t, b, i]`` is 10^(-0.4 K_b(z_i)) of template ``TEMPLATES[t]`` in band
    ``bands[b]``; linear in flux so that zero flux (Lyman break) interpolates cleanly.
    """

    z: np.ndarray
    bands: tuple[str, ...]
    kflux: np.ndarray
    lum_distance_mpc: np.ndarray
    kpc_per_arcsec: np.ndarray

    def template_kflux(self, template: np.ndarray, z: np.ndarray) -> np.ndarray:
        """(n, n_bands) K-flux factors for template indices ``template`` at redshifts ``z``."""
        z = np.asarray(z, dtype=float)
        position = np.clip(z / Z_GRID_STEP, 0, len(self.z) - 1.000001)
        lower = position.astype(int)
        weight = (position - lower)[:, None]
        table = self.kflux[np.asarray(template)]  # (n, n_bands, n_z)
        rows = np.arange(len(z))
        return table[rows, :, lower] * (1 - weight) + table[rows, :, lower + 1] * weight

    def distance_modulus(self, z: np.ndarray) -> np.ndarray:
        """5 log10(D_L / 10 pc), D_L interpolated linearly (smooth, zero at z = 0)."""
        d_l = np.interp(z, self.z, self.lum_distance_mpc)
        return 5.0 * np.log10(d_l * 1e5)

    def angular_scale(self, z: np.ndarray) -> np.ndarray:
        """Proper kpc per arcsec at ``z`` (angular-diameter distance)."""
        return np.interp(z, self.z, self.kpc_per_arcsec)


@lru_cache(maxsize=4)
def colour_grid(bands: tuple[str, ...] = BAND_NAMES) -> ColourGrid:
    """The cached :class:`ColourGrid` for all templates through ``bands`` (about 1 s)."""
    import astropy.units as u

    cosmo = _cosmology()
    z = np.round(np.arange(0.0, Z_GRID_MAX + Z_GRID_STEP / 2, Z_GRID_STEP), 6)
    filters = [BANDS[b].filter_name for b in bands]
    kflux = np.stack([kflux_of_sed(*load_template(t), z, filters) for t in TEMPLATES])
    kpc = cosmo.kpc_proper_per_arcmin(np.maximum(z, 1e-6)).to(u.kpc / u.arcsec).value
    return ColourGrid(
        z=z,
        bands=tuple(bands),
        kflux=kflux,
        lum_distance_mpc=cosmo.luminosity_distance(z).to(u.Mpc).value,
        kpc_per_arcsec=kpc,
    )


def kcorrection_direct(template: str, z: float, band: str) -> float:
    """K_b(z) by direct speclite integration on the template's own wavelength samples.

    The per-object computation that :func:`colour_grid` caches; used to validate the grid
    and as the baseline of the benchmark.
    """
    wave, flam = load_template(template)
    reference = load_filter(REFERENCE_FILTER).get_ab_maggies(flam, wave)
    wave_obs = wave * (1.0 + z)
    observed = flam * igm_transmission(wave_obs, z)
    filt = load_filter(BANDS[band].filter_name)
    observed, wave_obs = filt.pad_spectrum(observed, wave_obs)
    maggies = filt.get_ab_maggies(observed, wave_obs) * (1.0 + z) / reference
    return float(-2.5 * np.log10(maggies)) if maggies > 0 else MAG_NO_FLUX


def kflux_to_mag(flux: np.ndarray) -> np.ndarray:
    """-2.5 log10(flux), with :data:`MAG_NO_FLUX` where there is (practically) no flux."""
    flux = np.asarray(flux, dtype=float)
    floor = 10.0 ** (-0.4 * MAG_NO_FLUX)
    return np.where(flux > floor, -2.5 * np.log10(np.maximum(flux, floor)), MAG_NO_FLUX)


# --- stars ---------------------------------------------------------------------------------
STAR_TEFF_GRID = np.arange(3000.0, 12001.0, 100.0)


def blackbody_flam(wave: np.ndarray, teff: np.ndarray | float) -> np.ndarray:
    """Planck f_lambda (arbitrary normalisation) at wavelengths ``wave`` (A)."""
    hc_over_k = 1.438777e8  # A K
    x = hc_over_k / (np.asarray(wave, dtype=float) * np.asarray(teff, dtype=float))
    return wave**-5.0 / np.expm1(np.minimum(x, 700.0))


@lru_cache(maxsize=4)
def star_colour_grid(bands: tuple[str, ...] = BAND_NAMES) -> np.ndarray:
    """(n_teff, n_bands) flux ratio f_b / f_r of blackbody stars on :data:`STAR_TEFF_GRID`."""
    teff = STAR_TEFF_GRID[:, None]

    def maggies(filter_name: str) -> np.ndarray:
        filt = load_filter(filter_name)
        wave = _observed_grid(filt)
        return np.asarray(filt.get_ab_maggies(blackbody_flam(wave[None, :], teff), wave))

    reference = maggies(REFERENCE_FILTER)
    return np.stack([maggies(BANDS[b].filter_name) / reference for b in bands], axis=1)
