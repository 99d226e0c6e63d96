"""The report's truth join: partition by partition, in the driver or in Ray tasks, with only
the objects the truth table holds coming back."""

import numpy as np
import pandas as pd
from tinysky import fake_catalog

from raycat import schema as S
from raycat.catalog.read import iter_partitions
from raycat.quality.report import joined_columns


def test_truth_join_in_ray_tasks_equals_the_driver_and_keeps_matched_rows(tmp_path, ray_local):
    rng = np.random.default_rng(8)
    n = 300
    ids = np.arange(n, dtype=np.int64) * 5 + 1
    ra, dec = 150 + rng.uniform(0, 1, n), 2 + rng.uniform(0, 1, n)
    catalog = str(tmp_path / "dr1")
    fake_catalog(catalog, ids, ra, dec, "m1", order=7)
    sample = rng.choice(ids, 120, replace=False)  # a spectroscopic sample of the catalog
    truth = pd.DataFrame({S.ID: sample, S.TRUTH_Z: sample / 1000.0, "mag": sample / 100.0})
    truth.to_parquet(tmp_path / "truth.parquet")
    args = (catalog, str(tmp_path / "truth.parquet"), [S.TRUTH_Z, "mag", "absent"], [S.Z_MEAN])
    here, there = joined_columns(*args), joined_columns(*args, on_ray=True)
    assert set(here) == {S.Z_MEAN, S.TRUTH_Z, "mag"}  # a column the truth lacks is left out
    for name in here:
        np.testing.assert_array_equal(there[name], here[name])
    assert len(here[S.TRUTH_Z]) == 120  # only the objects with a truth row
    z_mean = {}
    for table in iter_partitions(catalog, [S.ID, S.Z_MEAN]):
        z_mean.update(zip(table[S.ID].to_pylist(), table[S.Z_MEAN].to_pylist()))
    matched_ids = np.rint(here[S.TRUTH_Z] * 1000).astype(np.int64)  # truth z encodes the id
    np.testing.assert_allclose(here["mag"], matched_ids / 100.0)
    np.testing.assert_allclose(here[S.Z_MEAN], [z_mean[i] for i in matched_ids])
