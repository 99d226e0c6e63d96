"""Milky Way extinction on the mock sky: a smooth, seeded E(B-V) field and its reddening.

The field follows the thin-disk law of the Galactic dust (E(B-V) ~ 1 / sin|b|, the path
length through a slab, capped near the plane) times smooth lognormal fluctuations:

    E(B-V)(n) = ebv_pole * min(1 / sin|b|, plane_cap) * exp(scatter * f(n) - scatter^2 / 2)

where ``f`` is a unit-variance Gaussian random field on the sphere with correlation length
``scale_deg``, built from random Fourier features of the unit vector n (Rahimi & Recht
2007): f(n) = sqrt(2 / K) sum_k cos(w_k . n + phi_k), w_k ~ N(0, I / scale^2). It is
infinitely smooth, its covariance is exp(-d^2 / (2 scale^2)) for chord distance d, it is
evaluated per object from (ra, dec) alone (no map in memory) and it is a pure function of
the seed. The mean factor exp(-scatter^2 / 2) keeps the field's mean on the 1/sin|b| law.

Extinction dims every band: A_b = R_b E(B-V), fluxes times 10^(-0.4 A_b). E(B-V) is on the
SFD (Schlegel, Finkbeiner & Davis 1998) scale, for which the R_b below are quoted.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import Field

from raycat import schema
from raycat.section import StrictSection
from raycat.sky.objects import radec_to_unit, sin_abs_b
from raycat.sky.population import bulge_mag_column, disk_mag_column
from raycat.sky.sed import MAG_NO_FLUX

EBV_COLUMN = "ebv"  # the E(B-V) column of truth.parquet and sources.parquet
EBV_RNG_PURPOSE = 4  # numpy seed [seed, 4]: the field's own stream (1-3 are sources, noise, tiles)
N_FEATURES = 64  # random Fourier features: enough for a Gaussian-looking field

# A_b / E(B-V)_SFD per band.
# PS1 g, r, i, z, y: Schlafly & Finkbeiner (2011, ApJ 737, 103), Table 6, R_V = 3.1.
# GALEX FUV, NUV and WISE W1, W2: Yuan, Liu & Xiang (2013, MNRAS 430, 2188), Table 2 (col. a).
EXTINCTION_R: dict[str, float] = {
    "galex_fuv": 4.89,
    "galex_nuv": 7.24,
    "ps1_g": 3.172,
    "ps1_r": 2.271,
    "ps1_i": 1.682,
    "ps1_z": 1.322,
    "ps1_y": 1.087,
    "unwise_w1": 0.18,
    "unwise_w2": 0.16,
}


class ExtinctionField(StrictSection):
    """The Milky Way E(B-V) field of a mock sky (see the module docstring)."""

    ebv_pole: float = Field(
        0.0,
        ge=0,
        le=1,
        description="E(B-V) at the Galactic poles (mag); the field grows as 1/sin|b| toward "
        "the plane. 0 turns extinction off (the `ebv` column is then 0).",
    )
    plane_cap: float = Field(
        20.0, ge=1, description="Cap of the 1/sin|b| growth (reached at |b| ~ 3 deg)."
    )
    scatter: float = Field(
        0.0,
        ge=0,
        le=2,
        description="Lognormal sigma (natural log) of the smooth fluctuations about the law.",
    )
    scale_deg: float = Field(
        0.1, gt=0, le=90, description="Correlation length of the fluctuations (deg)."
    )

    @property
    def is_on(self) -> bool:
        return self.ebv_pole > 0


def _fourier_features(seed: int, scale_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """(K, 3) frequencies and (K,) phases of the field's random Fourier features."""
    rng = np.random.default_rng([seed, EBV_RNG_PURPOSE])
    frequencies = rng.standard_normal((N_FEATURES, 3)) / np.radians(scale_deg)
    return frequencies, rng.uniform(0.0, 2 * np.pi, N_FEATURES)


def smooth_noise(ra, dec, seed: int, scale_deg: float) -> np.ndarray:
    """The unit-variance Gaussian random field f at (ra, dec) in degrees."""
    frequencies, phases = _fourier_features(seed, scale_deg)
    angles = frequencies @ radec_to_unit(ra, dec) + phases[:, None]  # (K, n)
    return np.sqrt(2.0 / N_FEATURES) * np.cos(angles).sum(axis=0)


def ebv_at(ra, dec, field: ExtinctionField, seed: int) -> np.ndarray:
    """E(B-V) (mag) of the field at ICRS (ra, dec) in degrees; zeros when it is off."""
    ra, dec = np.atleast_1d(np.asarray(ra, float)), np.atleast_1d(np.asarray(dec, float))
    if not field.is_on:
        return np.zeros(len(ra))
    law = 1.0 / np.maximum(sin_abs_b(ra, dec), 1.0 / field.plane_cap)
    noise = smooth_noise(ra, dec, seed, field.scale_deg) if field.scatter else 0.0
    return field.ebv_pole * law * np.exp(field.scatter * noise - field.scatter**2 / 2)


def _dim(mags: np.ndarray, extinction: np.ndarray) -> np.ndarray:
    """Magnitudes plus A_b; no-flux magnitudes (the Lyman break's 99) stay as they are."""
    return np.where(mags < MAG_NO_FLUX, mags + extinction, mags)


def apply_extinction(sources: pd.DataFrame, ebv: np.ndarray, bands) -> pd.DataFrame:
    """``sources`` with an ``ebv`` column and every band's magnitudes (total, bulge, disk)
    made fainter by R_b E(B-V), as a foreground screen dims all light behind it."""
    dimmed = sources.copy()
    dimmed[EBV_COLUMN] = ebv
    if not np.any(ebv):  # nothing to add: the magnitudes keep their exact bits
        return dimmed
    for band in bands:
        extinction = EXTINCTION_R[band] * ebv
        for column in (schema.truth_mag(band), bulge_mag_column(band), disk_mag_column(band)):
            dimmed[column] = _dim(dimmed[column].to_numpy(), extinction)
    return dimmed
