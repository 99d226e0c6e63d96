"""The catalog's schema and its raycat metadata: what every partition carries.

Shared by the writer and the readers: the Arrow schema with one column per catalog field,
and the bin edges, bands, model id, config hash, version and PDF calibration stored in its
metadata.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from raycat import __version__
from raycat import schema as S
from raycat.errors import RaycatError

if TYPE_CHECKING:
    from raycat.photoz.model import ArtifactMeta

# Which PDF calibration the catalog's PDFs carry (JSON): the artifact's steps (prior,
# temperature, pit_map; raycat.photoz.calibrate) and the test-time symmetry (infer.tta).
META_CALIBRATION = b"raycat.calibration"


def catalog_schema(
    bin_edges: Sequence[float] | np.ndarray,
    bands: Sequence[str],
    *,
    model_id: str,
    config_hash: str,
    pdf_dtype: str = "float32",
    attr_players: Sequence[str] = (),
    has_z_spec: bool = False,
    has_epistemic: bool = False,
    id_type: pa.DataType | None = None,
    calibration: dict | None = None,
) -> pa.Schema:
    """The Arrow schema of the catalog, with the raycat metadata in the schema.

    ``pdf`` is a nullable fixed-size list with one value per bin; the attribution columns
    (``attr_<player>`` plus ``attr_baseline``) exist when ``attr_players`` is not empty.
    ``id_type`` is the plan's (``raycat.plan.objects``): int64 (the default) or string, so
    the catalog holds every id exactly as the object list gave it. ``calibration`` (what
    :func:`schema_for_artifact` records) goes under ``raycat.calibration`` when given.
    """
    id_type = pa.int64() if id_type is None else id_type
    if id_type not in (pa.int64(), pa.string(), pa.large_string()):
        raise RaycatError(f"catalog: ids are int64 or string, not {id_type}")
    n_bins = len(bin_edges) - 1
    value_type = {"float32": pa.float32(), "float16": pa.float16()}[pdf_dtype]
    f32 = pa.float32()
    fields = [
        pa.field(S.ID, id_type, nullable=False),
        pa.field(S.RA, pa.float64()),
        pa.field(S.DEC, pa.float64()),
        pa.field(S.HEALPIX_29, pa.int64(), nullable=False),
    ]
    fields += [pa.field(name, f32) for name in S.POINT_ESTIMATES]
    fields += [
        pa.field(S.PDF, pa.list_(value_type, n_bins)),
        pa.field(S.FLAGS, pa.int32(), nullable=False),
    ]
    if has_z_spec:
        fields.append(pa.field(S.Z_SPEC, f32))
    if has_epistemic:
        fields.append(pa.field(S.Z_STD_EPISTEMIC, f32))
    fields += [pa.field(S.attr_column(p), f32) for p in attr_players]
    if attr_players:
        fields.append(pa.field(S.ATTR_BASELINE, f32))
    metadata = {
        S.META_BIN_EDGES: json.dumps([float(e) for e in bin_edges]),
        S.META_BANDS: json.dumps(list(bands)),
        S.META_MODEL_ID: model_id,
        S.META_CONFIG_HASH: config_hash,
        S.META_VERSION: __version__,
    }
    if calibration is not None:
        metadata[META_CALIBRATION] = json.dumps(calibration, sort_keys=True)
    return pa.schema(fields, metadata=metadata)


def schema_for_artifact(
    meta: ArtifactMeta, *, config_hash: str | None = None, tta: str = "none", **options
) -> pa.Schema:
    """:func:`catalog_schema` for a model artifact (grid, bands, model id and the PDF
    calibration from its meta; ``tta`` is ``infer.tta``)."""
    return catalog_schema(
        meta.bin_edges,
        meta.bands,
        model_id=meta.model_id,
        config_hash=config_hash or meta.config_hash,
        calibration={**meta.calibration.summary(), "tta": tta},
        **options,
    )


@dataclass(frozen=True)
class CatalogInfo:
    """The raycat metadata of a catalog, decoded from its schema."""

    bin_edges: np.ndarray
    bands: list[str]
    model_id: str
    config_hash: str
    version: str
    calibration: dict | None = None  # None: a catalog written before raycat recorded it

    @classmethod
    def from_schema(cls, schema: pa.Schema) -> CatalogInfo:
        meta = schema.metadata or {}
        if S.META_MODEL_ID not in meta:
            raise RaycatError("not a raycat catalog: no raycat metadata in its Parquet schema")
        return cls(
            np.asarray(json.loads(meta[S.META_BIN_EDGES])),
            json.loads(meta[S.META_BANDS]),
            meta[S.META_MODEL_ID].decode(),
            meta[S.META_CONFIG_HASH].decode(),
            meta[S.META_VERSION].decode(),
            json.loads(meta[META_CALIBRATION]) if META_CALIBRATION in meta else None,
        )
