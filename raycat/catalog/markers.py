"""Done markers: what each finished partition holds, the catalog's half of its contract with
the plan.

A marker is written after its partition's file (``_raycat_done/Norder=k_Npix=n.done``, small
JSON; partitions of any order). It records the pixel, the number of objects and the hash of
their ids (the planner computes the same two per work unit, ``raycat.plan.idhash``), the model
and the hash of the settings that change the numbers, objects per flag and a few tiles that
could not be read.
A resume keeps a partition only when its marker matches the new plan on all of these.
Markers are named by (order, pixel) on disk and found by NUNIQ key (``raycat.catalog.keys``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa

from raycat import schema as S
from raycat.catalog.atomic import remove_files
from raycat.catalog.keys import key_of_marker, marker_relpath, order_pixel
from raycat.fsutil import put_atomic
from raycat.healpix import unit_key
from raycat.plan.idhash import format_hash, id_set_hash

MAX_ERROR_TILES = 5  # tile URIs a marker keeps of those that gave READ_ERROR


@dataclass(frozen=True)
class DoneMarker:
    """What one finished partition holds.

    Attributes
    ----------
    order, pixel : int
        The partition's HEALPix pixel (nested).
    rows : int
        Objects in the partition (0: the pixel is done and has no file).
    id_hash : str
        Hash of the set of its ids, 16 hex digits (``raycat.plan.idhash``).
    model_id, config_hash : str
        The model artifact that predicted it and ``RaycatConfig.config_hash()`` of the run.
    flags : dict
        Objects per flag name (non-zero counts only).
    error_tiles : tuple of str
        Up to ``MAX_ERROR_TILES`` tile URIs that could not be read for its objects.
    """

    order: int
    pixel: int
    rows: int
    id_hash: str
    model_id: str
    config_hash: str
    flags: dict[str, int] = field(default_factory=dict)
    error_tiles: tuple[str, ...] = ()

    @property
    def key(self) -> int:
        """The partition's NUNIQ key (``raycat.healpix.unit_key``)."""
        return unit_key(self.order, self.pixel)

    @classmethod
    def of_table(
        cls,
        key: int,
        table: pa.Table,
        *,
        model_id: str,
        config_hash: str,
        error_tiles: Iterable[str] = (),
    ) -> DoneMarker:
        """The marker of the partition ``key`` about to be written as ``table``."""
        flags = np.asarray(table[S.FLAGS])
        counts = {str(f.name): int(np.count_nonzero(flags & int(f))) for f in S.Flag}
        return cls(
            *order_pixel(key),
            table.num_rows,
            format_hash(id_set_hash(np.asarray(table[S.ID]))),
            model_id,
            config_hash,
            {name: n for name, n in counts.items() if n},
            tuple(sorted(set(error_tiles)))[:MAX_ERROR_TILES],
        )

    @property
    def read_errors(self) -> int:
        """Objects flagged READ_ERROR (a resume retries the partition)."""
        return self.flags.get(S.Flag.READ_ERROR.name or "", 0)

    def matches(self, rows: int, id_hash: int, model_id: str, config_hash: str) -> bool:
        """True when the partition holds exactly these objects, by this model and settings."""
        return (self.rows, self.id_hash, self.model_id, self.config_hash) == (
            rows,
            format_hash(id_hash),
            model_id,
            config_hash,
        )

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, blob: bytes, key: int) -> DoneMarker | None:
        """The marker in ``blob`` (of the partition ``key``, from its file name); None if
        unreadable. A marker of an older raycat (no id hash or config hash) reads with empty
        ones, so it never matches a plan."""
        try:
            raw = json.loads(blob)
            return cls(
                *order_pixel(key),
                int(raw["rows"]),
                str(raw.get("id_hash", "")),
                str(raw.get("model_id", "")),
                str(raw.get("config_hash", "")),
                {str(k): int(v) for k, v in raw.get("flags", {}).items()},
                tuple(str(t) for t in raw.get("error_tiles", ())),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return None


def marker_path(root: str, key: int) -> str:
    return f"{root}/{marker_relpath(key)}"


def write_marker(fs, root: str, marker: DoneMarker) -> None:
    """Put a marker in place, whole (the partition's file must already be in place)."""
    put_atomic(fs, marker_path(root, marker.key), marker.to_json())


def read_markers(fs, root: str) -> dict[int, DoneMarker | None]:
    """Every marker of the catalog at ``root`` by NUNIQ key, every order: one listing and
    one concurrent fetch; an unreadable marker (a crash of an older raycat) maps to None."""
    directory = f"{root}/{S.DONE_DIR}"
    fs.invalidate_cache(directory)
    if not fs.exists(directory):
        return {}
    keys = {}
    for path in fs.ls(directory, detail=False):
        key = key_of_marker(path)
        if key is not None:
            keys[path] = key
    blobs = fs.cat(list(keys), on_error="return") if keys else {}
    markers: dict[int, DoneMarker | None] = {}
    for path, key in keys.items():
        blob = blobs.get(path)
        markers[key] = DoneMarker.from_json(blob, key) if isinstance(blob, bytes) else None
    return markers


def remove_markers(fs, root: str, keys: Iterable[int]) -> None:
    """Remove the markers of these partitions, by key (their files are then redone)."""
    remove_files(fs, [marker_path(root, key) for key in keys])
