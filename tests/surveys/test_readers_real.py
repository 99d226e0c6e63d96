"""Real survey products read to AB nanomaggies with their own conventions.

Reads ../shared/realdata (see its README) in place, never copying it; skips without it. The
GALEX and raw PS1 conventions have no offline sample, so those files are written here to
match the surveys' documentation.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from realdata import REALDATA

from raycat import schema
from raycat.config import CutoutConfig
from raycat.cutouts.actor import cutout_batch, tile_info
from raycat.surveys.bands import ps1_asinh_to_linear
from raycat.surveys.store import open_store

REAL = REALDATA
SDSS_FRAME = "sdss/frame-r-001000-1-0100.fits.bz2"


@pytest.fixture(scope="module")
def real():
    if not REAL.is_dir():
        pytest.skip(f"real survey files not found at {REAL}")
    return open_store(str(REAL))


def nanomaggies(store, uri: str, band) -> tuple[np.ndarray, object]:
    """(image in AB nanomaggies, TileInfo) through the same calls the cutout engine makes."""
    info = tile_info(store, uri, band, 1.0)
    return info.pixels(store, uri) * info.nmgy_per_unit, info


@pytest.mark.parametrize("tile,side", [("1866p257", 25), ("3460p121", 10)])
@pytest.mark.parametrize("band,ab_offset", [("w1", 2.699), ("w2", 3.339)])
def test_unwise_tiles_are_vega_nanomaggies_with_ab_offsets(real, tile, side, band, ab_offset):
    uri = f"unwise/{tile}/unwise-{tile}-{band}-img-m.fits"
    image, info = nanomaggies(real, uri, f"unwise_{band}")
    assert info.layout.header["MAGZP"] == 22.5
    assert info.nmgy_per_unit == pytest.approx(10 ** (-0.4 * ab_offset))
    assert image.shape == (side, side) and np.isfinite(image).all()
    assert info.native_scale == pytest.approx(2.75, abs=0.01)
    layout = info.band.layout
    assert (REAL / layout.companion("invvar", uri)).is_file()
    assert (REAL / layout.companion("mask", uri)).is_file()


@pytest.mark.parametrize(
    "setting, companion, not_data",
    [
        ({"mask_bits": 1}, "unwise-x-msk.fits.gz", np.int32(1)),  # a flagged mask bit
        ({"invvar_nodata": True}, "unwise-x-w1-invvar-m.fits.gz", np.float32(0.0)),  # no exposure
    ],
)
def test_unwise_companions_are_optional_and_applied_when_asked(
    real, tmp_path, setting, companion, not_data
):
    from astropy.io import fits

    uri = "unwise/1866p257/unwise-1866p257-w1-img-m.fits"
    cfg = CutoutConfig(bands=["unwise_w1"], surveys={"unwise": setting})
    masked, _ = nanomaggies(real, uri, cfg.band("unwise_w1"))
    assert np.isfinite(masked).all()  # this tile's real mask and invvar mark every pixel data

    (tmp_path / "t").mkdir()
    data = fits.getdata(REAL / uri)
    fits.writeto(tmp_path / "t/unwise-x-w1-img-m.fits", data, fits.getheader(REAL / uri))
    values = np.ones(data.shape, not_data.dtype) * (0.45 if not_data == 0 else 0)
    values[:3] = not_data
    fits.writeto(tmp_path / "t" / companion, values)
    own = open_store(str(tmp_path))
    image, info = nanomaggies(own, "t/unwise-x-w1-img-m.fits", cfg.band("unwise_w1"))
    assert np.isnan(image[:3]).all() and np.isfinite(image[3:]).all()
    # the image is raw, its gzip companion is not: no sections (each would decompress it)
    assert info.layout.range_readable and not info.sections
    (tmp_path / "t" / companion).unlink()  # no companion: pixels kept
    image, info = nanomaggies(
        open_store(str(tmp_path)), "t/unwise-x-w1-img-m.fits", cfg.band("unwise_w1")
    )
    assert np.isfinite(image).all() and not info.sections  # whole: its absence warned once
    plain = CutoutConfig(bands=["unwise_w1"]).band("unwise_w1")  # no companion read
    assert nanomaggies(open_store(str(tmp_path)), "t/unwise-x-w1-img-m.fits", plain)[1].sections


def test_built_in_conventions_are_overridden_from_a_yaml_config(real, tmp_path):
    """A YAML file replaces a built-in band's calibration (unWISE W1's Vega-to-AB offset) and
    a survey's layout (GALEX's field of view); the real tile's fluxes follow the new numbers."""
    from raycat.config import load_config

    (tmp_path / "config.yaml").write_text("""
cutouts:
  bands: [unwise_w1, galex_nuv]
  surveys:
    unwise:
      bands:
        unwise_w1:
          calibration: {kind: header, keyword: MAGZP, zero_point: 22.5, ab_offset: 2.5}
    galex:
      fov_radius_deg: 0.3
""")
    cfg = load_config(str(tmp_path / "config.yaml")).cutouts
    uri = "unwise/1866p257/unwise-1866p257-w1-img-m.fits"
    default, _ = nanomaggies(real, uri, "unwise_w1")
    overridden, info = nanomaggies(real, uri, cfg.band("unwise_w1"))
    assert info.nmgy_per_unit == pytest.approx(10 ** (-0.4 * 2.5))
    np.testing.assert_allclose(overridden / default, 10 ** (-0.4 * (2.5 - 2.699)), rtol=1e-5)
    assert cfg.band("galex_nuv").layout.fov_radius_deg == 0.3
    assert cfg.band("unwise_w2").calibration.ab_offset == 3.339  # what it did not name stays


def test_hsc_coadd_reads_extension_1_with_inherited_fluxmag0(real):
    image, info = nanomaggies(real, "hsc/hsc_r_34.0_-5.0.fits", "hsc_r")
    assert info.layout.hdu_index == 1 and image.shape == (180, 179)
    assert 2.5 * math.log10(info.layout.header["FLUXMAG0"]) == pytest.approx(27.0)
    assert info.nmgy_per_unit == pytest.approx(10 ** (-0.4 * (27.0 - 22.5)))
    assert info.native_scale == pytest.approx(0.168, rel=1e-3)
    assert abs(np.nanmedian(image)) < 0.01  # sky-subtracted: near zero in nanomaggies


@pytest.mark.parametrize(
    "survey",
    [
        {"like": "hsc", "image_hdu": 1, "bands": {"hsclike_r": {"like": "hsc_r"}}},
        {
            "pixel_scale": 0.168,
            "image_hdu": 1,
            "calibration": {"kind": "fluxmag0", "zero_point": 0.0},
            "bands": {"hsclike_r": {"filter_name": "hsc2017-r", "psf_fwhm": 0.7, "depth_ab": 26.0}},
        },
    ],
)
def test_a_new_survey_with_a_known_convention_needs_config_only(real, survey):
    cfg = CutoutConfig(bands=["hsclike_r"], surveys={"hsc_like": survey})
    band = cfg.band("hsclike_r")
    assert band.survey == "hsc_like" and band.layout.image_hdu == 1
    image, info = nanomaggies(real, "hsc/hsc_r_34.0_-5.0.fits", band)
    assert info.nmgy_per_unit == pytest.approx(10 ** (-0.4 * 4.5))
    reference, _ = nanomaggies(real, "hsc/hsc_r_34.0_-5.0.fits", "hsc_r")
    np.testing.assert_array_equal(image, reference)


def test_legacy_surveys_cutout_is_nanomaggies(real):
    image, info = nanomaggies(real, "legacysurvey/ls_g_mrk421.fits", "ls_g")
    assert info.nmgy_per_unit == 1.0 and image.shape == (60, 60)
    peak = np.unravel_index(np.nanargmax(image), image.shape)
    assert abs(peak[0] - 29.5) < 4 and abs(peak[1] - 29.5) < 4  # Mrk 421 at the centre
    ra, dec = info.wcs.pixel_to_world_values(*peak[::-1])
    assert (ra, dec) == (pytest.approx(166.1138, abs=2e-3), pytest.approx(38.2089, abs=2e-3))
    g_in_box = 22.5 - 2.5 * math.log10(image.sum())  # the bright host: g ~ 15 in 1' x 1'
    assert 14.0 < g_in_box < 16.5


@pytest.fixture(scope="module")
def sdss(real):
    from astropy.io import fits

    image, info = nanomaggies(real, SDSS_FRAME, "sdss_r")
    objects = fits.getdata(REAL / "sdss/photoObj-001000-1-0100.fits", 1)
    x, y = info.wcs.all_world2pix(objects["RA"], objects["DEC"], 0)
    return image, info, objects, x, y


def test_sdss_frame_bz2_reads_as_nanomaggies(sdss):
    image, info, *_ = sdss
    assert info.layout.kind == "bz2" and image.shape == (100, 100)
    assert info.nmgy_per_unit == 1.0  # frames are already nanomaggies (NMGY is per count)
    assert info.native_scale == pytest.approx(0.396, abs=0.001)


def test_sdss_photoobj_positions_land_on_their_sources(sdss):
    image, _, _objects, x, y = sdss
    inside = (x > 4) & (x < 95) & (y > 4) & (y < 95)
    xs, ys = np.clip(x.round().astype(int), 1, 98), np.clip(y.round().astype(int), 1, 98)
    near = np.array([image[j - 1 : j + 2, i - 1 : i + 2].max() for i, j in zip(xs, ys)])
    bright = np.flatnonzero(inside & (near > 0.2))  # ~10 sigma above the sky
    assert len(bright) >= 2
    for i in bright:
        xi, yi = int(round(x[i])), int(round(y[i]))
        box = image[yi - 3 : yi + 4, xi - 3 : xi + 4]
        py, px = np.unravel_index(np.argmax(box), box.shape)
        assert math.hypot(xi - 3 + px - x[i], yi - 3 + py - y[i]) < 1.5, i


def test_sdss_aperture_flux_matches_the_photoobj_catalogue(sdss):
    image, _, objects, x, y = sdss
    star = int(
        np.flatnonzero(
            (objects["OBJC_TYPE"] == 6)
            & (objects["PSFFLUX"][:, 2] > 10)
            & (x > 10)
            & (x < 90)
            & (y > 10)
            & (y < 90)
        )[0]
    )
    yy, xx = np.mgrid[:100, :100]
    r = np.hypot(xx - x[star], yy - y[star])
    aperture = r < 3.0 / 0.396  # APERFLUX index 4 is the 3.0" radius aperture
    sky = np.median(image[(r > 12) & (r < 20)])
    measured = image[aperture].sum() - sky * aperture.sum()
    assert measured == pytest.approx(objects["APERFLUX"][star, 2, 4], rel=0.10)


@pytest.mark.parametrize("band", "griz")
def test_ps1_fitscut_cutouts_have_a_wcs_and_exptime_zero_point(real, band):
    image, info = nanomaggies(real, f"ps1/PS1_{band}.fits", f"ps1_{band}")
    assert "PC1_1" in info.layout.header and "PC001001" not in info.layout.header
    ra, dec = info.wcs.pixel_to_world_values(119.5, 119.5)
    assert (ra, dec) == (pytest.approx(27.952, abs=2e-3), pytest.approx(0.2635, abs=2e-3))
    assert info.native_scale == pytest.approx(0.25, rel=1e-3)
    exptime = info.layout.header["EXPTIME"]
    zp = 25 + 2.5 * math.log10(exptime)
    assert info.nmgy_per_unit == pytest.approx(10 ** (-0.4 * (zp - 22.5)))
    assert np.isfinite(image).mean() > 0.9


def _compressed_stack(values: np.ndarray, header, encoding: str):
    """A tile-compressed image HDU: lossless float GZIP_2, or RICE_1 over 16-bit integers
    with BSCALE/BZERO as the real PS1 stacks store their asinh values."""
    from astropy.io import fits

    if encoding == "GZIP_2":
        return fits.CompImageHDU(values, header, compression_type="GZIP_2", quantize_level=0)
    bscale, bzero = 1e-3, float(np.round(values.mean()))
    ints = np.round((values - bzero) / bscale).astype(np.int16)
    hdu = fits.CompImageHDU(ints, header, compression_type="RICE_1")
    hdu.header["BSCALE"], hdu.header["BZERO"] = bscale, bzero
    return hdu


@pytest.mark.parametrize("encoding, rtol, atol", [("GZIP_2", 1e-3, 1e-6), ("RICE_1", 2e-3, 2e-5)])
def test_raw_ps1_stack_is_decompressed_from_asinh(tmp_path, encoding, rtol, atol):
    from astropy.io import fits

    linear = np.random.default_rng(1).normal(50.0, 20.0, (64, 64)).astype(np.float32)
    linear[30:34, 30:34] = 5e5  # a bright star: where the asinh scaling matters
    boffset, bsoften = 12.0, 30.0
    stored = 2.5 / math.log(10) * np.arcsinh((linear - boffset) / (2 * bsoften))
    header = fits.Header(
        {
            "EXPTIME": 500.0,
            "BOFFSET": boffset,
            "BSOFTEN": bsoften,
            "CTYPE1": "RA---TAN",
            "CTYPE2": "DEC--TAN",
            "CRVAL1": 27.95,
            "CRVAL2": 0.26,
            "CRPIX1": 32.5,
            "CRPIX2": 32.5,
            "CDELT1": -0.25 / 3600,
            "CDELT2": 0.25 / 3600,
        }
    )
    hdus = fits.HDUList(
        [fits.PrimaryHDU(), _compressed_stack(stored.astype(np.float32), header, encoding)]
    )
    hdus.writeto(tmp_path / "skycell.fits")
    np.testing.assert_allclose(ps1_asinh_to_linear(stored, boffset, bsoften), linear, rtol=1e-4)
    image, info = nanomaggies(open_store(str(tmp_path)), "skycell.fits", "ps1_r")
    assert info.layout.hdu_index == 1 and info.layout.kind == "compressed"
    assert info.layout.header.get("BSCALE", 1.0) != 1.0 or encoding == "GZIP_2"
    expected = linear * 10 ** (-0.4 * (25 + 2.5 * math.log10(500.0) - 22.5))
    np.testing.assert_allclose(image, expected, rtol=rtol, atol=atol)


def galex_tile(path: Path) -> None:
    """A GALEX-like NUV intensity map: square tile, round detector (1.2 deg across)."""
    from astropy.io import fits

    n, scale_deg = 160, 0.01  # 1.6 deg square (real maps: 3840 px of 1.5")
    header = fits.Header(
        {
            "CTYPE1": "RA---TAN",
            "CTYPE2": "DEC--TAN",
            "CRVAL1": 150.0,
            "CRVAL2": 2.0,
            "CRPIX1": (n + 1) / 2,
            "CRPIX2": (n + 1) / 2,
            "CDELT1": -scale_deg,
            "CDELT2": scale_deg,
            "BUNIT": "cps",
        }
    )
    fits.writeto(path, np.full((n, n), 0.01, np.float32), header)


def test_galex_corners_outside_the_field_of_view_are_not_data(tmp_path):
    galex_tile(tmp_path / "nuv.fits")
    store = open_store(str(tmp_path))
    image, info = nanomaggies(store, "nuv.fits", "galex_nuv")
    assert info.nmgy_per_unit == pytest.approx(10 ** (-0.4 * (20.08 - 22.5)))
    assert np.isnan(image[0, 0]) and np.isnan(image[-1, -1])  # corners: 1.1 deg out
    assert np.isfinite(image[80, 20]) and np.isnan(image[80, 10])  # 0.595 / 0.695 deg
    cfg = CutoutConfig(bands=["galex_nuv"], size_px=16, pixel_scale=60.0, read_mode="sparse")
    batch = {
        schema.RA: np.array([150.0, 150.0 + 0.73]),
        schema.DEC: np.array([2.0, 2.73]),
        schema.tile_column("galex_nuv"): np.array(["nuv.fits", "nuv.fits"]),
    }
    flags = cutout_batch(batch, store, cfg)[schema.FLAGS]
    assert flags[0] == 0
    assert flags[1] & (schema.Flag.NAN_PIXELS | schema.Flag.EDGE)
