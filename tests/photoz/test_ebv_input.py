"""E(B-V) as a network input (``data.ebv_column``): from the object list through the plan
and the cutouts to the network, whose output it changes."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from raycat import schema
from raycat.config import InferConfig, ModelConfig, parse_config
from raycat.errors import RaycatError

BANDS = ["ps1_g", "ps1_r", "ps1_i"]
SIZE = 16


def _artifact(root, ebv: bool) -> str:
    from raycat.photoz.inputs import input_channels
    from raycat.photoz.model import ArtifactMeta, build_model, save_artifact

    cfg = ModelConfig(arch="tiny", n_bins=20, z_max=1.0)
    meta = ArtifactMeta(model=cfg, bands=BANDS, size_px=SIZE, pixel_scale=1.0, ebv_input=ebv)
    torch.manual_seed(0)
    net = build_model(cfg, input_channels(len(BANDS), ebv))
    with torch.no_grad():  # a sharper head, so a changed input shows in the PDF
        net[-1].weight.mul_(20)
    save_artifact(net, str(root), meta)
    return str(root)


def _batch(ebv: float | None, n: int = 6) -> dict:
    rng = np.random.default_rng(1)
    batch = {
        schema.ID: np.arange(n),
        schema.CUBE: rng.normal(0, 1, (n, len(BANDS), SIZE, SIZE)).astype(np.float32),
        schema.FLAGS: np.zeros(n, dtype=np.int32),
    }
    if ebv is not None:
        batch[schema.EBV] = np.full(n, ebv)
    return batch


def test_the_ebv_column_reaches_the_network_and_changes_its_output(tmp_path):
    from raycat.photoz.infer import Predictor

    predictor = Predictor(InferConfig(model=_artifact(tmp_path / "m", ebv=True)))
    assert predictor.model[0].in_channels == len(BANDS) + 1  # the bands and the plane
    clear, dusty = (predictor(_batch(e))[schema.PDF] for e in (0.0, 0.4))
    assert np.isfinite(clear).all() and np.allclose(clear.sum(axis=1), 1, atol=1e-3)
    assert np.abs(clear - dusty).max() > 1e-3  # the same pixels behind more dust
    again = predictor(_batch(0.4))[schema.PDF]
    assert np.array_equal(dusty, again)
    with pytest.raises(RaycatError, match=r"takes E\(B-V\) as an input.*data\.ebv_column"):
        predictor(_batch(None))


def test_a_model_without_the_input_ignores_the_column(tmp_path):
    from raycat.photoz.infer import Predictor

    predictor = Predictor(InferConfig(model=_artifact(tmp_path / "m", ebv=False)))
    clear, dusty = (predictor(_batch(e))[schema.PDF] for e in (0.0, 0.4))
    assert np.array_equal(clear, dusty)


def test_the_plane_follows_the_bands_and_objects_without_pixels_stay_unpredicted():
    from raycat.photoz.infer import has_pixels
    from raycat.photoz.inputs import network_input

    batch = _batch(0.25, n=3)
    batch[schema.CUBE][1] = 0  # no pixels: the E(B-V) plane does not make it usable
    x = network_input(batch, ebv=True)
    assert x.shape == (3, len(BANDS) + 1, SIZE, SIZE) and x.dtype == np.float32
    assert np.array_equal(x[:, : len(BANDS)], batch[schema.CUBE])
    assert np.all(x[:, -1] == np.float32(0.25))
    assert has_pixels(batch[schema.CUBE], batch[schema.FLAGS]).tolist() == [True, False, True]


def test_the_object_list_column_is_mapped_and_bad_values_are_refused():
    from raycat.plan.objects import _canonical, column_map

    data = parse_config({"data": {"ebv_column": "EBV_SFD"}}).data
    mapping = column_map(data)
    assert mapping["EBV_SFD"] == schema.EBV
    frame = pd.DataFrame({"id": [1, 2], "ra": [1.0, 2.0], "dec": [0.0, 0.0], "z": [0.1, 0.2]})
    good = _canonical(frame.assign(EBV_SFD=[0.0, 0.3]), mapping, "objects.parquet", pa.int64())
    assert good[schema.EBV].tolist() == [0.0, 0.3]
    for bad in ([0.1, np.nan], [0.1, -0.2]):
        with pytest.raises(RaycatError, match=r"E\(B-V\) column has 1 missing, negative"):
            _canonical(frame.assign(EBV_SFD=bad), mapping, "objects.parquet", pa.int64())


def test_the_column_enters_the_plan_fingerprint_only_when_set(tmp_path):
    from raycat.plan.fingerprint import cutout_fingerprint

    base = {"data": {"store": str(tmp_path)}}
    assert "data.ebv_column" not in cutout_fingerprint(parse_config(base))
    with_ebv = parse_config({"data": {**base["data"], "ebv_column": "ebv"}})
    assert cutout_fingerprint(with_ebv)["data.ebv_column"] == "ebv"


def test_a_model_that_takes_ebv_needs_the_column_at_inference():
    from raycat.photoz.model import ArtifactMeta
    from raycat.pipeline import _check_artifact_matches

    cfg = parse_config({"cutouts": {"bands": BANDS, "size_px": SIZE}})
    meta = ArtifactMeta(
        model=ModelConfig(arch="tiny"),
        bands=BANDS,
        size_px=SIZE,
        pixel_scale=cfg.cutouts.pixel_scale,
        ebv_input=True,
    )
    with pytest.raises(RaycatError, match=r"set data\.ebv_column"):
        _check_artifact_matches(cfg, meta)
    with_ebv = cfg.model_copy(update={"data": cfg.data.model_copy(update={"ebv_column": "ebv"})})
    _check_artifact_matches(with_ebv, meta)


def test_training_rows_carry_the_plane_and_the_artifact_records_it(ray_module):
    import ray.data

    from raycat.photoz.model import ArtifactMeta
    from raycat.photoz.train import network_channels, split_datasets

    cfg = parse_config(
        {
            "data": {"ebv_column": "ebv"},
            "cutouts": {"bands": BANDS, "size_px": SIZE},
            "train": {"val_fraction": 0.5},
        }
    )
    batch = _batch(None, n=40)
    rows = [
        {
            schema.ID: int(i),
            schema.CUBE: batch[schema.CUBE][i] + 1,  # pixels in every band
            schema.FLAGS: 0,
            schema.Z_SPEC: 0.3,
            schema.EBV: 0.01 * i,
        }
        for i in range(40)
    ]
    split = split_datasets(ray.data.from_items(rows), cfg)
    seen = 0
    for ds in split.values():
        for b in ds.iter_batches(batch_format="numpy"):
            cube = b[schema.CUBE]
            assert cube.shape[1:] == (network_channels(cfg), SIZE, SIZE)
            planes = cube[:, -1]
            assert np.all(planes == planes[:, :1, :1])  # constant per object
            seen += len(cube)
    assert seen == 40 and network_channels(cfg) == len(BANDS) + 1
    assert ArtifactMeta.from_config(cfg).ebv_input


def test_the_mock_skys_ebv_rides_through_the_plan_into_the_cutout_rows(tmp_path, ray_module):
    from raycat.pipeline import cutout_source, materialise_cutouts
    from raycat.sky.simulate import simulate_sky

    simulate_sky(str(tmp_path / "sky"), n_galaxies=40, seed=3, progress=False, domain="dusty")
    cfg = parse_config(
        {
            "data": {"store": str(tmp_path / "sky"), "ebv_column": "ebv"},
            "cutouts": {"output": str(tmp_path / "cutouts"), "healpix_order": 11},
        }
    )
    materialise_cutouts(cfg)
    _, make = cutout_source(cfg)
    rows = make().select_columns([schema.ID, schema.EBV]).to_pandas().set_index(schema.ID)
    truth = pd.read_parquet(tmp_path / "sky" / schema.TRUTH_FILE).set_index(schema.ID)
    assert len(rows) == len(truth) and truth["ebv"].gt(0).all()
    assert np.allclose(rows[schema.EBV], truth.loc[rows.index, "ebv"])
