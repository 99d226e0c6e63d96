"""The partitioned tile index + TileFinder give exactly the reference (today's) tile choice."""

from __future__ import annotations

import time
from unittest import mock

import numpy as np
import pandas as pd
import pytest
from plan.reference_finder import ReferenceTileFinder

from raycat import schema
from raycat.plan import tiles
from raycat.plan.tiles import TileFinder
from raycat.surveys.footprint import index_row
from raycat.surveys.tile_index import open_tile_index
from raycat.surveys.tile_index_write import write_tile_index
from raycat.surveys.tiling import PS1Tiling, UnwiseTiling, index_rows

PS1_BANDS = ["ps1_g", "ps1_r"]
UNWISE_BANDS = ["unwise_w1", "unwise_w2"]


def _same_choice(rows: pd.DataFrame, bands, ra, dec, tmp_path, name="idx") -> TileFinder:
    """Write ``rows`` partitioned, assert the new finder equals the reference on (ra, dec)."""
    write_tile_index(rows, str(tmp_path / name))
    finder = TileFinder(open_tile_index(str(tmp_path / name), None, bands), bands)
    expected = ReferenceTileFinder(rows[rows[schema.TILE_BAND].isin(bands)], bands).assign(ra, dec)
    got = finder.assign(ra, dec)
    with mock.patch.object(tiles, "DIRECT_MAX", 0):  # every group matched by its cells
        by_cells = TileFinder(finder.index, bands).assign(ra, dec)
    for band in bands:
        for found in (got, by_cells):
            differ = np.flatnonzero(expected[band] != found[band])
            assert not len(differ), (band, ra[differ[:3]], dec[differ[:3]], found[band][differ[:3]])
    return finder


def _corners_and_centres(rows: pd.DataFrame, shrink: float = 0.0):
    """Positions at every tile corner (exactly, and nudged by ``shrink`` deg each way)."""
    ra = np.concatenate(rows[schema.TILE_CORNERS_RA].to_list())
    dec = np.concatenate(rows[schema.TILE_CORNERS_DEC].to_list())
    nudges = [(0, 0), (shrink, 0), (-shrink, 0), (0, shrink), (0, -shrink)]
    ras = [ra + a for a, _ in nudges] + [rows[schema.TILE_RA].to_numpy()]
    decs = [np.clip(dec + d, -90, 90) for _, d in nudges] + [rows[schema.TILE_DEC].to_numpy()]
    return np.concatenate(ras) % 360.0, np.concatenate(decs)


def _random(rng, n, ra_lo, ra_hi, dec_lo, dec_hi):
    ra = rng.uniform(ra_lo, ra_hi, n) % 360.0
    z = rng.uniform(np.sin(np.radians(dec_lo)), np.sin(np.radians(dec_hi)), n)
    return ra, np.degrees(np.arcsin(z))


def _rows(tiling, bands, template, box) -> pd.DataFrame:
    return pd.DataFrame(list(index_rows(tiling, bands, template, box)))


@pytest.mark.parametrize(
    ("box", "sample"),
    [
        ((27.0, 29.5, -0.5, 2.5), (27.5, 29.0, 0.0, 2.0)),  # around 1329.005
        ((358.5, 1.5, 40.0, 43.0), (359.0, 361.0, 40.5, 42.5)),  # RA wraps through 0
        ((0.0, 360.0, 87.5, 90.0), (0.0, 360.0, 89.0, 90.0)),  # the north polar cell
    ],
)
def test_ps1_skycells(box, sample, tmp_path):
    rows = _rows(PS1Tiling(), PS1_BANDS, schema.PS1_URI_TEMPLATE, box)
    inner = rows[rows[schema.TILE_DEC].between(sample[2] - 0.5, sample[3] + 0.5)]
    ra, dec = _corners_and_centres(inner.drop_duplicates(schema.TILE_NAME), 1e-7)
    keep = dec >= sample[2]
    r_ra, r_dec = _random(np.random.default_rng(1), 3000, *sample)
    extra = np.array([[359.9999, 41.0], [0.0001, 41.0], [0.0, 89.9], [123.0, 89.6]]).T
    ra = np.concatenate([ra[keep], r_ra, extra[0]])
    dec = np.concatenate([dec[keep], r_dec, extra[1]])
    _same_choice(rows, PS1_BANDS, ra, dec, tmp_path)


@pytest.mark.parametrize(
    ("box", "sample"),
    [
        ((184.0, 189.0, 23.0, 28.5), (185.0, 188.0, 24.0, 27.5)),
        ((355.0, 5.0, -3.0, 3.0), (357.0, 363.0, -1.5, 1.5)),  # RA wraps through 0
        ((0.0, 360.0, -90.0, -86.0), (0.0, 360.0, -90.0, -89.5)),  # the south pole
    ],
)
def test_unwise_tiles(box, sample, tmp_path):
    rows = _rows(UnwiseTiling(), UNWISE_BANDS, schema.UNWISE_URI_TEMPLATE, box)
    ra, dec = _corners_and_centres(rows.drop_duplicates(schema.TILE_NAME), 1e-7)
    inside = (dec >= sample[2]) & (dec <= sample[3])
    r_ra, r_dec = _random(np.random.default_rng(2), 3000, *sample)
    extra = np.array([[359.9999, 0.0], [0.0001, 0.0], [0.0, 0.0], [10.0, -89.99]]).T
    in_box = (box[2] <= extra[1]) & (extra[1] <= box[3])
    ra = np.concatenate([ra[inside], r_ra, extra[0][in_box]])
    dec = np.concatenate([dec[inside], r_dec, extra[1][in_box]])
    _same_choice(rows, UNWISE_BANDS, ra, dec, tmp_path)


def test_both_surveys_in_one_index(tmp_path):
    box = (27.0, 29.5, -0.5, 2.5)
    rows = pd.concat(
        [
            _rows(PS1Tiling(), PS1_BANDS, schema.PS1_URI_TEMPLATE, box),
            _rows(UnwiseTiling(), UNWISE_BANDS, schema.UNWISE_URI_TEMPLATE, box),
        ],
        ignore_index=True,
    )
    ra, dec = _random(np.random.default_rng(3), 5000, 27.5, 29.0, 0.0, 2.0)
    _same_choice(rows, PS1_BANDS + UNWISE_BANDS, ra, dec, tmp_path)


def _mock_rows() -> pd.DataFrame:
    """The mock sky's tile index (every survey, rotated tiles included), without drawing."""
    from raycat.sky.population import Field
    from raycat.sky.simulate import FIELD_CENTRE
    from raycat.sky.tiles import layout_survey
    from raycat.surveys.bands import BANDS, SURVEYS

    rng = np.random.default_rng(0)
    rows = []
    for survey in SURVEYS.values():
        for tile in layout_survey(survey, Field(*FIELD_CENTRE, 0.12), rng):
            rows += [tile.index_row(b) for b in survey.bands if b in BANDS]
    return pd.DataFrame(rows)


def test_mock_sky_and_the_single_file(tmp_path):
    rows = _mock_rows()
    bands = sorted(set(rows[schema.TILE_BAND]))
    ra, dec = _corners_and_centres(rows.drop_duplicates(schema.TILE_NAME), 1e-9)
    r_ra, r_dec = _random(np.random.default_rng(4), 3000, 149.9, 150.1, 1.9, 2.1)
    ra, dec = np.concatenate([ra, r_ra]), np.concatenate([dec, r_dec])
    _same_choice(rows, bands, ra, dec, tmp_path)
    # the legacy single file (only the columns an old index has) is converted on the fly
    legacy = rows[[schema.TILE_SURVEY, schema.TILE_BAND, schema.TILE_NAME, schema.TILE_URI]]
    legacy = legacy.assign(**{schema.TILE_WCS: rows[schema.TILE_WCS]})
    legacy.to_parquet(tmp_path / schema.TILE_INDEX_FILE)
    index = open_tile_index(str(tmp_path / schema.TILE_INDEX_FILE), None, bands)
    expected = ReferenceTileFinder(rows, bands).assign(ra, dec)
    got = TileFinder(index, bands).assign(ra, dec)
    assert all(np.array_equal(expected[b], got[b]) for b in bands)
    assert (got[bands[0]] != "").mean() > 0.5


def _header_row(name: str, wcs, n: int) -> dict:
    header = wcs.to_header(relax=True)
    header["NAXIS"], header["NAXIS1"], header["NAXIS2"] = 2, n, n
    return index_row("x", "b", name, f"{name}.fits", header)


def test_other_projections_use_astropy(tmp_path):
    """TAN-SIP and ZEA tiles (and a rotated, flipped TAN) beside plain ones: same choice."""
    from tiles import tile_wcs

    sip = tile_wcs(150.0, 2.0, (400, 400), 1.0, distortion=2e-6)
    zea = tile_wcs(150.08, 2.0, (400, 400), 1.0, rotation_deg=20)
    zea.wcs.ctype = ["RA---ZEA", "DEC--ZEA"]
    flip = tile_wcs(150.04, 2.05, (400, 400), 1.0, rotation_deg=35, flip=True)
    plain = tile_wcs(150.04, 1.95, (400, 400), 1.0)
    rows = pd.DataFrame([_header_row(n, w, 400) for n, w in zip("abcd", (sip, zea, flip, plain))])
    assert rows[schema.TILE_PLAIN_TAN].tolist() == [False, False, True, True]
    ra, dec = _random(np.random.default_rng(5), 4000, 149.9, 150.2, 1.85, 2.15)
    c_ra, c_dec = _corners_and_centres(rows, 1e-9)
    ra, dec = np.concatenate([ra, c_ra]), np.concatenate([dec, c_dec])
    finder = _same_choice(rows, ["b"], ra, dec, tmp_path)
    assert len(finder._wcs) >= 2  # the non-TAN tiles: astropy built lazily, cached


def test_a_small_region_reads_only_its_pixels_and_the_cache_is_bounded(tmp_path):
    rows = _rows(PS1Tiling(), PS1_BANDS, schema.PS1_URI_TEMPLATE, (20.0, 40.0, -5.0, 10.0))
    write_tile_index(rows, str(tmp_path / "idx"))
    index = open_tile_index(str(tmp_path / "idx"), None, PS1_BANDS)
    all_pixels = index.pixels()
    finder = TileFinder(index, PS1_BANDS, cache_pixels=3)
    ra, dec = _random(np.random.default_rng(6), 2000, 28.0, 28.3, 1.0, 1.3)
    finder.assign(ra, dec)
    assert finder.loads <= 2 and index.reads <= 2 * finder.loads < len(all_pixels) / 10
    ra, dec = _random(np.random.default_rng(7), 5000, 21.0, 39.0, -4.0, 9.0)
    finder.assign(ra, dec)
    assert len(finder.cached_pixels) == 3 and finder.loads > 10
    assert finder.loads <= len(all_pixels)


def test_header_text_is_read_only_where_astropy_decides(tmp_path):
    """The WCS header text is most of an index pixel's bytes: interior objects on plain TAN
    tiles never read it; an object on a tile corner (a near-edge case) does, and the choice
    is still the reference's."""
    rows = _rows(PS1Tiling(), PS1_BANDS, schema.PS1_URI_TEMPLATE, (27.0, 29.5, -0.5, 2.5))
    ra, dec = _random(np.random.default_rng(9), 500, 27.5, 29.0, 0.0, 2.0)
    finder = _same_choice(rows, PS1_BANDS, ra, dec, tmp_path)
    assert all(finder._pixels[p].wcs is None for p in finder.cached_pixels)
    corner_ra, corner_dec = _corners_and_centres(rows.head(1))
    finder = _same_choice(rows, PS1_BANDS, corner_ra[:1], corner_dec[:1], tmp_path, "idx2")
    assert any(finder._pixels[p].wcs is not None for p in finder.cached_pixels)


def test_a_long_list_is_assigned_in_bounded_passes_with_the_same_choice(tmp_path, monkeypatch):

    rows = _rows(PS1Tiling(), PS1_BANDS, schema.PS1_URI_TEMPLATE, (27.0, 29.5, -0.5, 2.5))
    ra, dec = _random(np.random.default_rng(10), 1000, 27.5, 29.0, 0.0, 2.0)
    monkeypatch.setattr(tiles, "ASSIGN_CHUNK", 64)
    _same_choice(rows, PS1_BANDS, ra, dec, tmp_path)


def test_empty_and_off_index_positions(tmp_path):
    rows = _rows(UnwiseTiling(), UNWISE_BANDS, schema.UNWISE_URI_TEMPLATE, (10, 12, 10, 12))
    finder = _same_choice(
        rows, UNWISE_BANDS, np.array([11.0, 200.0]), np.array([11.0, -40.0]), tmp_path
    )
    assert finder.assign(np.array([]), np.array([]))["unwise_w1"].shape == (0,)
    assert finder.assign(np.array([200.0]), np.array([-40.0]))["unwise_w2"][0] == ""


def test_throughput_after_the_cache_is_warm(tmp_path):
    """PS1 5 bands + unWISE 2 bands, batches of 10k objects: a figure, asserted loosely."""
    box = (30.0, 34.0, 0.0, 4.0)
    bands5 = ["ps1_g", "ps1_r", "ps1_i", "ps1_z", "ps1_y"]
    rows = pd.concat(
        [
            _rows(PS1Tiling(), bands5, schema.PS1_URI_TEMPLATE, box),
            _rows(UnwiseTiling(), UNWISE_BANDS, schema.UNWISE_URI_TEMPLATE, box),
        ],
        ignore_index=True,
    )
    write_tile_index(rows, str(tmp_path / "idx"))
    bands = bands5 + UNWISE_BANDS
    finder = TileFinder(open_tile_index(str(tmp_path / "idx"), None, bands), bands)
    from raycat.healpix import healpix29

    ra, dec = _random(np.random.default_rng(8), 50_000, 31.0, 33.0, 1.0, 3.0)
    order = np.argsort(healpix29(ra, dec))  # as the planner hands them: along the curve
    ra, dec = ra[order], dec[order]
    finder.assign(ra, dec)
    started = time.perf_counter()
    for start in range(0, len(ra), 10_000):
        finder.assign(ra[start : start + 10_000], dec[start : start + 10_000])
    rate = len(ra) / (time.perf_counter() - started)
    print(f"TileFinder: {rate:,.0f} objects/s (7 bands, batches of 10k)")
    assert rate > 50_000  # ~300-400k on an idle core; loose for a loaded CI machine
