"""Observing domains of the mock sky: typed overrides of what the simulator draws.

A domain is data, not code: a :class:`SkyDomain` names per-band PSF FWHMs and 5-sigma depths
that replace the built-in band definitions (``raycat.surveys.bands``), target-population
shares and SED-type mixes that replace :data:`raycat.sky.population.POPULATIONS`' own, and the
Milky Way E(B-V) field (:mod:`raycat.sky.extinction`). Whatever a domain leaves out keeps the
built-in value, so ``default`` (no overrides, no extinction) is the mock sky as it always was,
bit for bit. ``raycat simulate --domain NAME`` picks one from :data:`DOMAINS`.
"""

from __future__ import annotations

from dataclasses import replace

from pydantic import Field, field_validator

from raycat.errors import RaycatError
from raycat.section import StrictSection
from raycat.sky.extinction import ExtinctionField
from raycat.sky.population import POPULATIONS, Population
from raycat.sky.sed import TEMPLATES
from raycat.surveys.bands import BAND_NAMES, BANDS, Band

MOCK_BANDS: tuple[str, ...] = BAND_NAMES  # the nine bands the mock sky draws
POPULATION_NAMES: tuple[str, ...] = tuple(p.name for p in POPULATIONS)


def _check_names(values: dict, known: tuple[str, ...], what: str) -> None:
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"unknown {what} {', '.join(unknown)}; known: {', '.join(known)}")


def _check_weights(weights: dict[str, float], what: str) -> None:
    if any(w < 0 for w in weights.values()) or not sum(weights.values()) > 0:
        raise ValueError(f"{what} must be non-negative with a positive sum, got {weights}")


def _normalised(weights: dict[str, float]) -> dict[str, float]:
    """Weights summing to 1, zero ones left out."""
    total = sum(weights.values())
    return {name: w / total for name, w in weights.items() if w > 0}


class SkyDomain(StrictSection):
    """One observing setup of the mock sky; every field left empty keeps the built-in value."""

    name: str = Field(description="Registry name (`raycat simulate --domain NAME`).")
    description: str = Field("", description="One line on what the setup stands for.")
    psf_fwhm: dict[str, float] = Field(
        default_factory=dict,
        description="PSF FWHM (arcsec) per band, replacing the band's built-in value; it sets "
        "the drawn PSF, the header PSFFWHM and (with the depth) the per-pixel noise.",
    )
    depth_ab: dict[str, float] = Field(
        default_factory=dict,
        description="5-sigma point-source depth (AB) per band, replacing the built-in value: "
        "the per-pixel noise (header SKYSIG) follows from it and the PSF.",
    )
    population_shares: dict[str, float] = Field(
        default_factory=dict,
        description="Target share per population (bright, lrg, elg), normalised to sum to 1; "
        "all three must be given when any is.",
    )
    sed_mix: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="Per population, disk SED-template weights (E, Sbc, Scd, Im), "
        "normalised; replaces that population's own mix.",
    )
    extinction: ExtinctionField = Field(
        default_factory=ExtinctionField,
        description="The Milky Way E(B-V) field applied to every band's flux (off by default).",
    )

    @field_validator("psf_fwhm", "depth_ab")
    @classmethod
    def _known_positive_bands(cls, values: dict[str, float]) -> dict[str, float]:
        _check_names(values, MOCK_BANDS, "band")
        if any(not v > 0 for v in values.values()):
            raise ValueError(f"values must be positive, got {values}")
        return values

    @field_validator("population_shares")
    @classmethod
    def _all_shares(cls, shares: dict[str, float]) -> dict[str, float]:
        _check_names(shares, POPULATION_NAMES, "population")
        if shares and set(shares) != set(POPULATION_NAMES):
            raise ValueError(f"give a share for every population: {', '.join(POPULATION_NAMES)}")
        if shares:
            _check_weights(shares, "population shares")
        return shares

    @field_validator("sed_mix")
    @classmethod
    def _known_templates(cls, mix: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        _check_names(mix, POPULATION_NAMES, "population")
        for population, weights in mix.items():
            _check_names(weights, TEMPLATES, "SED template")
            _check_weights(weights, f"sed_mix of {population}")
        return mix

    def band(self, name: str) -> Band:
        """The band as this domain observes it (the built-in one when not overridden)."""
        info = BANDS[name]
        if name not in self.psf_fwhm and name not in self.depth_ab:
            return info  # the very object: the default domain draws exactly as before
        return replace(
            info,
            psf_fwhm=self.psf_fwhm.get(name, info.psf_fwhm),
            depth_ab=self.depth_ab.get(name, info.depth_ab),
        )

    def bands(self) -> dict[str, Band]:
        """Every mock band as this domain observes it."""
        return {name: self.band(name) for name in MOCK_BANDS}

    def populations(self) -> tuple[Population, ...]:
        """The target populations with this domain's shares and SED mixes."""
        total = sum(self.population_shares.values())
        changed = []
        for pop in POPULATIONS:
            changes: dict = {}
            if self.population_shares:  # all or none are given (validated)
                changes["share"] = self.population_shares[pop.name] / total
            if pop.name in self.sed_mix:
                changes["types"] = _normalised(self.sed_mix[pop.name])
            changed.append(replace(pop, **changes) if changes else pop)
        return tuple(changed)


# The Milky Way as a second setup sees it: E(B-V) ~ 0.03 at the poles, ~0.045 at the
# field's b = 42 deg (COSMOS has 0.018 in SFD: this sky is dustier), varying by ~40% over
# 0.1 deg, so objects of one sky span a useful range of E(B-V).
MILKY_WAY = ExtinctionField(ebv_pole=0.03, scatter=0.4, scale_deg=0.1)

DOMAINS: dict[str, SkyDomain] = {
    "default": SkyDomain(
        name="default",
        description="the built-in setup: GALEX MIS, PS1 3pi stacks, unWISE; no extinction",
    ),
    "shifted": SkyDomain(
        name="shifted",
        description="a second setup playing the real sky: worse seeing, shallower, "
        "more star-forming targets, Milky Way extinction",
        psf_fwhm={
            "galex_fuv": 4.5,
            "galex_nuv": 5.6,
            "ps1_g": 1.70,
            "ps1_r": 1.55,
            "ps1_i": 1.45,
            "ps1_z": 1.40,
            "ps1_y": 1.35,
            "unwise_w1": 6.4,
            "unwise_w2": 7.1,
        },
        depth_ab={  # GALEX at AIS depth (Bianchi et al. 2017); others ~0.5 mag shallower
            "galex_fuv": 20.0,
            "galex_nuv": 20.9,
            "ps1_g": 22.8,
            "ps1_r": 22.7,
            "ps1_i": 22.6,
            "ps1_z": 21.8,
            "ps1_y": 20.9,
            "unwise_w1": 20.2,
            "unwise_w2": 19.6,
        },
        population_shares={"bright": 0.15, "lrg": 0.25, "elg": 0.60},
        sed_mix={
            "bright": {"E": 0.15, "Sbc": 0.30, "Scd": 0.30, "Im": 0.25},
            "elg": {"Sbc": 0.10, "Scd": 0.35, "Im": 0.55},
        },
        extinction=MILKY_WAY,
    ),
    "dusty": SkyDomain(
        name="dusty",
        description="the default setup seen through the same Milky Way dust as `shifted`",
        extinction=MILKY_WAY,
    ),
}


def get_domain(domain: str | SkyDomain) -> SkyDomain:
    """The registered domain called ``domain`` (a :class:`SkyDomain` is returned as is)."""
    if isinstance(domain, SkyDomain):
        return domain
    if domain not in DOMAINS:
        raise RaycatError(f"unknown sky domain {domain!r}; known: {', '.join(DOMAINS)}")
    return DOMAINS[domain]
