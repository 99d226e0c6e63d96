"""One inference job's hold on a catalog: its lease, the version it writes, and what it does
with each partition.

``CatalogJob`` is a context manager around a job that writes a catalog:

1. before writing anything, a root holding files raycat did not write is refused;
2. the lease is taken (a second job is refused, naming the holder), a switch a crash
   interrupted is finished and crashed jobs' leftovers removed (only under the lease);
3. ``mode`` picks the version written: the catalog itself (resume, new) or a staged version
   beside it (overwrite), switched in only once it is complete;
4. ``partitioning`` gives the planner the version's partitions (NUNIQ keys of mixed
   orders) to keep; ``reconcile`` compares the plan with the done markers
   (``raycat.catalog.resume``); ``begin`` removes the markers of partitions to rewrite;
   ``finish`` removes vanished partitions, fails on too many unreadable objects, writes the
   HATS metadata (``catalog_name`` is the HATS name) and, for an overwrite, switches
   versions; then the margin catalog is rebuilt (``margin_arcsec``) or removed
   (``raycat.catalog.margin``).
"""

from __future__ import annotations

from itertools import chain

import pyarrow as pa

from raycat import fsutil
from raycat import schema as S
from raycat.catalog.atomic import remove_files, remove_temp_files
from raycat.catalog.info import CatalogInfo
from raycat.catalog.keys import partition_relpath
from raycat.catalog.lease import Lease, read_holder
from raycat.catalog.margin import remove_margin, sync_margin
from raycat.catalog.markers import DoneMarker, read_markers, remove_markers
from raycat.catalog.metadata import finalize
from raycat.catalog.read import existing_schema, partition_keys
from raycat.catalog.region import Region
from raycat.catalog.resume import Reconciliation, UnitPlan, existing_partitioning, reconcile
from raycat.catalog.versions import (
    foreign_error,
    ownership,
    recover_switch,
    remove_leftovers,
    remove_version,
    switch_versions,
)
from raycat.catalog.write import CatalogWriter, check_compatible
from raycat.errors import RaycatError

NEW_VERSION_HELP = "write a new catalog version (another infer.catalog path) or use mode overwrite"


class CatalogJob:
    """The catalog side of one inference job (see the module docstring).

    ``notes`` collects what the job found and did beyond the plan (a finished switch, kept
    foreign files), for the caller's log.
    """

    def __init__(
        self,
        url: str,
        storage_options: dict | None,
        *,
        model_id: str,
        config_hash: str,
        mode: str,
        lease_seconds: float,
        region: str | None = None,
        catalog_name: str | None = None,
        margin_arcsec: float | None = None,
    ):
        self.url, self.options = url, dict(storage_options or {})
        self.catalog_name = catalog_name or S.default_catalog_name(url)  # its HATS name
        self.margin_arcsec = margin_arcsec
        self.fs, root = fsutil.filesystem(url, storage_options)
        self.root = root.rstrip("/")
        self.model_id, self.config_hash, self.mode = model_id, config_hash, mode
        self.region = Region.parse(region) if region else None
        if self.region is not None and mode != "resume":
            raise RaycatError(
                f"--region reprocesses part of an existing catalog: use mode resume, not {mode}"
            )
        self.staged = mode == "overwrite"
        self.target = f"{self.root}/{S.STAGING_DIR}" if self.staged else self.root
        self.target_url = f"{url.rstrip('/')}/{S.STAGING_DIR}" if self.staged else url
        self.lease = Lease(self.fs, self.root, url, lease_seconds)
        self.notes: list[str] = []
        self.markers: dict[int, DoneMarker | None] = {}  # by NUNIQ key, as the files
        self.files: set[int] = set()

    @property
    def job_id(self) -> str:
        return self.lease.job_id

    def __enter__(self) -> CatalogJob:
        state, names = ownership(self.fs, self.root)
        if state == "foreign":  # refused before the lease: nothing is written there
            raise foreign_error(self.url, names)
        self.lease.__enter__()
        try:
            self._open()
        except BaseException:
            self.lease.release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.lease.release()

    # -- opening --
    def _open(self) -> None:
        kept = recover_switch(self.fs, self.root)
        if kept is not None:
            self.notes.append("finished the switch of an interrupted overwrite")
            self._note_kept(kept)
        remove_leftovers(self.fs, self.root)
        state, names = ownership(self.fs, self.root)
        if state == "foreign":
            raise foreign_error(self.url, names)
        if self.mode == "new" and state == "raycat":
            raise RaycatError(
                f"catalog {self.url} already exists; write to a new path, or "
                "use mode resume or overwrite"
            )
        if self.region is not None and state != "raycat":
            raise RaycatError(
                f"--region reprocesses an existing catalog and {self.url} holds none: "
                "run without --region first"
            )
        if not self.staged:  # an abandoned overwrite's staged version
            remove_version(self.fs, f"{self.root}/{S.STAGING_DIR}")
        remove_temp_files(self.fs, self.target)
        self._read_state()
        self._check_versions()

    def _read_state(self) -> None:
        self.markers = read_markers(self.fs, self.target)
        self.files = partition_keys(self.fs, self.target)

    def _check_versions(self) -> None:
        """Refuse to mix models (or, for a region, configs); a staged version of another
        model or config is an abandoned overwrite: discarded."""
        models = {m.model_id for m in self.markers.values() if m is not None}
        configs = {m.config_hash for m in self.markers.values() if m is not None}
        schema = existing_schema(self.fs, self.target)
        if schema is not None:
            info = CatalogInfo.from_schema(schema)
            models.add(info.model_id)
            configs.add(info.config_hash)
        if self.staged:
            if models - {self.model_id} or configs - {self.config_hash}:
                remove_version(self.fs, self.target)
                self._read_state()
            return
        others = sorted(models - {self.model_id})
        if others:
            raise RaycatError(
                f"catalog {self.url} holds predictions of model {', '.join(others)}, not "
                f"{self.model_id}: {NEW_VERSION_HELP}"
            )
        if self.region is not None and configs - {self.config_hash}:
            raise RaycatError(
                f"catalog {self.url} was written with other settings (config hash "
                f"{', '.join(sorted(configs - {self.config_hash}))}, not {self.config_hash}); "
                f"--region would mix them: {NEW_VERSION_HELP}"
            )

    @property
    def partitioning(self) -> list[int] | None:
        """The NUNIQ keys of the version's own partitions (from its markers and files, of any
        orders): the planner keeps them as work units (a resume never writes a second set of
        partitions); None for a new or empty version (the planner chooses)."""
        return existing_partitioning(self.markers, self.files)

    # -- the job --
    def reconcile(
        self,
        schema: pa.Schema,
        counts: dict[int, int],
        hashes: dict[int, int],
        retry_read_errors: bool,
    ) -> Reconciliation:
        """What to do with each partition for this plan (``counts`` and ``hashes`` by NUNIQ
        key); nothing changes yet."""
        check_compatible(self.fs, self.target, self.target_url, schema)
        plan = UnitPlan(counts, hashes, self.model_id, self.config_hash)
        region = None
        if self.region is not None:
            region = self.region.select({*counts, *self.markers, *self.files})
        return reconcile(
            plan, self.markers, self.files, retry_read_errors=retry_read_errors, region=region
        )

    def begin(self, rec: Reconciliation) -> None:
        """Remove the done markers of the partitions to rewrite: until rewritten, they are
        unfinished (a crash then leaves them to the next resume). The margin, made of the
        partitions as they were, goes first; ``finish`` writes it again."""
        remove_margin(self.fs, self.root)
        remove_markers(self.fs, self.target, rec.rewrite)

    def writer(self, schema: pa.Schema) -> CatalogWriter:
        return CatalogWriter(self.target_url, schema, mode=None, storage_options=self.options)

    def check_held(self) -> None:
        """A one-line error once the lease is lost (taken over after renewals failed)."""
        if self.lease.lost:
            raise RaycatError(f"catalog {self.url}: {self.lease.lost}; this job stopped")

    def finish(self, rec: Reconciliation, max_error_fraction: float) -> dict:
        """Remove vanished partitions, check unreadable objects, write the HATS metadata,
        switch versions (overwrite) and rebuild the margin; returns the catalog's rows and
        partitions (and margin rows)."""
        remove_files(self.fs, [f"{self.target}/{partition_relpath(k)}" for k in rec.vanished])
        remove_markers(self.fs, self.target, rec.vanished)
        self._check_read_errors(max_error_fraction)
        totals = finalize(self.fs, self.target, self.target_url, self.options, self.catalog_name)
        if self.staged:
            self._note_kept(switch_versions(self.fs, self.root, self.job_id))
        margin = sync_margin(
            self.fs, self.root, self.url, self.options, self.catalog_name, self.margin_arcsec
        )
        if margin is not None:
            totals["margin_rows"] = margin["rows"]
        return totals

    def _check_read_errors(self, max_fraction: float) -> None:
        markers = [m for m in read_markers(self.fs, self.target).values() if m]
        objects = sum(m.rows for m in markers)
        errors = sum(m.read_errors for m in markers)
        if objects and errors > max_fraction * objects:
            tiles = sorted(set(chain.from_iterable(m.error_tiles for m in markers)))
            raise RaycatError(
                f"{errors} of {objects} objects ({errors / objects:.1%}) could not be read, "
                f"more than infer.max_error_fraction {max_fraction}; tiles at fault include "
                f"{', '.join(tiles[:3]) or '(not recorded)'}: fix access to the store and "
                "rerun (a resume retries them)"
            )

    def _note_kept(self, kept: list[str]) -> None:
        if kept:
            self.notes.append(
                f"kept {len(kept)} file(s) raycat did not write in the old version, e.g. {kept[0]}"
            )


def holds_lease(lease_url: str, storage_options: dict | None, job_id: str) -> bool:
    """Whether the catalog at ``lease_url`` is still leased to ``job_id`` (for writers that
    run away from the driver, such as the sink)."""
    fs, root = fsutil.filesystem(lease_url, storage_options)
    holder = read_holder(fs, root.rstrip("/"))
    return holder is not None and holder.job_id == job_id
