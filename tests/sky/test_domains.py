"""Sky domains: the registry, and each setup's PSFs, depths, SED mix and extinction as the
simulated data show them (stars' widths, blank-sky noise, fluxes), not only as declared."""

from __future__ import annotations

from pathlib import Path

import galsim
import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from pydantic import ValidationError

from raycat import schema
from raycat.errors import RaycatError
from raycat.sky.domains import DOMAINS, SkyDomain, get_domain
from raycat.sky.draw import band_psf
from raycat.sky.extinction import EBV_COLUMN, EXTINCTION_R, ebv_at
from raycat.sky.population import POPULATIONS, draw_targets
from raycat.sky.sed import colour_grid
from raycat.sky.simulate import _band_at_exptime, simulate_sky
from raycat.surveys.bands import BAND_NAMES, BANDS, Band, sigma_pixel

SEED = 11


@pytest.fixture(scope="module")
def skies(tmp_path_factory) -> dict[str, Path]:
    """A 20-galaxy sky (9 tiles) per domain, all from one seed."""
    roots = {}
    for name in DOMAINS:
        root = tmp_path_factory.mktemp(f"domain_{name}")
        simulate_sky(
            str(root), n_galaxies=20, seed=SEED, area_deg2=0.001, progress=False, domain=name
        )
        roots[name] = root
    return roots


def _tiles(root: Path, band: str):
    """(image, header) of each tile of ``band``."""
    index = pd.read_parquet(root / schema.TILE_INDEX_FILE)
    for uri in index.loc[index[schema.TILE_BAND] == band, schema.TILE_URI]:
        with fits.open(root / uri) as hdul:
            yield hdul[0].data.astype(np.float64), hdul[0].header


# --- the registry ------------------------------------------------------------------------------
def test_registry_names_and_unknown_name_is_a_one_line_error(tmp_path):
    assert {"default", "shifted"} <= set(DOMAINS)
    assert all(get_domain(name).name == name for name in DOMAINS)
    with pytest.raises(RaycatError) as info:
        get_domain("real")
    message = str(info.value)
    assert "\n" not in message and "'real'" in message
    assert all(name in message for name in DOMAINS)
    with pytest.raises(RaycatError):
        simulate_sky(str(tmp_path / "sky"), n_galaxies=5, domain="real", progress=False)
    assert not (tmp_path / "sky").exists()  # refused before anything is written


def test_cli_lists_the_domains_and_exits_2_on_an_unknown_one(tmp_path, capsys):
    from raycat.cli import main

    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--domain" in help_text and all(name in help_text for name in DOMAINS)
    assert main(["simulate", "--out", str(tmp_path / "sky"), "--domain", "mars"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'mars'" in err and all(name in err for name in DOMAINS)


def test_default_domain_is_the_built_in_setup_without_extinction():
    default = DOMAINS["default"]
    assert all(default.bands()[name] is BANDS[name] for name in BAND_NAMES)
    assert all(a is b for a, b in zip(default.populations(), POPULATIONS))
    assert not default.extinction.is_on


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"psf_fwhm": {"sdss_r": 1.0}}, "unknown band sdss_r"),
        ({"depth_ab": {"ps1_r": -1.0}}, "positive"),
        ({"population_shares": {"elg": 1.0}}, "every population"),
        ({"sed_mix": {"elg": {"Sa": 1.0}}}, "unknown SED template Sa"),
        ({"sed_mix": {"lrg": {"E": 0.0}}}, "positive sum"),
        ({"extinction": {"ebv_pole": -0.1}}, "ebv_pole"),
        ({"seeing": 1.0}, "seeing"),
    ],
)
def test_bad_domains_are_refused_naming_the_field(overrides, words):
    with pytest.raises(ValidationError) as info:
        SkyDomain(name="bad", **overrides)
    assert words in str(info.value)


def test_partial_overrides_keep_the_built_in_rest():
    domain = SkyDomain(
        name="partial",
        psf_fwhm={"ps1_r": 0.9},
        population_shares={"bright": 0.0, "lrg": 1.0, "elg": 3.0},
    )
    assert domain.band("ps1_r").psf_fwhm == 0.9
    assert domain.band("ps1_r").depth_ab == BANDS["ps1_r"].depth_ab
    assert domain.band("ps1_g") is BANDS["ps1_g"]
    assert [p.share for p in domain.populations()] == [0.0, 0.25, 0.75]
    assert [p.types for p in domain.populations()] == [p.types for p in POPULATIONS]
    targets = draw_targets(np.random.default_rng(0), 200, colour_grid(), domain.populations())
    assert "bright" not in set(targets[schema.TRUTH_POPULATION])


def test_shifted_band_overrides_reach_every_band():
    shifted = DOMAINS["shifted"]
    for name in BAND_NAMES:
        band = shifted.band(name)
        assert band.psf_fwhm == shifted.psf_fwhm[name] != BANDS[name].psf_fwhm
        assert band.depth_ab == shifted.depth_ab[name] < BANDS[name].depth_ab
        assert band.calibration == BANDS[name].calibration  # only the setup changes


# --- measured on the simulated data -------------------------------------------------------------
def _blank_sky_sigma(image: np.ndarray) -> float:
    """Noise from the sky's negative side: sources add light, so they barely touch it."""
    values = image[np.isfinite(image)]
    return float(np.sqrt(np.mean(values[values < 0] ** 2)))


def _declared_sigma(band: Band, header: fits.Header) -> float:
    observed = _band_at_exptime(band, float(header.get("EXPTIME", 0.0)))
    return sigma_pixel(observed, band.calibration.zero_point_ab(header))


@pytest.mark.slow
def test_noise_follows_each_domains_declared_depth(skies):
    for band in BAND_NAMES:
        measured = {}
        for name in ("default", "shifted"):
            domain = DOMAINS[name]
            [(image, header)] = list(_tiles(skies[name], band))
            sigma = _blank_sky_sigma(image)
            assert sigma == pytest.approx(_declared_sigma(domain.band(band), header), rel=0.03)
            assert header["SKYSIG"] == pytest.approx(sigma, rel=0.03)
            measured[name] = sigma, header
        # the same exposures in both skies: the noise ratio is the declared setups' ratio
        ratio = measured["shifted"][0] / measured["default"][0]
        declared = _declared_sigma(DOMAINS["shifted"].band(band), measured["shifted"][1]) / (
            _declared_sigma(BANDS[band], measured["default"][1])
        )
        assert ratio == pytest.approx(declared, rel=0.03) and abs(declared - 1) > 0.1


def _model_sigma_arcsec(band: Band) -> float:
    """Adaptive-moment width of the declared PSF drawn on the band's pixels."""
    image = band_psf(band).drawImage(nx=64, ny=64, scale=band.pixel_scale, offset=(0.3, -0.2))
    return galsim.hsm.FindAdaptiveMom(image).moments_sigma * band.pixel_scale


def _star_widths_arcsec(root: Path, band: Band) -> list[float]:
    """Adaptive-moment widths of the isolated, unmasked, bright stars on the band's tiles."""
    sources = pd.read_parquet(root / schema.SOURCES_FILE)
    mags = sources[schema.truth_mag(band.name)].to_numpy()
    half = int(np.ceil(3 * band.psf_fwhm / band.pixel_scale)) + 3
    widths = []
    for image, header in _tiles(root, band.name):
        x, y = WCS(header).all_world2pix(sources[schema.RA], sources[schema.DEC], 0)
        stars = (sources[schema.TRUTH_KIND] == "star").to_numpy() & (mags < band.depth_ab - 3.5)
        for i in np.flatnonzero(stars):
            ix, iy = round(x[i]), round(y[i])
            if not (
                half < ix < image.shape[1] - half - 1 and half < iy < image.shape[0] - half - 1
            ):
                continue
            distance = np.hypot(x - x[i], y - y[i]) * band.pixel_scale
            crowded = (distance < 4 * band.psf_fwhm) & (mags < mags[i] + 4)
            stamp = image[iy - half : iy + half + 1, ix - half : ix + half + 1]
            if crowded.sum() > 1 or not np.isfinite(stamp).all():
                continue
            moments = galsim.hsm.FindAdaptiveMom(galsim.Image(stamp.astype(np.float32)))
            widths.append(moments.moments_sigma * band.pixel_scale)
    return widths


@pytest.mark.slow
@pytest.mark.parametrize("band", ["ps1_g", "ps1_r"])
def test_star_widths_follow_each_domains_declared_psf(skies, band):
    medians = {}
    for name in ("default", "shifted"):
        declared = DOMAINS[name].band(band)
        widths = _star_widths_arcsec(skies[name], declared)
        assert len(widths) >= 5
        medians[name] = float(np.median(widths))
        assert medians[name] == pytest.approx(_model_sigma_arcsec(declared), rel=0.02)
    fwhm_ratio = DOMAINS["shifted"].psf_fwhm[band] / BANDS[band].psf_fwhm
    assert medians["shifted"] / medians["default"] == pytest.approx(fwhm_ratio, rel=0.04)


def test_shifted_targets_follow_the_declared_shares_and_sed_mix():
    shifted = DOMAINS["shifted"]
    targets = draw_targets(np.random.default_rng(1), 3000, colour_grid(), shifted.populations())
    shares = targets[schema.TRUTH_POPULATION].value_counts(normalize=True)
    for pop in shifted.populations():
        assert shares[pop.name] == pytest.approx(pop.share, abs=0.03)
        mix = targets.loc[targets[schema.TRUTH_POPULATION] == pop.name, schema.TRUTH_SED]
        fractions = mix.value_counts(normalize=True)
        for template, weight in pop.types.items():
            assert fractions.get(template, 0.0) == pytest.approx(weight, abs=0.05), pop.name
    default = {p.name: p for p in POPULATIONS}
    assert shifted.populations()[2].types["Im"] > default["elg"].types["Im"] + 0.1


# --- extinction on the simulated sky -------------------------------------------------------------
@pytest.mark.slow
def test_ebv_column_is_written_and_reproduces_from_ra_dec(skies):
    for name, root in skies.items():
        truth = pd.read_parquet(root / schema.TRUTH_FILE)
        sources = pd.read_parquet(root / schema.SOURCES_FILE)
        field = DOMAINS[name].extinction
        for table in (truth, sources):
            assert table[EBV_COLUMN].dtype == np.float64 and table[EBV_COLUMN].notna().all()
            recomputed = ebv_at(table[schema.RA], table[schema.DEC], field, SEED)
            assert np.allclose(table[EBV_COLUMN], recomputed, rtol=1e-12, atol=0)
        assert (sources[EBV_COLUMN] > 0).all() == field.is_on
        assert (sources[EBV_COLUMN] == 0).all() != field.is_on
    dusty = pd.read_parquet(skies["dusty"] / schema.SOURCES_FILE)[EBV_COLUMN]
    assert dusty.max() / dusty.min() > 1.3  # the field varies over the sky


@pytest.mark.slow
def test_extinction_dims_catalog_magnitudes_by_r_times_ebv(skies):
    """`dusty` is `default` seen through dust: the same sources, fainter by R_b E(B-V)."""
    plain = pd.read_parquet(skies["default"] / schema.SOURCES_FILE)
    dusty = pd.read_parquet(skies["dusty"] / schema.SOURCES_FILE)
    mags = [schema.truth_mag(b) for b in BAND_NAMES]
    others = [c for c in plain.columns if c not in mags and c != EBV_COLUMN]
    pd.testing.assert_frame_equal(plain[others], dusty[others], check_exact=True)
    ebv = dusty[EBV_COLUMN].to_numpy()
    for band, column in zip(BAND_NAMES, mags):
        before, after = plain[column].to_numpy(), dusty[column].to_numpy()
        has_flux = before < 99
        assert np.allclose(after[has_flux] - before[has_flux], EXTINCTION_R[band] * ebv[has_flux])


@pytest.mark.slow
@pytest.mark.parametrize("band", ["ps1_g", "ps1_i"])
def test_extinction_dims_star_fluxes_in_the_pixels(skies, band):
    """Both skies share their noise (same seed), so their difference is the light lost to
    dust: each isolated star keeps 10^(-0.4 R E(B-V)) of its dust-free flux."""
    info = BANDS[band]
    sources = pd.read_parquet(skies["dusty"] / schema.SOURCES_FILE)
    plain_mags = pd.read_parquet(skies["default"] / schema.SOURCES_FILE)[schema.truth_mag(band)]
    mags, ebv = plain_mags.to_numpy(), sources[EBV_COLUMN].to_numpy()
    half = int(np.ceil(4 * info.psf_fwhm / info.pixel_scale))
    checked = 0
    for (plain, header), (dimmed, _) in zip(
        _tiles(skies["default"], band), _tiles(skies["dusty"], band)
    ):
        x, y = WCS(header).all_world2pix(sources[schema.RA], sources[schema.DEC], 0)
        zero_point = info.calibration.zero_point_ab(header)
        stars = (sources[schema.TRUTH_KIND] == "star").to_numpy() & (mags < info.depth_ab - 2)
        for i in np.flatnonzero(stars):
            ix, iy = round(x[i]), round(y[i])
            if not (
                half < ix < plain.shape[1] - half - 1 and half < iy < plain.shape[0] - half - 1
            ):
                continue
            lost = (dimmed - plain)[iy - half : iy + half + 1, ix - half : ix + half + 1]
            crowded = (np.hypot(x - x[i], y - y[i]) < 2 * half) & (mags < mags[i] + 3)
            if crowded.sum() > 1 or not np.isfinite(lost).all():
                continue
            kept = 1 + lost.sum() / 10.0 ** (-0.4 * (mags[i] - zero_point))
            assert kept == pytest.approx(10.0 ** (-0.4 * EXTINCTION_R[band] * ebv[i]), abs=0.003)
            checked += 1
    assert checked >= 5


@pytest.mark.slow
def test_mock_sky_json_records_the_domain(skies):
    import json

    for name, root in skies.items():
        meta = json.loads((root / schema.MOCK_SKY_META_FILE).read_text())
        assert SkyDomain.model_validate(meta["domain"]) == DOMAINS[name]


@pytest.mark.slow
def test_shifted_tiles_drawn_in_ray_tasks_are_the_serial_runs_bytes(skies, tmp_path, ray_local):
    """The domain's bands travel to the Ray tasks: the same files as drawn in the driver."""
    simulate_sky(
        str(tmp_path),
        n_galaxies=20,
        seed=SEED,
        area_deg2=0.001,
        progress=False,
        domain="shifted",
        on_ray=True,
    )
    serial = skies["shifted"]
    files = sorted(p.relative_to(serial) for p in serial.rglob("*") if p.is_file())
    assert len(files) == 13 and all(
        (tmp_path / f).read_bytes() == (serial / f).read_bytes() for f in files
    )
