"""The mock sky as a reader sees it: files, headers, geometry, photometry, determinism, S3."""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from scipy.special import erf

from raycat import schema
from raycat.errors import RaycatError
from raycat.sky.draw import INVISIBLE_BELOW_DEPTH, draw_band
from raycat.sky.population import (
    KIND_GALAXY,
    KIND_NEIGHBOUR,
    KIND_STAR,
    bulge_mag_column,
    disk_mag_column,
)
from raycat.sky.simulate import simulate_sky
from raycat.sky.tiles import TileGeometry
from raycat.surveys.bands import BAND_NAMES, BANDS, SURVEYS, sigma_pixel


@dataclass
class Sky:
    root: Path
    summary: object
    truth: pd.DataFrame
    sources: pd.DataFrame
    index: pd.DataFrame


def read_sky(root: Path, summary) -> Sky:
    return Sky(
        root,
        summary,
        pd.read_parquet(root / schema.TRUTH_FILE),
        pd.read_parquet(root / schema.SOURCES_FILE),
        pd.read_parquet(root / schema.TILE_INDEX_FILE),
    )


@pytest.fixture(scope="module")
def sky(tmp_path_factory) -> Sky:
    """250 targets over 0.016 deg^2: 2 x 2 PS1 tiles (so overlaps), one GALEX, one unWISE."""
    root = tmp_path_factory.mktemp("sky")
    summary = simulate_sky(str(root), n_galaxies=250, seed=7, area_deg2=0.016, progress=False)
    return read_sky(root, summary)


_TINY: dict = {}


def tiny_sky(tmp_path_factory, seed: int, tag: str = "", progress: bool = False) -> Path:
    """A 20-galaxy sky, cached per (seed, tag) for the module."""
    key = (seed, tag)
    if key not in _TINY:
        root = tmp_path_factory.mktemp(f"tiny{seed}{tag}")
        simulate_sky(str(root), n_galaxies=20, seed=seed, area_deg2=0.001, progress=progress)
        _TINY[key] = root
    return _TINY[key]


def load_tile(sky: Sky, row) -> tuple[np.ndarray, fits.Header]:
    with fits.open(sky.root / row[schema.TILE_URI]) as hdul:
        return hdul[0].data.astype(np.float64), hdul[0].header


def robust_sigma(image: np.ndarray) -> float:
    values = image[np.isfinite(image)]
    return 1.4826 * float(np.median(np.abs(values - np.median(values))))


def iter_tiles(sky: Sky):
    """(index row, image, header, WCS) of every tile band."""
    for _, row in sky.index.iterrows():
        image, header = load_tile(sky, row)
        yield row, image, header, WCS(header)


# --- measurements in native pixels --------------------------------------------------------
def aperture_mask(x: float, y: float, radius: float):
    """(x0, y0, mask): the pixels whose centres lie within ``radius`` of (x, y)."""
    x0, x1 = math.floor(x - radius), math.ceil(x + radius) + 1
    y0, y1 = math.floor(y - radius), math.ceil(y + radius) + 1
    yy, xx = np.mgrid[y0:y1, x0:x1]
    return x0, y0, (xx - x) ** 2 + (yy - y) ** 2 <= radius**2


def aperture(image: np.ndarray, x: float, y: float, radius: float):
    """(values, dx, dy) of the pixels of the circular aperture about (x, y)."""
    x0, y0, mask = aperture_mask(x, y, radius)
    yy, xx = np.nonzero(mask)
    return image[yy + y0, xx + x0], xx + x0 - x, yy + y0 - y


def annulus_background(image: np.ndarray, x: float, y: float, r_in: float) -> tuple[float, int]:
    values, dx, dy = aperture(image, x, y, r_in + 8)
    ring = values[dx**2 + dy**2 > r_in**2]
    return float(np.median(ring)), ring.size


def centroid(image: np.ndarray, x: float, y: float, radius: float) -> tuple[float, float]:
    """Background-subtracted, flux-weighted centroid in a circular aperture, re-centred 5x."""
    for _ in range(5):
        background, _ = annulus_background(image, x, y, radius + 2)
        values, dx, dy = aperture(image, x, y, radius)
        weights = values - background
        x, y = x + np.sum(weights * dx) / weights.sum(), y + np.sum(weights * dy) / weights.sum()
    return x, y


def expected_flux(mag, header: fits.Header, band: str) -> np.ndarray:
    """Pixel-sum flux of AB magnitude ``mag``, with the zero point the header sets."""
    return 10.0 ** (-0.4 * (np.asarray(mag) - BANDS[band].calibration.zero_point_ab(header)))


def gaussian_light_in_aperture(
    xs: np.ndarray, ys: np.ndarray, sigma: np.ndarray, x: float, y: float, radius: float
) -> np.ndarray:
    """Fraction of pixel-integrated circular Gaussians centred at (xs, ys) that falls on the
    pixels of the circular aperture about (x, y)."""
    x0, y0, mask = aperture_mask(x, y, radius)
    edges_x = np.arange(x0, x0 + mask.shape[1] + 1) - 0.5
    edges_y = np.arange(y0, y0 + mask.shape[0] + 1) - 0.5
    scale = np.sqrt(2.0) * np.asarray(sigma)[:, None]
    along_x = np.diff(erf((edges_x[None, :] - xs[:, None]) / scale), axis=1) / 2
    along_y = np.diff(erf((edges_y[None, :] - ys[:, None]) / scale), axis=1) / 2
    return np.einsum("ny,nx,yx->n", along_y, along_x, mask)


@dataclass
class Candidate:
    """A truth galaxy measured on one tile band (pixel units of that band)."""

    target: pd.Series
    x: float
    y: float
    radius: float  # aperture radius, px
    flux: float  # truth flux through the header zero point
    others: float  # modelled light of every other source inside the aperture
    others_shift: float  # bound on the centroid shift that light causes, px
    sigma: float  # pixel noise, measured on the image

    @property
    def snr(self) -> float:
        return self.flux / (self.sigma * math.sqrt(math.pi) * self.radius)


def candidates(sky: Sky, image, header, wcs, band: str, radius_arcsec):
    """Truth galaxies fully inside the tile, unmasked, with the light of their neighbours.

    Other sources are modelled as circular Gaussians (PSF width, broadened by their size) at
    their truth positions; only those the mock draws (brighter than depth + 2.5 mag) count.
    """
    info = BANDS[band]
    sigma = robust_sigma(image)
    all_x, all_y = wcs.all_world2pix(sky.sources[schema.RA], sky.sources[schema.DEC], 0)
    mags = sky.sources[schema.truth_mag(band)].to_numpy()
    all_flux = expected_flux(mags, header, band) * (mags < info.depth_ab + INVISIBLE_BELOW_DEPTH)
    size = sky.sources[schema.TRUTH_HLR].to_numpy() / 1.1774
    all_sigma = np.hypot(info.psf_fwhm / 2.3548, size) / info.pixel_scale
    ids = sky.sources[schema.ID].to_numpy()
    ny, nx = image.shape
    for _, target in sky.truth.iterrows():
        x, y = wcs.all_world2pix(target[schema.RA], target[schema.DEC], 0)
        radius = radius_arcsec(target, info) / info.pixel_scale
        margin = radius + 12
        if not (margin < x < nx - 1 - margin and margin < y < ny - 1 - margin):
            continue
        values, _, _ = aperture(image, x, y, margin)
        if not np.isfinite(values).all():
            continue
        distance = np.hypot(all_x - x, all_y - y)
        reach = radius + 4 * info.psf_fwhm / info.pixel_scale
        near = (distance < reach) & (ids != target[schema.ID])
        light = all_flux[near] * gaussian_light_in_aperture(
            all_x[near], all_y[near], all_sigma[near], x, y, radius
        )
        flux = float(expected_flux(target[schema.truth_mag(band)], header, band))
        yield Candidate(
            target,
            float(x),
            float(y),
            radius,
            flux,
            float(light.sum()),
            float(np.sum(light * distance[near]) / flux),
            sigma,
        )


# --- outputs --------------------------------------------------------------------------------
def test_writes_every_file_and_a_one_line_summary(sky):
    for name in (
        schema.TRUTH_FILE,
        schema.SOURCES_FILE,
        schema.TILE_INDEX_FILE,
        schema.MOCK_SKY_META_FILE,
    ):
        assert (sky.root / name).is_file()
    fits_files = sorted(sky.root.glob(f"{schema.TILES_DIR}/*/*/*.fits"))
    assert sky.summary.n_tiles == len(fits_files) == len(sky.index)
    assert sky.summary.n_galaxies == 250 == len(sky.truth)
    assert sky.summary.n_sources == len(sky.sources)
    line = str(sky.summary)
    assert "\n" not in line and "250" in line and str(sky.root) in line
    assert sky.summary.bytes_written == sum(
        f.stat().st_size for f in sky.root.rglob("*") if f.is_file()
    )


def test_truth_is_the_target_list_and_sources_hold_everything(sky):
    truth, sources = sky.truth, sky.sources
    assert truth[schema.ID].dtype == np.int64 and truth[schema.ID].is_unique
    assert sources[schema.ID].is_unique
    assert (truth[schema.TRUTH_KIND] == KIND_GALAXY).all()
    for column in (
        schema.RA,
        schema.DEC,
        schema.TRUTH_Z,
        schema.TRUTH_SED,
        schema.TRUTH_HLR,
        *(schema.truth_mag(b) for b in BAND_NAMES),
    ):
        assert column in truth.columns and truth[column].notna().all()
    assert not [c for c in sources.columns if c.startswith("_")]  # internals stay internal
    assert set(sources[schema.TRUTH_KIND]) == {KIND_GALAXY, KIND_NEIGHBOUR, KIND_STAR}
    galaxies = sources[sources[schema.TRUTH_KIND] == KIND_GALAXY].reset_index(drop=True)
    pd.testing.assert_frame_equal(galaxies[truth.columns], truth)
    side = math.sqrt(0.016)
    assert (truth[schema.DEC] - 2.0).abs().max() <= side / 2
    assert ((truth[schema.RA] - 150.0).abs() * math.cos(math.radians(2.0))).max() <= side / 2
    assert (truth[schema.truth_mag("ps1_r")] < 22.5 + 1e-9).all()
    assert truth[schema.TRUTH_Z].max() > 1.0 and truth[schema.TRUTH_Z].min() < 0.3


# --- tile index and headers ------------------------------------------------------------------
def _inside_polygon(ra_list, dec_list, ra0, dec0) -> bool:
    """(ra0, dec0) inside the convex quadrilateral (small-field tangent plane)."""
    cos_dec = math.cos(math.radians(dec0))
    points = [((r - ra0) * cos_dec, d - dec0) for r, d in zip(ra_list, dec_list)]
    signs = [np.sign(p[0] * q[1] - p[1] * q[0]) for p, q in zip(points, points[1:] + points[:1])]
    return abs(sum(signs)) == 4


def _index_wcs(row) -> WCS:
    return WCS(fits.Header.fromstring(row[schema.TILE_WCS]))


def _on_tile(row, ra: float, dec: float) -> bool:
    x, y = _index_wcs(row).all_world2pix(ra, dec, 0)
    nx, ny = row[schema.TILE_NAXIS1], row[schema.TILE_NAXIS2]
    return bool(-0.5 < x < nx - 0.5 and -0.5 < y < ny - 0.5)


def test_tile_index_rows_describe_their_files(sky):
    index = sky.index
    assert set(index[schema.TILE_BAND]) == set(BAND_NAMES)
    for _, row in index.iterrows():
        survey, name, band = row[schema.TILE_SURVEY], row[schema.TILE_NAME], row[schema.TILE_BAND]
        assert row[schema.TILE_URI] == schema.tile_relpath(survey, name, band)
        image, header = load_tile(sky, row)
        ny, nx = image.shape
        assert (nx, ny) == (row[schema.TILE_NAXIS1], row[schema.TILE_NAXIS2])
        assert _index_wcs(row).pixel_shape == (nx, ny)
        probe = np.array([[0.0, 0.0], [123.4, 56.7], [nx - 1, ny - 1]])
        assert np.allclose(
            _index_wcs(row).all_pix2world(probe, 0), WCS(header).all_pix2world(probe, 0), atol=1e-10
        )
        centre = WCS(header).all_pix2world([[(nx - 1) / 2, (ny - 1) / 2]], 0)[0]
        assert centre == pytest.approx([row[schema.TILE_RA], row[schema.TILE_DEC]], abs=1e-9)
        corners = list(row[schema.TILE_CORNERS_RA]), list(row[schema.TILE_CORNERS_DEC])
        assert _inside_polygon(*corners, row[schema.TILE_RA], row[schema.TILE_DEC])
        side = nx * BANDS[band].pixel_scale / 3600
        assert row[schema.TILE_RADIUS] == pytest.approx(side / math.sqrt(2), rel=1e-3)


def test_tiles_rotate_and_neighbours_overlap(sky):
    tiles = sky.index.drop_duplicates(schema.TILE_NAME)
    rotated = tiles[tiles[schema.TILE_ROTATION] != 0]
    assert len(rotated) >= 1
    for _, row in rotated.iterrows():  # +y points at the position angle the index states
        c = (row[schema.TILE_NAXIS1] - 1) / 2  # at the tangent point (no projection skew)
        (r0, d0), (r1, d1) = _index_wcs(row).all_pix2world([[c, c], [c, c + 1.0]], 0)
        pa = math.degrees(math.atan2((r1 - r0) * math.cos(math.radians(d0)), d1 - d0)) % 360
        assert pa == pytest.approx(row[schema.TILE_ROTATION] % 360, abs=1e-3)
    ps1 = [row for _, row in tiles[tiles[schema.TILE_SURVEY] == "ps1"].iterrows()]
    assert len(ps1) == 4
    overlapping = 0
    for i, a in enumerate(ps1):  # the point halfway between two centres lies on both tiles
        for b in ps1[i + 1 :]:
            ra = (a[schema.TILE_RA] + b[schema.TILE_RA]) / 2
            dec = (a[schema.TILE_DEC] + b[schema.TILE_DEC]) / 2
            overlapping += _on_tile(a, ra, dec) and _on_tile(b, ra, dec)
    assert overlapping >= 4  # the four edge-sharing pairs of a 2 x 2 grid (diagonals may too)


def test_headers_follow_each_survey(sky):
    exptimes = {}
    for row, image, header, _wcs in iter_tiles(sky):
        band = BANDS[row[schema.TILE_BAND]]
        assert image.dtype == np.float64 and header["BITPIX"] == -32
        assert header["BUNIT"] == band.unit and header["BAND"] == band.name
        assert header["SURVEY"] == band.survey and header["TELESCOP"]
        assert header["RADESYS"] == "ICRS" and header["EQUINOX"] == 2000.0
        assert header["CTYPE1"] == "RA---TAN" and "CD1_1" in header
        if band.survey == "ps1":
            exptimes.setdefault(band.name, []).append(header["EXPTIME"])
            assert abs(header["EXPTIME"] / band.mock_exptime - 1) <= 0.2
        if band.survey == "unwise":
            assert header["MAGZP"] == 22.5
        if band.survey == "galex":
            assert header["EXPTIME"] > 0
    assert all(len(set(v)) == len(v) for v in exptimes.values())  # varies tile to tile


def test_noise_gives_each_band_its_depth_and_some_pixels_are_masked(sky):
    masked = 0
    for row, image, header, _wcs in iter_tiles(sky):
        band = BANDS[row[schema.TILE_BAND]]
        zero_point = band.calibration.zero_point_ab(header)
        nominal = sigma_pixel(band, zero_point)
        assert robust_sigma(image) == pytest.approx(nominal, rel=0.15)  # +-0.1 mag exposure
        masked += int(np.isnan(image).sum() > 0)
    assert masked >= 1


# --- geometry and photometry -------------------------------------------------------------------
def _centroid_radius(target, band) -> float:
    return 1.5 * band.psf_fwhm + 1.0 * target[schema.TRUTH_HLR_DISK]


def _photometry_radius(target, band) -> float:
    hlr = max(6 * target[schema.TRUTH_HLR_DISK], 5 * target[schema.TRUTH_HLR_BULGE])
    return hlr + 3 * band.psf_fwhm


def test_centroids_land_on_truth_positions_in_every_survey(sky):
    """Through each tile's own WCS, bright isolated galaxies sit at their truth ra, dec."""
    checked: dict[str, int] = {}
    rotated = 0
    for row, image, header, wcs in iter_tiles(sky):
        band = row[schema.TILE_BAND]
        for c in candidates(sky, image, header, wcs, band, _centroid_radius):
            if c.others_shift > 0.03 or c.snr < 20:  # neighbours must not pull the centroid
                continue
            values, _, _ = aperture(image, c.x, c.y, c.radius)
            # per-axis centroid noise: sigma sqrt(sum dx^2) / flux, x 1.4 for the background
            # estimate and the re-centring (measured); 0.2 px is then at least 4 sigma
            precision = 1.4 * c.sigma * math.sqrt(math.pi * c.radius**4 / 4) / values.sum()
            if precision > 0.05:
                continue
            cx, cy = centroid(image, c.x, c.y, c.radius)
            assert math.hypot(cx - c.x, cy - c.y) < 0.2, (
                row[schema.TILE_NAME],
                band,
                c.target[schema.ID],
            )
            checked[row[schema.TILE_SURVEY]] = checked.get(row[schema.TILE_SURVEY], 0) + 1
            rotated += row[schema.TILE_ROTATION] != 0
    assert set(checked) == set(SURVEYS) and min(checked.values()) >= 2, checked
    assert rotated >= 3


def test_aperture_fluxes_match_truth_magnitudes_with_header_zero_points(sky):
    """Aperture flux in each survey's units equals the truth magnitude through the header ZP.

    The mock sky has a zero background, so no sky is subtracted; the modelled light of other
    sources is (crowded unWISE), with a model error of 10% of it (50% for PS1's Moffat PSF,
    where only well isolated galaxies are used).
    """
    ratios: dict[str, list[float]] = {}
    for row, image, header, wcs in iter_tiles(sky):
        band = row[schema.TILE_BAND]
        is_ps1 = BANDS[band].survey == "ps1"
        for c in candidates(sky, image, header, wcs, band, _photometry_radius):
            if c.snr < 20 or c.others > (0.03 if is_ps1 else 1.0) * c.flux:
                continue
            values, _, _ = aperture(image, c.x, c.y, c.radius)
            measured = float(values.sum()) - c.others
            noise = c.sigma * math.sqrt(values.size)
            # up to 1.5% of a galaxy's light falls outside 6 hlr + 3 FWHM
            allowed = 0.015 * c.flux + (0.5 if is_ps1 else 0.1) * c.others + 4 * noise
            assert abs(measured - c.flux) < allowed, (
                row[schema.TILE_NAME],
                band,
                c.target[schema.ID],
                measured / c.flux,
            )
            ratios.setdefault(BANDS[band].survey, []).append(measured / c.flux)
    assert set(ratios) == set(SURVEYS) and sum(map(len, ratios.values())) >= 30, ratios
    for survey, values in ratios.items():  # and no calibration offset, survey by survey
        assert np.median(values) == pytest.approx(1.0, abs=0.02), survey


def test_overlap_galaxies_appear_in_both_tiles(sky):
    """A galaxy in the overlap of two PS1 tiles has the same flux and position in both."""
    seen: dict[int, list[tuple[float, float]]] = {}
    for _, row in sky.index[sky.index[schema.TILE_BAND] == "ps1_r"].iterrows():
        image, header = load_tile(sky, row)
        for c in candidates(sky, image, header, WCS(header), "ps1_r", _photometry_radius):
            if c.snr > 10:  # compare in nanomaggies: each tile has its own EXPTIME
                values, _, _ = aperture(image, c.x, c.y, c.radius)
                to_nmgy = 10 ** (0.4 * (22.5 - BANDS["ps1_r"].calibration.zero_point_ab(header)))
                seen.setdefault(int(c.target[schema.ID]), []).append(
                    (values.sum() * to_nmgy, c.sigma * math.sqrt(values.size) * to_nmgy)
                )
    twice = [v for v in seen.values() if len(v) >= 2]
    assert twice, "no galaxy measured in two tiles"
    for (f1, s1), (f2, s2) in twice:
        assert abs(f1 - f2) < 4 * math.hypot(s1, s2)


def test_position_angle_is_on_the_sky_whatever_the_tile_rotation():
    """A noiseless elongated galaxy drawn on rotated tiles keeps its sky position angle."""
    pa_true = 30.0
    for rotation in (0.0, 70.0, 200.0):
        tile = TileGeometry("ps1", "t", 0, 150.0, 2.0, rotation, 161, 0.25)
        source = pd.DataFrame(
            {
                schema.RA: [150.0],
                schema.DEC: [2.0],
                schema.TRUTH_KIND: [KIND_GALAXY],
                schema.TRUTH_HLR: [2.0],
                schema.TRUTH_HLR_BULGE: [1.2],
                schema.TRUTH_HLR_DISK: [2.0],
                schema.TRUTH_Q_BULGE: [0.9],
                schema.TRUTH_Q_DISK: [0.3],
                schema.TRUTH_PA: [pa_true],
                schema.truth_mag("ps1_r"): [18.0],
                bulge_mag_column("ps1_r"): [99.0],
                disk_mag_column("ps1_r"): [18.0],
            }
        )
        x, y = tile.wcs.all_world2pix([150.0], [2.0], 0)
        image = draw_band(tile, "ps1_r", source, x, y, zero_point=30.0)
        yy, xx = np.mgrid[:161, :161]
        w = image / image.sum()
        mx, my = (w * xx).sum(), (w * yy).sum()
        dx, dy = xx - mx, yy - my
        qxx, qyy, qxy = (w * dx**2).sum(), (w * dy**2).sum(), (w * dx * dy).sum()
        angle = 0.5 * math.atan2(2 * qxy, qxx - qyy)  # major axis, in pixel space
        tip = tile.wcs.all_pix2world(
            [[mx, my], [mx + 50 * math.cos(angle), my + 50 * math.sin(angle)]], 0
        )
        d_east = (tip[1, 0] - tip[0, 0]) * math.cos(math.radians(2.0))
        pa = math.degrees(math.atan2(d_east, tip[1, 1] - tip[0, 1])) % 180
        assert pa == pytest.approx(pa_true, abs=1.0), rotation
        assert image.sum() == pytest.approx(10 ** (-0.4 * (18.0 - 30.0)), rel=0.01)


# --- determinism, object storage, errors, CLI ---------------------------------------------------
def _file_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.fits"))}


@pytest.mark.slow
def test_same_seed_same_bytes_other_seed_other_sky(tmp_path_factory, capsys):
    first = tiny_sky(tmp_path_factory, seed=3, progress=True)
    assert "simulate: ps1 tile 1/1 (5 bands)" in capsys.readouterr().err
    again = tiny_sky(tmp_path_factory, seed=3, tag="again")
    other = tiny_sky(tmp_path_factory, seed=4)
    for name in (schema.TRUTH_FILE, schema.SOURCES_FILE, schema.TILE_INDEX_FILE):
        pd.testing.assert_frame_equal(pd.read_parquet(first / name), pd.read_parquet(again / name))
    assert _file_bytes(first) == _file_bytes(again)
    truth = [pd.read_parquet(root / schema.TRUTH_FILE) for root in (first, other)]
    assert not truth[0].equals(truth[1])
    other_bytes = _file_bytes(other)
    assert all(data != other_bytes[name] for name, data in _file_bytes(first).items())


@pytest.mark.slow
def test_tiles_drawn_in_ray_tasks_are_the_serial_runs_bytes(tmp_path_factory, ray_local, capsys):
    """`raycat simulate --ray` (and under `ray job submit`) draws each tile in a task, off the
    driver; the files are the serial run's, byte for byte."""
    serial = tiny_sky(tmp_path_factory, seed=3)
    root = tmp_path_factory.mktemp("tiny3ray")
    capsys.readouterr()
    summary = simulate_sky(str(root), n_galaxies=20, seed=3, area_deg2=0.001, on_ray=True)
    assert "simulate: 3/3 tiles in " in capsys.readouterr().err
    assert _file_bytes(root) == _file_bytes(serial)
    for name in (schema.TRUTH_FILE, schema.SOURCES_FILE, schema.TILE_INDEX_FILE):
        assert (root / name).read_bytes() == (serial / name).read_bytes(), name
    assert summary.n_tiles == 9
    assert summary.bytes_written == sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


@pytest.mark.slow
def test_s3_round_trip_equals_local_run(tmp_path_factory, s3_bucket):
    url, options = s3_bucket
    local = tiny_sky(tmp_path_factory, seed=3)
    summary = simulate_sky(
        f"{url}/mock",
        n_galaxies=20,
        seed=3,
        area_deg2=0.001,
        storage_options=options,
        progress=False,
    )
    assert summary.n_tiles == 9
    for name in (schema.TRUTH_FILE, schema.TILE_INDEX_FILE):
        remote = pd.read_parquet(f"{url}/mock/{name}", storage_options=options)
        pd.testing.assert_frame_equal(remote, pd.read_parquet(local / name))
    relpath = schema.tile_relpath("ps1", "ps1_0000", "ps1_i")
    with fsspec.open(f"{url}/mock/{relpath}", "rb", **options) as f:
        assert f.read() == (local / relpath).read_bytes()


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"n_galaxies": 0}, "n_galaxies"),
        ({"n_galaxies": -3}, "n_galaxies"),
        ({"n_galaxies": 2.5}, "n_galaxies"),
        ({"n_galaxies": True}, "n_galaxies"),
        ({"area_deg2": 0.0}, "area_deg2"),
        ({"area_deg2": -1.0}, "area_deg2"),
        ({"area_deg2": float("nan")}, "area_deg2"),
        ({"area_deg2": 5000.0}, "GB"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_bad_arguments_raise_one_line_errors(tmp_path, kwargs, words):
    with pytest.raises(RaycatError) as info:
        simulate_sky(str(tmp_path / "out"), progress=False, **kwargs)
    assert words in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_unwritable_output_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    for out in (str(blocker / "sky"), "nosuchprotocol://bucket/sky"):
        with pytest.raises(RaycatError) as info:
            simulate_sky(out, n_galaxies=5, progress=False)
        assert "\n" not in str(info.value)


def test_missing_bucket_is_a_one_line_error(s3_bucket):
    url, options = s3_bucket
    with pytest.raises(RaycatError) as info:
        simulate_sky(f"{url}-missing/sky", n_galaxies=5, storage_options=options, progress=False)
    assert "\n" not in str(info.value) and "mock_sky.json" in str(info.value)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "raycat", "simulate", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_help_and_bad_arguments(tmp_path):
    assert _cli("--help").returncode == 0
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for args in (
        ["--out", str(tmp_path / "a"), "--n-galaxies", "0"],
        ["--out", str(tmp_path / "b"), "--area-deg2", "-1"],
        ["--out", str(tmp_path / "c"), "--seed", "-2"],
        ["--out", str(blocker / "sky"), "--n-galaxies", "5"],
    ):
        result = _cli(*args)
        assert result.returncode != 0
        assert "Traceback" not in result.stderr and result.stderr.strip().count("\n") <= 2


@pytest.mark.parametrize(
    ("flag", "address", "on_ray"),
    [([], None, False), (["--ray"], None, True), ([], "127.0.0.1:6379", True)],
)
def test_cli_draws_on_ray_when_asked_or_under_a_job(tmp_path, monkeypatch, flag, address, on_ray):
    """Local runs stay in the process (fast demo and tests); `--ray`, or RAY_ADDRESS as
    `ray job submit` sets it, sends the tiles to Ray tasks."""
    import raycat.sky.simulate as sim
    from raycat.cli import main

    seen = {}
    monkeypatch.setattr(sim, "simulate_sky", lambda out, **kwargs: seen.update(kwargs) or "sky")
    if address:
        monkeypatch.setenv("RAY_ADDRESS", address)
    else:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert main(["simulate", "--out", str(tmp_path), *flag]) == 0
    assert seen["on_ray"] is on_ray
