"""`raycat report`: one HTML page of diagnostics that says whether to trust a catalog.

For every catalog (production ones have no truth): sky maps of counts, flagged fraction and
mean redshift, the stacked n(z) and the objects per flag (``raycat.quality.sky_maps``). With
truth: metrics against truth (from ``evaluate``), accuracy against magnitude, the share of the
attribution held by each band or survey as redshift rises, stability under rotations and
flips, example cutouts with their PDFs, and the comparison with a catalog-photometry
baseline. Catalogs are read partition by partition; the stability and example sections run
the model on a bounded sample of cutouts.
"""

from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq

from raycat import fsutil
from raycat import schema as S
from raycat.catalog.read import existing_schema, partition_paths
from raycat.errors import RaycatError
from raycat.photoz.pdf import bin_centres, nmad, outlier_fraction, point_estimates
from raycat.quality.evaluate import IdIndex, evaluate_catalog
from raycat.quality.plots import figure_class, save_figures
from raycat.quality.sky_maps import flag_rows, sky_figures, sky_sums

REPORT_FILE = "index.html"
PLOT_VS_MAG, PLOT_ATTR, PLOT_ATTR_BANDS, PLOT_STABILITY, PLOT_EXAMPLES = (
    "metrics_vs_mag.png",
    "attribution_vs_z.png",
    "attribution_bands_vs_z.png",
    "stability.png",
    "examples.png",
)
BAND_SAMPLE, BAND_PERMUTATIONS = 200, 8  # per-band Shapley on a sample: 66 passes per object
STABILITY_OBJECTS = 400  # cutouts predicted 8 times each: enough for a 95th percentile
EXAMPLE_BANDS = ("galex_nuv", "ps1_r", "unwise_w1")


# --- data -------------------------------------------------------------------------------------


def joined_columns(
    catalog_url: str,
    truth_url: str,
    truth_columns: list[str],
    catalog_columns: list[str],
    storage_options: dict | None = None,
    on_ray: bool | None = None,
) -> dict:
    """Catalog columns of the objects the truth table holds, with its columns joined on id.

    Each partition is joined on its own: in the driver, or (``on_ray``, default when
    RAY_ADDRESS is set, as under `ray job submit`) in a Ray task, the truth index sent once;
    the driver receives the matched rows only (a validation sample, not the catalog).
    """
    fs, path = fsutil.filesystem(truth_url, storage_options)
    names = set(pq.read_schema(path, filesystem=fs).names)
    wanted = [c for c in truth_columns if c in names]
    truth = pq.read_table(path, columns=[S.ID, *wanted], filesystem=fs)
    joined = _TruthColumns(
        IdIndex(truth[S.ID].to_numpy(), f"truth table {truth_url}"),
        {n: np.asarray(truth[n].to_numpy(zero_copy_only=False), np.float64) for n in wanted},
    )
    cat_fs, root = fsutil.filesystem(catalog_url, storage_options)
    partitions = partition_paths(cat_fs, root.rstrip("/"))
    if not partitions:
        raise RaycatError(f"catalog not found (no partitions): {catalog_url}")
    args = (catalog_url, catalog_columns, storage_options)
    if on_ray is None:
        on_ray = bool(os.environ.get("RAY_ADDRESS"))
    if on_ray:
        parts = _joined_on_ray(partitions, joined, args)
    else:
        parts = [_join_partition(p, joined, *args) for p in partitions]
    return {n: np.concatenate([p[n] for p in parts]) for n in [*catalog_columns, *wanted]}


@dataclass
class _TruthColumns:
    """The truth table's rows by id, and the columns to join from it."""

    index: IdIndex
    columns: dict[str, np.ndarray]


def _join_partition(
    partition: str,
    truth: _TruthColumns,
    catalog_url: str,
    catalog_columns: list[str],
    storage_options: dict | None,
) -> dict[str, np.ndarray]:
    """One partition's rows that the truth holds, catalog and truth columns side by side."""
    fs, _ = fsutil.filesystem(catalog_url, storage_options)
    table = pq.read_table(partition, columns=[S.ID, *catalog_columns], filesystem=fs)
    rows, found = truth.index.find(table[S.ID].to_numpy())
    out = {
        n: np.asarray(table[n].to_numpy(zero_copy_only=False), np.float64)[found]
        for n in catalog_columns
    }
    out.update({n: values[rows[found]] for n, values in truth.columns.items()})
    return out


def _joined_on_ray(partitions: list[str], truth: _TruthColumns, args: tuple) -> list[dict]:
    import ray

    from raycat.runtime import ray_session

    with ray_session():  # joins the job's cluster; an initialised Ray is used as it is
        task, shared = ray.remote(_join_partition), ray.put(truth)
        return ray.get([task.remote(p, shared, *args) for p in partitions])


def attribution_shares(
    z: np.ndarray, attributions: dict[str, np.ndarray], n_bins: int = 6
) -> dict[str, np.ndarray]:
    """Share of the mean |attribution| held by each player, in bins of redshift."""
    used = np.isfinite(z) & np.all([np.isfinite(a) for a in attributions.values()], axis=0)
    edges = np.quantile(z[used], np.linspace(0, 1, n_bins + 1)) if used.any() else np.zeros(2)
    index = np.clip(np.searchsorted(edges, z, side="right") - 1, 0, len(edges) - 2)
    shares = {"z": 0.5 * (edges[:-1] + edges[1:])}
    totals = np.zeros(len(edges) - 1)
    for name, values in attributions.items():
        shares[name] = np.array(
            [
                np.abs(values[used & (index == b)]).mean() if np.any(used & (index == b)) else 0.0
                for b in range(len(edges) - 1)
            ]
        )
        totals += shares[name]
    for name in attributions:
        shares[name] = shares[name] / np.where(totals > 0, totals, 1.0)
    return shares


def sample_cutouts(cutouts, n: int, ebv: bool = False) -> dict[str, np.ndarray]:
    """The first ``n`` cutouts with pixels (a bounded sample, streamed), with their E(B-V)
    when ``ebv`` (a model that takes it: ``raycat.photoz.inputs.network_input``)."""
    from raycat.photoz.infer import has_pixels

    taken: list[dict] = []
    columns = [S.ID, S.CUBE, S.FLAGS, S.Z_SPEC] + ([S.EBV] if ebv else [])
    for batch in cutouts.select_columns(columns).iter_batches(batch_size=128, batch_format="numpy"):
        keep = has_pixels(batch[S.CUBE], batch[S.FLAGS])
        taken.append({k: v[keep] for k, v in batch.items()})
        if sum(len(t[S.ID]) for t in taken) >= n:
            break
    return {k: np.concatenate([t[k] for t in taken])[:n] for k in columns}


def stability(model, meta, cubes: np.ndarray, tta_objects: int = 50) -> tuple[dict, np.ndarray]:
    """|dz_mode| / z_std under the 8 dihedral transforms of the catalog's (calibrated) PDFs:
    summary and per-object shifts without test-time symmetry, and under ``tta_`` keys the
    summary with ``infer.tta: dihedral`` (0 for an invariant model) on the first
    ``tta_objects`` cutouts (each costs 64 passes, not 8)."""
    import torch

    from raycat.photoz.forward import TTA
    from raycat.photoz.uncertainty import (
        dihedral_pdfs,
        point_from_pdfs,
        rotation_shifts,
        rotation_stability,
    )

    x = torch.from_numpy(np.ascontiguousarray(cubes, np.float32))

    def modes_and_widths(images, tta: TTA) -> tuple[np.ndarray, np.ndarray]:
        pdfs = dihedral_pdfs(model, images, tta=tta, calibration=meta.calibration)
        sigma = np.maximum(point_estimates(pdfs[0].numpy(), meta.bin_edges)[S.Z_STD], 1e-6)
        return point_from_pdfs(pdfs, bin_centres(meta.bin_edges), "mode"), sigma

    z8, sigma = modes_and_widths(x, "none")
    summary = rotation_stability(z8, sigma)
    if tta_objects > 0:
        with_tta = rotation_stability(*modes_and_widths(x[:tta_objects], "dihedral"))
        summary |= {f"tta_{k}": v for k, v in with_tta.items()}
    return summary, rotation_shifts(z8, sigma)


# --- figures ----------------------------------------------------------------------------------


def _figure(rows: int = 1, cols: int = 1, size=(6, 4)):
    fig = figure_class()(figsize=size, layout="constrained")
    return fig, fig.subplots(rows, cols)


def metrics_by(
    values: np.ndarray, z_phot: np.ndarray, z_true: np.ndarray, n_bins: int = 6
) -> dict[str, np.ndarray]:
    """NMAD and outlier fraction in equal-count bins of ``values`` (e.g. a magnitude)."""
    used = np.isfinite(values) & np.isfinite(z_phot) & np.isfinite(z_true)
    edges = np.quantile(values[used], np.linspace(0, 1, n_bins + 1))
    index = np.clip(np.searchsorted(edges, values[used], side="right") - 1, 0, n_bins - 1)
    parts = [(z_phot[used][index == b], z_true[used][index == b]) for b in range(n_bins)]
    return {
        "centre": 0.5 * (edges[:-1] + edges[1:]),
        "nmad": np.array([nmad(p, t) for p, t in parts]),
        "outlier_frac": np.array([outlier_fraction(p, t) for p, t in parts]),
    }


def magnitude_figure(binned: dict, label: str):
    fig, (top, bottom) = _figure(2, 1, size=(6, 5))
    top.plot(binned["centre"], binned["nmad"], "o-")
    bottom.plot(binned["centre"], binned["outlier_frac"], "o-")
    top.set(ylabel="NMAD")
    bottom.set(xlabel=label, ylabel="outlier fraction (>0.15)")
    return fig


def attribution_figure(shares: dict, what: str = "per survey, every object"):
    fig, ax = _figure()
    players = [k for k in shares if k != "z"]
    ax.stackplot(
        shares["z"],
        [shares[p] for p in players],
        labels=[p.removeprefix(S.attr_column("")) for p in players],
    )
    ax.set(
        xlabel="true redshift",
        ylabel="share of mean |attribution|",
        ylim=(0, 1),
        title=f"which inputs the model uses, by redshift ({what})",
    )
    ax.legend(loc="upper left", fontsize=7, ncol=3)
    return fig


def stability_figure(shifts: np.ndarray, summary: dict):
    fig, ax = _figure()
    ax.hist(shifts, bins=30, color="tab:purple")
    ax.axvline(summary["p95"], color="k", ls="--", label=f"95th percentile {summary['p95']:.2f}")
    ax.set(
        xlabel="max |dz_mode| / sigma over the 8 rotations and flips",
        ylabel="objects",
        title=f"rotation stability (mean {summary['mean']:.3f})",
    )
    ax.legend()
    return fig


def examples_figure(sample: dict, pdfs: np.ndarray, edges: np.ndarray, bands: list[str]):
    """A few cutouts (three bands) beside their redshift PDFs."""
    shown = [bands.index(b) for b in EXAMPLE_BANDS if b in bands] or [0]
    n = min(4, len(sample[S.ID]))
    fig, axes = _figure(n, len(shown) + 1, size=(2.2 * (len(shown) + 1), 2.2 * n))
    axes = np.atleast_2d(axes)
    centres = bin_centres(edges)
    for row in range(n):
        for col, channel in enumerate(shown):
            axes[row, col].imshow(sample[S.CUBE][row, channel], origin="lower", cmap="gray")
            axes[row, col].set_axis_off()
            axes[0, col].set_title(bands[channel], fontsize=8)
        ax = axes[row, -1]
        ax.plot(centres, pdfs[row], "k-")
        ax.axvline(sample[S.Z_SPEC][row], color="tab:red", lw=1)
        ax.set_title(f"id {sample[S.ID][row]}", fontsize=8)
        ax.set_yticks([])
    return fig


# --- the page ---------------------------------------------------------------------------------


def build_report(
    catalog_url: str,
    truth_url: str | None,
    out_dir: str,
    *,
    cutouts=None,
    model_url: str | None = None,
    baseline: dict | None = None,
    train_median_z: float | None = None,
    mag_column: str = "mag_ps1_r",
    storage_options: dict | None = None,
) -> tuple[str, dict]:
    """Write ``out_dir/index.html`` with its figures; returns its path and the metrics.

    Every report has the production sections (sky maps, stacked n(z), objects per flag:
    ``raycat.quality.sky_maps``); ``truth_url`` (None for a production catalog) adds the
    metrics against truth. ``cutouts`` (a Ray Dataset of cutout rows) and ``model_url`` add
    the stability and the example sections; ``baseline`` (metrics of the catalog-photometry
    baseline on the same held-out objects) adds its column to the comparison table.
    """
    metrics: dict = {}
    figures: dict = {}
    sections: list[str] = []
    if truth_url is not None:
        metrics = evaluate_catalog(
            catalog_url,
            truth_url,
            out_dir,
            storage_options=storage_options,
            train_median_z=train_median_z,
        )
        sections = [_metrics_table(metrics, baseline)]
        sections.append(_images("Photo-z against truth", list(metrics["plots"])))
        figures = _truth_figures(catalog_url, truth_url, mag_column, storage_options)
    if cutouts is not None and model_url:
        figures.update(_model_figures(cutouts, model_url, storage_options, metrics))
    sums = sky_sums(catalog_url, storage_options)
    figures.update(sky_figures(sums, catalog_url, storage_options))
    metrics["catalog_objects"] = sums.objects
    fs, out = fsutil.filesystem(out_dir, storage_options)
    fs.makedirs(out, exist_ok=True)  # without truth, nothing wrote there yet
    save_figures(figures, out_dir, storage_options)
    sections.append(_images("Diagnostics", list(figures)))
    sections.append(_flag_table(flag_rows(sums)))
    page = _page(sections, metrics)
    fs.pipe_file(f"{out.rstrip('/')}/{REPORT_FILE}", page.encode())
    return fsutil.join(out_dir, REPORT_FILE), metrics


def _truth_figures(catalog_url, truth_url, mag_column, storage_options) -> dict:
    """Accuracy against magnitude and attribution shares against true redshift."""
    figures = {}
    attr = [
        n
        for n in _catalog_names(catalog_url, storage_options)
        if n.startswith(S.attr_column("")) and n != S.ATTR_BASELINE
    ]
    data = joined_columns(
        catalog_url, truth_url, [S.TRUTH_Z, mag_column], [S.Z_MEAN, *attr], storage_options
    )
    if mag_column in data:
        figures[PLOT_VS_MAG] = magnitude_figure(
            metrics_by(data[mag_column], data[S.Z_MEAN], data[S.TRUTH_Z]), mag_column
        )
    if attr:
        figures[PLOT_ATTR] = attribution_figure(
            attribution_shares(data[S.TRUTH_Z], {a: data[a] for a in attr})
        )
    return figures


def _flag_table(rows: list[tuple[str, int, float]]) -> str:
    body = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{n}</td><td>{fraction:.2%}</td></tr>"
        for name, n, fraction in rows
    )
    head = "<tr><th>flag</th><th>objects</th><th>fraction</th></tr>"
    return f"<h2>Objects per flag</h2><table>{head}{body}</table>"


def _catalog_names(catalog_url: str, storage_options: dict | None) -> list[str]:
    """Column names from the catalog's metadata, without reading any rows."""
    fs, path = fsutil.filesystem(catalog_url, storage_options)
    found = existing_schema(fs, path.rstrip("/"))
    if found is None:
        raise RaycatError(f"catalog not found (no partitions): {catalog_url}")
    return found.names


def _model_figures(cutouts, model_url: str, storage_options: dict | None, metrics: dict) -> dict:
    from raycat.config import InferConfig
    from raycat.photoz.infer import Predictor
    from raycat.photoz.inputs import network_input

    # one model load for every section; its attribution settings are the band figure's
    settings = InferConfig.model_validate(
        {
            "model": model_url,
            "attributions": "bands",
            "attribution_method": "sampled",
            "attribution_permutations": BAND_PERMUTATIONS,
        }
    )
    predictor = Predictor(settings, storage_options)
    meta = predictor.meta
    sample = sample_cutouts(cutouts, STABILITY_OBJECTS, ebv=meta.ebv_input)
    inputs = network_input(sample, meta.ebv_input)
    summary, shifts = stability(predictor.model, meta, inputs)
    metrics.update({f"stability_{k}": v for k, v in summary.items()})
    order = np.argsort(sample[S.Z_SPEC])  # examples across the redshift range
    picks = order[np.linspace(0, len(order) - 1, min(4, len(order))).astype(int)]
    example = {k: v[picks] for k, v in sample.items()}
    pdfs = predictor.predict(inputs[picks])
    band_shares = attribution_shares(
        sample[S.Z_SPEC][:BAND_SAMPLE], band_attributions(predictor, inputs[:BAND_SAMPLE])
    )
    return {
        PLOT_STABILITY: stability_figure(shifts, summary),
        PLOT_EXAMPLES: examples_figure(example, pdfs, meta.bin_edges, meta.bands),
        PLOT_ATTR_BANDS: attribution_figure(band_shares, "per band, on a sample"),
    }


def band_attributions(predictor, cubes: np.ndarray) -> dict[str, np.ndarray]:
    """Per-band Shapley values of z_mean for a few cutouts (seeded: reproducible), by the
    catalog Predictor's own code with its settings (bands, sampled: see _model_figures)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(cubes, np.float32)).to(predictor.device)
    columns = predictor.attributions(x, torch.Generator().manual_seed(0))
    columns.pop(S.ATTR_BASELINE)
    return columns


def _metrics_table(metrics: dict, baseline: dict | None) -> str:
    keys = ("nmad", "bias_mean", "outlier_frac_0.05", "outlier_frac_0.15", "n_evaluated")
    head = "<tr><th>metric</th><th>CNN on cutouts</th>"
    head += "<th>photometry baseline</th>" if baseline else ""
    rows = []
    for key in keys:
        cells = f"<td>{key}</td><td>{metrics.get(key, float('nan')):.4g}</td>"
        cells += f"<td>{baseline.get(key, float('nan')):.4g}</td>" if baseline else ""
        rows.append(f"<tr>{cells}</tr>")
    return f"<h2>Held-out metrics</h2><table>{head}</tr>{''.join(rows)}</table>"


def _images(title: str, paths: list[str]) -> str:
    names = [p.rsplit("/", 1)[-1] for p in paths]
    return f"<h2>{html.escape(title)}</h2>" + "".join(
        f'<img src="{html.escape(n)}" alt="{html.escape(n)}">' for n in names
    )


def _page(sections: list[str], metrics: dict) -> str:
    raw = html.escape(
        json.dumps({k: v for k, v in metrics.items() if k != "plots"}, indent=1, default=str)
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>raycat report</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
        "img{max-width:48%;margin:4px}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px}</style></head><body>"
        "<h1>raycat catalog report</h1>"
        + "".join(sections)
        + f"<h2>All metrics</h2><pre>{raw}</pre></body></html>"
    )
