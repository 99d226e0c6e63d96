"""Scoring a catalog against true redshifts: metrics and diagnostic plots.

The catalog is read one partition at a time and only the columns needed (id, z_mean,
z_mode, pdf); each partition's PDFs are reduced to per-object PIT and CRPS at once, so memory
holds a few numbers per object, never all PDFs. RAIL's metrics (``rail_*``, on z_mode: see
``raycat.quality.rail_metrics``) and the tomographic n(z) (``raycat.quality.nz``) come from
per-partition sums instead, added up as the partitions finish. Under a Ray job (RAY_ADDRESS
set) each partition is read and reduced by a Ray task on the workers, not in the driver on
the head.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq

from raycat import fsutil
from raycat import schema as S
from raycat.catalog.read import partition_paths, pdf_matrix, read_catalog_info
from raycat.errors import RaycatError
from raycat.photoz.pdf import crps_per_object, nmad, outlier_fraction, pit, summary_metrics
from raycat.quality.nz import PLOT_NZ, TomographicNz, nz_figure
from raycat.quality.plots import figure_class, save_figures
from raycat.quality.rail_metrics import RailSums

METRICS_FILE = "metrics.json"
PLOT_SCATTER, PLOT_PIT, PLOT_VS_Z = "photoz_vs_specz.png", "pit_hist.png", "metrics_vs_z.png"
MIN_OBJECTS_PER_Z_BIN = 10  # fewer make the NMAD of a redshift bin noise


@dataclass
class Scores:
    """Per-object numbers gathered from the catalog, aligned with each other."""

    z_phot: np.ndarray
    z_true: np.ndarray
    pit: np.ndarray
    crps: np.ndarray


@dataclass
class CatalogSums:
    """What adds up over partitions: RAIL's sufficient statistics and the tomographic n(z)."""

    rail: RailSums
    nz: TomographicNz

    @classmethod
    def empty(cls, edges: np.ndarray) -> CatalogSums:
        return cls(RailSums.empty(float(edges[-1])), TomographicNz.empty(edges))

    def __add__(self, other: CatalogSums) -> CatalogSums:
        return CatalogSums(self.rail + other.rail, self.nz + other.nz)


class IdIndex:
    """Rows of a table found by object id, via a sorted id array (no hash table of objects).

    Ids are compared exactly as stored: integers with integers, text with text. A catalog
    whose ids are of the other kind than the table's (text against integers) is a one-line
    error, not a silent "no object matches"."""

    def __init__(self, ids: np.ndarray, where: str):
        ids = np.asarray(ids)
        self.rows = np.argsort(ids, kind="stable")
        self.ids, self.where, self.text = ids[self.rows], where, _is_text(ids)

    def find(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row in the table of each id, whether the table has it at all)."""
        ids = np.asarray(ids)
        if len(ids) and _is_text(ids) != self.text:
            kinds = ("integer", "text") if self.text else ("text", "integer")
            raise RaycatError(
                f"{self.where} holds {kinds[1]} ids, the catalog {kinds[0]} ids: "
                "no object can be matched (give the table the catalog's ids)"
            )
        at = np.clip(np.searchsorted(self.ids, ids), 0, len(self.ids) - 1)
        return self.rows[at], self.ids[at] == ids


def _is_text(ids: np.ndarray) -> bool:
    return ids.dtype.kind not in "iub"


class _TruthLookup:
    """True redshift by object id."""

    def __init__(self, ids: np.ndarray, z: np.ndarray, where: str):
        self.index, self.z = IdIndex(ids, where), z

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        """True redshifts of ``ids``; NaN for ids the truth table lacks."""
        rows, found = self.index.find(ids)
        return np.where(found, self.z[rows], np.nan)


def _read_truth(
    url: str, id_column: str, z_column: str, storage_options: dict | None
) -> _TruthLookup:
    fs, path = fsutil.filesystem(url, storage_options)
    try:
        table = pq.read_table(path, columns=[id_column, z_column], filesystem=fs)
    except FileNotFoundError:
        raise RaycatError(f"truth table not found: {url}") from None
    except (KeyError, ValueError) as err:  # pyarrow: a column that does not exist
        raise RaycatError(
            f"truth table {url}: needs columns {id_column!r} and {z_column!r} "
            f"({str(err).splitlines()[0]})"
        ) from None
    if table.num_rows == 0:
        raise RaycatError(f"truth table {url} is empty")
    ids = table[id_column].to_numpy()
    z = np.asarray(table[z_column].to_numpy(zero_copy_only=False), dtype=np.float64)
    return _TruthLookup(ids, z, f"truth table {url}")


def _partition_scores(
    catalog_url: str,
    partition: str,
    truth: _TruthLookup | None,
    edges: np.ndarray,
    storage_options: dict | None,
) -> tuple[tuple[np.ndarray, ...], CatalogSums]:
    """(z_phot, z_true, PIT, CRPS) of one partition's objects and its sums (in the driver or
    a Ray task)."""
    fs, _ = fsutil.filesystem(catalog_url, storage_options)
    columns = [S.ID, S.Z_MEAN, S.Z_MODE, S.PDF] + ([] if truth else [S.Z_SPEC])
    table = pq.read_table(partition, columns=columns, filesystem=fs)
    z_phot, z_mode = (
        np.asarray(table[name].to_numpy(zero_copy_only=False), np.float64)
        for name in (S.Z_MEAN, S.Z_MODE)
    )
    if truth:
        z_true = truth(table[S.ID].to_numpy())
    else:
        z_true = np.asarray(table[S.Z_SPEC].to_numpy(zero_copy_only=False), np.float64)
    pdf = pdf_matrix(table[S.PDF])
    pit_values = pit(pdf, edges, z_true)
    sums = CatalogSums.empty(edges)
    sums.rail.add(z_mode, z_true, pit_values, pdf, edges)
    sums.nz.add(z_mode, pdf, z_true)
    return (z_phot, z_true, pit_values, crps_per_object(pdf, edges, z_true)), sums


def _scores_on_ray(catalog_url: str, partitions: list[str], truth, edges, storage_options):
    """Every partition's scores from a Ray task, in partition order, and their summed sums
    (added as each task finishes: the driver never holds every partition's histograms)."""
    import ray

    from raycat.runtime import ray_session

    with ray_session():  # joins the job's cluster; an initialised Ray is used as it is
        task = ray.remote(_partition_scores)
        shared = ray.put(truth)  # the truth lookup is sent once, not once per partition
        order = {
            task.remote(catalog_url, p, shared, edges, storage_options): i
            for i, p in enumerate(partitions)
        }
        scores: list = [None] * len(order)
        total, pending = CatalogSums.empty(edges), list(order)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            part, sums = ray.get(done[0])
            scores[order.pop(done[0])] = part  # the last reference: the store frees it
            total = total + sums
        return scores, total


def _scores_here(catalog_url: str, partitions: list[str], truth, edges, storage_options):
    scores, total = [], CatalogSums.empty(edges)
    for p in partitions:
        part, sums = _partition_scores(catalog_url, p, truth, edges, storage_options)
        scores.append(part)
        total = total + sums
    return scores, total


def collect_scores(
    catalog_url: str,
    truth: _TruthLookup | None,
    storage_options: dict | None = None,
    on_ray: bool | None = None,
) -> Scores:
    """Score every partition; without ``truth``, the catalog's own ``z_spec`` is the truth."""
    return collect(catalog_url, truth, storage_options, on_ray)[0]


def collect(
    catalog_url: str,
    truth: _TruthLookup | None,
    storage_options: dict | None = None,
    on_ray: bool | None = None,
) -> tuple[Scores, CatalogSums]:
    """Per-object scores and the catalog's summed statistics (RAIL metrics, tomographic n(z)).

    ``on_ray`` (default: when RAY_ADDRESS is set, as under `ray job submit`) reads and
    reduces the partitions in Ray tasks: the driver receives four numbers per object and
    one set of sums per partition, added up as they come.
    """
    edges = read_catalog_info(catalog_url, storage_options).bin_edges
    fs, path = fsutil.filesystem(catalog_url, storage_options)
    partitions = partition_paths(fs, path.rstrip("/"))
    if not partitions:
        raise RaycatError(f"catalog not found (no partitions): {catalog_url}")
    if on_ray is None:
        on_ray = bool(os.environ.get("RAY_ADDRESS"))
    try:
        run = _scores_on_ray if on_ray else _scores_here
        parts, sums = run(catalog_url, partitions, truth, edges, storage_options)
    except (KeyError, ValueError) as err:  # from a task: a RayTaskError that is one as well
        raise RaycatError(
            f"catalog {catalog_url}: missing column ({getattr(err, 'cause', err)}); give a truth "
            "table when the catalog has no z_spec"
        ) from None
    return Scores(*(np.concatenate(column) for column in zip(*parts))), sums


def evaluate_catalog(
    catalog_url: str,
    truth_url: str | None,
    out_dir: str,
    *,
    storage_options: dict | None = None,
    id_column: str = "id",
    z_column: str = "z",
    train_median_z: float | None = None,
) -> dict:
    """Metrics of a catalog against true redshifts, plus PNG plots and ``metrics.json``.

    Objects are joined on ``id_column``; ``truth_url`` None uses the catalog's ``z_spec``.
    With ``train_median_z`` the metrics also give the NMAD and outlier rate of always
    predicting that redshift: the floor any model must beat. Beside raycat's metrics (on
    z_mean) come RAIL's (``rail_*``, on z_mode, RAIL's default point estimate) and the
    tomographic n(z) (``nz_*``, and its plot). Returns the metrics with ``plots``
    (name -> path) and ``metrics_file``.
    """
    truth = _read_truth(truth_url, id_column, z_column, storage_options) if truth_url else None
    scores, sums = collect(catalog_url, truth, storage_options)
    metrics: dict = summary_metrics(
        scores.z_phot, scores.z_true, pit_values=scores.pit, crps_values=scores.crps
    )
    if train_median_z is not None:
        metrics.update(_baseline(scores, train_median_z))
    metrics["rail_point_estimate"] = S.Z_MODE
    metrics.update(sums.rail.metrics())
    metrics.update(sums.nz.metrics())
    fs, out = fsutil.filesystem(out_dir, storage_options)
    fs.makedirs(out, exist_ok=True)
    names = (PLOT_SCATTER, PLOT_PIT, PLOT_VS_Z, PLOT_NZ)
    plots = {name: fsutil.join(out_dir, name) for name in names}
    figures = _figures(scores, metrics, train_median_z)
    figures[PLOT_NZ] = nz_figure(sums.nz)
    save_figures(figures, out_dir, storage_options, dpi=110)
    metrics["plots"] = plots
    metrics["metrics_file"] = fsutil.join(out_dir, METRICS_FILE)
    fs.pipe_file(f"{out.rstrip('/')}/{METRICS_FILE}", json.dumps(metrics, indent=2).encode())
    return metrics


def _baseline(scores: Scores, median_z: float) -> dict[str, float]:
    used = np.isfinite(scores.z_true) & np.isfinite(scores.z_phot)
    constant = np.full(int(used.sum()), float(median_z))
    return {
        "baseline_median_z": float(median_z),
        "baseline_nmad": nmad(constant, scores.z_true[used]),
        "baseline_outlier_frac_0.15": outlier_fraction(constant, scores.z_true[used], 0.15),
    }


# --- plots ------------------------------------------------------------------------------------


def metrics_in_z_bins(
    z_phot: np.ndarray, z_true: np.ndarray, n_bins: int = 10
) -> dict[str, np.ndarray]:
    """NMAD and outlier fraction (0.15) in bins of true redshift (NaN for sparse bins)."""
    used = np.isfinite(z_phot) & np.isfinite(z_true)
    z_phot, z_true = z_phot[used], z_true[used]
    edges = np.linspace(z_true.min(), z_true.max(), n_bins + 1) if z_true.size else np.zeros(2)
    index = np.clip(np.searchsorted(edges, z_true, side="right") - 1, 0, n_bins - 1)
    result = {
        "z": 0.5 * (edges[:-1] + edges[1:]),
        "nmad": np.full(n_bins, np.nan),
        "outlier_frac": np.full(n_bins, np.nan),
        "count": np.zeros(n_bins, int),
    }
    for b in range(n_bins if z_true.size else 0):
        inside = index == b
        result["count"][b] = int(inside.sum())
        if inside.sum() >= MIN_OBJECTS_PER_Z_BIN:
            result["nmad"][b] = nmad(z_phot[inside], z_true[inside])
            result["outlier_frac"][b] = outlier_fraction(z_phot[inside], z_true[inside])
    return result


def _figures(scores: Scores, metrics: dict, median_z: float | None) -> dict:
    Figure = figure_class()

    used = np.isfinite(scores.z_true) & np.isfinite(scores.z_phot)
    z_true, z_phot = scores.z_true[used], scores.z_phot[used]
    figures = {}

    fig = Figure(figsize=(5, 5), layout="constrained")
    ax = fig.subplots()
    if z_true.size:
        top = float(max(z_true.max(), z_phot.max()))
        ax.hist2d(z_true, z_phot, bins=60, range=[[0, top], [0, top]], cmin=1, cmap="viridis")
        line = np.linspace(0, top, 2)
        ax.plot(line, line, "w-", lw=0.8)
        for sign in (-1, 1):
            ax.plot(line, line + sign * 0.15 * (1 + line), "w--", lw=0.6)
    ax.set(
        xlabel="true redshift",
        ylabel="photo-z (PDF mean)",
        title=f"NMAD {metrics['nmad']:.4f}, outliers {metrics['outlier_frac_0.15']:.1%}",
    )
    figures[PLOT_SCATTER] = fig

    fig = Figure(figsize=(5, 4), layout="constrained")
    ax = fig.subplots()
    pit_values = scores.pit[used & np.isfinite(scores.pit)]
    ax.hist(pit_values, bins=20, range=(0, 1), density=True, color="tab:blue")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set(xlabel="PIT", ylabel="density", title=f"PIT (KS {metrics.get('pit_ks', np.nan):.3f})")
    figures[PLOT_PIT] = fig

    binned = metrics_in_z_bins(z_phot, z_true)
    fig = Figure(figsize=(6, 6), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.plot(binned["z"], binned["nmad"], "o-", label="model")
    bottom.plot(binned["z"], binned["outlier_frac"], "o-", label="model")
    if median_z is not None:
        top.axhline(metrics["baseline_nmad"], color="gray", ls="--", label="median baseline")
        bottom.axhline(
            metrics["baseline_outlier_frac_0.15"], color="gray", ls="--", label="median baseline"
        )
    top.set(ylabel="NMAD")
    bottom.set(xlabel="true redshift", ylabel="outlier fraction (>0.15)")
    top.legend()
    figures[PLOT_VS_Z] = fig
    return figures
