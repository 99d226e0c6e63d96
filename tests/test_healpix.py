"""The HATS spatial index computed without importing hats."""

import subprocess
import sys

import numpy as np

from raycat.healpix import healpix29


def test_healpix29_matches_hats():
    from hats.pixel_math import compute_spatial_index

    rng = np.random.default_rng(3)
    ra = np.concatenate([rng.uniform(-360, 720, 5000), [0.0, 359.9999999, 360.0, 180.0]])
    dec = np.concatenate([np.degrees(np.arcsin(rng.uniform(-1, 1, 5000))), [90, -90, 0, 89.9]])
    np.testing.assert_array_equal(healpix29(ra, dec), compute_spatial_index(ra % 360.0, dec))
    assert healpix29(ra, dec).dtype == np.int64


def test_planning_and_partition_rows_do_not_import_hats():
    """hats costs about a second to import: the planner and the sink actors must not pay it
    (only the final metadata write does)."""
    code = (
        "import sys, numpy as np\n"
        "from raycat.plan.manifest import spatial_index\n"
        "from raycat.catalog import sink, write\n"
        "spatial_index(np.array([10.0]), np.array([20.0]))\n"
        "print('hats' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_parent_pixels_are_the_spatial_index_at_lower_orders():
    """Dropping bits of _healpix_29 gives the nested pixel at each order: the rule work units
    and catalog partitions both follow."""
    from astropy.coordinates import Latitude, Longitude
    from cdshealpix.nested import lonlat_to_healpix

    from raycat.healpix import ORDER, pixel_at_order

    rng = np.random.default_rng(4)
    ra, dec = rng.uniform(0, 360, 2000), np.degrees(np.arcsin(rng.uniform(-1, 1, 2000)))
    index = healpix29(ra, dec)
    assert ORDER == 29
    for order in (0, 5, 12, 29):
        want = lonlat_to_healpix(Longitude(ra, unit="deg"), Latitude(dec, unit="deg"), order)
        np.testing.assert_array_equal(pixel_at_order(index, order), want)
