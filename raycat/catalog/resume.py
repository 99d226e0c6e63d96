"""A resume as a comparison of the new plan with the catalog's done markers.

Pure functions, no I/O: the driver reads the markers (one listing, one fetch) and lists the
partition files once, plans the work units with their object counts and id hashes, and
``reconcile`` sorts every partition into what the job must do with it. Partitions are NUNIQ
keys of any order (``raycat.catalog.keys``): the plan's units and the catalog's partitions
are compared key by key, so a partition the plan does not have at that very pixel and order
is gone from the plan (the planner keeps a catalog's partitioning on a resume:
``CatalogJob.partitioning``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from raycat.catalog.keys import disjoint_keys
from raycat.catalog.markers import DoneMarker


@dataclass(frozen=True)
class UnitPlan:
    """The planned work units: objects and id-set hash per NUNIQ key."""

    counts: Mapping[int, int]
    hashes: Mapping[int, int]
    model_id: str
    config_hash: str


@dataclass
class Reconciliation:
    """What a job does with each partition, by kind (sets of NUNIQ keys)."""

    unchanged: set[int] = field(default_factory=set)  # marker matches the plan: skipped
    new: set[int] = field(default_factory=set)  # no marker yet (never or partly written)
    changed: set[int] = field(default_factory=set)  # other objects, model or config
    retried: set[int] = field(default_factory=set)  # holds READ_ERROR objects
    reprocessed: set[int] = field(default_factory=set)  # inside the region asked for
    vanished: set[int] = field(default_factory=set)  # not in the plan: removed
    outside: int = 0  # planned partitions outside the region, left as they are

    @property
    def todo(self) -> set[int]:
        """The partitions to write."""
        return self.new | self.changed | self.retried | self.reprocessed

    @property
    def rewrite(self) -> set[int]:
        """Written partitions whose old marker must go first."""
        return self.changed | self.retried | self.reprocessed

    def counts(self) -> dict[str, int]:
        """Partitions of each kind, for the job summary."""
        counts = {
            "unchanged": len(self.unchanged),
            "new": len(self.new),
            "changed": len(self.changed),
            "retried": len(self.retried),
            "reprocessed": len(self.reprocessed),
            "removed": len(self.vanished),
        }
        if self.outside:
            counts["outside_region"] = self.outside
        return counts

    def describe(self) -> str:
        """One line for the log: the kinds that occur, with their counts."""
        kinds = [f"{n} {kind.replace('_', ' ')}" for kind, n in self.counts().items() if n]
        return ", ".join(kinds) or "no partitions"


def reconcile(
    plan: UnitPlan,
    markers: Mapping[int, DoneMarker | None],
    files: Collection[int],
    *,
    retry_read_errors: bool = True,
    region: Collection[int] | None = None,
) -> Reconciliation:
    """Sort the planned partitions and the catalog's own into the kinds of
    :class:`Reconciliation` (``markers`` and ``files`` by key, as on disk).

    A partition is kept only when its marker matches the plan (objects and their id hash,
    model, config) and its file is there (a marker of 0 rows has none); one with READ_ERROR
    objects is retried when ``retry_read_errors``. Partitions of the catalog that the plan
    does not have (at that pixel and order) vanish. With a ``region`` (keys), only the
    partitions inside it are touched: all rewritten, the vanished ones removed.
    """
    rec = Reconciliation()
    for key, count in plan.counts.items():
        if region is not None and key not in region:
            rec.outside += 1
            continue
        marker = markers.get(key)
        if region is not None:
            rec.reprocessed.add(key)
        elif marker is None:
            rec.new.add(key)
        elif not marker.matches(count, plan.hashes[key], plan.model_id, plan.config_hash) or (
            marker.rows and key not in files
        ):
            rec.changed.add(key)
        elif retry_read_errors and marker.read_errors:
            rec.retried.add(key)
        else:
            rec.unchanged.add(key)
    for key in {*markers, *files}:
        if key not in plan.counts and (region is None or key in region):
            rec.vanished.add(key)
    return rec


def existing_partitioning(markers: Collection[int], files: Collection[int]) -> list[int] | None:
    """The keys of a catalog's partitions, from its markers and files (sorted, disjoint:
    should an older raycat have left a second set, its most common order wins); None for a
    catalog with none."""
    keys = {*markers, *files}
    return disjoint_keys(keys) if keys else None
