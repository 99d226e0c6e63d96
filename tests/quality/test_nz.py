"""Tomographic n(z) and RAIL metrics in `raycat evaluate`: sums by hand, then a whole catalog."""

from __future__ import annotations

import json

import numpy as np
import pytest

from raycat import schema as S
from raycat.catalog import info as I
from raycat.catalog import write as C
from raycat.healpix import healpix29, unit_key
from raycat.photoz.pdf import bin_centres, bin_edges
from raycat.quality.evaluate import collect, evaluate_catalog
from raycat.quality.nz import PLOT_NZ, TomographicNz

PNG_MAGIC = b"\x89PNG"


def test_tomographic_sums_by_hand_and_across_partitions():
    grid = np.array([0.0, 1.0, 2.0])
    z_mode = np.array([0.5, 0.5, 1.5, 1.5, 0.5])
    pdf = np.array([[0.8, 0.2], [0.6, 0.4], [0.0, 1.0], [np.nan, np.nan], [0.5, 0.5]])
    z_true = np.array([0.4, 1.2, 1.9, 1.0, np.nan])  # 4th: no PDF, 5th: no truth -> left out
    whole = TomographicNz.empty(grid, tomo_edges=grid)
    whole.add(z_mode, pdf, z_true)
    # bin 0 (z_mode 0-1): objects 1 and 2: PDFs sum to [1.4, 0.6], true z 0.4 and 1.2
    np.testing.assert_allclose(whole.stacked, [[1.4, 0.6], [0.0, 1.0]])
    np.testing.assert_array_equal(whole.true_counts, [[1, 1], [0, 1]])
    assert whole.objects.tolist() == [2, 1]
    stacked, true = whole.densities()  # widths 1: densities are the shares
    np.testing.assert_allclose(stacked[0], [0.7, 0.3])
    np.testing.assert_allclose(true[0], [0.5, 0.5])
    # mean z: stacked 0.7*0.5 + 0.3*1.5 = 0.8; true 0.5*0.5 + 0.5*1.5 = 1.0
    metrics = whole.metrics()
    assert metrics["nz_tomo_mean_z_stacked"] == pytest.approx([0.8, 1.5])
    assert metrics["nz_tomo_mean_z_true"] == pytest.approx([1.0, 1.5])

    first, second = (TomographicNz.empty(grid, tomo_edges=grid) for _ in range(2))
    first.add(z_mode[:2], pdf[:2], z_true[:2])
    second.add(z_mode[2:], pdf[2:], z_true[2:])
    summed = first + second
    np.testing.assert_allclose(summed.stacked, whole.stacked)
    np.testing.assert_array_equal(summed.true_counts, whole.true_counts)


EDGES = bin_edges(0.0, 2.0, 80)
SIGMA = 0.05


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """Calibrated Gaussian PDFs: each truth is drawn from its own PDF."""
    rng = np.random.default_rng(11)
    n = 3000
    peak = rng.uniform(0.3, 1.7, n)
    z_true = peak + rng.normal(0, SIGMA, n)
    pdf = np.exp(-0.5 * ((bin_centres(EDGES)[None, :] - peak[:, None]) / SIGMA) ** 2)
    pdf[:30] = np.nan
    ra, dec = rng.uniform(10, 30, n), rng.uniform(-10, 10, n)
    root = tmp_path_factory.mktemp("nz") / "cat"
    schema = I.catalog_schema(EDGES, ["g"], model_id="m", config_hash="c", has_z_spec=True)
    writer = C.CatalogWriter(str(root), schema, mode="new")
    pixel = healpix29(ra, dec) >> (2 * (29 - 3))
    for p in np.unique(pixel):
        rows = pixel == p
        table = C.partition_table(
            schema,
            ids=np.arange(n)[rows],
            ra=ra[rows],
            dec=dec[rows],
            flags=np.zeros(rows.sum()),
            pdf=pdf[rows],
            extra={S.Z_SPEC: z_true[rows]},
        )
        writer.write_partition(unit_key(3, int(p)), table)
    writer.finalize()
    return root


def test_evaluate_adds_rail_metrics_and_the_tomographic_plot(calibrated, tmp_path):
    metrics = evaluate_catalog(str(calibrated), None, str(tmp_path / "out"))
    assert metrics["rail_point_estimate"] == "z_mode"
    # z_mode scatters by sigma (and half a 0.025 bin) around the truth: ez ~ 0.05 / (1 + z)
    assert 0.02 < metrics["rail_sigma_iqr"] < 0.05
    assert abs(metrics["rail_bias"]) < 0.01
    assert metrics["rail_outlier_rate"] < 0.01  # Gaussian: beyond max(0.06, 3 sigma) is rare
    assert metrics["rail_pit_cvm"] < 1.0 and metrics["rail_pit_ad"] < 5.0  # calibrated
    assert metrics["rail_pit_outlier_rate"] < 0.002
    # a Gaussian of sigma 0.05 has int f^2 = 1 / (2 sqrt(pi) sigma) = 5.64 and E f(z) the same
    # for calibrated PDFs: loss ~ -5.64
    assert metrics["rail_cde_loss"] == pytest.approx(-1 / (2 * np.sqrt(np.pi) * SIGMA), rel=0.1)

    # calibrated PDFs stack to the true n(z) of every tomographic bin
    assert sum(metrics["nz_tomo_objects"]) == 2970
    for stacked, true, n in zip(
        metrics["nz_tomo_mean_z_stacked"],
        metrics["nz_tomo_mean_z_true"],
        metrics["nz_tomo_objects"],
    ):
        if n > 100:
            assert stacked == pytest.approx(true, abs=0.02)
    plot = tmp_path / "out" / PLOT_NZ
    assert metrics["plots"][PLOT_NZ] == str(plot)  # the report shows every plot evaluate makes
    assert plot.read_bytes()[:4] == PNG_MAGIC and plot.stat().st_size > 5000
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["rail_pit_cvm"] == metrics["rail_pit_cvm"]


def test_miscalibrated_pdfs_score_worse_on_pit_statistics(calibrated, tmp_path):
    """PIT CvM/AD detect over-confident PDFs: the truths made three times wider."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from raycat.catalog.read import iter_partitions

    table = pa.concat_tables(iter_partitions(str(calibrated), [S.ID, S.Z_MEAN, S.Z_SPEC]))
    z_mean = table[S.Z_MEAN].to_numpy(zero_copy_only=False)
    z_spec = table[S.Z_SPEC].to_numpy(zero_copy_only=False)
    wide = np.where(np.isfinite(z_mean), z_mean + 3 * (z_spec - z_mean), z_spec)
    pq.write_table(pa.table({"id": table[S.ID], "z": wide}), tmp_path / "truth.parquet")
    good = evaluate_catalog(str(calibrated), None, str(tmp_path / "a"))
    bad = evaluate_catalog(str(calibrated), str(tmp_path / "truth.parquet"), str(tmp_path / "b"))
    assert bad["rail_pit_cvm"] > 20 * good["rail_pit_cvm"]
    assert bad["rail_pit_ad"] > 20 * good["rail_pit_ad"]
    assert bad["rail_pit_outlier_rate"] > 10 * max(good["rail_pit_outlier_rate"], 1e-3)


@pytest.mark.slow
def test_sums_from_ray_tasks_equal_the_drivers(calibrated, ray_local):
    _, here = collect(str(calibrated), None, on_ray=False)
    _, there = collect(str(calibrated), None, on_ray=True)
    np.testing.assert_array_equal(here.rail.ez_counts, there.rail.ez_counts)
    np.testing.assert_array_equal(here.rail.pit_counts, there.rail.pit_counts)
    np.testing.assert_allclose(here.nz.stacked, there.nz.stacked, rtol=1e-12)
    np.testing.assert_array_equal(here.nz.true_counts, there.nz.true_counts)
