import numpy as np

from raycat import schema
from raycat.photoz.infer import Extras, has_pixels


def test_auto_attribution_is_exact_for_surveys_and_sampled_for_bands():
    assert Extras(attributions="surveys").exact(3)
    assert not Extras(attributions="bands").exact(9)
    assert Extras(attribution_method="exact").exact(9)
    assert not Extras(attribution_method="sampled").exact(3)
    assert not Extras().wanted and Extras(mc_dropout_passes=4).wanted


def test_rows_without_pixels_get_no_prediction():
    cube = np.zeros((3, 9, 4, 4), np.float32)
    cube[1, 2, 1, 1] = 1.0
    cube[2, 0, 0, 0] = 1.0
    flags = np.array([0, 0, int(schema.Flag.OFF_FOOTPRINT)])
    assert has_pixels(cube, flags).tolist() == [False, True, False]


def test_cpu_chunks_give_the_pdfs_of_one_forward_pass(tmp_path, monkeypatch):
    """The Predictor runs a CPU batch in chunks (faster); eval mode makes rows independent,
    so the PDFs must be those of the whole batch at once."""
    import torch

    from raycat.photoz import infer
    from raycat.config import ModelConfig
    from raycat.photoz.model import ArtifactMeta, build_model, save_artifact

    cfg = ModelConfig(arch="tiny", n_bins=20)
    meta = ArtifactMeta(model=cfg, bands=list("abc"), size_px=16, pixel_scale=1.0)
    save_artifact(build_model(cfg, 3), str(tmp_path), meta)
    predictor = infer.Predictor(str(tmp_path))
    cube = np.random.default_rng(1).normal(size=(23, 3, 16, 16)).astype(np.float32)
    with torch.inference_mode():
        whole = torch.softmax(predictor.model(torch.from_numpy(cube)), dim=1).numpy()
    monkeypatch.setattr(infer, "CPU_CHUNK", 5)
    chunked = predictor.predict(cube)
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(chunked.sum(axis=1), 1, rtol=1e-5)
