"""raycat's own ResNet50 is torchvision's: same keys, same initial weights, same outputs."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from raycat.config import ModelConfig
from raycat.photoz.model import build_model
from raycat.photoz.resnet import resnet50

torchvision_models = pytest.importorskip("torchvision.models")


def test_same_seed_gives_torchvision_weights_and_keys():
    torch.manual_seed(3)
    ours = resnet50(num_classes=7).state_dict()
    torch.manual_seed(3)
    theirs = torchvision_models.resnet50(weights=None, num_classes=7).state_dict()
    assert list(ours) == list(theirs)
    for key, tensor in theirs.items():
        assert torch.equal(ours[key], tensor), key


def test_same_weights_give_torchvision_outputs():
    """An artifact trained on torchvision's ResNet50 loads strictly and predicts the same."""
    theirs = torchvision_models.resnet50(weights=None, num_classes=5)
    ours = resnet50(num_classes=5)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    for net in (theirs, ours):  # batch statistics away from their defaults
        net.train()
        net(torch.randn(8, 3, 40, 40))
        net.eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(4, 3, 40, 40)
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))


def test_a_resnet50_artifact_loads_without_torchvision_or_dynamo(tmp_path):
    """What a Predictor does at start-up (build, load on the meta device, predict) imports
    neither torchvision nor torch._dynamo (an init on the meta device would)."""
    from raycat.config import parse_config
    from raycat.photoz.model import ArtifactMeta, save_artifact

    cfg = parse_config({"model": {"arch": "resnet50", "n_bins": 10}})
    path = str(tmp_path / "model")
    save_artifact(build_model(cfg.model, 9), path, ArtifactMeta.from_config(cfg))
    code = (
        "import sys, torch; from raycat.photoz.model import load_artifact; "
        f"model, _ = load_artifact({path!r}); model(torch.zeros(2, 9, 32, 32)); "
        "print(sorted(m for m in sys.modules if m.startswith(('torchvision', 'torch._dynamo'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_build_model_keeps_the_adapted_stem_and_head():
    net = build_model(ModelConfig(arch="resnet50", stem="small", n_bins=12), 9)
    assert net.conv1.in_channels == 9 and net.conv1.kernel_size == (3, 3)
    assert net(torch.randn(2, 9, 32, 32)).shape == (2, 12)
