"""Shapley attributions: analytic values, the Shapley axioms, sampling convergence, players."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from raycat.config import ModelConfig  # noqa: E402
from raycat.errors import RaycatError  # noqa: E402
from raycat.photoz.attribute import (  # noqa: E402
    absent_baseline,
    players_for,
    shapley_exact,
    shapley_sampled,
    use_exact,
)
from raycat.photoz.forward import z_mean_fn  # noqa: E402
from raycat.photoz.model import build_model  # noqa: E402
from raycat.photoz.pdf import bin_centres, bin_edges  # noqa: E402
from raycat.surveys.bands import BAND_NAMES  # noqa: E402

N_BANDS = len(BAND_NAMES)
CENTRES = bin_centres(bin_edges(0.0, 2.0, 20))


def cubes(n: int, channels: int = N_BANDS, size: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(
        n, channels, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )


def linear(weights: list[float], bias: float = 0.3):
    """f(x) = sum_c w_c mean(x_c) + b: Shapley value of band c is w_c (mean x_c - mean b_c)."""
    w = torch.tensor(weights, dtype=torch.float64)
    return lambda x: x.mean((-2, -1)) @ w + bias


def mlp_z_mean(channels: int = N_BANDS, seed: int = 0):
    """A strongly nonlinear toy: softmax(W2 tanh(W1 m)) @ centres on the channel means m."""
    g = torch.Generator().manual_seed(seed)
    w1 = torch.randn(channels, 16, generator=g, dtype=torch.float64)
    w2 = torch.randn(16, len(CENTRES), generator=g, dtype=torch.float64) * 2
    centres = torch.as_tensor(CENTRES)
    return lambda x: torch.softmax(torch.tanh(x.mean((-2, -1)) @ w1) @ w2, 1) @ centres


def tiny_net_z_mean():
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="tiny", n_bins=len(CENTRES), z_max=2.0), N_BANDS)
    return z_mean_fn(model.eval(), CENTRES)


def shapley_by_definition(f, x, baseline, n_players):
    """Average marginal contribution over all P! orderings (one channel per player)."""

    def value(present):
        mask = torch.zeros(n_players, dtype=torch.bool)
        mask[list(present)] = True
        return f(torch.where(mask[None, :, None, None], x, baseline))

    phi = torch.zeros(x.shape[0], n_players, dtype=torch.float64)
    for order in itertools.permutations(range(n_players)):
        for step, player in enumerate(order):
            phi[:, player] += value(order[: step + 1]) - value(order[:step])
    return phi / math.factorial(n_players)


def efficiency_gap(f, x, phi, base) -> float:
    return float((base + phi.sum(1) - f(x).double().cpu()).abs().max())


# --- players and baselines --------------------------------------------------------------------


def test_players_bands_are_channels_in_order():
    names, groups = players_for(list(BAND_NAMES), "bands")
    assert names == list(BAND_NAMES)
    assert groups == [[i] for i in range(N_BANDS)]


def test_players_surveys_group_channels_in_input_order():
    names, groups = players_for(list(BAND_NAMES), "surveys")
    assert names == ["galex", "ps1", "unwise"]
    assert groups == [[0, 1], [2, 3, 4, 5, 6], [7, 8]]
    names, groups = players_for(["unwise_w1", "ps1_g", "unwise_w2"], "surveys")
    assert names == ["ps1", "unwise"] and groups == [[1], [0, 2]]
    names, groups = players_for(["sdss_r", "ps1_r", "sdss_g"], "surveys")  # real-data bands
    assert names == ["ps1", "sdss"] and groups == [[1], [0, 2]]


def test_players_of_config_defined_bands_come_from_the_recorded_surveys():
    """A band defined only in a config is unknown to the registry: its survey comes with it."""
    recorded = {"hsclike_r": "hsc_like", "hsclike_i": "hsc_like"}
    names, groups = players_for(["hsclike_r", "ps1_g", "hsclike_i"], "surveys", recorded)
    assert names == ["ps1", "hsc_like"] and groups == [[1], [0, 2]]
    assert players_for(["hsclike_r"], "bands", recorded).names == ["hsclike_r"]
    assert players_for(["hsclike_r"], "off") == ([], [])


def test_auto_attribution_is_exact_for_surveys_and_sampled_for_bands():
    assert use_exact("auto", 3) and not use_exact("auto", 9)
    assert use_exact("exact", 9) and not use_exact("sampled", 3)


def test_players_reject_unknown_band_and_kind():
    with pytest.raises(RaycatError, match="unknown band"):
        players_for(["ps1_q"], "bands")
    with pytest.raises(ValueError, match="players"):
        players_for(["ps1_g"], "filters")


def test_noise_baseline_has_per_channel_sigma():
    x = torch.zeros(400, 3, 8, 8)
    base = absent_baseline(x, "noise", [0.5, 1.0, 2.0], torch.Generator().manual_seed(0))
    assert base.shape == x.shape
    assert np.allclose(base.std((0, 2, 3)).numpy(), [0.5, 1.0, 2.0], rtol=0.02)
    assert torch.equal(absent_baseline(x), torch.zeros_like(x))
    with pytest.raises(ValueError, match="noise_sigma"):
        absent_baseline(x, "noise")


# --- exact Shapley: the axioms and the analytic case ----------------------------------------


@pytest.mark.parametrize("baseline_kind", ["zero", "noise"])
def test_exact_linear_model_matches_analytic_values(baseline_kind):
    weights = [0.5, -1.0, 2.0, 0.0, 0.25]  # channel 3 is a dummy player
    f, x = linear(weights), cubes(6, channels=5)
    baseline = absent_baseline(x, baseline_kind, [0.3] * 5, torch.Generator().manual_seed(1))
    _, groups = players_for(list(BAND_NAMES[:5]), "bands")
    phi, base = shapley_exact(f, x, groups, baseline)
    expected = (x.mean((-2, -1)) - baseline.mean((-2, -1))) * torch.tensor(weights)
    assert torch.allclose(phi, expected, atol=1e-12)
    assert torch.all(phi[:, 3] == 0)  # dummy
    assert torch.allclose(base, f(baseline))
    assert efficiency_gap(f, x, phi, base) < 1e-12


def test_exact_matches_the_permutation_definition_on_a_nonlinear_toy():
    f, x = mlp_z_mean(channels=4), cubes(5, channels=4)
    baseline = torch.zeros_like(x)
    phi, _ = shapley_exact(f, x, [[0], [1], [2], [3]], baseline)
    assert torch.allclose(phi, shapley_by_definition(f, x, baseline, 4), atol=1e-12)


def test_exact_symmetric_players_get_equal_values():
    x = cubes(4, channels=3)
    x[:, 1] = x[:, 0]  # players 0 and 1 are interchangeable in f
    means = lambda x: x.mean((-2, -1))
    f = lambda x: means(x)[:, 0] * means(x)[:, 1] * torch.exp(means(x)[:, 2])
    phi, base = shapley_exact(f, x, [[0], [1], [2]], torch.zeros_like(x))
    assert torch.allclose(phi[:, 0], phi[:, 1], atol=1e-14)
    assert not torch.allclose(phi[:, 0], phi[:, 2])
    assert efficiency_gap(f, x, phi, base) < 1e-12


@pytest.mark.parametrize("kind, n_players", [("bands", N_BANDS), ("surveys", 3)])
def test_exact_efficiency_on_the_tiny_network(kind, n_players):
    f = tiny_net_z_mean()
    x = cubes(3, size=8).float() * 3
    _, groups = players_for(list(BAND_NAMES), kind)
    phi, base = shapley_exact(f, x, groups, torch.zeros_like(x))
    assert phi.shape == (3, n_players) and phi.abs().sum() > 0
    assert efficiency_gap(f, x, phi, base) < 1e-5


def test_chunking_does_not_change_the_values():
    f, x = mlp_z_mean(channels=5), cubes(7, channels=5)
    groups = [[0], [1], [2], [3], [4]]
    whole, _ = shapley_exact(f, x, groups, torch.zeros_like(x), max_batch=4096)
    chunked, _ = shapley_exact(f, x, groups, torch.zeros_like(x), max_batch=5)
    assert torch.allclose(whole, chunked, atol=1e-14)


# --- surveys as players ---------------------------------------------------------------------


def test_survey_players_sum_their_bands_for_an_additive_model():
    weights = [0.1 * (i + 1) * (-1) ** i for i in range(N_BANDS)]
    f, x = linear(weights), cubes(4)
    _names, groups = players_for(list(BAND_NAMES), "surveys")
    band_phi, _ = shapley_exact(f, x, [[i] for i in range(N_BANDS)], torch.zeros_like(x))
    survey_phi, base = shapley_exact(f, x, groups, torch.zeros_like(x))
    assert survey_phi.shape == (4, 3)
    for p, channels in enumerate(groups):
        assert torch.allclose(survey_phi[:, p], band_phi[:, channels].sum(1), atol=1e-12)
    assert efficiency_gap(f, x, survey_phi, base) < 1e-12


# --- sampled Shapley --------------------------------------------------------------------------


def test_sampled_is_exact_for_an_additive_model():
    """Every ordering gives an additive model's exact values: checks the bookkeeping of
    which marginal belongs to which player."""
    weights = [0.5, -1.0, 2.0, 0.0, 0.25, 1.5, -0.7, 0.1, 3.0]
    f, x = linear(weights), cubes(6)
    exact, _ = shapley_exact(f, x, [[i] for i in range(N_BANDS)], torch.zeros_like(x))
    sampled, _ = shapley_sampled(
        f,
        x,
        [[i] for i in range(N_BANDS)],
        torch.zeros_like(x),
        permutations=1,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.allclose(sampled, exact, atol=1e-12)


def _sampling_error(f, x, groups, exact, permutations: int, seeds=range(3)) -> float:
    errors = []
    for seed in seeds:
        phi, base = shapley_sampled(
            f, x, groups, torch.zeros_like(x), permutations, torch.Generator().manual_seed(seed)
        )
        assert efficiency_gap(f, x, phi, base) < 1e-12  # exact for every draw
        errors.append(float((phi - exact).abs().mean()))
    return float(np.mean(errors))


def test_sampled_converges_to_exact_on_a_nonlinear_toy():
    f, x = mlp_z_mean(), cubes(64, seed=2)
    groups = [[i] for i in range(N_BANDS)]
    exact, _ = shapley_exact(f, x, groups, torch.zeros_like(x))
    spread = float(exact.std())
    coarse, fine = (_sampling_error(f, x, groups, exact, m) for m in (8, 128))
    assert _sampling_error(f, x, groups, exact, 64) < 0.1 * spread
    assert fine < 0.5 * coarse  # ~1/sqrt(M): expect 0.25


def test_sampled_efficiency_on_the_tiny_network():
    f = tiny_net_z_mean()
    x = cubes(3, size=8).float() * 3
    phi, base = shapley_sampled(
        f,
        x,
        [[i] for i in range(N_BANDS)],
        torch.zeros_like(x),
        4,
        torch.Generator().manual_seed(0),
    )
    assert efficiency_gap(f, x, phi, base) < 1e-5


def test_empty_batch_and_bad_baseline():
    f, groups = mlp_z_mean(channels=3), [[0], [1], [2]]
    empty = cubes(0, channels=3)
    phi, base = shapley_exact(f, empty, groups, torch.zeros_like(empty))
    assert phi.shape == (0, 3) and base.shape == (0,)
    x = cubes(2, channels=3)
    with pytest.raises(ValueError, match="baseline shape"):
        shapley_exact(f, x, groups, torch.zeros(2, 3, 5, 5))
