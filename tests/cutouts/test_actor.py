"""Cutout engine: geometry, flux, flags, read modes, stores, row bookkeeping, the Ray actor."""

from __future__ import annotations

import dataclasses
import shutil
import time

import fsspec
import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from tiles import PointSource, tile_wcs, truncate, write_fits, write_tile

from raycat import schema
from raycat.config import CutoutConfig
from raycat.cutouts import actor
from raycat.cutouts.actor import CutoutActor, TileCache, cutout_batch, normalise
from raycat.cutouts.resample import CutoutGrid, local_affine, offset_sky
from raycat.surveys.bands import (
    BAND_NAMES,
    NANOMAGGY_ZP,
    default_softening,
    get_band,
    sigma_pixel,
    softenings,
)
from raycat.surveys.store import TileStore, open_store

Flag = schema.Flag
RA0, DEC0 = 150.0, 2.0
FLUX = 10.0  # nanomaggies
# band -> (native scale "/px, rotation deg, east-right parity, tile shape): the three native
# scales of the real surveys, two of them rotated, one mirrored
TILES = {
    "ps1_r": (0.25, 30.0, False, (640, 640)),
    "galex_nuv": (1.5, 0.0, True, (150, 150)),
    "unwise_w1": (2.75, 45.0, False, (100, 100)),
}
BANDS = list(TILES)
SOURCES = {"a": (-20.0, 20.0), "b": (25.0, -25.0)}  # (xi, eta) arcsec from the tile centre
NAN_SPOT = (20.0, 35.0)  # a masked patch in the GALEX tile, away from the sources


def sky(xi: float, eta: float) -> tuple[float, float]:
    ra, dec = offset_sky(np.array(RA0), np.array(DEC0), np.array(xi), np.array(eta))
    return float(ra), float(dec)


def uri(band: str, folder: str = "tiles") -> str:
    return f"{folder}/{band}.fits"


def write_sky(root, folder: str = "tiles", noise: float = 0.0) -> None:
    """One tile per band with the two point sources at the band's PSF; a NaN patch in GALEX;
    optional white noise (nanomaggies per native pixel)."""
    for band, (scale, rotation, flip, shape) in TILES.items():
        nan_boxes = []
        if band == "galex_nuv":
            wcs = tile_wcs(RA0, DEC0, shape, scale, rotation, flip)
            x, y = wcs.all_world2pix([sky(*NAN_SPOT)], 0)[0]
            nan_boxes = [(int(y) - 2, int(y) + 3, int(x) - 2, int(x) + 3)]
        sources = [
            PointSource(*sky(*off), FLUX, get_band(band).psf_fwhm) for off in SOURCES.values()
        ]
        write_tile(
            root / uri(band, folder),
            band,
            RA0,
            DEC0,
            shape,
            scale,
            rotation_deg=rotation,
            flip=flip,
            sources=sources,
            nan_boxes=nan_boxes,
            noise_nmgy=noise,
        )


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    path = tmp_path_factory.mktemp("sky")
    write_sky(path)
    return path


def edge_position(root) -> tuple[float, float]:
    """A point 4 native pixels inside the PS1 tile's left edge."""
    wcs = WCS(fits.getheader(root / uri("ps1_r")))
    ra, dec = wcs.all_pix2world([[4.0, 320.0]], 0)[0]
    return float(ra), float(dec)


def make_batch(positions: list[tuple[float, float]], tiles: list[dict[str, str]]) -> dict:
    """Manifest-shaped numpy batch; ``tiles[i]`` maps band -> URI ("" or absent: none)."""
    n = len(positions)
    batch = {
        schema.ID: np.arange(100, 100 + n, dtype=np.int64),
        schema.RA: np.array([p[0] for p in positions]),
        schema.DEC: np.array([p[1] for p in positions]),
        schema.Z_SPEC: np.linspace(0.1, 0.9, n),
        schema.WORK_UNIT: np.full(n, 7, dtype=np.int64),
        schema.FLAGS: np.zeros(n, dtype=np.int32),
    }
    for band in BANDS:
        batch[schema.tile_column(band)] = np.array([t.get(band, "") for t in tiles], dtype=object)
    return batch


ALL = {band: uri(band) for band in BANDS}


def centroid(image: np.ndarray) -> tuple[float, float]:
    yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
    return (image * xx).sum() / image.sum(), (image * yy).sum() / image.sum()


def run(root, batch, mode="auto", normalised=False, store=None, **cfg):
    cutout_cfg = CutoutConfig(bands=BANDS, read_mode=mode, **cfg)
    return cutout_batch(batch, store or open_store(str(root)), cutout_cfg, normalised=normalised)


@pytest.mark.parametrize("mode", ["dense", "sparse"])
def test_point_sources_land_in_the_centre_with_their_flux(root, mode):
    batch = make_batch([sky(*off) for off in SOURCES.values()], [ALL, ALL])
    out = run(root, batch, mode)
    centre = (32 - 1) / 2.0
    for i in range(2):
        assert out[schema.FLAGS][i] == 0
        for b, band in enumerate(BANDS):
            image = out[schema.CUBE][i, b]
            cx, cy = centroid(image)
            assert abs(cx - centre) < 0.1 and abs(cy - centre) < 0.1, (band, cx, cy)
            assert image.sum() == pytest.approx(FLUX, rel=0.03), band


def test_distorted_tile_keeps_sources_centred(tmp_path):
    """A TAN-SIP tile whose distortion moves the source by > 2 native px still centres it."""
    source = PointSource(*sky(-70.0, 70.0), FLUX, get_band("ps1_r").psf_fwhm)
    write_tile(
        tmp_path / uri("ps1_r"),
        "ps1_r",
        RA0,
        DEC0,
        (800, 800),
        0.25,
        distortion=4e-5,
        rotation_deg=20.0,
        sources=[source],
    )
    header = fits.getheader(tmp_path / uri("ps1_r"))
    exact = WCS(header).all_world2pix([[source.ra, source.dec]], 0)[0]
    linear = WCS(header).wcs_world2pix([[source.ra, source.dec]], 0)[0]
    assert np.hypot(*(exact - linear)) > 2  # native px: the distortion matters here
    batch = make_batch([(source.ra, source.dec)], [{"ps1_r": uri("ps1_r")}])
    out = cutout_batch(
        batch, open_store(str(tmp_path)), CutoutConfig(bands=["ps1_r"]), normalised=False
    )
    cx, cy = centroid(out[schema.CUBE][0, 0])
    assert abs(cx - 15.5) < 0.1 and abs(cy - 15.5) < 0.1
    assert out[schema.CUBE][0, 0].sum() == pytest.approx(FLUX, rel=0.03)


def test_cutouts_are_north_up_east_left(root):
    """An object 5" south and 5" west of a source sees it up (north) and left (east)."""
    ra, dec = offset_sky(
        np.array(sky(*SOURCES["a"])[0]),
        np.array(sky(*SOURCES["a"])[1]),
        np.array(-5.0),
        np.array(-5.0),
    )
    out = run(root, make_batch([(float(ra), float(dec))], [ALL]))
    for b in range(len(BANDS)):
        cx, cy = centroid(out[schema.CUBE][0, b])
        assert cx == pytest.approx(15.5 - 5, abs=0.15) and cy == pytest.approx(15.5 + 5, abs=0.15)


def test_local_affine_matches_exact_wcs(root):
    """The affine map is within 1e-3 native px of astropy's exact transform over the cutout."""
    grid = CutoutGrid(32, 1.0)
    ra, dec = np.array([sky(*SOURCES["a"])[0]]), np.array([sky(*SOURCES["a"])[1]])
    for _band, (scale, rotation, flip, shape) in TILES.items():
        wcs = tile_wcs(RA0, DEC0, shape, scale, rotation, flip)
        affine = local_affine(wcs, ra, dec, grid.half_extent)
        x, y = affine.positions(grid)
        xi, eta = np.meshgrid(grid.xi, grid.eta)
        exact = wcs.all_world2pix(
            np.column_stack([a.ravel() for a in offset_sky(ra[0], dec[0], xi, eta)]), 0
        )
        assert np.abs(x[0].ravel() - exact[:, 0]).max() < 1e-3
        assert np.abs(y[0].ravel() - exact[:, 1]).max() < 1e-3


def test_edge_object_is_flagged_and_filled(root):
    out = run(root, make_batch([edge_position(root)], [ALL]))
    cube = out[schema.CUBE][0]
    assert out[schema.FLAGS][0] & Flag.EDGE
    assert np.isfinite(cube).all()
    ps1 = cube[BANDS.index("ps1_r")]
    assert (ps1 == 0).sum() > 32 * 8  # the off-tile half of the cutout is filled with sky


def test_masked_pixels_are_flagged_and_filled(root):
    batch = make_batch([sky(*NAN_SPOT), sky(*SOURCES["a"])], [ALL, ALL])
    out = run(root, batch, normalised=True)
    assert out[schema.FLAGS][0] & Flag.NAN_PIXELS and not out[schema.FLAGS][1]
    assert np.isfinite(out[schema.CUBE]).all()
    galex = out[schema.CUBE][0, BANDS.index("galex_nuv")]
    assert (galex[12:20, 12:20] == 0).all()


@pytest.mark.parametrize("mode", ["dense", "sparse"])
def test_truncated_tile_only_hurts_its_own_objects(root, tmp_path, mode):
    shutil.copytree(root / "tiles", tmp_path / "tiles")
    shutil.copy(root / uri("ps1_r"), tmp_path / "bad.fits")
    truncate(tmp_path / "bad.fits", 0.5)
    good = [sky(*off) for off in SOURCES.values()]
    batch = make_batch(
        good + good, [ALL, ALL, {**ALL, "ps1_r": "bad.fits"}, {**ALL, "ps1_r": "bad.fits"}]
    )
    out = run(tmp_path, batch, mode)
    flags, cube = out[schema.FLAGS], out[schema.CUBE]
    assert list(flags) == [0, 0, Flag.READ_ERROR, Flag.READ_ERROR]
    assert (cube[2:, BANDS.index("ps1_r")] == 0).all()
    np.testing.assert_array_equal(cube[2:, 1:], cube[:2, 1:])  # other bands unaffected
    assert (cube[:2, BANDS.index("ps1_r")].sum(axis=(1, 2)) > 9).all()


def test_unsafe_or_absent_tile_uri_is_a_read_error(root):
    batch = make_batch(
        [sky(*SOURCES["a"])] * 3,
        [{**ALL, "ps1_r": "../escape.fits"}, {**ALL, "ps1_r": "tiles/absent.fits"}, ALL],
    )
    out = run(root, batch)
    assert list(out[schema.FLAGS]) == [Flag.READ_ERROR, Flag.READ_ERROR, 0]
    assert (out[schema.CUBE][:2, 0] == 0).all() and out[schema.CUBE][2, 0].sum() > 9


def test_missing_band_and_off_footprint(root):
    batch = make_batch([sky(*SOURCES["a"])] * 3, [{"ps1_r": uri("ps1_r")}, {}, ALL])
    del batch[schema.tile_column("unwise_w1")]  # an absent column means "no tile" too
    out = run(root, batch)
    flags, cube = out[schema.FLAGS], out[schema.CUBE]
    assert flags[0] == Flag.MISSING_BAND and flags[1] == Flag.OFF_FOOTPRINT
    assert flags[2] == Flag.MISSING_BAND
    assert (cube[0, 1:] == 0).all() and cube[0, 0].sum() > 9 and (cube[1] == 0).all()


def test_dense_and_sparse_agree(root, tmp_path):
    write_sky(tmp_path, noise=0.05)  # noise everywhere: every pixel of the section matters
    positions = [
        sky(*SOURCES["a"]),
        sky(*SOURCES["b"]),
        edge_position(root),
        sky(*NAN_SPOT),
        sky(0.0, 0.0),
    ]
    batch = make_batch(positions, [ALL] * 5)
    dense, sparse = run(tmp_path, batch, "dense"), run(tmp_path, batch, "sparse")
    np.testing.assert_array_equal(dense[schema.FLAGS], sparse[schema.FLAGS])
    np.testing.assert_allclose(dense[schema.CUBE], sparse[schema.CUBE], rtol=1e-5, atol=1e-6)


def test_local_and_s3_agree(root, s3_bucket):
    url, options = s3_bucket
    fs, _ = fsspec.core.url_to_fs(url, **options)
    fs.put(str(root / "tiles"), f"{url}/tiles", recursive=True)
    positions = [sky(*SOURCES["a"]), edge_position(root), sky(*NAN_SPOT)]
    batch = make_batch(positions, [ALL, ALL, {**ALL, "ps1_r": "tiles/absent.fits"}])
    for mode in ("dense", "sparse"):
        local = run(root, batch, mode)
        remote = run(root, batch, mode, store=open_store(url, options))
        np.testing.assert_array_equal(local[schema.FLAGS], remote[schema.FLAGS])
        np.testing.assert_array_equal(local[schema.CUBE], remote[schema.CUBE])
    assert remote[schema.FLAGS][2] & Flag.READ_ERROR


def _behind_fault_proxy(root, s3_bucket, proxy) -> tuple[str, dict]:
    """The test sky's tiles in a bucket, and storage options that reach it through ``proxy``
    with botocore's own retries off (s3fs still tries a SlowDown call 5 times)."""
    url, options = s3_bucket
    fs, _ = fsspec.core.url_to_fs(url, **options)
    fs.put(str(root / "tiles"), f"{url}/tiles", recursive=True)
    return url, {
        "client_kwargs": {"endpoint_url": proxy.url},
        "config_kwargs": {"retries": {"total_max_attempts": 1}},
    }


def test_s3_throttling_is_retried_over_http(root, s3_bucket, s3_server):
    """503 SlowDown replies injected on the wire: more than the S3 client absorbs in one call,
    so the read succeeds only through raycat's own retry, with the same pixels as a clean read."""
    from fault_proxy import FaultProxy

    batch = make_batch([sky(*SOURCES["a"]), sky(*SOURCES["b"])], [ALL, ALL])
    clean = run(root, batch, "dense")
    with FaultProxy(s3_server) as proxy:
        url, options = _behind_fault_proxy(root, s3_bucket, proxy)
        proxy.fail(uri("ps1_r"), 8)  # s3fs gives up after 5: raycat's second attempt wins
        out = run(root, batch, "dense", store=open_store(url, options, read_attempts=3))
    assert proxy.failed[uri("ps1_r")] == 8 and proxy.forwarded[uri("ps1_r")] >= 1
    np.testing.assert_array_equal(out[schema.FLAGS], [0, 0])
    np.testing.assert_array_equal(out[schema.CUBE], clean[schema.CUBE])


def test_s3_tile_that_keeps_failing_is_flagged_not_hung(root, s3_bucket, s3_server):
    import s3fs
    from fault_proxy import FaultProxy

    batch = make_batch([sky(*SOURCES["a"]), sky(*SOURCES["b"])], [ALL, ALL])
    clean = run(root, batch, "dense")
    with FaultProxy(s3_server) as proxy:
        url, options = _behind_fault_proxy(root, s3_bucket, proxy)
        proxy.fail(uri("ps1_r"), None)
        started = time.perf_counter()
        out = run(root, batch, "dense", store=open_store(url, options, read_attempts=2))
        seconds = time.perf_counter() - started
    np.testing.assert_array_equal(out[schema.FLAGS], [Flag.READ_ERROR] * 2)
    band = BANDS.index("ps1_r")
    assert (out[schema.CUBE][:, band] == 0).all()
    keep = [i for i in range(len(BANDS)) if i != band]  # the other bands are still cut out
    np.testing.assert_array_equal(out[schema.CUBE][:, keep], clean[schema.CUBE][:, keep])
    # each raycat attempt is one s3fs call of S3FileSystem.retries tries: bounded, then given up
    assert proxy.failed[uri("ps1_r")] == 2 * s3fs.S3FileSystem.retries
    assert proxy.forwarded[uri("ps1_r")] == 0 and seconds < 60


@pytest.mark.parametrize("compression", ["gzip", "tile"])
def test_compressed_tiles_give_the_same_cutouts(root, tmp_path, compression):
    write_sky(tmp_path, "plain")
    for band in BANDS:  # rewrite the same pixels compressed under the same names
        data, header = fits.getdata(tmp_path / uri(band, "plain"), header=True)
        write_fits(tmp_path / uri(band, "packed"), data, header, compression)
    positions = [sky(*SOURCES["a"]), sky(*NAN_SPOT)]
    plain = run(
        tmp_path, make_batch(positions, [{b: uri(b, "plain") for b in BANDS}] * 2), "sparse"
    )
    packed = run(
        tmp_path, make_batch(positions, [{b: uri(b, "packed") for b in BANDS}] * 2), "sparse"
    )
    np.testing.assert_array_equal(plain[schema.FLAGS], packed[schema.FLAGS])
    np.testing.assert_allclose(plain[schema.CUBE], packed[schema.CUBE], rtol=1e-6, atol=1e-7)


def test_rows_out_equal_rows_in_in_order(root):
    rng = np.random.default_rng(1)
    kinds = [
        (sky(*SOURCES["a"]), ALL),
        (sky(*SOURCES["b"]), {"galex_nuv": uri("galex_nuv")}),
        (edge_position(root), ALL),
        (sky(*NAN_SPOT), ALL),
        ((10.0, 10.0), {}),
        (sky(0, 0), {**ALL, "ps1_r": "tiles/absent.fits"}),
    ]
    picks = rng.integers(0, len(kinds), 40)
    batch = make_batch([kinds[k][0] for k in picks], [kinds[k][1] for k in picks])
    batch[schema.ID] = rng.permutation(10_000)[:40]
    batch[schema.FLAGS][::5] = Flag.DUPLICATE_ID
    out = run(root, batch, normalised=True)
    for column in (schema.ID, schema.RA, schema.DEC, schema.Z_SPEC, schema.WORK_UNIT):
        np.testing.assert_array_equal(out[column], batch[column])
    assert out[schema.CUBE].shape == (40, len(BANDS), 32, 32)
    assert out[schema.CUBE].dtype == np.float32 and out[schema.FLAGS].dtype == np.int32
    assert (out[schema.FLAGS][::5] & Flag.DUPLICATE_ID).all()
    single = run(root, make_batch([kinds[picks[7]][0]], [kinds[picks[7]][1]]), normalised=True)
    np.testing.assert_array_equal(out[schema.CUBE][7], single[schema.CUBE][0])
    empty = run(root, make_batch([], []))
    assert empty[schema.CUBE].shape == (0, len(BANDS), 32, 32)


def test_default_softening_is_the_sky_noise_per_output_pixel(tmp_path):
    """Pure-noise tiles at each band's depth: the cutout noise is ~the default softening.

    This also checks the box-average before sampling: without it, PS1's 16 native pixels per
    output pixel would give 4x the noise instead of summing it down.
    """
    for band, (scale, rotation, flip, shape) in TILES.items():
        sigma = sigma_pixel(get_band(band), NANOMAGGY_ZP)
        write_tile(
            tmp_path / uri(band),
            band,
            RA0,
            DEC0,
            shape,
            scale,
            rotation_deg=rotation,
            flip=flip,
            noise_nmgy=sigma,
            seed=3,
        )
    positions = [sky(xi, eta) for xi in (-30, 0, 30) for eta in (-30, 0, 30)]
    flux = run(tmp_path, make_batch(positions, [ALL] * len(positions)))[schema.CUBE]
    for b, band in enumerate(BANDS):
        ratio = flux[:, b].std() / default_softening(band, 1.0)
        assert 0.55 < ratio < 1.2, (band, ratio)


def test_normalisation_is_asinh_with_the_softening(root):
    batch = make_batch([sky(*SOURCES["a"])], [ALL])
    soft = {"ps1_r": 0.05, "galex_nuv": 0.2, "unwise_w1": 0.1}
    flux = run(root, batch)[schema.CUBE]
    scaled = run(root, batch, normalised=True, softening=soft)[schema.CUBE]
    expected = np.arcsinh(flux / np.array(list(soft.values()))[None, :, None, None])
    np.testing.assert_allclose(scaled, expected, rtol=1e-5, atol=1e-6)
    cfg = CutoutConfig(bands=BANDS)
    np.testing.assert_allclose(softenings(cfg), [default_softening(b, 1.0) for b in BANDS])
    assert all(0.001 < default_softening(b, 1.0) < 1.0 for b in BAND_NAMES)
    assert normalise(np.zeros((1, 3, 4, 4)), softenings(cfg)).sum() == 0


def whole_tiles(monkeypatch) -> None:
    """Every tile read as one that cannot be range-read (compressed): whole, cached."""
    info = actor.tile_info
    monkeypatch.setattr(
        actor, "tile_info", lambda *a: dataclasses.replace(info(*a), sections=False)
    )


@pytest.mark.parametrize("mode", ["dense", "auto"])
def test_dense_sections_cut_exactly_what_whole_tiles_do_from_fewer_bytes(root, mode, monkeypatch):
    """A batch's objects on a tile are cut from the section their footprints cover: the
    same cutouts as from the whole tile (the margin holds the filter's and the sampling's
    reach), fewer pixels read, nothing cached."""
    batch = make_batch([sky(*off) for off in SOURCES.values()], [ALL, ALL])
    store, cache = open_store(str(root)), TileCache()
    sections = cutout_batch(
        batch, store, CutoutConfig(bands=BANDS, read_mode=mode, dense_min_objects=2), cache
    )
    section_bytes = store.bytes_read
    assert len(cache.images) == 0
    whole_tiles(monkeypatch)
    whole_store = open_store(str(root))
    whole = cutout_batch(
        batch, whole_store, CutoutConfig(bands=BANDS, read_mode=mode, dense_min_objects=2)
    )
    np.testing.assert_array_equal(sections[schema.CUBE], whole[schema.CUBE])
    np.testing.assert_array_equal(sections[schema.FLAGS], whole[schema.FLAGS])
    assert section_bytes < 0.7 * whole_store.bytes_read


def test_objects_off_the_tile_neither_read_it_nor_stretch_the_section(root):
    """An object listed on a tile it does not reach (an index that is wrong, a tile edge)
    is flagged EDGE and adds nothing to the section read for the others."""
    far = sky(-3000.0, 3000.0)  # arcsec: off every test tile
    near = [sky(*off) for off in SOURCES.values()]
    cfg = CutoutConfig(bands=BANDS, read_mode="dense")
    read = {}
    for name, positions in {"far": [far], "near": near, "both": [*near, far]}.items():
        store, cache = open_store(str(root)), TileCache()
        out = cutout_batch(make_batch(positions, [ALL] * len(positions)), store, cfg, cache)
        read[name] = store.bytes_read
        assert len(cache.images) == 0
    assert out[schema.FLAGS][-1] & Flag.EDGE and not (out[schema.FLAGS][:2] & Flag.EDGE).any()
    headers = open_store(str(root))
    for band in BANDS:
        headers.read_header(uri(band))
    assert read["far"] == headers.bytes_read  # the headers, to place it; no pixels
    assert read["both"] == read["near"] > 2 * read["far"]


def test_tile_caches_keep_their_bound_and_evicting_changes_no_cutout(root):
    """An actor's memory is set by its caches' bounds, not by the tiles it has seen: with
    room for one tile info and one header, a batch over every band's tile gives the same
    cutouts as with the default caches, and each cache holds one tile afterwards."""
    batch = make_batch([sky(*off) for off in SOURCES.values()], [ALL, ALL])
    cfg = CutoutConfig(bands=BANDS, read_mode="sparse")
    small_store, small = TileStore(str(root), header_cache_size=1), TileCache(max_infos=1)
    bounded = cutout_batch(batch, small_store, cfg, small)
    assert len(BANDS) > 1 and len(small.infos) == 1 and len(small_store._layouts) == 1
    default = cutout_batch(batch, open_store(str(root)), cfg, TileCache())
    np.testing.assert_array_equal(bounded[schema.CUBE], default[schema.CUBE])
    np.testing.assert_array_equal(bounded[schema.FLAGS], default[schema.FLAGS])


def test_dense_tiles_are_cached_across_batches(root, monkeypatch):
    """A tile that cannot be range-read is prepared whole and kept for the next batches
    (here: every tile, as if compressed)."""
    whole_tiles(monkeypatch)
    store, cache = open_store(str(root)), TileCache()
    cfg = CutoutConfig(bands=BANDS, read_mode="auto", dense_min_objects=2)
    batch = make_batch([sky(*off) for off in SOURCES.values()], [ALL, ALL])
    first = cutout_batch(batch, store, cfg, cache)
    read = store.bytes_read
    again = cutout_batch(make_batch([sky(*SOURCES["a"])], [ALL]), store, cfg, cache)
    assert store.bytes_read == read  # one object, yet dense: the tile is cut from the cache
    np.testing.assert_array_equal(again[schema.CUBE][0], first[schema.CUBE][0])


@pytest.mark.slow
def test_cutout_actor_on_ray_data(root, ray_local):
    import ray

    positions = [sky(*SOURCES["a"]), sky(*SOURCES["b"]), (10.0, 10.0)]
    batch = make_batch(positions, [ALL, ALL, {}])
    rows = [
        {k: (v[i].item() if hasattr(v[i], "item") else v[i]) for k, v in batch.items()}
        for i in range(len(positions))
    ]
    cfg = CutoutConfig(bands=BANDS)
    ds = ray.data.from_items(rows).map_batches(
        CutoutActor,
        fn_constructor_kwargs={"store": str(root), "storage_options": {}, "cutout_cfg": cfg},
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=1),
        num_cpus=0.5,
        batch_format="numpy",
        batch_size=2,
    )
    out = sorted(ds.take_all(), key=lambda row: row[schema.ID])
    direct = cutout_batch(batch, open_store(str(root)), cfg)
    assert [row[schema.ID] for row in out] == list(batch[schema.ID])
    for i, row in enumerate(out):
        assert row[schema.FLAGS] == direct[schema.FLAGS][i]
        np.testing.assert_allclose(row[schema.CUBE], direct[schema.CUBE][i], rtol=1e-6)
