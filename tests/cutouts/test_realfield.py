"""The cutout stage on a real field: Stripe 82, Pan-STARRS1 g,r,i,z and SDSS g,r,i,z.

Objects are the sources raycat's detector finds on PS1 r; the tile index is built in tmp_path
from each file's own WCS, over the read-only store ../shared/realdata. One row per object,
finite cubes, EDGE exactly where a cutout leaves the 240-px PS1 field, and the PS1 r and
SDSS r channels of bright objects look alike.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from realdata import REALDATA

from raycat import schema

FILES = {
    **{f"ps1_{b}": f"ps1/PS1_{b}.fits" for b in "griz"},
    **{f"sdss_{b}": f"sdss/SDSS_{b}_wcsfixed.fits" for b in "griz"},
}
SIZE_PX, SCALE = 32, 0.5  # cutouts of 16": objects within ~8" of the PS1 border hit its edge

pytestmark = pytest.mark.skipif(
    not (REALDATA / "ps1" / "PS1_r.fits").exists(), reason="no ../shared/realdata"
)


def index_row(band: str, uri: str) -> dict:
    """A tile index row from the file's own header (as ``raycat index`` writes them)."""
    from astropy.io import fits

    from raycat.surveys.footprint import index_row as footprint_row

    header = fits.getheader(REALDATA / uri)
    return footprint_row(band.split("_")[0], band, Path(uri).stem, uri, header)


@pytest.fixture(scope="module")
def objects() -> pd.DataFrame:
    """Sources on PS1 r: the object list, with their PS1 pixel positions and S/N."""
    from raycat.quality.crosscheck import read_image
    from raycat.quality.detect import DetectConfig, detect

    image = read_image(str(REALDATA / FILES["ps1_r"]), "ps1_r")
    # a 6" mesh background: knots on the big host galaxy and faint neighbours are found
    found = detect(image.pixels, image.wcs, DetectConfig(background_box_arcsec=6.0))
    return found.assign(id=np.arange(len(found), dtype=np.int64))


SOFTENING = {b: 0.05 for b in FILES}  # one softening: channels comparable across surveys


@pytest.fixture(scope="module")
def tile_index(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("realfield") / "tiles.parquet"
    pd.DataFrame([index_row(b, uri) for b, uri in FILES.items()]).to_parquet(path)
    return path


@pytest.fixture(scope="module")
def direct(objects, tile_index) -> dict:
    """The cutout engine called directly on the field's objects (no Ray)."""
    from raycat.config import CutoutConfig, DataConfig
    from raycat.cutouts.actor import cutout_batch
    from raycat.plan.tiles import TileFinder
    from raycat.surveys.store import open_store
    from raycat.surveys.tile_index import open_tile_index, resolve_tile_index

    bands = list(FILES)
    data = DataConfig.model_validate(
        {"store": str(REALDATA), "objects": "unused.parquet", "tile_index": str(tile_index)}
    )
    index = open_tile_index(resolve_tile_index(data), None, bands)
    assert sum(index.tiles_per_band().values()) == len(bands)
    ra, dec = objects["ra"].to_numpy(), objects["dec"].to_numpy()
    tiles = TileFinder(index, bands).assign(ra, dec)
    assert all((tiles[b] == FILES[b]).all() for b in bands)  # every object is on every tile
    batch = {
        schema.ID: objects["id"].to_numpy(),
        schema.RA: ra,
        schema.DEC: dec,
        **{schema.tile_column(b): tiles[b].astype(str) for b in bands},
    }
    cfg = CutoutConfig(bands=bands, size_px=SIZE_PX, pixel_scale=SCALE, softening=SOFTENING)
    return cutout_batch(batch, open_store(str(REALDATA)), cfg)


def test_cutouts_of_the_real_field(objects, direct):
    assert direct[schema.CUBE].shape == (len(objects), len(FILES), SIZE_PX, SIZE_PX)
    np.testing.assert_array_equal(direct[schema.ID], objects["id"])
    assert np.isfinite(direct[schema.CUBE]).all()
    _check_edge_flags(objects, direct[schema.FLAGS])
    _check_r_channels_agree(objects, direct[schema.CUBE], list(FILES))


@pytest.mark.slow
def test_cutout_stage_on_the_real_field_from_a_yaml_config(
    objects, direct, tile_index, tmp_path, ray_local
):
    """`raycat cutouts --config` (the Ray Data stage) with the PS1 + SDSS band set named in a
    YAML file: one row per detected source, with the direct call's flags."""
    import yaml

    from raycat.cli import main

    objects[["id", "ra", "dec"]].to_parquet(tmp_path / "objects.parquet")
    config = {
        "data": {
            "store": str(REALDATA),
            "objects": str(tmp_path / "objects.parquet"),
            "tile_index": str(tile_index),
            "z_column": None,
        },
        "cutouts": {
            "bands": list(FILES),
            "size_px": SIZE_PX,
            "pixel_scale": SCALE,
            "softening": SOFTENING,
        },
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "cutouts"
    assert main(["cutouts", "--config", str(tmp_path / "config.yaml"), "--out", str(out)]) == 0
    rows = pd.read_parquet(out, columns=[schema.ID, schema.FLAGS]).sort_values(schema.ID)
    np.testing.assert_array_equal(rows[schema.ID], objects["id"])  # each source exactly once
    np.testing.assert_array_equal(rows[schema.FLAGS], direct[schema.FLAGS])


def _check_edge_flags(objects: pd.DataFrame, flags: np.ndarray) -> None:
    """EDGE exactly where an output pixel centre falls off the PS1 field (SDSS is larger)."""
    reach = (SIZE_PX - 1) / 2 * SCALE / 0.25  # PS1 px from the object to the farthest centre
    x, y = objects["x"].to_numpy(), objects["y"].to_numpy()
    margin = np.minimum.reduce([x + 0.5, 239.5 - x, y + 0.5, 239.5 - y]) - reach
    clear = np.abs(margin) > 0.5  # leave out objects on the boundary itself
    edge = (flags & int(schema.Flag.EDGE)) > 0
    assert (margin < 0).any() and (margin > 0).any()
    np.testing.assert_array_equal(edge[clear], (margin < 0)[clear])
    others = int(
        schema.Flag.NAN_PIXELS
        | schema.Flag.MISSING_BAND
        | schema.Flag.READ_ERROR
        | schema.Flag.OFF_FOOTPRINT
    )
    assert not (flags & others).any()


def _check_r_channels_agree(objects: pd.DataFrame, cube: np.ndarray, bands: list[str]) -> None:
    ps1, sdss = bands.index("ps1_r"), bands.index("sdss_r")
    bright = np.flatnonzero((objects["snr"] > 20).to_numpy())
    assert len(bright) >= 2
    for k in bright:
        corr = np.corrcoef(cube[k, ps1].ravel(), cube[k, sdss].ravel())[0, 1]
        assert corr > 0.9, (k, corr)
