"""MC dropout (epistemic spread, BatchNorm untouched) and rotation stability."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from raycat.config import ModelConfig  # noqa: E402
from raycat.photoz.forward import z_mean_fn  # noqa: E402
from raycat.photoz.model import build_model  # noqa: E402
from raycat.photoz.pdf import bin_centres, bin_edges  # noqa: E402
from raycat.photoz.uncertainty import (  # noqa: E402
    dihedral_pdfs,
    dihedral_predictions,
    dihedral_transforms,
    mc_dropout,
    point_from_pdfs,
    rotation_stability,
)

N_BANDS, N_BINS = 9, 20
CENTRES = bin_centres(bin_edges(0.0, 2.0, N_BINS))


def tiny(dropout: float) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(arch="tiny", n_bins=N_BINS, z_max=2.0, dropout=dropout), N_BANDS)


def cubes(n: int = 6, size: int = 8, seed: int = 0) -> torch.Tensor:
    return 3 * torch.randn(n, N_BANDS, size, size, generator=torch.Generator().manual_seed(seed))


def bn_state(model) -> dict[str, torch.Tensor]:
    return {
        k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k
    }


# --- MC dropout -------------------------------------------------------------------------------


def test_no_dropout_gives_zero_spread_and_the_eval_prediction():
    model = tiny(dropout=0.0).eval()
    x = cubes()
    mean, std = mc_dropout(model, x, CENTRES, passes=5)
    assert torch.all(std < 1e-6)  # float32 passes differ in the last bits only
    assert torch.allclose(mean, z_mean_fn(model, CENTRES)(x).double(), atol=1e-6)


def test_dropout_gives_positive_spread_and_leaves_batchnorm_alone():
    model = tiny(dropout=0.5).eval()
    before = bn_state(model)
    x = cubes()
    mean, std = mc_dropout(model, x, CENTRES, passes=16, generator=torch.Generator().manual_seed(0))
    assert mean.shape == std.shape == (len(x),)
    assert torch.all(std > 0)
    after = bn_state(model)
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN stayed in eval mode
    assert not any(m.training for m in model.modules())  # modes restored


def test_batchnorm_in_train_mode_would_be_caught():
    """The check above is live: a forward pass with BN in train mode moves running stats."""
    model = tiny(dropout=0.5).train()
    before = bn_state(model)
    with torch.no_grad():
        model(cubes())
    after = bn_state(model)
    assert not all(torch.equal(before[k], after[k]) for k in before)


def test_mc_dropout_restores_a_training_model_and_is_reproducible():
    model = tiny(dropout=0.5).train()
    x = cubes()
    first = mc_dropout(model, x, CENTRES, 8, generator=torch.Generator().manual_seed(3))
    second = mc_dropout(model, x, CENTRES, 8, generator=torch.Generator().manual_seed(3))
    assert all(m.training for m in model.modules())
    assert torch.equal(first[1], second[1])


def test_single_pass_has_zero_spread():
    model = tiny(dropout=0.5)
    mean, std = mc_dropout(model, cubes(), CENTRES, passes=1)
    assert torch.all(std < 1e-6)  # float32 passes differ in the last bits only
    assert torch.allclose(mean, z_mean_fn(model.eval(), CENTRES)(cubes()).double(), atol=1e-6)


# --- dihedral transforms and rotation stability ---------------------------------------------


def test_the_eight_transforms_are_distinct_and_identity_first():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    images = dihedral_transforms(x)
    assert len(images) == 8 and torch.equal(images[0], x)
    assert len({tuple(image.flatten().tolist()) for image in images}) == 8


def test_invariant_model_is_perfectly_stable():
    w = torch.linspace(-1, 1, N_BANDS, dtype=torch.float64)
    f = lambda x: torch.sigmoid(x.mean((-2, -1)) @ w)
    z8 = dihedral_predictions(f, cubes().double())
    stats = rotation_stability(z8, sigma=0.05)
    assert z8.shape == (8, 6)
    assert stats["max"] < 1e-12 and stats["n_objects"] == 6


def test_corner_pixel_model_is_unstable():
    f = lambda x: torch.sigmoid(x[:, :, 0, 0].sum(1))
    stats = rotation_stability(dihedral_predictions(f, cubes()), sigma=0.05)
    assert stats["mean"] > 1 and stats["p95"] >= stats["mean"]


def test_stability_is_relative_to_per_object_sigma():
    z8 = np.zeros((8, 2))
    z8[3] = [0.1, 0.1]
    stats = rotation_stability(z8, sigma=np.array([0.1, 0.05]))
    assert stats["max"] == pytest.approx(2.0) and stats["mean"] == pytest.approx(1.5)
    with pytest.raises(ValueError, match="8, n"):
        rotation_stability(z8[:4], sigma=0.1)
    empty = rotation_stability(np.zeros((8, 0)), sigma=0.1)  # a sample with no objects
    assert empty["n_objects"] == 0 and np.isnan(empty["mean"])


def test_dihedral_pdfs_give_mode_and_mean():
    model = tiny(dropout=0.0).eval()
    pdfs = dihedral_pdfs(model, cubes())
    assert pdfs.shape == (8, 6, N_BINS)
    assert torch.allclose(pdfs.sum(-1), torch.ones(8, 6), atol=1e-5)
    modes = point_from_pdfs(pdfs, CENTRES, "mode")
    assert modes.shape == (8, 6) and np.all(np.isin(modes, CENTRES))
    means = point_from_pdfs(pdfs, CENTRES, "mean")
    assert np.allclose(means[0], z_mean_fn(model, CENTRES)(cubes()).numpy(), atol=1e-5)
    assert rotation_stability(modes, sigma=0.1)["n_objects"] == 6
