"""Shapley attributions of the PDF-mean redshift to bands or surveys.

A *player* is a group of input channels: one band, or all bands of one survey. A player
that is *absent* has its channels replaced by a baseline (zeros, the sky level after asinh
normalisation, or sky noise). The value of a coalition S of players is
``z_mean(x with players outside S absent)``, and each player's Shapley value is its
average marginal contribution over all orderings of the players. Attributions satisfy
efficiency, ``base + phi.sum(1) == z_mean(x)`` with ``base = z_mean(all absent)``, so in
the catalog the ``attr_<player>`` columns plus ``attr_baseline`` add up to ``z_mean``.

Cost, in forward passes per object (P players):

- exact: ``2**P`` (P=9 bands: 512; P=3 surveys: 8);
- sampled (antithetic permutations, M orderings): ``M * (P - 1) + 2``, about ``M * P``.

Coalitions are stacked into large batches through the network (``max_batch`` inputs per
call), so the cost is pure throughput. torch is imported inside the functions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Literal, NamedTuple

from raycat.photoz.forward import ValueFn
from raycat.surveys.bands import ALL_SURVEYS, get_band

if TYPE_CHECKING:
    import torch

DEFAULT_MAX_BATCH = 1024
MAX_EXACT_PLAYERS = 4  # auto: exact up to 16 coalitions, sampled beyond (benchmarks/attribute.py)


# --- players and baselines --------------------------------------------------------------------


class Players(NamedTuple):
    """Who gets an attribution: player names (the catalog's ``attr_<name>`` columns) and the
    input channels each player holds. Worked out once per run, from the model artifact."""

    names: list[str]
    groups: list[list[int]]


def players_for(
    bands: Sequence[str],
    kind: Literal["off", "bands", "surveys"],
    surveys: Mapping[str, str] | None = None,
) -> Players:
    """Player names and the input channels of each player, for ``bands`` in channel order.

    ``off``: none. ``bands``: one player per band. ``surveys``: one player per survey with
    at least one of the bands, in :data:`raycat.surveys.bands.ALL_SURVEYS` order, then
    surveys defined in the config in channel order. ``surveys`` maps a band to its survey
    (the model artifact records it, so bands defined only in a config need no config here);
    a band it lacks is looked up in the built-in registry, and an unknown one raises
    RaycatError.
    """
    if kind == "off":
        return Players([], [])
    if kind not in ("bands", "surveys"):
        raise ValueError(f"unknown attribution players {kind!r}; use 'bands' or 'surveys'")
    channel_surveys = [(surveys or {}).get(name) or get_band(name).survey for name in bands]
    if kind == "bands":
        return Players(list(bands), [[i] for i in range(len(bands))])
    groups: dict[str, list[int]] = {}
    for channel, survey in enumerate(channel_surveys):
        groups.setdefault(survey, []).append(channel)
    known = list(ALL_SURVEYS)
    names = sorted(groups, key=lambda s: known.index(s) if s in known else len(known))
    return Players(names, [groups[name] for name in names])


def absent_baseline(
    x: torch.Tensor,
    kind: Literal["zero", "noise"] = "zero",
    noise_sigma: Sequence[float] | torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """What the channels of an absent player become, same shape as ``x``.

    ``zero``: the sky level of asinh-normalised cutouts (also what a MISSING_BAND gets).
    ``noise``: Gaussian sky noise with ``noise_sigma`` per channel (normalised units), so an
    absent band looks like an empty sky rather than an impossibly clean one; one draw per
    call, so such attributions depend (slightly) on the draw.
    """
    import torch

    if kind == "zero":
        return torch.zeros_like(x)
    if kind != "noise":
        raise ValueError(f"unknown baseline {kind!r}; use 'zero' or 'noise'")
    if noise_sigma is None:
        raise ValueError("baseline 'noise' needs noise_sigma (one value per channel)")
    sigma = torch.as_tensor(noise_sigma, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
    if sigma.shape[1] != x.shape[1]:
        raise ValueError(f"noise_sigma has {sigma.shape[1]} values for {x.shape[1]} channels")
    noise = torch.randn(
        x.shape,
        generator=generator,
        dtype=x.dtype,
        device=generator.device if generator is not None else x.device,
    )
    return noise.to(x.device) * sigma


# --- coalition values -------------------------------------------------------------------------


def _membership(groups: Sequence[Sequence[int]], n_channels: int, device) -> torch.Tensor:
    """Float matrix [P, C]: 1 where a channel belongs to a player."""
    import torch

    member = torch.zeros(len(groups), n_channels, device=device)
    for p, channels in enumerate(groups):
        member[p, list(channels)] = 1.0
    if (member.sum(0) > 1).any():
        raise ValueError("a channel belongs to more than one player")
    return member


def _coalition_values(
    f: ValueFn,
    x: torch.Tensor,
    baseline: torch.Tensor,
    present: torch.Tensor,
    groups: Sequence[Sequence[int]],
    max_batch: int,
) -> torch.Tensor:
    """Values ``f`` of coalitions, float64 [K, n] on the CPU.

    ``present``: bool [K, n or 1, P], which players are present in coalition k for each
    object. Channels in no group are always present. At most ``max_batch`` inputs (and at
    least one coalition of a block of objects) go through ``f`` per call.
    """
    import torch

    if baseline.shape != x.shape:
        raise ValueError(f"baseline shape {tuple(baseline.shape)} != input {tuple(x.shape)}")
    member = _membership(groups, x.shape[1], x.device)
    absent_channels = ((~present).to(member) @ member) > 0  # [K, n|1, C]
    n, k_total = x.shape[0], present.shape[0]
    block = max(1, min(n, max_batch))
    out = torch.empty(k_total, n, dtype=torch.float64)
    for lo in range(0, n, block):
        xs, bs = x[lo : lo + block], baseline[lo : lo + block]
        masks = (
            absent_channels
            if absent_channels.shape[1] == 1
            else absent_channels[:, lo : lo + block]
        )
        step = max(1, max_batch // len(xs))
        for k in range(0, k_total, step):
            m = masks[k : k + step, :, :, None, None]
            inputs = torch.where(m, bs, xs)  # [k, b, C, H, W]
            values = f(inputs.flatten(0, 1)).reshape(len(m), len(xs))
            out[k : k + len(m), lo : lo + len(xs)] = values.detach().to("cpu", torch.float64)
    return out


def _all_coalitions(n_players: int, device) -> torch.Tensor:
    """Bool [2**P, P]: row s has player p present where bit p of s is set."""
    import torch

    s = torch.arange(2**n_players, device=device)[:, None]
    return (s >> torch.arange(n_players, device=device)) & 1 == 1


# --- Shapley values ---------------------------------------------------------------------------


def shapley_exact(
    f: ValueFn,
    x: torch.Tensor,
    groups: Sequence[Sequence[int]],
    baseline: torch.Tensor,
    max_batch: int = DEFAULT_MAX_BATCH,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact Shapley values over all ``2**P`` coalitions.

    Returns ``(phi [n, P], base [n])``, float64 on the CPU, with ``base = f(all absent)``
    and ``base + phi.sum(1) == f(x)``. Cost: ``2**P`` forward passes per object.
    """
    import torch

    n_players = len(groups)
    if n_players > 16:
        raise ValueError(
            f"exact Shapley over {n_players} players needs 2**{n_players} "
            "passes per object; use shapley_sampled"
        )
    coalitions = _all_coalitions(n_players, x.device)
    values = _coalition_values(f, x, baseline, coalitions[:, None, :], groups, max_batch)
    index = torch.arange(2**n_players)
    size = coalitions.sum(1).cpu()
    weight = torch.tensor(
        [
            math.factorial(s) * math.factorial(n_players - s - 1) / math.factorial(n_players)
            for s in range(n_players)
        ],
        dtype=torch.float64,
    )
    phi = torch.empty(x.shape[0], n_players, dtype=torch.float64)
    for p in range(n_players):
        without = index[(index >> p) & 1 == 0]
        marginal = values[without | (1 << p)] - values[without]  # [2**(P-1), n]
        phi[:, p] = weight[size[without]] @ marginal
    return phi, values[0]


def _orderings(n: int, n_players: int, pairs: int, generator, device) -> torch.Tensor:
    """Long [2 * pairs, n, P]: random orderings of the players per object, each followed
    by its reverse (antithetic pairs: a player early in one is late in the other)."""
    import torch

    gen_device = generator.device if generator is not None else device
    noise = torch.rand(pairs, n, n_players, generator=generator, device=gen_device)
    forward = noise.argsort(-1).to(device)
    return torch.stack((forward, forward.flip(-1)), 1).flatten(0, 1)


def shapley_sampled(
    f: ValueFn,
    x: torch.Tensor,
    groups: Sequence[Sequence[int]],
    baseline: torch.Tensor,
    permutations: int,
    generator: torch.Generator | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shapley values estimated from ``permutations`` orderings per object (antithetic).

    Orderings are drawn independently per object in pairs (an ordering and its reverse),
    so ``permutations`` is rounded up to an even number. Unbiased, and efficiency holds
    exactly for every draw (each ordering's marginals telescope to ``f(x) - base``).
    Returns ``(phi [n, P], base [n])`` as :func:`shapley_exact`. Cost:
    ``permutations * (P - 1) + 2`` forward passes per object.
    """
    import torch

    if permutations < 1:
        raise ValueError("permutations must be at least 1")
    n, n_players = x.shape[0], len(groups)
    pairs = (permutations + 1) // 2
    ends = torch.stack(
        (
            torch.zeros(n_players, dtype=torch.bool, device=x.device),
            torch.ones(n_players, dtype=torch.bool, device=x.device),
        )
    )
    end_values = _coalition_values(f, x, baseline, ends[:, None, :], groups, max_batch)
    base, full = end_values[0], end_values[1]
    orderings = _orderings(n, n_players, pairs, generator, x.device)  # [M, n, P]
    rank = orderings.argsort(-1)  # the step at which each player joins
    steps = torch.arange(1, n_players, device=x.device)[None, :, None, None]
    present = rank[:, None] < steps  # [M, P - 1, n, P]: the coalitions inside each path
    inner = _coalition_values(f, x, baseline, present.flatten(0, 1), groups, max_batch)
    inner = inner.reshape(len(orderings), n_players - 1, n)
    m = len(orderings)
    chain = torch.cat((base.expand(m, 1, n), inner, full.expand(m, 1, n)), 1)  # [M, P+1, n]
    gains = (chain[:, 1:] - chain[:, :-1]).permute(2, 0, 1)  # [n, M, P], in path order
    who = orderings.cpu().permute(1, 0, 2)  # [n, M, P]: the player each gain belongs to
    phi = torch.zeros(n, n_players, dtype=torch.float64)
    phi.scatter_add_(1, who.flatten(1), gains.flatten(1))
    return phi / (2 * pairs), base


def use_exact(method: Literal["auto", "exact", "sampled"], n_players: int) -> bool:
    """Exact Shapley up to MAX_EXACT_PLAYERS players (16 coalitions), sampled beyond, with
    method ``auto``: the cost benchmark's crossing point."""
    return method == "exact" or (method == "auto" and n_players <= MAX_EXACT_PLAYERS)


def shapley(
    f: ValueFn,
    x: torch.Tensor,
    groups: Sequence[Sequence[int]],
    *,
    method: Literal["auto", "exact", "sampled"] = "auto",
    permutations: int = 16,
    baseline: Literal["zero", "noise"] = "zero",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shapley values by the ``infer.attribution_*`` settings: ``(phi [n, P], base [n])``.

    The one entry point of the catalog's attributions and the report's, so both follow the
    same rules: the ``noise`` baseline is unit-variance sky noise (the softening is about
    one sigma), and ``method`` picks exact or sampled (:func:`use_exact`).
    """
    sigma = [1.0] * x.shape[1] if baseline == "noise" else None
    absent = absent_baseline(x, baseline, noise_sigma=sigma, generator=generator)
    if use_exact(method, len(groups)):
        return shapley_exact(f, x, groups, absent)
    return shapley_sampled(f, x, groups, absent, permutations, generator)
