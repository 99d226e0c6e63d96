"""Computed real tilings: known tiles of real products, round trips, containment."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from realdata import REALDATA

from raycat import schema
from raycat.errors import RaycatError
from raycat.surveys.footprint import celestial_wcs
from raycat.surveys.tiling import PS1Tiling, UnwiseTiling, index_rows

REAL = str(REALDATA)


@pytest.fixture(scope="module")
def unwise():
    return UnwiseTiling()


@pytest.fixture(scope="module")
def ps1():
    return PS1Tiling()


def test_ps1_known_skycells(ps1):
    # the hostphot cutout (header SKYCELL = skycell.1329.005); an archive listing row of
    # 1405.053 (its skycell centre); the archive's (0, 0) example, just off the corner
    names = ps1.lookup([27.952, 332.6004516572, 0.01], [0.2635, 2.1998090576, -0.01])
    assert list(names) == ["1329.005", "1405.053", "1232.094"]


def test_ps1_cell_counts_match_the_published_numbering(ps1):
    # 2644 cells, 0 and 2643 the poles; the dec -30 zone starts at 635 and the dec +2
    # zone at 1322 (90 cells: 1322.000 .. 1411.099), the last ring at 2634
    assert ps1.n_cells == 2644
    first = dict(zip(ps1.zone_dec, ps1.zone_first))
    assert (first[-30.0], first[2.0], first[86.0], first[90.0]) == (635, 1322, 2634, 2643)
    assert ps1.tile("1411.099").fields["projcell"] == 1411
    assert ps1.lookup([358.5], [3.9])[0].startswith("1322.")  # ra wraps to cell 0


def test_ps1_header_hints_agree():
    header = fits.getheader(f"{REAL}/ps1/PS1_g.fits") if _has(f"{REAL}/ps1/PS1_g.fits") else None
    if header is None:
        pytest.skip("real PS1 sample absent")
    tile = PS1Tiling().tile("1329.005")
    assert header["SKYCELL"] == "skycell.1329.005"
    assert tile.crval == pytest.approx((header["CRVAL1"], header["CRVAL2"]), abs=1e-9)
    assert tile.naxis == (6240, 6243)  # CELL.TRIMSEC [1:6240,1:6243]


def _has(path: str) -> bool:
    import os

    return os.path.exists(path)


@pytest.mark.parametrize("name", ["1866p257", "3460p121"])
def test_unwise_real_tiles(unwise, name):
    path = f"{REAL}/unwise/{name}/unwise-{name}-w1-img-m.fits"
    if not _has(path):
        pytest.skip("real unWISE sample absent")
    header = fits.getheader(path)
    ra, dec = header["CRVAL1"], header["CRVAL2"]  # the tile centre (cutouts keep CRVAL)
    assert (
        unwise.lookup([ra, ra + 0.3, ra - 0.2], [dec, dec - 0.25, dec + 0.4]).tolist() == [name] * 3
    )
    # computed centre within 4" (the atlas table's RAs carry a small per-tile offset)
    assert unwise.tile(name).crval == pytest.approx((ra, dec), abs=1.2e-3)
    cd = header["CD2_2"] * 3600
    assert cd == pytest.approx(unwise.scale_arcsec)


def test_unwise_counts_and_names(unwise):
    assert unwise.n_tiles == 18240
    assert unwise.lookup(
        [0.0, 359.99, 150.41, 149.75, 352.45, 343.35], [0.0, 0.0, 19.69, 1.52, 0.0, 0.0]
    ).tolist() == ["0000p000", "0000p000", "1504p196", "1497p015", "3524p000", "3433p000"]
    south = unwise.lookup([10.0], [-12.2])[0]
    assert south[4] == "m" and south.endswith("121")
    north, south = unwise.lookup([0.0, 200.0], [90.0, -90.0])  # row k = +-59 at 89.35 deg
    assert (north[4:], south[4:]) == ("p893", "m893")


@pytest.mark.parametrize("tiling_cls", [UnwiseTiling, PS1Tiling])
def test_every_position_maps_to_a_tile_that_contains_it(tiling_cls):
    tiling = tiling_cls()
    rng = np.random.default_rng(7)
    ra = np.concatenate([rng.uniform(0, 360, 3000), [0.0, 359.9999, 180.0, 45.0, 10.0]])
    dec = np.concatenate(
        [np.degrees(np.arcsin(rng.uniform(-1, 1, 3000))), [90.0, -90.0, 89.99, -89.99, 0.0]]
    )
    wcs = {}
    for r, d, name in zip(ra, dec, tiling.lookup(ra, dec)):
        if name not in wcs:
            wcs[name] = celestial_wcs(tiling.tile(name).wcs_header())
        x, y = wcs[name].all_world2pix([[r, d]], 0)[0]
        nx, ny = wcs[name].pixel_shape
        assert -0.5 <= x <= nx - 0.5 and -0.5 <= y <= ny - 0.5, (r, d, name)


@pytest.mark.parametrize("tiling_cls", [UnwiseTiling, PS1Tiling])
def test_tile_centres_map_to_themselves(tiling_cls):
    tiling = tiling_cls()
    tiles = list(tiling.tiles(30.0, 33.0, -1.0, 2.0)) + list(tiling.tiles(359.0, 1.0, 60, 61))
    assert tiles
    for tile in tiles[::7]:
        wcs = celestial_wcs(tile.wcs_header())
        ((ra, dec),) = wcs.all_pix2world([[(tile.naxis[0] - 1) / 2, (tile.naxis[1] - 1) / 2]], 0)
        assert tiling.lookup([ra], [dec])[0] == tile.name


def test_unknown_names_are_user_errors(unwise, ps1):
    for tiling, name in (
        (unwise, "1867p257"),
        (unwise, "nonsense"),
        (ps1, "9999.000"),
        (ps1, "12.3.4"),
    ):
        with pytest.raises(RaycatError):
            tiling.tile(name)


def test_index_rows_over_a_region(unwise):
    rows = list(
        index_rows(
            unwise,
            ["unwise_w1", "unwise_w2"],
            schema.UNWISE_URI_TEMPLATE,
            (186.0, 187.5, 25.0, 26.5),
        )
    )
    names = {r[schema.TILE_NAME] for r in rows}
    assert "1866p257" in names and len(rows) == 2 * len(names)
    row = next(r for r in rows if r[schema.TILE_NAME] == "1866p257")
    assert row[schema.TILE_URI] == "186/1866p257/unwise-1866p257-w1-img-m.fits"
    assert (row[schema.TILE_NAXIS1], row[schema.TILE_NAXIS2]) == (2048, 2048)
    assert row[schema.TILE_RADIUS] == pytest.approx(2048 * 2.75 / 3600 / np.sqrt(2), rel=1e-3)
    assert row[schema.TILE_ROTATION] == 0.0
    ps1_rows = list(
        index_rows(PS1Tiling(), ["ps1_g"], schema.PS1_URI_TEMPLATE, (27.9, 28.0, 0.2, 0.3))
    )
    uris = {r[schema.TILE_URI] for r in ps1_rows}
    assert "rings.v3.skycell/1329/005/rings.v3.skycell.1329.005.stk.g.unconv.fits" in uris
    with pytest.raises(RaycatError):
        list(index_rows(unwise, ["unwise_w1"], "../{tile}.fits", (186.0, 187.0, 25.0, 26.0)))


def test_numpy_rows_equal_the_astropy_footprint(unwise, ps1):
    """tile_rows computes footprints without astropy: equal to footprint() on a sample
    (polar cells, RA 0, both tilings), and its header parses to the same WCS."""
    from astropy.wcs import WCS

    from raycat.surveys.footprint import footprint
    from raycat.surveys.tile_rows import footprints

    tiles = [ps1.tile(n) for n in ("2643.055", "2643.000", "0000.099", "1329.005", "1322.000")]
    tiles += [unwise.tile(n) for n in ("1866p257", "0000p000", "0000p893", "3460p121")]
    rows = footprints(tiles)
    for tile, (_, row) in zip(tiles, rows.iterrows()):
        expected = footprint(tile.wcs_header())
        for column in (schema.TILE_DEC, schema.TILE_RADIUS, schema.TILE_ROTATION):
            assert row[column] == pytest.approx(expected[column], abs=1e-9), column
        for column in (schema.TILE_RA, schema.TILE_CORNERS_RA):
            delta = (np.asarray(row[column]) - expected[column] + 180) % 360 - 180
            assert np.allclose(delta, 0, atol=1e-8), (tile.name, column)
        assert np.allclose(row[schema.TILE_CORNERS_DEC], expected[schema.TILE_CORNERS_DEC])
        for column in (*schema.TILE_WCS_NUMBERS, schema.TILE_PLAIN_TAN, schema.TILE_NAXIS1):
            assert row[column] == pytest.approx(expected[column], rel=1e-12), column
        parsed = WCS(fits.Header.fromstring(row[schema.TILE_WCS]))
        assert list(parsed.wcs.crval) == [row[schema.TILE_CRVAL1], row[schema.TILE_CRVAL2]]
        assert parsed.wcs.cd[0, 0] == row[schema.TILE_CD11] and parsed.wcs.lonpole == 180
