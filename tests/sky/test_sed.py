"""SED physics of the mock sky: templates, IGM, K-corrections, cosmology, the population."""

from __future__ import annotations

import numpy as np
import pytest

from raycat import schema
from raycat.sky import sed
from raycat.sky.population import (
    POPULATIONS,
    component_kflux,
    draw_neighbours,
    draw_stars,
    draw_targets,
)
from raycat.surveys.bands import BANDS


@pytest.fixture(scope="module")
def grid() -> sed.ColourGrid:
    return sed.colour_grid()


def grid_k(grid: sed.ColourGrid, template: str, z: np.ndarray | list) -> np.ndarray:
    """K_b(z) (n_z, n_bands) of one template from the cached grid."""
    z = np.atleast_1d(np.asarray(z, dtype=float))
    flux = grid.template_kflux(np.full(len(z), sed.TEMPLATES.index(template)), z)
    return sed.kflux_to_mag(flux)


def test_templates_reach_w2_with_a_rayleigh_jeans_tail():
    for name in sed.TEMPLATES:
        wave, flam = sed.load_template(name)
        assert wave[0] < sed.LYMAN_LIMIT and wave[-1] >= 55_500  # W2's red edge at z = 0
        assert np.all(np.diff(wave) > 0) and np.all(flam >= 0)
        tail = wave > 23_000
        slope = np.polyfit(np.log(wave[tail]), np.log(flam[tail]), 1)[0]
        assert slope == pytest.approx(-4.0, abs=1e-6)
        join = np.searchsorted(wave, 22_050.0)  # the last tabulated point
        expected = flam[join] * (wave[join + 1] / wave[join]) ** -4
        assert flam[join + 1] == pytest.approx(expected, rel=1e-9)  # matched, no jump


def test_igm_removes_flux_below_the_lyman_limit():
    z = 1.2
    wave_obs = np.array([800.0, 905.0, 915.0, 1200.0, 1300.0]) * (1 + z)
    t = sed.igm_transmission(wave_obs, z)
    assert t[0] == 0 and t[1] == 0
    assert 0 < t[2] < 1 and 0 < t[3] < 1  # Lyman-alpha forest: partial
    assert t[4] == 1


@pytest.mark.parametrize("template", sed.TEMPLATES)
def test_grid_matches_direct_speclite_integration(grid, template):
    """The cached redshift grid reproduces per-object integration through every filter."""
    for z in (0.05, 0.33, 0.72, 1.18):
        cached = grid_k(grid, template, [z])[0]
        for b, band in enumerate(grid.bands):
            lam_lo = sed.load_filter(BANDS[band].filter_name).wavelength[0]
            if lam_lo / (1 + z) < 1300:  # far-UV rest frame: tiny fluxes, coarse template
                continue
            # speclite integrates on the template's coarse UV samples: 0.02 mag there
            tolerance = 0.02 if band.startswith("galex") else 0.005
            direct = sed.kcorrection_direct(template, z, band)
            assert cached[b] == pytest.approx(direct, abs=tolerance), (band, z)


def test_k_correction_is_zero_in_rest_frame_r(grid):
    for template in sed.TEMPLATES:
        k_r = grid_k(grid, template, [0.0])[0][grid.bands.index("ps1_r")]
        assert k_r == pytest.approx(0, abs=1e-6)


def test_elliptical_g_minus_r_reddens_with_redshift(grid):
    """The 4000 A break moving through g makes E galaxies redder out to z ~ 0.4."""
    z = np.linspace(0.0, 0.4, 9)
    k = grid_k(grid, "E", z)
    g_r = k[:, grid.bands.index("ps1_g")] - k[:, grid.bands.index("ps1_r")]
    assert np.all(np.diff(g_r) > 0)
    assert g_r[-1] - g_r[0] > 0.8
    assert 0.6 < g_r[0] < 0.9  # a red galaxy at rest


def test_ultraviolet_drops_out_at_high_redshift(grid):
    """Star-forming galaxies: FUV is bright at low z, gone (Lyman break) beyond z ~ 1."""
    fuv = grid.bands.index("galex_fuv")
    for template in ("Sbc", "Scd", "Im"):
        low = grid_k(grid, template, [0.1])[0][fuv]
        assert low < 4
        assert np.all(grid_k(grid, template, [1.0, 1.3, 1.6])[:, fuv] == sed.MAG_NO_FLUX)
    rng = np.random.default_rng(1)
    targets = draw_targets(rng, 400, grid)
    distant = targets[(targets[schema.TRUTH_Z] > 1.0)]
    assert len(distant) > 20
    depth = BANDS["galex_fuv"].depth_ab
    assert (distant[schema.truth_mag("galex_fuv")] > depth + 5).all()


def test_distances_match_astropy(grid):
    from astropy.cosmology import Planck18

    z = np.array([0.03, 0.2777, 0.9, 1.49])
    assert np.allclose(grid.distance_modulus(z), Planck18.distmod(z).value, atol=2e-3)
    kpc = Planck18.kpc_proper_per_arcmin(z).value / 60
    assert np.allclose(grid.angular_scale(z), kpc, rtol=1e-3)


def test_targets_follow_their_populations(grid):
    rng = np.random.default_rng(5)
    targets = draw_targets(rng, 1500, grid)
    assert len(targets) == 1500
    r = targets[schema.truth_mag("ps1_r")]
    assert (r <= 22.5 + 1e-9).all()  # detectable: every selection is r <= 22.5 or brighter
    for pop in POPULATIONS:
        members = targets[targets[schema.TRUTH_POPULATION] == pop.name]
        assert len(members) / len(targets) == pytest.approx(pop.share, abs=0.05)
        z = members[schema.TRUTH_Z]
        assert z.min() >= pop.z_range[0] and z.max() <= pop.z_range[1]
        assert set(members[schema.TRUTH_SED]) <= set(pop.types)
        assert (members[schema.truth_mag("ps1_r")] <= pop.r_limit + 1e-9).all()
    lrg = targets[targets[schema.TRUTH_POPULATION] == "lrg"]
    assert (lrg[schema.TRUTH_ABS_MAG_R] < -21.5).all()  # luminous


def test_brighter_galaxies_are_larger_and_high_z_ones_smaller(grid):
    rng = np.random.default_rng(9)
    targets = draw_targets(rng, 3000, grid)
    kpc = targets[schema.TRUTH_HLR] * grid.angular_scale(targets[schema.TRUTH_Z].to_numpy())
    mag = targets[schema.TRUTH_ABS_MAG_R]
    slope = np.polyfit(mag, np.log10(kpc), 1)[0]
    assert slope == pytest.approx(-0.4 * 0.3, abs=0.04)  # r_e ~ L^0.3
    elg = targets[schema.TRUTH_POPULATION] == "elg"
    assert np.median(kpc[elg]) < np.median(kpc[~elg])


def test_bulge_is_redder_than_disk(grid):
    """Bulge (E) and disk (Sbc) have different colours: a colour gradient in the image."""
    z = np.array([0.3])
    bulge, disk = component_kflux(grid, np.array(["Sbc"]), np.array([0.4]), z)
    g, i = grid.bands.index("ps1_g"), grid.bands.index("ps1_i")
    bulge_g_i = -2.5 * np.log10(bulge[0, g] / bulge[0, i])
    disk_g_i = -2.5 * np.log10(disk[0, g] / disk[0, i])
    assert bulge_g_i > disk_g_i + 0.3


def test_neighbours_are_faint_and_stars_have_thermal_colours(grid):
    rng = np.random.default_rng(2)
    neighbours = draw_neighbours(rng, 300, grid)
    r = neighbours[schema.truth_mag("ps1_r")]
    assert r.min() >= 22.5 - 1e-9 and r.max() <= 25 + 1e-9
    stars = draw_stars(rng, 300, grid.bands).sort_values(schema.TRUTH_TEFF)
    g_r = stars[schema.truth_mag("ps1_g")] - stars[schema.truth_mag("ps1_r")]
    assert np.all(np.diff(g_r.to_numpy()) < 0)  # hotter is bluer
    w1_w2_vega = (
        stars[schema.truth_mag("unwise_w1")]
        - stars[schema.truth_mag("unwise_w2")]
        - BANDS["unwise_w1"].calibration.ab_offset
        + BANDS["unwise_w2"].calibration.ab_offset
    )
    assert np.abs(w1_w2_vega).max() < 0.2  # stars sit near W1 - W2 = 0 (Vega)
