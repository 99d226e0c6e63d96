"""What a production catalog (no truth) says about itself: sky maps of counts, flagged
fraction and mean redshift, the stacked n(z) and the objects per flag.

One pass over the partitions (``iter_partitions``, four columns), keeping only sums: the
maps are sparse HEALPix maps that start at ``FINE_ORDER`` and are coarsened by one order
whenever they hold more than ``MAX_PIXELS`` pixels, so a small field is shown in detail and
the whole sky in bounded memory; the n(z) is one sum per redshift bin.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from raycat import schema as S
from raycat.catalog.read import iter_partitions, pdf_matrix, read_catalog_info
from raycat.healpix import ORDER as HEALPIX_ORDER
from raycat.photoz.pdf import bin_centres
from raycat.quality.plots import figure_class

FINE_ORDER = 14  # ~13 arcsec pixels: the finest map drawn
MAX_PIXELS = 100_000  # a map coarsens past this many pixels (order 7 holds the whole sky)
PLOT_COUNTS, PLOT_FLAGGED, PLOT_MEAN_Z, PLOT_NZ = (
    "sky_counts.png",
    "sky_flagged.png",
    "sky_mean_z.png",
    "stacked_nz.png",
)
SUMS = ("objects", "flagged", "z_sum", "z_objects")  # per map pixel


@dataclass
class SkySums:
    """Sums per HEALPix pixel at ``order`` (sorted pixels), the stacked PDF and flag counts."""

    order: int = FINE_ORDER
    pixels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    sums: dict = field(default_factory=lambda: {k: np.zeros(0) for k in SUMS})
    nz: np.ndarray | None = None
    flags: dict = field(default_factory=lambda: {f.name: 0 for f in S.Flag})
    objects: int = 0

    def add(self, h29: np.ndarray, flags: np.ndarray, z_mean: np.ndarray, pdf: np.ndarray):
        """Fold in one partition's rows (a PDF row of NaN: no prediction)."""
        pixels = np.asarray(h29, np.int64) >> (2 * (HEALPIX_ORDER - self.order))
        finite = np.isfinite(z_mean)
        values = {
            "objects": np.ones(len(pixels)),
            "flagged": (flags != 0).astype(float),
            "z_sum": np.where(finite, z_mean, 0.0),
            "z_objects": finite.astype(float),
        }
        self._merge(pixels, values)
        stacked = np.nansum(pdf, axis=0)
        self.nz = stacked if self.nz is None else self.nz + stacked
        for flag in S.Flag:
            self.flags[flag.name] += int(np.count_nonzero(flags & int(flag)))
        self.objects += len(pixels)

    def _merge(self, pixels: np.ndarray, values: dict) -> None:
        both = np.concatenate([self.pixels, pixels])
        self.pixels, where = np.unique(both, return_inverse=True)
        self.sums = {
            k: np.bincount(where, np.concatenate([self.sums[k], values[k]]), len(self.pixels))
            for k in SUMS
        }
        if len(self.pixels) > MAX_PIXELS:  # coarsen: one order up merges four pixels
            self.order -= 1
            pixels, self.pixels = self.pixels >> 2, np.zeros(0, np.int64)
            values, self.sums = self.sums, {k: np.zeros(0) for k in SUMS}
            self._merge(pixels, values)

    def absorb(self, other: SkySums) -> None:
        """Add another catalog part's sums (coarsened to the coarser of the two orders)."""
        order = min(self.order, other.order)
        if self.order > order:
            pixels, self.pixels = self.pixels >> 2 * (self.order - order), np.zeros(0, np.int64)
            sums, self.sums = self.sums, {k: np.zeros(0) for k in SUMS}
            self.order = order
            self._merge(pixels, sums)
        self._merge(other.pixels >> 2 * (other.order - order), other.sums)
        if other.nz is not None:
            self.nz = other.nz.copy() if self.nz is None else self.nz + other.nz
        for name, n in other.flags.items():
            self.flags[name] += n
        self.objects += other.objects


COLUMNS = [S.HEALPIX_29, S.FLAGS, S.Z_MEAN, S.PDF]
IN_FLIGHT = 16  # partition tasks awaited at once: the driver holds their sums only


def sky_sums(
    catalog_url: str, storage_options: dict | None = None, on_ray: bool | None = None
) -> SkySums:
    """The sums of a catalog, streaming over its partitions: in the driver, or (``on_ray``,
    default when RAY_ADDRESS is set, as under `ray job submit`) one Ray task per partition,
    the driver adding up bounded sums as they come back."""
    if on_ray is None:
        on_ray = bool(os.environ.get("RAY_ADDRESS"))
    if on_ray:
        return _sums_on_ray(catalog_url, storage_options)
    sums = SkySums()
    for table in iter_partitions(catalog_url, COLUMNS, storage_options):
        _add_table(sums, table)
    return sums


def _add_table(sums: SkySums, table) -> None:
    z_mean = np.asarray(table[S.Z_MEAN].to_numpy(zero_copy_only=False), np.float64)
    sums.add(
        table[S.HEALPIX_29].to_numpy(),
        np.asarray(table[S.FLAGS].to_numpy(), np.int64),
        z_mean,
        pdf_matrix(table[S.PDF]),
    )


def _partition_sums(catalog_url: str, partition: str, storage_options: dict | None) -> SkySums:
    """One partition's sums (a Ray task)."""
    import pyarrow.parquet as pq

    from raycat import fsutil

    fs, _ = fsutil.filesystem(catalog_url, storage_options)
    sums = SkySums()
    _add_table(sums, pq.read_table(partition, columns=COLUMNS, filesystem=fs))
    return sums


def _sums_on_ray(catalog_url: str, storage_options: dict | None) -> SkySums:
    import ray

    from raycat import fsutil
    from raycat.catalog.read import partition_paths
    from raycat.errors import RaycatError
    from raycat.runtime import ray_session

    fs, path = fsutil.filesystem(catalog_url, storage_options)
    partitions = partition_paths(fs, path.rstrip("/"))
    if not partitions:
        raise RaycatError(f"catalog not found (no partitions): {catalog_url}")
    total = SkySums()
    with ray_session():  # joins the job's cluster; an initialised Ray is used as it is
        task = ray.remote(_partition_sums)
        pending: list = []
        for partition in partitions:
            pending.append(task.remote(catalog_url, partition, storage_options))
            if len(pending) >= IN_FLIGHT:
                done, pending = ray.wait(pending, num_returns=1)
                total.absorb(ray.get(done[0]))
        for ref in pending:
            total.absorb(ray.get(ref))
    return total


def flag_rows(sums: SkySums) -> list[tuple[str, int, float]]:
    """(flag, objects, fraction) for each flag, and for objects with no flag at all."""
    clean = sums.objects - int(sums.sums["flagged"].sum())
    total = max(sums.objects, 1)
    counts = [("none", clean), *sums.flags.items()]
    return [(name, n, n / total) for name, n in counts]


def sky_figures(sums: SkySums, catalog_url: str, storage_options: dict | None = None) -> dict:
    """The three sky maps and the stacked n(z), as matplotlib figures by file name."""
    shown = for_display(sums)
    objects = shown.sums["objects"]
    with np.errstate(invalid="ignore", divide="ignore"):
        flagged = shown.sums["flagged"] / objects
        mean_z = shown.sums["z_sum"] / shown.sums["z_objects"]
    edges = read_catalog_info(catalog_url, storage_options).bin_edges
    return {
        PLOT_COUNTS: _map_figure(shown, objects, "objects per pixel", "viridis"),
        PLOT_FLAGGED: _map_figure(shown, flagged, "fraction of objects flagged", "magma"),
        PLOT_MEAN_Z: _map_figure(shown, mean_z, "mean z_mean", "plasma"),
        PLOT_NZ: _nz_figure(edges, sums.nz),
    }


def for_display(sums: SkySums, min_pixels: int = 64, per_pixel: float = 10.0) -> SkySums:
    """The maps coarsened while most pixels hold only a few objects and enough pixels stay
    to show the footprint: a small field is not drawn as scattered single objects."""
    shown = SkySums(sums.order, sums.pixels, sums.sums)
    while (
        shown.order > 0
        and len(shown.pixels) > min_pixels
        and shown.sums["objects"].sum() < per_pixel * len(shown.pixels)
    ):
        coarser = SkySums(shown.order - 1)
        coarser._merge(shown.pixels >> 2, shown.sums)
        shown = coarser
    return shown


def _map_figure(sums: SkySums, values: np.ndarray, title: str, cmap: str):
    """A sparse HEALPix map, each pixel drawn as its polygon: Mollweide for a wide
    footprint, plain RA/Dec (RA increasing to the left) for a small field."""
    from cdshealpix.nested import vertices
    from matplotlib.collections import PolyCollection

    lon, lat = vertices(sums.pixels, sums.order)
    ra, dec = lon.deg, lat.deg  # [pixels, 4] corners
    fig = figure_class()(figsize=(7, 4), layout="constrained")
    wide = len(ra) > 0 and (np.ptp(dec) > 30 or np.ptp(ra) > 60)
    if wide:
        ax = fig.add_subplot(projection="mollweide")
        keep = np.ptp(ra, axis=1) < 180  # a pixel cut by RA 180 deg is not drawn
        ra, dec, values = ra[keep], dec[keep], values[keep]
        corners = np.stack([-np.radians(np.where(ra > 180, ra - 360, ra)), np.radians(dec)], -1)
    else:
        ax = fig.add_subplot()
        corners = np.stack([ra, dec], axis=-1)
        ax.set(xlabel="RA (deg)", ylabel="Dec (deg)")
        ax.ticklabel_format(useOffset=False)
    pixels = PolyCollection(list(corners), array=values, cmap=cmap, edgecolors="none")
    ax.add_collection(pixels)
    if not wide:
        ax.autoscale_view()
        ax.invert_xaxis()
    fig.colorbar(pixels, ax=ax, shrink=0.8)
    ax.set_title(f"{title} (HEALPix order {sums.order})")
    return fig


def _nz_figure(edges: np.ndarray, nz: np.ndarray | None):
    """The stacked n(z): the sum of every object's PDF, per redshift bin."""
    fig = figure_class()(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    widths = np.diff(edges)
    density = np.zeros(len(widths)) if nz is None else nz / widths
    ax.step(bin_centres(edges), density, where="mid", color="k")
    ax.set(xlabel="redshift", ylabel="sum of PDFs per unit z", title="stacked n(z)")
    ax.set_ylim(bottom=0)
    return fig
