"""Start-up off the critical path keeps the catalog: the same PDFs as torchvision's ResNet50
with the same weights, and the same Parquet bytes with HATS' settings worked out in the
driver as with the sink working them out itself."""

from __future__ import annotations

import glob

import numpy as np
import pyarrow.parquet as pq
import pytest

from raycat import schema
from raycat.config import parse_config

pytestmark = pytest.mark.slow


def _torchvision_resnet50(n_bands: int, n_bins: int):
    """build_model's ResNet50 (imagenet stem), built from torchvision's."""
    from torch import nn
    from torchvision.models import resnet50

    net = resnet50(weights=None, num_classes=n_bins)
    net.conv1 = nn.Conv2d(n_bands, 64, kernel_size=7, stride=2, padding=3, bias=False)
    net.fc = nn.Sequential(nn.Dropout(0.0), nn.Linear(net.fc.in_features, n_bins))
    return net


def test_catalog_pdfs_equal_torchvision_resnet50_with_the_same_weights(tmp_path, ray_local):
    import torch

    from raycat.photoz.infer import CPU_CHUNK
    from raycat.photoz.model import ArtifactMeta, save_artifact
    from raycat.pipeline import materialise_cutouts, read_materialised, run_infer
    from raycat.sky.simulate import simulate_sky

    simulate_sky(str(tmp_path / "sky"), n_galaxies=80, seed=5, progress=False)
    cfg = parse_config(
        {
            "data": {"store": str(tmp_path / "sky")},
            "cutouts": {"output": str(tmp_path / "cutouts"), "healpix_order": 11},
            "model": {"arch": "resnet50", "stem": "imagenet", "n_bins": 12},
            "infer": {
                "model": str(tmp_path / "model"),
                "catalog": str(tmp_path / "catalog"),
                "batch_size": 100,
            },
        }
    )
    torch.manual_seed(0)
    reference = _torchvision_resnet50(len(cfg.cutouts.bands), cfg.model.n_bins).eval()
    save_artifact(reference, cfg.infer.model, ArtifactMeta.from_config(cfg))
    materialise_cutouts(cfg)
    assert run_infer(cfg)["rows"] == 80

    rows = read_materialised(cfg)[1]().to_pandas()
    cubes = np.stack(rows[schema.CUBE].map(np.asarray).tolist()).astype(np.float32)
    with torch.no_grad():
        x = torch.from_numpy(cubes)
        expected = torch.cat([torch.softmax(reference(p), 1) for p in x.split(CPU_CHUNK)])
    expected_by_id = dict(zip(rows[schema.ID].tolist(), expected.numpy()))

    files = glob.glob(str(tmp_path / "catalog" / "**" / "Npix=*.parquet"), recursive=True)
    catalog = pq.ParquetDataset(files).read(columns=[schema.ID, schema.PDF]).to_pandas()
    assert len(catalog) == 80
    compared = 0
    for object_id, pdf in zip(catalog[schema.ID], catalog[schema.PDF]):
        if pdf is not None:  # objects without pixels have no PDF either way
            np.testing.assert_allclose(pdf, expected_by_id[object_id], rtol=1e-5, atol=1e-7)
            compared += 1
    assert compared > 60


def test_driver_parquet_settings_write_the_same_bytes_and_skip_hats(tmp_path, monkeypatch):
    """The sink's writer with the driver's settings never works out its own (hats), and
    writes what a writer working them out would."""
    import raycat.catalog.write as W
    from raycat.catalog.info import catalog_schema
    from raycat.catalog.keys import partition_relpath
    from raycat.healpix import healpix29, unit_key
    from raycat.photoz.pdf import bin_edges

    edges = bin_edges(0.0, 1.6, 16)
    table_schema = catalog_schema(edges, ["g", "r"], model_id="m", config_hash="c")
    rng = np.random.default_rng(1)
    ra, dec = rng.uniform(150, 150.5, 50), rng.uniform(2, 2.5, 50)
    pixels = healpix29(ra, dec) >> (2 * (29 - 3))  # order 3 cells
    inside = pixels == pixels[0]  # one partition's rows
    n = int(inside.sum())
    table = W.partition_table(
        table_schema,
        ids=np.arange(n, dtype=np.int64),
        ra=ra[inside],
        dec=dec[inside],
        flags=np.zeros(n, np.int32),
        pdf=rng.dirichlet(np.ones(16), n),
    )
    key = int(unit_key(3, int(pixels[0])))
    settings = W.parquet_settings(table_schema)
    W.CatalogWriter(str(tmp_path / "own"), table_schema, mode="new").write_partition(key, table)

    def no_hats(_schema):
        raise AssertionError("the sink worked out HATS' settings itself")

    monkeypatch.setattr(W, "parquet_settings", no_hats)
    given = W.CatalogWriter(
        str(tmp_path / "given"), table_schema, mode="new", parquet_kwargs=settings
    )
    given.write_partition(key, table)
    relpath = partition_relpath(key)
    assert (tmp_path / "own" / relpath).read_bytes() == (tmp_path / "given" / relpath).read_bytes()
