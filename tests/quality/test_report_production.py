"""`raycat report` on a production catalog (no truth): sky maps, stacked n(z), flag table,
from one streaming pass that keeps sums only."""

from __future__ import annotations

import re

import numpy as np
from tinysky import fake_catalog

from raycat import schema as S
from raycat.quality import sky_maps
from raycat.quality.sky_maps import SkySums, flag_rows


def test_report_without_truth_has_the_sky_maps_nz_and_flag_table(tmp_path, capsys):
    from raycat.cli import main

    rng = np.random.default_rng(2)
    n = 300
    ra, dec = 150 + rng.uniform(0, 0.05, n), 2 + rng.uniform(0, 0.05, n)
    catalog, out = str(tmp_path / "dr1"), tmp_path / "report"
    fake_catalog(catalog, np.arange(n), ra, dec, "m1")
    assert main(["report", "--catalog", catalog, "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip().endswith("index.html")
    text = (out / "index.html").read_text()
    images = set(re.findall(r'<img src="([^"]+)"', text))
    wanted = {sky_maps.PLOT_COUNTS, sky_maps.PLOT_FLAGGED, sky_maps.PLOT_MEAN_Z, sky_maps.PLOT_NZ}
    assert images == wanted  # no truth: none of the truth sections
    assert all((out / name).read_bytes().startswith(b"\x89PNG") for name in images)
    assert "Objects per flag" in text and f"<td>none</td><td>{n}</td>" in text
    assert f"<td>{S.Flag.READ_ERROR.name}</td><td>0</td>" in text
    assert "&quot;catalog_objects&quot;: 300" in text


def test_sums_count_flags_stack_pdfs_and_coarsen_past_the_pixel_cap(monkeypatch):
    monkeypatch.setattr(sky_maps, "MAX_PIXELS", 50)
    sums = SkySums()
    rng = np.random.default_rng(0)
    for _ in range(3):  # three partitions, spread over the sky
        h29 = rng.integers(0, 12 * 4**29, 40, dtype=np.int64)
        flags = np.array([0, S.Flag.EDGE, S.Flag.EDGE | S.Flag.NO_PREDICTION, 0] * 10)
        z = np.where(flags & S.Flag.NO_PREDICTION, np.nan, 0.5)
        pdf = np.where(np.isnan(z)[:, None], np.nan, np.array([[0.25, 0.75]]))
        sums.add(h29, flags, z, pdf)
    assert sums.objects == 120 and len(sums.pixels) <= 50 and sums.order < sky_maps.FINE_ORDER
    assert sums.sums["objects"].sum() == 120 and sums.sums["z_objects"].sum() == 90
    np.testing.assert_allclose(sums.nz, [0.25 * 90, 0.75 * 90])
    table = {name: count for name, count, _ in flag_rows(sums)}
    assert table["none"] == 60 and table["EDGE"] == 60 and table["NO_PREDICTION"] == 30
    assert table["READ_ERROR"] == 0


def test_sums_in_ray_tasks_equal_the_driver_pass(tmp_path, ray_local):
    """Under a Ray job the partitions are summed in tasks (the head reads no catalog): the
    same maps, n(z) and flag counts as one pass in the driver."""
    rng = np.random.default_rng(5)
    n = 400
    ra, dec = 150 + rng.uniform(0, 2, n), 2 + rng.uniform(0, 2, n)
    catalog = str(tmp_path / "dr1")
    fake_catalog(catalog, np.arange(n), ra, dec, "m1", order=6)
    here, there = sky_maps.sky_sums(catalog), sky_maps.sky_sums(catalog, on_ray=True)
    assert there.objects == here.objects == n and there.order == here.order
    np.testing.assert_array_equal(there.pixels, here.pixels)
    for name in sky_maps.SUMS:
        np.testing.assert_allclose(there.sums[name], here.sums[name])
    np.testing.assert_allclose(there.nz, here.nz)
    assert there.flags == here.flags


def test_absorbing_sums_of_a_coarser_order_coarsens_to_it():
    rng = np.random.default_rng(6)
    h29 = rng.integers(0, 12 * 4**29, 60, dtype=np.int64)
    flags = np.zeros(60, dtype=np.int64)
    z = rng.uniform(0, 1, 60)
    pdf = np.full((60, 2), 0.5)
    fine, coarse, whole = SkySums(), SkySums(order=10), SkySums(order=10)
    fine.add(h29[:30], flags[:30], z[:30], pdf[:30])
    coarse.add(h29[30:], flags[30:], z[30:], pdf[30:])
    whole.add(h29, flags, z, pdf)
    total = SkySums()
    total.absorb(fine)
    total.absorb(coarse)
    assert total.order == 10 and total.objects == 60
    np.testing.assert_array_equal(total.pixels, whole.pixels)
    for name in sky_maps.SUMS:
        np.testing.assert_allclose(total.sums[name], whole.sums[name])
    np.testing.assert_allclose(total.nz, whole.nz)
