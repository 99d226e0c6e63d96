"""Tile store: path safety, the three reads on every file layout, byte counting, errors."""

from __future__ import annotations

import fsspec
import numpy as np
import pytest
from tiles import PointSource, truncate, write_tile

from raycat.errors import RaycatError
from raycat.surveys.store import LRUCache, StorePathError, TileReadError, open_store

SHAPE = (120, 160)
LAYOUTS = {  # file name -> write_tile keyword arguments
    "primary.fits": {},
    "extension.fits": {"in_extension": True},
    "gzipped.fits.gz": {"compression": "gzip"},
    "tiled.fits.fz": {"compression": "tile"},
}


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    for name, kwargs in LAYOUTS.items():
        write_tile(
            root / "tiles" / name,
            "ps1_g",
            30.0,
            -5.0,
            SHAPE,
            nan_boxes=[(0, 3, 0, 3)],
            sources=[PointSource(30.0, -5.0, 50.0, 1.3)],
            **kwargs,
        )
    return root


@pytest.mark.parametrize(
    "uri",
    [
        "../x.fits",
        "a/../../x.fits",
        "/etc/passwd",
        "s3://other/x",
        "file:///etc/passwd",
        "https://h/x.fits",
        "",
        "..",
        "~/x",
        "a\\..\\..\\x",
    ],
)
def test_resolve_rejects_paths_outside_the_root(store_dir, uri):
    store = open_store(str(store_dir))
    with pytest.raises(StorePathError):
        store.resolve(uri)
    assert issubclass(StorePathError, RaycatError)


def test_resolve_joins_normalised_relative_paths(store_dir):
    store = open_store(f"file://{store_dir}/")
    assert store.resolve("./tiles/x/../primary.fits") == f"{store_dir}/tiles/primary.fits"


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_full_and_section_reads_agree_on_every_layout(store_dir, name):
    store = open_store(str(store_dir))
    data, header = store.read_full(f"tiles/{name}")
    assert data.dtype == np.float32 and data.shape == SHAPE
    assert header["NAXIS1"] == SHAPE[1] and header["CTYPE1"] == "RA---TAN"
    assert np.isnan(data[:3, :3]).all() and np.isfinite(data[3:, 3:]).all()
    assert data.sum(where=np.isfinite(data)) > 0
    section, _ = store.read_section(f"tiles/{name}", 40, 70, 5, 45)
    np.testing.assert_array_equal(section, data[40:70, 5:45])


def test_scaled_integer_sections_equal_the_whole_image_bit_for_bit(tmp_path):
    """BSCALE/BZERO: a local whole image (cfitsio) and a section (raycat's decoder) give the
    same float32 values, so dense cuts from sections and from whole tiles agree exactly."""
    from astropy.io import fits

    ints = np.random.default_rng(3).integers(-30000, 30000, SHAPE).astype(np.int16)
    hdu = fits.PrimaryHDU(ints)
    hdu.header["BSCALE"], hdu.header["BZERO"] = 0.0137, 3.71
    hdu.writeto(tmp_path / "scaled.fits")
    store = open_store(str(tmp_path))
    whole, _ = store.read_full("scaled.fits")
    section, _ = store.read_section("scaled.fits", 10, 90, 5, 45)
    np.testing.assert_array_equal(section, whole[10:90, 5:45])
    assert whole.dtype == np.float32 and len(np.unique(whole)) > 1000


def test_layouts_are_read_identically(store_dir):
    store = open_store(str(store_dir))
    first, _ = store.read_full("tiles/primary.fits")
    for name in LAYOUTS:
        np.testing.assert_array_equal(store.read_full(f"tiles/{name}")[0], first)


def test_section_reads_only_the_box(store_dir):
    store = open_store(str(store_dir))
    store.read_header("tiles/primary.fits")  # headers are cached: not part of a section
    before = store.bytes_read
    store.read_section("tiles/primary.fits", 10, 30, 50, 70)  # narrow: one range per row
    assert store.bytes_read - before == 20 * 20 * 4
    before = store.bytes_read
    store.read_section("tiles/primary.fits", 10, 30, 0, 150)  # wide: one merged range
    assert 20 * 150 * 4 <= store.bytes_read - before <= 20 * SHAPE[1] * 4


def test_headers_are_read_once(store_dir):
    store = open_store(str(store_dir))
    store.read_header("tiles/primary.fits")
    after_first = store.bytes_read
    store.read_header("tiles/primary.fits")
    assert 0 < after_first == store.bytes_read


@pytest.mark.parametrize(
    "damage", ["truncated", "truncated-gzip", "truncated-tiled", "garbage", "missing"]
)
def test_unreadable_tiles_raise_one_error_naming_the_uri(tmp_path, damage):
    compression = {"truncated-gzip": "gzip", "truncated-tiled": "tile"}.get(damage, "none")
    path = write_tile(
        tmp_path / "t.fits", "ps1_g", 30.0, -5.0, SHAPE, compression=compression, noise_nmgy=1.0
    )  # noise: compressed files are not tiny
    if damage.startswith("truncated"):
        truncate(path, 0.6)
    elif damage == "garbage":
        path.write_bytes(b"SIMPLE  = nonsense" + bytes(5000))
    else:
        path.unlink()
    store = open_store(str(tmp_path))
    for read in (
        store.read_header,
        store.read_full,
        lambda uri: store.read_section(uri, 0, 10, 0, 10),
    ):
        with pytest.raises(TileReadError, match=r"t\.fits"):
            read("t.fits")


def test_section_outside_the_image_is_refused(store_dir):
    store = open_store(str(store_dir))
    with pytest.raises(ValueError):
        store.read_section("tiles/primary.fits", -1, 10, 0, 10)


def test_s3_reads_match_local(store_dir, s3_bucket):
    url, options = s3_bucket
    fs, _ = fsspec.core.url_to_fs(url, **options)
    fs.put(str(store_dir / "tiles"), f"{url}/tiles", recursive=True)
    local, remote = open_store(str(store_dir)), open_store(url, options)
    for name in LAYOUTS:
        np.testing.assert_array_equal(
            remote.read_full(f"tiles/{name}")[0], local.read_full(f"tiles/{name}")[0]
        )
    remote.read_header("tiles/primary.fits")
    before = remote.bytes_read
    section, _ = remote.read_section("tiles/primary.fits", 10, 30, 50, 70)
    np.testing.assert_array_equal(
        section, local.read_section("tiles/primary.fits", 10, 30, 50, 70)[0]
    )
    assert remote.bytes_read - before == 20 * 20 * 4
    # one request: the whole rows in one range (one GET), the same box out of it
    before = remote.bytes_read
    shared, _ = remote.read_section("tiles/primary.fits", 10, 30, 50, 70, one_request=True)
    np.testing.assert_array_equal(shared, section)
    assert remote.bytes_read - before == 20 * SHAPE[1] * 4
    before = local.bytes_read  # a local file: row by row all the same (reads are cheap)
    local.read_section("tiles/primary.fits", 10, 30, 50, 70, one_request=True)
    assert local.bytes_read - before == 20 * 20 * 4
    with pytest.raises(TileReadError, match=r"nope\.fits"):
        remote.read_full("tiles/nope.fits")


def test_lru_cache_is_bounded_by_count_and_bytes():
    cache = LRUCache(max_items=3, max_bytes=100, sizeof=len)
    for key in "abc":
        cache.put(key, b"x" * 30)
    cache.get("a")  # a is now the most recent: b goes first
    cache.put("d", b"x" * 30)
    assert cache.get("b") is None and cache.get("a") is not None and len(cache) == 3
    cache.put("e", b"x" * 60)
    assert cache.nbytes <= 100 and cache.get("e") is not None
