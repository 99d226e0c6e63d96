import numpy as np

from raycat import schema
from raycat.config import InferConfig
from raycat.photoz.infer import has_pixels


def save_tiny(root, bands=("a", "b", "c"), band_surveys=None, n_bins=20) -> str:
    """A tiny random model artifact over made-up bands; returns its path."""
    from raycat.config import ModelConfig
    from raycat.photoz.model import ArtifactMeta, build_model, save_artifact

    cfg = ModelConfig(arch="tiny", n_bins=n_bins)
    meta = ArtifactMeta(
        model=cfg, bands=list(bands), band_surveys=band_surveys or {}, size_px=16, pixel_scale=1.0
    )
    save_artifact(build_model(cfg, len(bands)), str(root), meta)
    return str(root)


def test_predictor_extras_follow_the_config_section_and_the_recorded_surveys(tmp_path):
    """Bands the registry does not know get survey players from the artifact's record, and
    the attributions plus the baseline add up to z_mean."""
    from raycat.photoz.infer import Predictor
    from raycat.photoz.pdf import bin_centres

    model = save_tiny(tmp_path, band_surveys={"a": "x", "b": "y", "c": "x"})
    assert not Predictor(InferConfig(model=model)).wanted
    assert Predictor(InferConfig(model=model, mc_dropout_passes=4)).wanted
    predictor = Predictor(InferConfig(model=model, attributions="surveys"))
    assert predictor.players == (["x", "y"], [[0, 2], [1]])
    cube = np.random.default_rng(0).normal(size=(5, 3, 16, 16)).astype(np.float32)
    out = predictor(
        {schema.CUBE: cube, schema.FLAGS: np.zeros(5, np.int32), schema.ID: np.arange(5)}
    )
    z_mean = out[schema.PDF] @ bin_centres(predictor.meta.bin_edges)
    total = out[schema.ATTR_BASELINE] + out["attr_x"] + out["attr_y"]
    np.testing.assert_allclose(total, z_mean, atol=1e-4)


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

    predictor = infer.Predictor(InferConfig(model=save_tiny(tmp_path)))
    cube = np.random.default_rng(1).normal(size=(23, 3, 16, 16)).astype(np.float32)
    with torch.inference_mode():
        whole = torch.softmax(predictor.model(torch.from_numpy(cube)), dim=1).numpy()
    monkeypatch.setattr(infer, "CPU_CHUNK", 5)
    chunked = predictor.predict(cube)
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(chunked.sum(axis=1), 1, rtol=1e-5)


def test_a_predictor_asked_for_a_gpu_on_a_node_without_cuda_refuses_in_one_line(tmp_path):
    """The backstop behind the driver's pre-flight: never a silent CPU run."""
    import pytest
    import torch

    from raycat.errors import RaycatError
    from raycat.photoz.infer import Predictor

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    with pytest.raises(RaycatError, match="use_gpu is true but this node has no CUDA GPU"):
        Predictor(InferConfig(model=save_tiny(tmp_path), use_gpu=True))


def test_gpus_an_autoscaler_could_add_come_from_its_node_types(tmp_path):
    from pathlib import Path

    from raycat.photoz.infer import autoscaler_gpus, node_type_gpus

    cluster_yaml = (Path(__file__).parents[2] / "cluster.yaml").read_text()
    assert node_type_gpus(cluster_yaml) >= 1  # the gpu node type, at its max_workers
    cpu_only = "max_workers: 4\navailable_node_types:\n  cpu: {resources: {CPU: 8}}\n"
    assert node_type_gpus(cpu_only) == 0
    bootstrap = tmp_path / "ray_bootstrap_config.yaml"
    bootstrap.write_text(cluster_yaml)
    assert autoscaler_gpus(str(bootstrap)) == node_type_gpus(cluster_yaml)
    assert autoscaler_gpus(str(tmp_path / "absent.yaml")) == 0
