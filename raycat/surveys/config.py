"""Survey and band definitions from the YAML config: conventions as data, not code paths.

``cutouts.surveys`` adds surveys or overrides built-in ones (``raycat.surveys.bands``). A
survey that follows a known convention needs config only: ``like: hsc`` copies HSC's pixel
scale, file layout (image HDU, companions, field of view) and calibration (FLUXMAG0), then any
key given replaces the copied value. Bands copy a built-in band (``like: hsc_r``) or the first
band of the survey they belong to, and override what they state. For example::

    cutouts:
      bands: [hsclike_r]
      surveys:
        hsc_like:
          like: hsc
          bands:
            hsclike_r: {like: hsc_r, psf_fwhm: 0.7}
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from pydantic import Field

from raycat.section import StrictSection
from raycat.surveys.bands import (
    ALL_SURVEYS,
    BANDS,
    Band,
    Calibration,
    Companion,
    ReadLayout,
    Survey,
)


class CalibrationConfig(StrictSection):
    """How pixel values become AB fluxes (see ``raycat.surveys.bands.Calibration``)."""

    kind: Literal["fixed", "header", "exptime", "fluxmag0"] = Field(
        description="fixed: zero_point is the AB magnitude of one pixel unit; header: zero "
        "point from header `keyword` (fallback zero_point); exptime: zero_point + 2.5 "
        "log10(EXPTIME) (PS1); fluxmag0: 2.5 log10 of header `keyword`, default FLUXMAG0 (HSC)."
    )
    zero_point: float = Field(description="Zero point in magnitudes (or the fallback).")
    keyword: str | None = Field(None, description="Header keyword holding the zero point.")
    ab_offset: float = Field(0.0, description="Added to the zero point: Vega to AB (unWISE).")
    decompress: Literal["none", "ps1_asinh"] = Field(
        "none",
        description="ps1_asinh: undo the PS1 raw-stack BOFFSET/BSOFTEN compression "
        "where the header has both keywords.",
    )

    def build(self) -> Calibration:
        return Calibration(
            self.kind, self.zero_point, self.keyword, self.ab_offset, self.decompress
        )


class CompanionConfig(StrictSection):
    """A file that belongs to an image, named by a regex substitution on the image's URI."""

    kind: Literal["mask", "invvar"] = Field(description="What the companion holds.")
    pattern: str = Field(description="Regular expression matched in the image URI.")
    replacement: str = Field(description="What the match is replaced by.")


class BandConfig(StrictSection):
    """One band of a config-defined survey; unset keys come from `like`."""

    like: str | None = Field(
        None,
        description="Built-in band to copy (default: the band "
        "of the same name, else the survey's first band).",
    )
    filter_name: str | None = Field(None, description="speclite filter name.")
    psf_fwhm: float | None = Field(None, gt=0, description="Median PSF FWHM (arcsec).")
    depth_ab: float | None = Field(None, description="5-sigma point-source depth (AB mag).")
    unit: str | None = Field(None, description="Pixel unit (FITS BUNIT), for the docs.")
    calibration: CalibrationConfig | None = Field(
        None, description="Calibration of this band (overrides the survey's)."
    )


class SurveyConfig(StrictSection):
    """A survey added or overridden in config; unset keys come from `like`."""

    like: str | None = Field(
        None,
        description="Built-in survey whose conventions are copied "
        "(default: the built-in survey of the same name).",
    )
    pixel_scale: float | None = Field(None, gt=0, description="Native pixel scale (arcsec/px).")
    image_hdu: int | Literal["first"] | None = Field(
        None, description="HDU holding the image; `first`: the first image HDU with data."
    )
    fov_radius_deg: float | None = Field(
        None,
        ge=0,
        description="Pixels farther than this "
        "from the image centre are not data (GALEX: 0.6); "
        "0 turns the limit off.",
    )
    mask_bits: int | None = Field(
        None,
        ge=0,
        description="Pixels of the `mask` companion with "
        "any of these bits set are not data; 0 ignores the mask.",
    )
    invvar_nodata: bool | None = Field(
        None, description="Pixels whose `invvar` companion is 0 (no exposure) are not data."
    )
    companions: list[CompanionConfig] | None = Field(
        None, description="Companion files (mask, inverse variance)."
    )
    calibration: CalibrationConfig | None = Field(
        None, description="Calibration of every band of the survey."
    )
    bands: dict[str, BandConfig] = Field(
        default_factory=dict,
        description="Bands by raycat name; built-in bands of the survey are kept.",
    )


def _layout(cfg: SurveyConfig, base: ReadLayout) -> ReadLayout:
    """``base`` with the keys ``cfg`` sets replaced."""
    changes: dict[str, object] = {}
    if cfg.image_hdu is not None:
        changes["image_hdu"] = None if cfg.image_hdu == "first" else cfg.image_hdu
    if cfg.fov_radius_deg is not None:
        changes["fov_radius_deg"] = cfg.fov_radius_deg or None
    if cfg.mask_bits is not None:
        changes["mask_bits"] = cfg.mask_bits
    if cfg.invvar_nodata is not None:
        changes["invvar_nodata"] = cfg.invvar_nodata
    if cfg.companions is not None:
        changes["companions"] = tuple(
            Companion(c.kind, c.pattern, c.replacement) for c in cfg.companions
        )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def _base_survey(name: str, cfg: SurveyConfig) -> Survey:
    """The built-in survey ``cfg`` starts from; a new one without ``like`` needs all keys."""
    like = cfg.like or name
    if like in ALL_SURVEYS:
        return ALL_SURVEYS[like]
    if cfg.like:
        raise ValueError(
            f"survey {name}: like {cfg.like!r} is not a built-in survey ({', '.join(ALL_SURVEYS)})"
        )
    if cfg.pixel_scale is None:
        raise ValueError(f"survey {name}: a new survey needs `like` or `pixel_scale`")
    return Survey(name, cfg.pixel_scale, ())


def _band(
    name: str, cfg: BandConfig, template: Band | None, survey: Survey, survey_cfg: SurveyConfig
) -> Band:
    """One band: template (or like) with the survey-level, then band-level keys applied."""
    base = BANDS.get(cfg.like or name, template)
    if cfg.like and cfg.like not in BANDS:
        raise ValueError(f"band {name}: like {cfg.like!r} is not a built-in band")
    calibration = cfg.calibration or survey_cfg.calibration
    values = {
        "name": name,
        "survey": survey.name,
        "pixel_scale": survey.pixel_scale,
        "layout": survey.layout,
        **({"calibration": calibration.build()} if calibration else {}),
        **cfg.model_dump(
            include={"filter_name", "psf_fwhm", "depth_ab", "unit"}, exclude_none=True
        ),
    }
    if base is not None:
        return dataclasses.replace(base, **values)
    missing = {"filter_name", "psf_fwhm", "depth_ab", "calibration"} - set(values)
    if missing:
        raise ValueError(f"band {name}: needs `like` or {', '.join(sorted(missing))}")
    return Band(unit=cfg.unit or "", **{k: v for k, v in values.items() if k != "unit"})


def survey_bands(name: str, cfg: SurveyConfig) -> dict[str, Band]:
    """Every band of one config-defined survey (its built-in bands included), by name."""
    base = _base_survey(name, cfg)
    survey = dataclasses.replace(
        base,
        name=name,
        pixel_scale=cfg.pixel_scale or base.pixel_scale,
        layout=_layout(cfg, base.layout),
    )
    template = BANDS[base.bands[0]] if base.bands else None
    wanted = {b: BandConfig() for b in base.bands if name == base.name}
    wanted.update(cfg.bands)
    return {b: _band(b, c, template, survey, cfg) for b, c in wanted.items()}


def config_bands(surveys: dict[str, SurveyConfig]) -> dict[str, Band]:
    """All bands defined or overridden by the config's ``surveys`` section."""
    bands: dict[str, Band] = {}
    for name, cfg in surveys.items():
        bands.update(survey_bands(name, cfg))
    return bands
