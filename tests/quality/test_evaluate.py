"""Evaluation joins the catalog with the truth, streams partitions, and writes the plots."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raycat import schema as S
from raycat.catalog import info as I
from raycat.catalog import write as C
from raycat.errors import RaycatError
from raycat.healpix import healpix29, unit_key
from raycat.photoz.pdf import bin_centres, bin_edges
from raycat.quality.evaluate import (
    PLOT_PIT,
    PLOT_SCATTER,
    PLOT_VS_Z,
    evaluate_catalog,
    metrics_in_z_bins,
)

EDGES = bin_edges(0.0, 2.0, 100)
ORDER = 4
SIGMA = 0.05
PNG_MAGIC = b"\x89PNG"


@pytest.fixture(scope="module")
def sky(tmp_path_factory):
    """A catalog of calibrated Gaussian PDFs (truth drawn from them) and its truth table."""
    rng = np.random.default_rng(3)
    n = 2000
    z_true = rng.uniform(0.2, 1.6, n)
    z_peak = z_true + rng.normal(0, SIGMA, n)
    pdf = np.exp(-0.5 * ((bin_centres(EDGES)[None, :] - z_peak[:, None]) / SIGMA) ** 2)
    pdf[:20] = np.nan  # objects without a prediction
    ids = np.arange(n, dtype=np.int64) * 3 + 11
    ra, dec = rng.uniform(30, 40, n), rng.uniform(-5, 5, n)
    root = tmp_path_factory.mktemp("eval")
    schema = I.catalog_schema(EDGES, ["g"], model_id="m", config_hash="c", has_z_spec=True)
    writer = C.CatalogWriter(str(root / "cat"), schema, mode="new")
    pixel = healpix29(ra, dec) >> (2 * (29 - ORDER))
    for p in np.unique(pixel):
        rows = pixel == p
        writer.write_partition(
            unit_key(ORDER, int(p)),
            C.partition_table(
                schema,
                ids=ids[rows],
                ra=ra[rows],
                dec=dec[rows],
                flags=np.zeros(rows.sum()),
                pdf=pdf[rows],
                extra={S.Z_SPEC: z_true[rows]},
            ),
        )
    writer.finalize()
    # the truth lists objects in another order, plus some the catalog lacks
    truth_ids = np.concatenate([ids[::-1], [1, 2, 4]])
    truth_z = np.concatenate([z_true[::-1], [0.5, 0.5, 0.5]])
    pq.write_table(
        pa.table({"id": truth_ids, "z": truth_z, "mag_r": np.zeros(n + 3)}), root / "truth.parquet"
    )
    return root


def test_metrics_and_plots_from_catalog_and_truth(sky, tmp_path):
    metrics = evaluate_catalog(
        str(sky / "cat"), str(sky / "truth.parquet"), str(tmp_path / "out"), train_median_z=0.9
    )
    assert metrics["n_objects"] == 2000 and metrics["n_no_prediction"] == 20
    assert metrics["n_evaluated"] == 1980 and metrics["n_no_truth"] == 0
    # scatter sigma/(1+z) for z in 0.2..1.6 is ~0.022 (PDF mean = peak for a full Gaussian)
    assert 0.015 < metrics["nmad"] < 0.03
    assert metrics["outlier_frac_0.15"] < 0.01
    assert metrics["pit_ks"] < 0.06  # calibrated PDFs
    assert 0 < metrics["crps"] < SIGMA
    assert metrics["baseline_nmad"] > 5 * metrics["nmad"]
    for name in (PLOT_SCATTER, PLOT_PIT, PLOT_VS_Z):
        path = tmp_path / "out" / name
        assert metrics["plots"][name] == str(path)
        assert path.read_bytes()[:4] == PNG_MAGIC and path.stat().st_size > 5000
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["nmad"] == metrics["nmad"]


def test_catalog_z_spec_is_the_truth_when_no_table_is_given(sky, tmp_path):
    with_table = evaluate_catalog(str(sky / "cat"), str(sky / "truth.parquet"), str(tmp_path / "a"))
    own = evaluate_catalog(str(sky / "cat"), None, str(tmp_path / "b"))
    assert own["nmad"] == pytest.approx(with_table["nmad"], rel=1e-5)  # z_spec is float32


def test_only_the_needed_columns_are_read(sky, tmp_path, monkeypatch):
    import raycat.quality.evaluate as E

    seen = []
    real = E.pq.read_table
    monkeypatch.setattr(
        E.pq,
        "read_table",
        lambda path, columns=None, **kw: seen.append(columns) or real(path, columns=columns, **kw),
    )
    evaluate_catalog(str(sky / "cat"), str(sky / "truth.parquet"), str(tmp_path))
    partitions = [c for c in seen if c != ["id", "z"]]  # the truth table's read aside
    assert partitions and all(c == [S.ID, S.Z_MEAN, S.Z_MODE, S.PDF] for c in partitions)


@pytest.mark.slow
def test_scores_from_ray_tasks_equal_the_drivers(sky, ray_local):
    """Under a Ray job the partitions are scored by tasks on the workers: the same numbers."""
    from raycat.quality.evaluate import _read_truth, collect_scores

    truth = _read_truth(str(sky / "truth.parquet"), "id", "z", None)
    here = collect_scores(str(sky / "cat"), truth, on_ray=False)
    there = collect_scores(str(sky / "cat"), truth, on_ray=True)
    for name, values in vars(here).items():
        np.testing.assert_array_equal(values, getattr(there, name), err_msg=name)


def test_bad_truth_inputs_are_user_errors(sky, tmp_path):
    with pytest.raises(RaycatError, match="not found"):
        evaluate_catalog(str(sky / "cat"), str(sky / "nope.parquet"), str(tmp_path))
    with pytest.raises(RaycatError, match="redshift"):
        evaluate_catalog(
            str(sky / "cat"), str(sky / "truth.parquet"), str(tmp_path), z_column="redshift"
        )


def test_metrics_in_z_bins_skip_sparse_bins():
    z_true = np.concatenate([np.full(50, 0.3), np.full(3, 1.5)])
    z_phot = z_true + 0.01
    binned = metrics_in_z_bins(z_phot, z_true, n_bins=4)
    assert binned["count"].tolist() == [50, 0, 0, 3]
    assert binned["nmad"][0] == pytest.approx(0) and np.isnan(binned["nmad"][3])
