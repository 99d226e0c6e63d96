"""A resume as a comparison of the new plan with the catalog's done markers.

Pure functions, no I/O: the driver reads the markers (one listing, one fetch) and lists the
partition files once, plans the work units with their object counts and id hashes, and
``reconcile`` sorts every partition into what the job must do with it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from raycat.catalog.markers import DoneMarker

Key = tuple[int, int]  # (order, pixel)


@dataclass(frozen=True)
class UnitPlan:
    """The planned work units: objects and id-set hash per pixel at ``order``."""

    order: int
    counts: Mapping[int, int]
    hashes: Mapping[int, int]
    model_id: str
    config_hash: str


@dataclass
class Reconciliation:
    """What a job does with each partition, by kind (pixels at the plan's order)."""

    unchanged: set[int] = field(default_factory=set)  # marker matches the plan: skipped
    new: set[int] = field(default_factory=set)  # no marker yet (never or partly written)
    changed: set[int] = field(default_factory=set)  # other objects, model or config
    retried: set[int] = field(default_factory=set)  # holds READ_ERROR objects
    reprocessed: set[int] = field(default_factory=set)  # inside the region asked for
    vanished: set[Key] = field(default_factory=set)  # not in the plan: removed
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
    markers: Mapping[Key, DoneMarker | None],
    files: Collection[Key],
    *,
    retry_read_errors: bool = True,
    region: Collection[int] | None = None,
) -> Reconciliation:
    """Sort the planned partitions and the catalog's own into the kinds of
    :class:`Reconciliation`.

    A partition is kept only when its marker matches the plan (objects and their id hash,
    model, config) and its file is there (a marker of 0 rows has none); one with READ_ERROR
    objects is retried when ``retry_read_errors``. Partitions of the catalog that the plan no
    longer has (or at another order) vanish. With a ``region`` (pixels at the plan's order),
    only the partitions inside it are touched: all rewritten, the vanished ones removed.
    """
    rec = Reconciliation()
    for pixel, count in plan.counts.items():
        if region is not None and pixel not in region:
            rec.outside += 1
            continue
        marker = markers.get((plan.order, pixel))
        if region is not None:
            rec.reprocessed.add(pixel)
        elif marker is None:
            rec.new.add(pixel)
        elif not marker.matches(count, plan.hashes[pixel], plan.model_id, plan.config_hash) or (
            marker.rows and (plan.order, pixel) not in files
        ):
            rec.changed.add(pixel)
        elif retry_read_errors and marker.read_errors:
            rec.retried.add(pixel)
        else:
            rec.unchanged.add(pixel)
    for order, pixel in {*markers, *files}:
        planned = order == plan.order and pixel in plan.counts
        inside = region is None or (order == plan.order and pixel in region)
        if not planned and inside:
            rec.vanished.add((order, pixel))
    return rec


def existing_order(markers: Collection[Key], files: Collection[Key]) -> int | None:
    """The HEALPix order of a catalog's partitions (its most common, should an older raycat
    have left a second set); None for a catalog with none."""
    keys = list(markers) or list(files)
    if not keys:
        return None
    orders = [order for order, _ in keys]
    return max(set(orders), key=lambda o: (orders.count(o), -o))
