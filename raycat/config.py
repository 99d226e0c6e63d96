"""The one YAML config, as pydantic models: every field documented, defaults that run the demo.

Validation errors are turned into one line that names the field (``ConfigError``), so the CLI
can print it without a traceback.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from raycat import schema as S
from raycat.errors import RaycatError
from raycat.runtime import RayConfig
from raycat.section import StrictSection
from raycat.surveys.bands import BAND_NAMES, Band, get_band
from raycat.surveys.config import (
    BandConfig,
    CalibrationConfig,
    CompanionConfig,
    SurveyConfig,
    config_bands,
)


class ConfigError(RaycatError, ValueError):
    """A bad config value or file; the message is one line that names the problem."""


_Section = StrictSection  # a typo in a key is an error, not a silent default
SURVEY_MODELS = (SurveyConfig, BandConfig, CalibrationConfig, CompanionConfig)  # for the docs


class DataConfig(_Section):
    """Where the objects and the tiles are."""

    objects: str = Field(
        "truth.parquet",
        description="Object list (Parquet, CSV or FITS "
        "table), a path or URL; relative paths are relative to `store`.",
    )
    store: str = Field(
        "demo-data/sky",
        description="Tile store root: a directory, s3://, gs:// "
        "or https:// URL. Tile URIs in the index are relative to it.",
    )
    tile_index: str | None = Field(
        None,
        description="Tile index, relative to `store` unless absolute: a partitioned index "
        "directory (`raycat index`, `raycat tiles`) or a single Parquet file; null uses "
        "`tile_index` under the store when it exists, else `tiles.parquet`.",
    )
    id_column: str = Field("id", description="Object id column.")
    ra_column: str = Field("ra", description="Right ascension column (deg, ICRS).")
    dec_column: str = Field("dec", description="Declination column (deg, ICRS).")
    z_column: str | None = Field(
        "z", description="Spectroscopic redshift column, or null when the objects have none."
    )
    ebv_column: str | None = Field(
        None,
        description="Milky Way reddening E(B-V) column (mag, finite and >= 0), fed to the "
        "network beside the pixels as one more input plane (as Mantis Shrimp does), or null. "
        "A model trained with it needs it at inference.",
    )
    duplicate_ids: Literal["error", "keep_one"] = Field(
        "error",
        description="Duplicate object ids: fail naming them, or keep one row per id "
        "(the same one on every run, chosen by position) flagged DUPLICATE_ID.",
    )
    read_attempts: int = Field(
        5,
        ge=1,
        le=20,
        description="Tries per tile read; transient "
        "object-store errors (throttling, resets, timeouts) are retried "
        "with exponential backoff, then the objects get READ_ERROR.",
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec options "
        "for the store (endpoint, anon...). Never put "
        "credentials here: use the AWS/GCS credential chains.",
    )


class CutoutConfig(_Section):
    """The common cutout grid and how tiles are read into it."""

    surveys: dict[str, SurveyConfig] = Field(
        default_factory=dict,
        description="Surveys added to or overriding the built-in ones "
        "(raycat/surveys/bands.py), by name: see the `surveys` entries below and "
        "docs/real_data.md.",
    )
    bands: list[str] = Field(
        default_factory=lambda: list(BAND_NAMES), description="Bands, in channel order."
    )
    size_px: int = Field(32, ge=8, le=512, description="Cutout side in output pixels.")
    pixel_scale: float = Field(1.0, gt=0, description="Output pixel scale (arcsec/px).")
    softening: dict[str, float] = Field(
        default_factory=dict,
        description="asinh softening per band in AB nanomaggies; default from the band's depth.",
    )
    read_mode: Literal["auto", "dense", "sparse"] = Field(
        "auto",
        description="dense: read and prepare once the part of each tile that a batch's "
        "objects cover (the whole tile, cached, when it is compressed); sparse: read only "
        "the pixels each cutout needs, object by object; auto: choose from objects per tile.",
    )
    dense_min_objects: int = Field(
        5,
        ge=1,
        description="auto mode reads a tile dense when a batch has at least this many "
        "objects on it (dense costs the area they cover, sparse a read per object).",
    )
    healpix_order: int | None = Field(
        None,
        ge=0,
        le=14,
        description="One HEALPix order for every work unit; null splits each pixel into "
        "its children until it holds at most objects_per_unit objects (mixed orders).",
    )
    objects_per_unit: int = Field(
        2000,
        ge=1,
        description="Most objects per work unit (= catalog partition) when healpix_order is null.",
    )
    actors: int = Field(1, ge=1, description="Maximum cutout actors (autoscaling pool).")
    cpus_per_actor: float = Field(
        0.5,
        gt=0,
        description="CPUs reserved per cutout actor; "
        "fractional so reads and actors share small machines.",
    )
    resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources each cutout actor requests, e.g. "
        '{"cutout_node": 1}: cutouts then run only on node types that declare them.',
    )
    output: str | None = Field(
        None,
        description="Optional Parquet dataset of cutouts (one folder per work unit), reused "
        "by training epochs and inference while its plan fingerprint (objects, tiles, bands, "
        "grid, softening, surveys) matches this config; `raycat cutouts` rebuilds it whole.",
    )
    _bands: dict[str, Band] = PrivateAttr(default_factory=dict)

    @field_validator("surveys")
    @classmethod
    def _valid_surveys(cls, surveys: dict[str, SurveyConfig]) -> dict[str, SurveyConfig]:
        config_bands(surveys)  # raises ValueError naming the bad survey or band
        return surveys

    @field_validator("bands")
    @classmethod
    def _known_bands(cls, bands: list[str], info: ValidationInfo) -> list[str]:
        if not bands:
            raise ValueError("no bands: list at least one")
        defined = config_bands(info.data.get("surveys") or {})
        for name in bands:
            try:
                get_band(name, defined)
            except RaycatError as err:  # pydantic reports only ValueError as a field error
                raise ValueError(str(err)) from None
        if len(set(bands)) != len(bands):
            raise ValueError("bands repeat")
        return bands

    @model_validator(mode="after")
    def _keep_bands(self) -> CutoutConfig:
        self._bands = config_bands(self.surveys)
        return self

    def band(self, name: str) -> Band:
        """The definition of band ``name``: config-defined first, then built-in."""
        return get_band(name, self._bands)


class ModelConfig(_Section):
    """The redshift classifier."""

    arch: Literal["resnet50", "tiny"] = Field(
        "resnet50", description="resnet50 (production) or tiny (a small twin for fast tests)."
    )
    z_min: float = Field(0.0, ge=0, description="Lower edge of the redshift grid.")
    z_max: float = Field(1.6, gt=0, description="Upper edge of the redshift grid.")
    n_bins: int = Field(400, ge=2, description="Redshift bins (classes).")
    stem: Literal["imagenet", "small"] = Field(
        "imagenet",
        description="imagenet: 7x7 stride-2 "
        "conv + maxpool (fast: the demo's choice on CPU); "
        "small: 3x3 stride-1 conv, no maxpool, keeps "
        "full resolution on small cutouts (16x the "
        "compute: a GPU setting).",
    )
    dropout: float = Field(0.2, ge=0, lt=1, description="Dropout before the head.")

    @model_validator(mode="after")
    def _ordered_grid(self) -> ModelConfig:
        if self.z_min >= self.z_max:  # else the grid is empty, found only after training reads
            raise ValueError(f"z_min ({self.z_min}) must be below z_max ({self.z_max})")
        return self


class TrainConfig(_Section):
    """Ray Train settings."""

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(128, ge=1, description="Per-worker batch size.")
    lr: float = Field(1e-3, gt=0, description="AdamW learning rate.")
    weight_decay: float = Field(1e-4, ge=0)
    num_workers: int = Field(1, ge=1, description="Ray Train workers.")
    use_gpu: bool = Field(False, description="Train on GPUs (bf16 autocast, channels_last).")
    resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources each training worker requests, e.g. "
        '{"gpu_node": 1}: workers then run only on node types that declare them.',
    )
    val_fraction: float = Field(
        0.15,
        gt=0,
        lt=1,
        description="Share of objects held out for validation, chosen by a hash of the id.",
    )
    max_class_weight: float = Field(
        10.0, ge=1, description="Cap on the inverse-frequency weight that flattens n(z)."
    )
    run_name: str = Field(
        "raycat-train",
        description="Ray Train run name; rerunning with the same name and storage resumes.",
    )
    storage_path: str = Field("demo-data/runs", description="Checkpoint storage (path or URL).")
    model_out: str = Field("demo-data/model", description="Where the model artifact is written.")
    seed: int = Field(0)
    max_failures: int = Field(
        3, ge=0, description="Worker failures survived by restarting from the last checkpoint."
    )
    init_from: str | None = Field(
        None,
        description="Start from this trained model artifact (path or URL; e.g. trained on a "
        "mock sky, to fine-tune on real data): its bands, arch, stem and redshift grid must "
        "match this config. null: random initialisation.",
    )
    freeze: Literal["none", "stem", "layer1", "layer2", "layer3", "layer4"] = Field(
        "none",
        description="With init_from: keep the network's weights (and BatchNorm statistics) "
        "fixed up to and including this block; the head always trains.",
    )
    finetune_lr: float = Field(
        1e-4, gt=0, description="Peak learning rate with init_from (in place of lr)."
    )

    @model_validator(mode="after")
    def _freeze_needs_init(self) -> TrainConfig:
        if self.freeze != "none" and not self.init_from:  # frozen random weights: a mistake
            raise ValueError(f"freeze {self.freeze!r} needs init_from (a trained model)")
        return self


_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
REGION_CONE_RE = re.compile(rf"^\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*$")
REGION_PIXELS_RE = re.compile(r"^\s*\d+\s*/\s*\d+(\s*,\s*\d+\s*/\s*\d+)*\s*$")
REGION_HELP = "a cone RA,DEC,RADIUS_DEG (degrees) or HEALPix pixels ORDER/PIX,ORDER/PIX,..."


class InferConfig(_Section):
    """Inference and catalog writing."""

    model: str = Field("demo-data/model", description="Model artifact directory (path or URL).")
    catalog: str = Field("demo-data/catalog", description="Output catalog root (path or URL).")
    catalog_name: str | None = Field(
        None,
        description="The catalog's HATS name (hats.properties obs_collection, what lsdb calls "
        "it); null: the last component of the catalog path.",
    )
    margin_arcsec: float | None = Field(
        None,
        gt=0,
        description="Also write a HATS margin catalog of this width (arcsec) under the catalog, "
        "with a collection.properties naming both, so lsdb crossmatches are right at partition "
        "edges; null: none (a margin an earlier run wrote is removed).",
    )
    batch_size: int = Field(
        256,
        ge=1,
        description="Rows per predictor call (one forward "
        "pass on a GPU; on a CPU, passes of 64 rows, which fit the caches).",
    )
    use_gpu: bool = Field(False)
    actors: int = Field(1, ge=1, description="Maximum predictor actors.")
    cpus_per_actor: float = Field(
        0.5,
        gt=0,
        description="CPUs per predictor actor on CPU "
        "inference (GPU predictors take one GPU and 0.25 CPU).",
    )
    resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources each predictor actor requests, e.g. "
        '{"gpu_node": 1}: predictors then run only on node types that declare them.',
    )
    pdf_dtype: Literal["float16", "float32"] = Field("float32")
    tta: Literal["none", "dihedral"] = Field(
        "none",
        description="Test-time symmetry: dihedral averages each PDF over the 8 rotations and "
        "flips of the cutout (exactly rotation-invariant; 8x the model cost, attributions "
        "included).",
    )
    passes: int = Field(
        3,
        ge=1,
        le=20,
        description="Streaming passes per job: when a pass "
        "ends with partitions unwritten (a lost node took rows in flight), the "
        "next pass redoes only those; finished partitions are never redone.",
    )
    mode: Literal["resume", "overwrite", "new"] = Field(
        "resume",
        description="resume: keep the partitions whose done marker matches the plan "
        "(objects, id hash, model, config), rewrite changed ones, remove vanished ones, at the "
        "catalog's own HEALPix order; overwrite: write a new version beside a catalog raycat "
        "wrote and switch to it when complete; new: refuse to write into an existing catalog.",
    )
    region: str | None = Field(
        None,
        description="Reprocess only the partitions a region "
        "touches: a cone 'RA,DEC,RADIUS_DEG' or HEALPix pixels "
        "'ORDER/PIX,...' (mode resume, same model and settings).",
    )
    retry_read_errors: bool = Field(
        True,
        description="A resume rewrites partitions with "
        "READ_ERROR objects (tiles unreadable last time).",
    )
    max_error_fraction: float = Field(
        0.01,
        ge=0,
        le=1,
        description="Fail the job, naming tiles "
        "at fault, when more than this fraction of the catalog's "
        "objects could not be read.",
    )
    lease_seconds: float = Field(
        600.0,
        ge=1,
        description="Lifetime of the catalog's writer "
        "lease, renewed every third of it while the job runs; another "
        "job may take over an expired lease.",
    )
    mc_dropout_passes: int = Field(
        0, ge=0, description="MC-dropout passes for epistemic uncertainty (0 = off)."
    )
    attributions: Literal["off", "bands", "surveys"] = Field(
        "off",
        description="Shapley attributions of z_mean to each band or survey "
        "(catalog columns attr_<player> and attr_baseline).",
    )
    attribution_method: Literal["auto", "exact", "sampled"] = Field(
        "auto",
        description="exact: all 2^P coalitions; sampled: antithetic permutations; "
        "auto: exact up to 4 players (surveys: 8 passes, ~8x the PDF-only cost), sampled "
        "beyond (bands exact would be 512 passes, ~520x; sampled M=16 is 130 passes), as "
        "measured by benchmarks/attribute.py.",
    )
    attribution_permutations: int = Field(
        16,
        ge=2,
        description="Permutations M for the sampled method (rounded up to an even number).",
    )
    attribution_baseline: Literal["zero", "noise"] = Field(
        "zero",
        description="An absent player's pixels: zero (the sky after normalisation) "
        "or unit-variance noise (the sky noise, since the softening is ~1 sigma).",
    )

    @field_validator("region")
    @classmethod
    def _region_syntax(cls, region: str | None) -> str | None:
        if region is not None and not (
            REGION_CONE_RE.match(region) or REGION_PIXELS_RE.match(region)
        ):
            raise ValueError(f"{region!r} is not {REGION_HELP}")
        return region

    @model_validator(mode="after")
    def _safe_catalog_name(self) -> InferConfig:
        """The HATS name, given or taken from the path, is one safe path component (lsdb
        names directories after it)."""
        name = self.hats_name
        if not S.CATALOG_NAME_RE.match(name):
            raise ValueError(
                f"catalog_name {name!r} is not a safe name ({S.CATALOG_NAME_HELP}): "
                "set infer.catalog_name"
            )
        return self

    @property
    def hats_name(self) -> str:
        """The catalog's HATS name: ``catalog_name``, else the last component of ``catalog``."""
        return self.catalog_name or S.default_catalog_name(self.catalog)


# Cutout settings that change cost, not numbers: left out of the config hash, so a resume
# with another work-unit size or pool keeps its partitions.
CUTOUT_COST_KNOBS = (
    "output",
    "healpix_order",
    "objects_per_unit",
    "actors",
    "cpus_per_actor",
    "resources",
    "read_mode",
    "dense_min_objects",
)


class RaycatConfig(_Section):
    """The whole config file."""

    model_config = ConfigDict(hide_input_in_errors=True)  # errors never repeat a value

    data: DataConfig = Field(default_factory=DataConfig)
    cutouts: CutoutConfig = Field(default_factory=CutoutConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    infer: InferConfig = Field(default_factory=InferConfig)
    ray: RayConfig = Field(default_factory=RayConfig)

    @model_validator(mode="after")
    def _no_credentials(self) -> RaycatConfig:
        path = _credential_key(self)
        if path:  # never the value: a message ends up in logs and job output
            raise PydanticCustomError("credential", "{path}: " + CREDENTIAL_HELP, {"path": path})
        return self

    def config_hash(self) -> str:
        """Short stable hash of the settings that change the catalog's numbers (not of where
        cutouts go or how the work is cut up and scheduled)."""
        payload = self.model_dump(include={"cutouts", "model"}, mode="json")
        for knob in CUTOUT_COST_KNOBS:
            payload["cutouts"].pop(knob, None)
        if self.infer.tta != "none":  # changes every PDF; absent by default: same old hashes
            payload["infer.tta"] = self.infer.tta
        if not payload["cutouts"]["surveys"]:  # keeps the hashes of existing catalogs
            payload["cutouts"].pop("surveys")
        text = json.dumps(payload, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# Keys that hold a secret, in any dict of the config (storage options, client kwargs, headers,
# ...), matched by word after splitting snake_case, camelCase and kebab-case: key, secret,
# token, password, aws_access_key_id, aws_secret_access_key, client_secret, sas_token,
# AccountKey, SSECustomerKey, Authorization... A KMS key id is a name, not a secret.
CREDENTIAL_WORDS = frozenset(
    {
        "key",
        "keys",
        "secret",
        "secrets",
        "token",
        "tokens",
        "password",
        "passwd",
        "passphrase",
        "credential",
        "credentials",
        "sas",
        "auth",
        "authorization",
        "cookie",
        "sig",
        "signature",
    }
)
CREDENTIAL_NAMES = frozenset({"connection_string", "connectionstring", "pwd"})
CREDENTIAL_HELP = (
    "looks like a credential; configs are not secret, so credentials are refused "
    "here: use the standard AWS/GCS credential chains (AWS_* environment "
    "variables, ~/.aws/credentials, an instance role; "
    "GOOGLE_APPLICATION_CREDENTIALS, gcloud auth)"
)


def is_credential_key(name: str) -> bool:
    """Whether a mapping key names a credential (case-insensitive, any word style)."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", str(name)).lower()
    words = [w for w in re.split(r"[^a-z0-9]+", snake) if w]
    if any("kms" in word for word in words):  # SSEKMSKeyId, kms_key_id: names, not secrets
        return False
    return bool(CREDENTIAL_WORDS.intersection(words)) or "_".join(words) in CREDENTIAL_NAMES


def refuse_credentials(options: Any, where: str) -> None:
    """ConfigError naming the first credential-like key in ``options`` (never its value);
    for options that do not come through a config file, e.g. ``--storage-options``."""
    path = _credential_key(options, where)
    if path:
        raise ConfigError(f"{path}: {CREDENTIAL_HELP}")


def _credential_key(value: Any, path: str = "") -> str | None:
    """The dotted path of the first credential-like key in any dict inside ``value``."""
    if isinstance(value, BaseModel):
        for name in type(value).model_fields:
            found = _credential_key(getattr(value, name), f"{path}.{name}" if path else name)
            if found:
                return found
    elif isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}"
            if is_credential_key(key):
                return where
            found = _credential_key(item, where)
            if found:
                return found
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found = _credential_key(item, f"{path}[{i}]")
            if found:
                return found
    return None


def _one_line(err: ValidationError) -> str:
    first = err.errors()[0]
    field = ".".join(str(p) for p in first["loc"])
    extra = f" ({len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"config: {field + ': ' if field else ''}{first['msg']}{extra}"


def parse_config(data: dict | None) -> RaycatConfig:
    """Validate a config mapping; raise ConfigError with a one-line message on bad values."""
    if data is not None and not isinstance(data, dict):
        raise ConfigError("config: top level must be a mapping of sections")
    try:
        return RaycatConfig.model_validate(data or {})
    except ValidationError as err:
        raise ConfigError(_one_line(err)) from None


def load_config(url: str, storage_options: dict | None = None) -> RaycatConfig:
    """Read and validate a YAML config from a path or URL (``yaml.safe_load`` only)."""
    import fsspec
    import yaml

    try:
        with fsspec.open(url, "r", **(storage_options or {})) as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {url}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config {url}: not valid YAML ({err.__class__.__name__})") from None
    except Exception as err:  # unreachable store, no credentials, bad URL: say which, briefly
        first = (str(err).strip().splitlines() or [""])[0]
        raise ConfigError(f"cannot read config {url}: {type(err).__name__}: {first}") from None
    return parse_config(data)


def reference_markdown() -> str:
    """docs/configuration.md, generated from the models so the docs match the code."""
    lines = [
        "# Configuration reference",
        "",
        "One YAML file with these sections; every key is optional (the defaults run the",
        "demo). Generated from `raycat/config.py` by `make docs`; a test keeps it current.",
        "",
    ]
    for section, info in RaycatConfig.model_fields.items():
        model = info.annotation
        assert isinstance(model, type) and issubclass(model, StrictSection)  # every section
        lines += [
            f"## `{section}`",
            "",
            (model.__doc__ or "").strip(),
            "",
            "| key | default | meaning |",
            "|---|---|---|",
        ]
        for name, field in model.model_fields.items():
            default = field.get_default(call_default_factory=True)
            text = json.dumps(default) if len(json.dumps(default)) < 60 else "(see text)"
            lines.append(f"| `{name}` | `{text}` | {field.description or ''} |")
        lines.append("")
    return "\n".join(lines + _models_markdown(SURVEY_MODELS))


def _models_markdown(models) -> list[str]:
    """One table per nested model (the entries of `cutouts.surveys`)."""
    lines = [
        "## `cutouts.surveys` entries",
        "",
        "Each entry of `cutouts.surveys` is a `SurveyConfig`; see docs/real_data.md.",
        "",
    ]
    for model in models:
        lines += [
            f"### `{model.__name__}`",
            "",
            (model.__doc__ or "").strip(),
            "",
            "| key | default | meaning |",
            "|---|---|---|",
        ]
        for name, field in model.model_fields.items():
            default = (
                "required"
                if field.is_required()
                else json.dumps(field.get_default(call_default_factory=True))
            )
            lines.append(f"| `{name}` | `{default}` | {field.description or ''} |")
        lines.append("")
    return lines
