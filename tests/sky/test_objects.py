"""Synthetic sky-scale object lists: unique ids, reproducible, streamed in bounded chunks, and
as uneven as a real sky (>= 30x density contrast, a deep patch), measured on HEALPix pixels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from raycat import schema
from raycat.healpix import healpix29, pixel_at_order
from raycat.sky.objects import (
    BLOCK_ROWS,
    SkyDensity,
    angular_distance,
    galactic_to_icrs,
    synthetic_objects,
    write_synthetic_objects,
)

BOX = (150.0, 160.0, -5.0, 5.0)
LAW = SkyDensity()


@pytest.fixture(scope="module")
def sky() -> pd.DataFrame:
    """A million full-sky objects (about a second to draw)."""
    return pd.concat(synthetic_objects(1_000_000, seed=13), ignore_index=True)


def in_cone(frame: pd.DataFrame, radius_scale: float = 1.0) -> np.ndarray:
    distance = angular_distance(frame[schema.RA], frame[schema.DEC], LAW.deep_ra, LAW.deep_dec)
    return distance <= LAW.deep_radius * radius_scale


def test_ids_are_unique_and_columns_typed(sky):
    assert list(sky.columns) == [schema.ID, schema.RA, schema.DEC, schema.TRUTH_Z]
    assert sky[schema.ID].dtype == np.int64 and sky[schema.RA].dtype == np.float64
    assert sky[schema.ID].is_unique and len(sky) == 1_000_000
    assert sky[schema.RA].between(0, 360, inclusive="left").all()
    assert sky[schema.DEC].between(-90, 90).all() and (sky[schema.TRUTH_Z] > 0).all()


def test_density_contrast_is_at_least_30x_on_healpix_pixels(sky):
    # Order 3 (768 pixels of 54 deg2): the sparsest pixels still hold ~200 objects, so the
    # ratio is the law's (plane over pole), not Poisson noise in an almost empty pixel.
    counts = np.bincount(pixel_at_order(healpix29(sky[schema.RA], sky[schema.DEC]), 3))
    low, high = np.percentile(counts, [1, 99])
    assert high / low >= 30, (low, high)
    assert counts.min() >= 100


def test_density_rises_toward_the_galactic_plane(sky):
    sin_b = np.abs(np.sin(np.radians(galactic_latitude(sky))))
    # Per unit sin|b| (equal area) the law is min(1/s, cap): compare two equal-area bands.
    plane = ((sin_b > 0.01) & (sin_b < 0.02)).sum()
    pole = ((sin_b > 0.90) & (sin_b < 0.91)).sum()
    assert plane / pole == pytest.approx(np.log(2) / np.log(0.91 / 0.90), rel=0.1)


def galactic_latitude(frame: pd.DataFrame) -> np.ndarray:
    from astropy.coordinates import SkyCoord

    coords = SkyCoord(frame[schema.RA].to_numpy(), frame[schema.DEC].to_numpy(), unit="deg")
    return coords.galactic.b.deg


def test_galactic_rotation_matches_astropy():
    from astropy.coordinates import SkyCoord

    l_deg, b_deg = np.array([0.0, 90.0, 200.0, 33.0]), np.array([0.0, 30.0, -60.0, 89.0])
    ra, dec = galactic_to_icrs(l_deg, b_deg)
    truth = SkyCoord(l=l_deg, b=b_deg, unit="deg", frame="galactic").icrs
    # Within 0.05": the Hipparcos matrix is ICRS-based, astropy's Galactic frame FK5-based
    # (the two differ by about 0.02").
    for i in range(len(l_deg)):
        assert angular_distance(ra[i], dec[i], truth.ra.deg[i], truth.dec.deg[i]) < 0.05 / 3600


def test_deep_patch_is_ten_times_denser_than_its_surroundings(sky):
    inner = in_cone(sky).sum()
    ring = (in_cone(sky, np.sqrt(2)) & ~in_cone(sky)).sum()  # an annulus of the same area
    assert inner > 300
    assert inner / ring == pytest.approx(LAW.deep_boost, rel=0.25)


def test_same_seed_same_rows_whatever_the_chunking_and_another_seed_differs():
    n = BLOCK_ROWS + 5_000
    big = pd.concat(synthetic_objects(n, seed=3, chunk_rows=50_000), ignore_index=True)
    small = pd.concat(synthetic_objects(n, seed=3, chunk_rows=7_777), ignore_index=True)
    pd.testing.assert_frame_equal(big, small)
    other = pd.concat(synthetic_objects(n, seed=4, chunk_rows=50_000), ignore_index=True)
    assert not np.allclose(other[schema.RA], big[schema.RA])


def test_chunks_are_never_larger_than_asked():
    sizes = [len(c) for c in synthetic_objects(100_001, seed=1, chunk_rows=9_000)]
    assert max(sizes) <= 9_000 and sum(sizes) == 100_001
    assert sizes[:-1] == [9_000] * (len(sizes) - 1)


def test_box_holds_the_same_law_restricted_to_it(sky):
    boxed = pd.concat(synthetic_objects(100_000, seed=5, box=BOX), ignore_index=True)
    ra_min, ra_max, dec_min, dec_max = BOX
    assert boxed[schema.RA].between(ra_min, ra_max).all()
    assert boxed[schema.DEC].between(dec_min, dec_max).all()
    assert boxed[schema.ID].is_unique and len(boxed) == 100_000
    # The deep cone's share of the box equals its share of the full-sky objects in the box.
    in_box = sky[sky[schema.RA].between(ra_min, ra_max) & sky[schema.DEC].between(-5, 5)]
    assert len(in_box) > 500
    expected = in_cone(in_box).mean()
    assert in_cone(boxed).mean() == pytest.approx(expected, abs=4 * np.sqrt(0.25 / len(in_box)))


def test_written_files_read_back_as_the_stream(tmp_path):
    paths = write_synthetic_objects(str(tmp_path / "objects"), 25_000, seed=9, rows_per_file=10_000)
    assert len(paths) == 3
    tables = [pq.read_table(p) for p in paths]
    assert [t.num_rows for t in tables] == [10_000, 10_000, 5_000]
    assert tables[0].schema.field(schema.ID).type == "int64"
    back = pd.concat([t.to_pandas() for t in tables], ignore_index=True)
    pd.testing.assert_frame_equal(back, pd.concat(synthetic_objects(25_000, seed=9)))


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="box"):
        next(synthetic_objects(10, seed=1, box=(160, 150, -5, 5)))
    with pytest.raises(ValueError, match="chunk_rows"):
        next(synthetic_objects(10, seed=1, chunk_rows=0))
