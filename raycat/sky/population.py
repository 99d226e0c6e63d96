"""The sources of the mock sky: target galaxies, faint neighbour galaxies and stars.

Targets follow a spectroscopic-survey-like mix of three populations (:data:`POPULATIONS`):
bright low-z galaxies (main-sample-like), luminous red galaxies and star-forming emission-line
galaxies out to z ~ 1.5. For each galaxy the redshift comes from the population's n(z) (a
scaled Beta distribution), the SED type and bulge fraction from the population, and the
absolute magnitude M_r from a Schechter luminosity function (with luminosity evolution
M*(z) = M*_0 - Q z) truncated at the population's apparent-magnitude limit, so the targets
are detectable (r <= 22.5). Apparent magnitudes then follow from :mod:`raycat.sky.sed`.

Every galaxy is a bulge (de Vaucouleurs, E template) plus a disk (exponential, the galaxy's
type template): the bulge fraction is defined in rest-frame r, so in other bands the two
components have different fluxes (colour gradients). Sizes follow a size-luminosity relation
r_e ~ L^0.3 with lognormal scatter, shrinking as (1 + z)^-0.75, converted to arcsec with the
angular-diameter distance; the bulge half-light radius is 0.6 times the disk's and the
catalogued ``hlr_arcsec`` is their light-weighted mean (rest-frame r).

Neighbours are faint galaxies (22.5 < r < 25, counts ~ 10^(0.3 r)), stars are blackbodies
(3300-7000 K, 15 < r < 23, counts ~ 10^(0.15 r)); neither is a target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from raycat import schema
from raycat.sky.sed import (
    MAG_NO_FLUX,
    STAR_TEFF_GRID,
    TEMPLATES,
    ColourGrid,
    kflux_to_mag,
    star_colour_grid,
)

BULGE_TEMPLATE = "E"
BULGE_TO_DISK_SIZE = 0.6  # bulge half-light radius / disk half-light radius
BULGE_FRACTION_RANGE = {"E": (0.7, 1.0), "Sbc": (0.2, 0.5), "Scd": (0.0, 0.2), "Im": (0.0, 0.0)}
SIZE_KPC_AT_M21 = {"E": 4.0, "Sbc": 4.5, "Scd": 4.0, "Im": 3.0}  # r_e at M_r = -21, z = 0
SIZE_LUMINOSITY_SLOPE = 0.3  # r_e ~ L^0.3
SIZE_SCATTER_LN = 0.3
SIZE_EVOLUTION = -0.75  # r_e ~ (1 + z)^-0.75
HLR_RANGE_ARCSEC = (0.08, 8.0)
NEIGHBOUR_MAG_RANGE = (22.5, 25.0)
STAR_MAG_RANGE = (15.0, 23.0)
STAR_TEFF_RANGE = (3300.0, 7000.0)
KIND_GALAXY, KIND_NEIGHBOUR, KIND_STAR = "galaxy", "neighbour", "star"


@dataclass(frozen=True)
class Field:
    """A patch of sky: a box of side ``side_deg`` (in dec and in ra cos dec0)."""

    ra: float
    dec: float
    side_deg: float

    @property
    def area_deg2(self) -> float:
        return self.side_deg**2

    def uniform_positions(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, ...]:
        """``n`` positions uniform on the sphere inside the box (uniform in ra, sin dec)."""
        half = self.side_deg / 2
        sin_lo, sin_hi = (math.sin(math.radians(self.dec + s * half)) for s in (-1, 1))
        dec = np.degrees(np.arcsin(rng.uniform(sin_lo, sin_hi, n)))
        ra = self.ra + rng.uniform(-half, half, n) / math.cos(math.radians(self.dec))
        return ra, dec


@dataclass(frozen=True)
class Population:
    """One target class: its share, n(z), SED types and luminosity function."""

    name: str
    share: float
    z_range: tuple[float, float]
    z_beta: tuple[float, float]  # Beta(a, b) shape of n(z) over z_range
    types: dict[str, float]  # disk template -> probability
    m_star: float  # Schechter M* (rest-frame PS1 r, AB) at z = 0
    alpha: float  # faint-end slope
    evolution: float  # Q: M*(z) = m_star - Q z
    r_limit: float  # apparent PS1 r limit of the selection
    luminous_only: bool = False  # keep only M_r < M*(z) (LRG-like colour-luminosity cut)


POPULATIONS: tuple[Population, ...] = (
    Population(
        "bright",
        0.20,
        (0.02, 0.35),
        (2.0, 3.0),
        {"E": 0.3, "Sbc": 0.35, "Scd": 0.25, "Im": 0.1},
        -21.2,
        -1.2,
        1.0,
        19.5,
    ),
    Population(
        "lrg", 0.35, (0.2, 0.85), (3.0, 3.0), {"E": 1.0}, -21.6, -0.5, 1.0, 21.8, luminous_only=True
    ),
    Population(
        "elg",
        0.45,
        (0.55, 1.55),
        (2.2, 2.5),
        {"Sbc": 0.2, "Scd": 0.4, "Im": 0.4},
        -21.0,
        -1.3,
        1.5,
        22.5,
    ),
)
NEIGHBOUR_TYPES = {"Sbc": 0.3, "Scd": 0.35, "Im": 0.35}


def _template_index(names: np.ndarray) -> np.ndarray:
    lookup = {name: i for i, name in enumerate(TEMPLATES)}
    return np.array([lookup[name] for name in names], dtype=int)


def _choose_types(rng: np.random.Generator, types: dict[str, float], n: int) -> np.ndarray:
    names = np.array(list(types))
    return names[rng.choice(len(names), n, p=np.array(list(types.values())))]


def _bulge_fractions(rng: np.random.Generator, types: np.ndarray) -> np.ndarray:
    lo, hi = (np.array([BULGE_FRACTION_RANGE[t][i] for t in types]) for i in (0, 1))
    return rng.uniform(lo, hi)


def component_kflux(
    grid: ColourGrid, disk_types: np.ndarray, bulge_frac: np.ndarray, z: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(bulge, disk) K-flux factors, (n, n_bands) each, weighted by their rest-r shares."""
    bulge_t = np.full(len(z), TEMPLATES.index(BULGE_TEMPLATE))
    bulge = grid.template_kflux(bulge_t, z) * bulge_frac[:, None]
    disk = grid.template_kflux(_template_index(disk_types), z) * (1 - bulge_frac)[:, None]
    return bulge, disk


def _k_correction_r(
    grid: ColourGrid, types: np.ndarray, bulge_frac: np.ndarray, z: np.ndarray
) -> np.ndarray:
    """PS1 r K-correction (apparent minus absolute r, less the distance modulus): the one
    step between absolute and apparent r, for the target selection and the neighbours."""
    bulge, disk = component_kflux(grid, types, bulge_frac, z)
    return kflux_to_mag((bulge + disk)[:, grid.bands.index("ps1_r")])


def _schechter_cdf(alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """CDF of the Schechter function in x = M - M*, from x = -4 (negligible) to +10."""
    x = np.linspace(-4.0, 10.0, 2801)
    lum = 10.0 ** (-0.4 * x)
    density = lum ** (alpha + 1) * np.exp(-lum)
    cdf = np.concatenate([[0.0], np.cumsum((density[1:] + density[:-1]) / 2)])
    return x, cdf / cdf[-1]


def _truncated_schechter(
    rng: np.random.Generator, pop: Population, x_faint: np.ndarray
) -> np.ndarray:
    """x = M - M* drawn from the Schechter function, only brighter than ``x_faint``."""
    x, cdf = _schechter_cdf(pop.alpha)
    u_max = np.interp(x_faint, x, cdf)
    return np.interp(rng.uniform(0, 1, len(x_faint)) * u_max, cdf, x)


def _feasible_draws(
    rng: np.random.Generator, pop: Population, n: int, grid: ColourGrid
) -> list[np.ndarray]:
    """z, types, bulge fractions and faint limits x = M_faint - M*(z) of ``n`` galaxies.

    A redshift at which no galaxy of the luminosity function passes the population's r limit
    (x < -3) is redrawn, so n(z) is the population's wherever the selection allows it.
    """
    chunks: list[tuple[np.ndarray, ...]] = []
    while sum(len(chunk[0]) for chunk in chunks) < n:
        k = 2 * n + 8
        z = pop.z_range[0] + (pop.z_range[1] - pop.z_range[0]) * rng.beta(*pop.z_beta, k)
        types = _choose_types(rng, pop.types, k)
        bulge_frac = _bulge_fractions(rng, types)
        k_r = _k_correction_r(grid, types, bulge_frac, z)
        x_faint = pop.r_limit - grid.distance_modulus(z) - k_r - (pop.m_star - pop.evolution * z)
        if pop.luminous_only:
            x_faint = np.minimum(x_faint, 0.0)
        ok = x_faint > -3.0
        chunks.append((z[ok], types[ok], bulge_frac[ok], x_faint[ok]))
    return [np.concatenate(parts)[:n] for parts in zip(*chunks)]


def _draw_population(
    rng: np.random.Generator, pop: Population, n: int, grid: ColourGrid
) -> pd.DataFrame:
    """``n`` galaxies of one population, all passing its r limit."""
    z, types, bulge_frac, x_faint = _feasible_draws(rng, pop, n, grid)
    abs_mag = pop.m_star - pop.evolution * z + _truncated_schechter(rng, pop, x_faint)
    return _galaxy_table(rng, grid, z, types, bulge_frac, abs_mag, pop.name)


def _sizes(
    rng: np.random.Generator,
    grid: ColourGrid,
    types: np.ndarray,
    abs_mag: np.ndarray,
    z: np.ndarray,
) -> np.ndarray:
    """Half-light radius in arcsec from the size-luminosity relation (see module doc)."""
    r0 = np.array([SIZE_KPC_AT_M21[t] for t in types])
    lum_ratio = 10.0 ** (-0.4 * (abs_mag + 21.0))
    r_kpc = (
        r0
        * lum_ratio**SIZE_LUMINOSITY_SLOPE
        * (1 + z) ** SIZE_EVOLUTION
        * np.exp(SIZE_SCATTER_LN * rng.standard_normal(len(z)))
    )
    return np.clip(r_kpc / grid.angular_scale(z), *HLR_RANGE_ARCSEC)


def _galaxy_table(
    rng: np.random.Generator,
    grid: ColourGrid,
    z: np.ndarray,
    types: np.ndarray,
    bulge_frac: np.ndarray,
    abs_mag: np.ndarray,
    population: str,
) -> pd.DataFrame:
    """Magnitudes (total and per component), sizes and shapes of galaxies."""
    n = len(z)
    hlr = _sizes(rng, grid, types, abs_mag, z)
    hlr_disk = hlr / (1 - (1 - BULGE_TO_DISK_SIZE) * bulge_frac)
    bulge, disk = component_kflux(grid, types, bulge_frac, z)
    scale = 10.0 ** (-0.4 * (abs_mag + grid.distance_modulus(z)))[:, None]
    table = {
        schema.TRUTH_Z: z,
        schema.TRUTH_SED: types,
        schema.TRUTH_POPULATION: population,
        schema.TRUTH_ABS_MAG_R: abs_mag,
        schema.TRUTH_BULGE_FRAC: bulge_frac,
        schema.TRUTH_HLR: hlr,
        schema.TRUTH_HLR_BULGE: BULGE_TO_DISK_SIZE * hlr_disk,
        schema.TRUTH_HLR_DISK: hlr_disk,
        schema.TRUTH_Q_BULGE: rng.uniform(0.55, 1.0, n),
        schema.TRUTH_Q_DISK: rng.uniform(0.25, 1.0, n),
        schema.TRUTH_PA: rng.uniform(0.0, 180.0, n),
    }
    table.update(_magnitude_columns(grid.bands, bulge * scale, disk * scale))
    return pd.DataFrame(table)


def _magnitude_columns(
    bands: tuple[str, ...], bulge: np.ndarray, disk: np.ndarray
) -> dict[str, np.ndarray]:
    """Total truth magnitudes, plus the per-component ones the drawing code needs."""
    columns = {}
    for b, band in enumerate(bands):
        columns[schema.truth_mag(band)] = kflux_to_mag(bulge[:, b] + disk[:, b])
        columns[bulge_mag_column(band)] = kflux_to_mag(bulge[:, b])
        columns[disk_mag_column(band)] = kflux_to_mag(disk[:, b])
    return columns


def bulge_mag_column(band: str) -> str:
    """Internal (not written) column: AB magnitude of the bulge alone."""
    return f"_bulge_mag_{band}"


def disk_mag_column(band: str) -> str:
    """Internal (not written) column: AB magnitude of the disk alone."""
    return f"_disk_mag_{band}"


def draw_targets(
    rng: np.random.Generator,
    n: int,
    grid: ColourGrid,
    populations: tuple[Population, ...] = POPULATIONS,
) -> pd.DataFrame:
    """``n`` target galaxies split among ``populations`` by their shares (no positions)."""
    counts = rng.multinomial(n, [p.share for p in populations])
    tables = [_draw_population(rng, pop, k, grid) for pop, k in zip(populations, counts) if k]
    targets = pd.concat(tables, ignore_index=True)
    targets[schema.TRUTH_KIND] = KIND_GALAXY
    return targets.iloc[rng.permutation(len(targets))].reset_index(drop=True)


def _power_law_mags(
    rng: np.random.Generator, n: int, lo: float, hi: float, slope: float
) -> np.ndarray:
    """Magnitudes with dN/dm ~ 10^(slope m) between ``lo`` and ``hi`` (inverse CDF)."""
    a, b = 10.0 ** (slope * lo), 10.0 ** (slope * hi)
    return np.log10(a + rng.uniform(0, 1, n) * (b - a)) / slope


def draw_neighbours(rng: np.random.Generator, n: int, grid: ColourGrid) -> pd.DataFrame:
    """Faint galaxies (22.5 < r < 25) at 0.3 < z < 2 that are not targets."""
    z = 0.3 + 1.7 * rng.beta(2.0, 3.0, n)
    types = _choose_types(rng, NEIGHBOUR_TYPES, n)
    bulge_frac = _bulge_fractions(rng, types)
    k_r = _k_correction_r(grid, types, bulge_frac, z)
    r_mag = _power_law_mags(rng, n, *NEIGHBOUR_MAG_RANGE, slope=0.3)
    abs_mag = r_mag - grid.distance_modulus(z) - k_r
    table = _galaxy_table(rng, grid, z, types, bulge_frac, abs_mag, KIND_NEIGHBOUR)
    table[schema.TRUTH_KIND] = KIND_NEIGHBOUR
    return table


def draw_stars(rng: np.random.Generator, n: int, bands: tuple[str, ...]) -> pd.DataFrame:
    """Blackbody stars; point sources, so their whole flux sits in the 'bulge' slot."""
    r_mag = _power_law_mags(rng, n, *STAR_MAG_RANGE, slope=0.15)
    teff = rng.uniform(*STAR_TEFF_RANGE, n)
    colours = star_colour_grid(bands)
    table = {
        schema.TRUTH_Z: np.zeros(n),
        schema.TRUTH_SED: KIND_STAR,
        schema.TRUTH_POPULATION: KIND_STAR,
        schema.TRUTH_KIND: KIND_STAR,
        schema.TRUTH_HLR: np.zeros(n),
        schema.TRUTH_TEFF: teff,
    }
    for b, band in enumerate(bands):
        ratio = np.interp(teff, STAR_TEFF_GRID, colours[:, b])
        mag = r_mag - 2.5 * np.log10(ratio)
        table[schema.truth_mag(band)] = mag
        table[bulge_mag_column(band)] = mag
        table[disk_mag_column(band)] = MAG_NO_FLUX
    return pd.DataFrame(table)


def draw_sources(
    rng: np.random.Generator,
    n_targets: int,
    target_field: Field,
    background_field: Field,
    neighbour_density: float,
    star_density: float,
    grid: ColourGrid,
    populations: tuple[Population, ...] = POPULATIONS,
) -> pd.DataFrame:
    """All sources with unique ids (targets first).

    Targets (of ``populations``) lie in ``target_field``; neighbours and stars
    (``*_density`` per deg^2) fill ``background_field``, the box around every tile, so no
    tile has an empty corner.
    """
    n_neighbours = round(neighbour_density * background_field.area_deg2)
    n_stars = round(star_density * background_field.area_deg2)
    parts = [
        draw_targets(rng, n_targets, grid, populations),
        draw_neighbours(rng, n_neighbours, grid),
        draw_stars(rng, n_stars, grid.bands),
    ]
    sources = pd.concat(parts, ignore_index=True)
    sources.insert(0, schema.ID, np.arange(1, len(sources) + 1, dtype=np.int64))
    ra_t, dec_t = target_field.uniform_positions(rng, n_targets)
    ra_b, dec_b = background_field.uniform_positions(rng, len(sources) - n_targets)
    sources.insert(1, schema.RA, np.concatenate([ra_t, ra_b]))
    sources.insert(2, schema.DEC, np.concatenate([dec_t, dec_b]))
    return sources
