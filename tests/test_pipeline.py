"""The whole chain on a tiny mock sky: cutouts -> train -> infer -> HATS catalog."""

import os
import re

import numpy as np
import pandas as pd
import pytest

from raycat import schema
from raycat.config import parse_config
from raycat.healpix import unit_order_pixel

pytestmark = pytest.mark.slow
OFF_SKY_ID = 10**9  # an input object 2 degrees away from every tile


@pytest.fixture(scope="module")
def chain(tmp_path_factory, ray_module):
    from raycat.pipeline import materialise_cutouts, run_infer, run_train
    from raycat.sky.simulate import simulate_sky

    root = tmp_path_factory.mktemp("chain")
    simulate_sky(str(root / "sky"), n_galaxies=120, seed=5, progress=False)
    truth = pd.read_parquet(root / "sky" / schema.TRUTH_FILE)
    lost = {
        schema.ID: OFF_SKY_ID,
        schema.RA: truth[schema.RA].iloc[0] + 2.0,
        schema.DEC: truth[schema.DEC].iloc[0],
        schema.TRUTH_Z: 0.5,
    }
    pd.concat([truth, pd.DataFrame([lost])]).to_parquet(root / "objects.parquet")
    cfg = parse_config(
        {
            "data": {"store": str(root / "sky"), "objects": str(root / "objects.parquet")},
            "cutouts": {"output": str(root / "cutouts"), "healpix_order": 11},
            "model": {"arch": "tiny", "n_bins": 30},
            "train": {
                "epochs": 1,
                "batch_size": 32,
                "storage_path": str(root / "runs"),
                "model_out": str(root / "model"),
                "run_name": "chain",
            },
            "infer": {
                "model": str(root / "model"),
                "catalog": str(root / "catalog"),
                "batch_size": 64,
            },
        }
    )
    summary = materialise_cutouts(cfg)
    run_train(cfg)
    first = run_infer(cfg)
    return cfg, root, summary, first


def _catalog_ids(cfg):
    from raycat.catalog.read import read_catalog_ids

    return read_catalog_ids(cfg.infer.catalog)


def test_every_object_once_and_readable_by_hats_and_lsdb(chain):
    import hats
    import lsdb

    cfg, root, summary, first = chain
    objects = pd.read_parquet(root / "objects.parquet")
    ids = _catalog_ids(cfg)
    assert len(ids) == len(objects) and set(ids) == set(objects[schema.ID])
    assert first["partitions_written"] == len(summary.unit_counts) > 1
    assert len(hats.read_hats(cfg.infer.catalog).get_healpix_pixels()) == first["partitions"]
    frame = lsdb.open_catalog(cfg.infer.catalog, columns="all").compute().set_index(schema.ID)
    assert len(frame) == len(objects)
    lost = frame.loc[OFF_SKY_ID]
    assert lost[schema.FLAGS] & int(schema.Flag.OFF_FOOTPRINT | schema.Flag.NO_PREDICTION)
    assert lost[schema.PDF] is None or np.all(pd.isna(lost[schema.PDF]))
    pdf = np.stack(frame[schema.PDF].dropna().to_numpy())
    assert np.allclose(pdf.sum(axis=1), 1, atol=1e-4)
    flags = frame[schema.FLAGS].to_numpy()
    for flag in schema.Flag:  # the job summary counts exactly what the catalog says
        assert first["flagged"].get(flag.name, 0) == np.count_nonzero(flags & int(flag))
    assert first["flagged"]["OFF_FOOTPRINT"] == 1


def test_crash_after_some_partitions_then_rerun_gives_every_id_once(chain):
    from raycat.pipeline import run_infer

    cfg, root, summary, _ = chain
    catalog = root / "catalog"
    files = sorted(catalog.glob("dataset/Norder=*/Dir=*/Npix=*.parquet"))
    kept, lost = files[: len(files) // 2], files[len(files) // 2 :]
    kept_mtimes = {f: os.stat(f).st_mtime_ns for f in kept}
    for f in lost:  # the crash: these partitions and their done markers never landed
        f.unlink()
        npix = f.stem.split("=")[1]
        for marker in (catalog / schema.DONE_DIR).glob(f"*_Npix={npix}.done"):
            marker.unlink()
    rerun = run_infer(cfg)
    assert rerun["partitions_skipped"] == len(kept)
    assert rerun["partitions_written"] == len(lost)
    assert all(os.stat(f).st_mtime_ns == t for f, t in kept_mtimes.items())
    ids = _catalog_ids(cfg)
    assert len(ids) == len(set(ids)) == sum(summary.unit_counts.values())


def test_new_mode_refuses_an_existing_catalog(chain):
    from raycat.errors import RaycatError
    from raycat.pipeline import run_infer

    cfg = chain[0].model_copy(deep=True)
    cfg.infer.mode = "new"
    with pytest.raises(RaycatError):
        run_infer(cfg)


def test_survey_attributions_add_up_to_z_mean_and_mc_dropout_spread(chain):
    from raycat.pipeline import run_infer

    cfg, root, _summary, _ = chain
    cfg = cfg.model_copy(deep=True)
    cfg.infer.catalog = str(root / "catalog_attr")
    cfg.infer.attributions, cfg.infer.attribution_method = "surveys", "auto"  # auto: exact
    cfg.infer.mc_dropout_passes = 4
    run_infer(cfg)
    frame = pd.concat(
        pd.read_parquet(p)
        for p in sorted((root / "catalog_attr").glob("dataset/Norder=*/Dir=*/*.parquet"))
    )
    players = [schema.attr_column(s) for s in ("galex", "ps1", "unwise")]
    predicted = frame[schema.PDF].notna()
    total = frame[schema.ATTR_BASELINE] + frame[players].sum(axis=1)
    assert np.allclose(total[predicted], frame.loc[predicted, schema.Z_MEAN], atol=2e-3)
    assert frame.loc[~predicted, players].isna().all().all()  # the off-sky object
    spread = frame.loc[predicted, schema.Z_STD_EPISTEMIC]
    assert (spread >= 0).all() and (spread > 0).any()


def test_report_page_has_every_section(chain):
    import re

    from raycat.pipeline import read_materialised, run_infer
    from raycat.quality.report import build_report

    cfg, root, _, _ = chain
    cfg = cfg.model_copy(deep=True)
    cfg.infer.catalog = str(root / "catalog_report")
    cfg.infer.attributions = "surveys"
    run_infer(cfg)
    _page, metrics = build_report(
        cfg.infer.catalog,
        str(root / "sky" / schema.TRUTH_FILE),
        str(root / "report"),
        cutouts=read_materialised(cfg)[1](),
        model_url=cfg.infer.model,
        baseline={"nmad": 0.1},
    )
    text = (root / "report" / "index.html").read_text()
    images = re.findall(r'<img src="([^"]+)"', text)
    assert {
        "photoz_vs_specz.png",
        "pit_hist.png",
        "metrics_vs_z.png",
        "metrics_vs_mag.png",
        "attribution_vs_z.png",
        "attribution_bands_vs_z.png",
        "stability.png",
        "examples.png",
    } <= set(images)
    assert all((root / "report" / name).stat().st_size > 1000 for name in images)
    assert "photometry baseline" in text
    assert metrics["stability_n_objects"] > 50 and np.isfinite(metrics["stability_p95"])


def test_a_band_defined_only_in_the_config_gets_its_survey_attribution(tmp_path, ray_module):
    """A config-only band (survey ``ps1like``, ``like: ps1``, over the mock PS1 r tiles) with
    survey attributions, end to end: plan, cutouts, Predictor, sink, catalog. The artifact
    records the band's survey, so inference needs no band registry entry for it."""
    from raycat.photoz.model import ArtifactMeta, build_model, read_artifact_meta, save_artifact
    from raycat.pipeline import run_infer
    from raycat.sky.simulate import simulate_sky

    simulate_sky(str(tmp_path / "sky"), n_galaxies=40, seed=3, progress=False)
    index = pd.read_parquet(tmp_path / "sky" / schema.TILE_INDEX_FILE)
    like = index[index[schema.TILE_BAND] == "ps1_r"].assign(
        **{schema.TILE_BAND: "ps1like_r", schema.TILE_SURVEY: "ps1like"}
    )
    pd.concat([index, like]).to_parquet(tmp_path / "tiles.parquet")
    cfg = parse_config(
        {
            "data": {"store": str(tmp_path / "sky"), "tile_index": str(tmp_path / "tiles.parquet")},
            "cutouts": {
                "bands": ["ps1_g", "ps1like_r", "unwise_w1"],
                "surveys": {"ps1like": {"like": "ps1", "bands": {"ps1like_r": {"like": "ps1_r"}}}},
            },
            "model": {"arch": "tiny", "n_bins": 20},
            "infer": {
                "model": str(tmp_path / "model"),
                "catalog": str(tmp_path / "catalog"),
                "attributions": "surveys",
            },
        }
    )
    save_artifact(build_model(cfg.model, 3), cfg.infer.model, ArtifactMeta.from_config(cfg))
    assert read_artifact_meta(cfg.infer.model).band_surveys["ps1like_r"] == "ps1like"

    run_infer(cfg)
    frame = pd.concat(
        pd.read_parquet(p)
        for p in sorted((tmp_path / "catalog").glob("dataset/Norder=*/Dir=*/*.parquet"))
    )
    players = [schema.attr_column(s) for s in ("ps1", "unwise", "ps1like")]
    assert set(players) <= set(frame.columns)
    predicted = frame[schema.PDF].notna()
    assert predicted.any() and frame.loc[predicted, schema.attr_column("ps1like")].notna().all()
    total = frame[schema.ATTR_BASELINE] + frame[players].sum(axis=1)
    assert np.allclose(total[predicted], frame.loc[predicted, schema.Z_MEAN], atol=2e-3)


def test_an_inference_pass_may_use_object_store_by_batches_and_actors_not_objects():
    """The object store an inference pass may use (cutouts queued for the Predictor) is a
    fixed number of batches per actor, at least STORE_FLOOR: the queue cannot grow with the
    objects (benchmarks/memory_scale.py)."""
    from raycat.pipeline import STORE_FLOOR, _pass_store

    assert _pass_store(parse_config({})) == STORE_FLOOR  # one actor each: the floor
    gpu = parse_config({"cutouts": {"actors": 14}, "infer": {"batch_size": 1024}})
    cube = 4 * len(gpu.cutouts.bands) * gpu.cutouts.size_px**2
    assert _pass_store(gpu) == 4 * (14 * 128 + 1024) * cube > STORE_FLOOR


# --- materialised cutouts: keyed by plan, rewritten on rerun, refused when stale ----------


@pytest.fixture(scope="module")
def cut_twice(tmp_path_factory, ray_module):
    """A 60-object sky whose cutouts were materialised twice into the same output."""
    from raycat.pipeline import materialise_cutouts
    from raycat.sky.simulate import simulate_sky

    root = tmp_path_factory.mktemp("cut_twice")
    simulate_sky(str(root / "sky"), n_galaxies=60, seed=2, progress=False)
    cfg = parse_config(
        {
            "data": {"store": str(root / "sky")},
            "cutouts": {"output": str(root / "cutouts"), "healpix_order": 11},
        }
    )
    first = materialise_cutouts(cfg)
    files = sorted(p.relative_to(root) for p in (root / "cutouts").rglob("*.parquet"))
    second = materialise_cutouts(cfg)
    return cfg, root, first, second, files


def test_cutouts_rerun_rewrites_every_unit_and_never_appends(cut_twice):
    from raycat.photoz.train import split_datasets
    from raycat.pipeline import cutout_source

    cfg, root, first, second, files = cut_twice
    n = len(pd.read_parquet(root / "sky" / schema.TRUTH_FILE))
    assert sorted(p.relative_to(root) for p in (root / "cutouts").rglob("*.parquet")) == files
    assert {p.parts[1].split("=")[1] for p in files} == {str(u) for u in second.unit_counts}
    summary, make = cutout_source(cfg)
    assert summary.unit_counts == first.unit_counts == second.unit_counts
    ids = make().select_columns([schema.ID]).to_pandas()[schema.ID]
    assert len(ids) == ids.nunique() == n  # 60 rows for 60 ids, not 120
    seen = split_datasets(make(), cfg)
    assert sum(ds.count() for ds in seen.values()) <= n  # each object trained on at most once


def test_stale_cutouts_are_refused_before_ray_naming_what_changed(cut_twice, tmp_path):
    import shutil

    from raycat.errors import RaycatError
    from raycat.pipeline import cutout_source, read_materialised
    from raycat.plan.preflight import check_inputs

    cfg, root, _, _, _ = cut_twice
    for section, key, value in [
        ("cutouts", "pixel_scale", 0.5),
        ("cutouts", "softening", {"ps1_g": 0.3}),
        ("data", "objects", str(tmp_path / "objects.parquet")),
    ]:
        changed = cfg.model_copy(deep=True)
        setattr(getattr(changed, section), key, value)
        if key == "objects":
            shutil.copy(root / "sky" / schema.TRUTH_FILE, value)
        for check in (cutout_source, read_materialised, lambda c: check_inputs(c, "train")):
            with pytest.raises(RaycatError, match=rf"changed: {section}\.{key}\b"):
                check(changed)
    moved = cfg.model_copy(deep=True)  # same inputs, the order of the units chosen otherwise
    moved.cutouts.healpix_order, moved.cutouts.objects_per_unit = None, 7
    reused = cutout_source(moved)[0].units  # the dataset's own partitioning is reused
    assert reused == cutout_source(cfg)[0].units and {unit_order_pixel(u)[0] for u in reused} == {
        11
    }


def test_cutouts_stage_prints_progress_with_rate(cut_twice, capsys):
    """The cutout stage reports objects cut as the writers' reports come back, not only at
    its end (here it ends within a few seconds: the last line, with its rate)."""
    from raycat.pipeline import materialise_cutouts

    cfg, _, first, _, _ = cut_twice
    capsys.readouterr()
    materialise_cutouts(cfg)  # the same inputs: the same units and files as before
    n = sum(first.unit_counts.values())
    err = capsys.readouterr().err
    assert re.search(rf"^raycat: cutouts: {n}/{n} objects in \d+ s, [\d.]+k?/s$", err, re.M), err
