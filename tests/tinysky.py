"""A tiny mock sky and tiny model for the catalog tests that run inference, and ways to look
at a catalog's files without raycat's readers."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from raycat import schema
from raycat.config import RaycatConfig, parse_config

ORDER = 12  # 60 objects over ~2 arcmin: 11 partitions of 1 to 13 objects


@dataclass(frozen=True)
class TinySky:
    """A 60-galaxy mock sky (9 tiles), a tiny model, and configs that use them."""

    root: Path
    truth: pd.DataFrame

    @property
    def model(self) -> str:
        return str(self.root / "model")

    def objects(self, frame: pd.DataFrame, name: str) -> str:
        """Write ``frame`` as an object list; returns its path."""
        path = self.root / f"{name}.parquet"
        frame.to_parquet(path)
        return str(path)

    def config(self, catalog, objects: str, **infer) -> RaycatConfig:
        """Inference of ``objects`` into ``catalog`` at HEALPix order ``ORDER``, streaming
        cutouts (sparse reads: a few pixels per object), tiny model."""
        return parse_config(
            {
                "data": {"store": str(self.root / "sky"), "objects": objects},
                "cutouts": {"healpix_order": ORDER, "read_mode": "sparse"},
                "model": {"arch": "tiny", "n_bins": 20},
                "infer": {"model": self.model, "catalog": str(catalog), "batch_size": 32, **infer},
            }
        )


def make_tiny_sky(root: Path) -> TinySky:
    """Simulate the sky under ``root`` and save an untrained tiny model beside it."""
    from raycat.photoz.model import ArtifactMeta, build_model, save_artifact
    from raycat.sky.simulate import simulate_sky

    simulate_sky(str(root / "sky"), n_galaxies=60, seed=3, progress=False)
    truth = pd.read_parquet(root / "sky" / schema.TRUTH_FILE)
    sky = TinySky(root, truth)
    cfg = sky.config(root / "unused", str(root / "sky" / schema.TRUTH_FILE))
    model = build_model(cfg.model, len(cfg.cutouts.bands))
    save_artifact(model, sky.model, ArtifactMeta.from_config(cfg))
    return sky


def catalog_ids(root) -> list[int]:
    """Every id in the partitions of a catalog (files read directly, no raycat reader)."""
    ids: list[int] = []
    for path in sorted(Path(root).glob(schema.PARTITION_GLOB)):
        ids += pq.read_table(path, columns=[schema.ID])[schema.ID].to_pylist()
    return ids


def partition_files(root) -> dict[str, tuple[int, bytes]]:
    """Partition path (relative) -> (mtime_ns, bytes), to tell untouched files."""
    return {
        str(p.relative_to(root)): (os.stat(p).st_mtime_ns, p.read_bytes())
        for p in sorted(Path(root).glob(schema.PARTITION_GLOB))
    }


def tree(root) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes (to show a directory left intact)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in Path(root).rglob("*") if p.is_file()}


def fake_catalog(root: str, ids, ra, dec, model_id: str, storage_options=None, order=ORDER):
    """A finished raycat catalog of these objects with flat PDFs, by ``model_id`` (written
    with CatalogWriter, no inference)."""
    import numpy as np

    from raycat.catalog.info import catalog_schema
    from raycat.catalog.write import CatalogWriter, partition_table
    from raycat.healpix import healpix29, unit_key
    from raycat.photoz.pdf import bin_edges

    schema_ = catalog_schema(bin_edges(0.0, 1.6, 20), ["ps1_g"], model_id=model_id, config_hash="c")
    writer = CatalogWriter(root, schema_, mode="new", storage_options=storage_options)
    ids, ra, dec = np.asarray(ids), np.asarray(ra), np.asarray(dec)
    pixels = healpix29(ra, dec) >> (2 * (29 - order))
    for pixel in np.unique(pixels):
        rows = pixels == pixel
        n = int(rows.sum())
        table = partition_table(
            schema_,
            ids=ids[rows],
            ra=ra[rows],
            dec=dec[rows],
            flags=np.zeros(n, np.int32),
            pdf=np.ones((n, 20)),
        )
        writer.write_partition(unit_key(order, int(pixel)), table)
    writer.finalize()
