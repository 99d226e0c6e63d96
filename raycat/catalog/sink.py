"""The catalog stage on Ray Data: gather predicted rows by work unit, write each unit whole.

Rows of one work unit can arrive in several batches (and in any order). The sink knows how
many objects each unit holds and the hash of their ids (from the plan), keeps a unit's rows
until the last one arrives, checks they are exactly the planned objects and then writes the
unit as one catalog partition with its done marker. One sink actor sees every row, so a unit
is never split between writers; it holds only the units still in flight. Before each write
it checks that its job still holds the catalog's lease.
"""

from __future__ import annotations

import numpy as np

from raycat import schema
from raycat.catalog.keys import label
from raycat.errors import RaycatError
from raycat.plan.idhash import id_set_hash


class PartitionSink:
    """Ray Data actor: writes complete work units; returns one row (unit, rows) per unit
    written. What a partition holds (flag counts, id hash...) is in its done marker.

    Units are NUNIQ keys of any order (``raycat.healpix.unit_key``), in the rows'
    ``work_unit`` column and in ``unit_counts`` / ``unit_hashes``.

    ``root`` is the version being written (the catalog, or an overwrite's staged version);
    ``lease_url`` the catalog whose lease ``job_id`` holds. ``parquet_kwargs``: HATS' write
    settings for ``catalog_schema`` (``raycat.catalog.parquet``), worked out
    once by the driver so this process never imports hats.
    """

    def __init__(
        self,
        root: str,
        storage_options: dict | None,
        catalog_schema,
        unit_counts: dict[int, int],
        unit_hashes: dict[int, int],
        lease_url: str,
        job_id: str,
        parquet_kwargs: dict | None = None,
    ):
        from raycat.catalog.write import CatalogWriter

        self.writer = CatalogWriter(
            root,
            catalog_schema,
            mode=None,
            storage_options=storage_options,
            parquet_kwargs=parquet_kwargs,
        )
        self.expected = {int(k): int(v) for k, v in unit_counts.items()}
        self.hashes = {int(k): int(v) for k, v in unit_hashes.items()}
        self.lease = (lease_url, storage_options, job_id)
        self.pending: dict[int, list[dict]] = {}
        # the catalog schema names every column; what the writer does not derive, the
        # Predictor's rows carry as they are (z_spec, attributions, ...)
        self.extra = [n for n in catalog_schema.names if n not in schema.CATALOG_DERIVED]

    def __call__(self, batch: dict) -> dict:
        units = np.asarray(batch[schema.WORK_UNIT])
        written, rows = [], []
        for unit in np.unique(units).tolist():
            part = {k: np.asarray(v)[units == unit] for k, v in batch.items()}
            self.pending.setdefault(unit, []).append(part)
            have = sum(len(p[schema.ID]) for p in self.pending[unit])
            if have > self.expected[unit]:
                raise RuntimeError(
                    f"work unit {label(unit)}: {have} rows for {self.expected[unit]} "
                    "objects (rows were duplicated upstream)"
                )
            if have == self.expected[unit]:
                self._write(unit, self.pending.pop(unit))
                written.append(unit)
                rows.append(have)
        return {
            schema.WORK_UNIT: np.array(written, dtype=np.int64),
            "rows": np.array(rows, dtype=np.int64),
        }

    def _write(self, unit: int, parts: list[dict]) -> None:
        """Write one work unit as one partition (with its done marker)."""
        from raycat.catalog.job import holds_lease
        from raycat.catalog.write import partition_table

        cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        if id_set_hash(cat[schema.ID]) != self.hashes[unit]:
            raise RuntimeError(f"work unit {label(unit)}: its ids are not the planned ones")
        if not holds_lease(*self.lease):
            raise RaycatError(f"catalog {self.lease[0]}: this job lost its lease; stopped")
        extra = {name: cat[name] for name in self.extra}
        table = partition_table(
            self.writer.schema,
            ids=cat[schema.ID],
            ra=cat[schema.RA],
            dec=cat[schema.DEC],
            flags=cat[schema.FLAGS],
            pdf=cat[schema.PDF],
            extra=extra,
        )
        tiles = cat.get(schema.READ_ERROR_TILE, np.array([], dtype=object))
        self.writer.write_partition(unit, table, {str(t) for t in tiles if t})
