"""The `raycat` command. Heavy modules are imported inside each subcommand so --help is fast.

User errors (RaycatError) exit with status 2 and one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from raycat import schema
from raycat.errors import RaycatError, one_line, user_error

if TYPE_CHECKING:
    from raycat.config import RaycatConfig

OVERRIDE = "set_"  # argparse dest of a config override: set_<section>__<field>


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _cmd_simulate(args: argparse.Namespace) -> int:
    import os

    from raycat.sky.simulate import simulate_sky

    summary = simulate_sky(
        args.out,
        n_galaxies=args.n_galaxies,
        seed=args.seed,
        area_deg2=args.area_deg2,
        on_ray=args.ray or bool(os.environ.get("RAY_ADDRESS")),  # a job: tiles off the head
        domain=args.domain,  # an unknown name is a one-line RaycatError listing the known
    )
    print(summary)
    return 0


def _add_simulate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="write a mock multi-survey sky (tiles, truth, index)",
        description="Write a mock 9-band sky: FITS tiles with WCS per survey "
        "and band, truth.parquet and the tile index tiles.parquet.",
    )
    p.add_argument("--out", required=True, help="output directory or URL (s3://bucket/prefix)")
    p.add_argument(
        "--n-galaxies",
        type=_positive_int,
        default=2000,
        help="number of target galaxies (default 2000)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--area-deg2",
        type=_positive_float,
        default=None,
        help="sky area in deg^2 (default: from a fixed target density)",
    )
    p.add_argument(
        "--ray",
        action="store_true",
        help="draw the tiles in Ray tasks, on the cluster at RAY_ADDRESS or a local Ray "
        "(the default under `ray job submit`, where RAY_ADDRESS is set); the same files",
    )
    p.add_argument(
        "--domain",
        default="default",
        help="observing setup (raycat.sky.domains): default (the built-in one), shifted "
        "(other PSFs, depths, SED mix and Milky Way extinction: 'the real sky') or dusty "
        "(default plus that extinction); default: default",
    )
    p.set_defaults(run=_cmd_simulate)


def _with_config(run, stage: str):
    """Load the --config file, check the stage's inputs, join or start Ray, run the stage."""

    def command(args: argparse.Namespace) -> int:
        from raycat.config import load_config
        from raycat.runtime import ray_session

        cfg = with_overrides(load_config(args.config), overrides(args))
        preflight(cfg, stage)
        with ray_session(cfg.ray):
            result = run(cfg)
        print(json.dumps(result, indent=2, default=str))
        return 0

    return command


def preflight(cfg: RaycatConfig, stage: str) -> None:
    """What a stage needs that needs no Ray, checked before Ray starts (~18 s on a laptop):
    a bad input then costs a second and one line, not a start-up and a traceback."""
    from raycat.plan.preflight import check_inputs

    check_inputs(cfg, stage)
    if stage == "train":
        from raycat.photoz.train import check_resume

        check_resume(cfg)


def overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The config values given on the command line, by section: ``{"infer": {"mode": ...}}``."""
    changes: dict[str, dict[str, Any]] = {}
    for key, value in vars(args).items():
        if key.startswith(OVERRIDE) and value is not None:
            section, field = key.removeprefix(OVERRIDE).split("__")
            changes.setdefault(section, {})[field] = value
    return changes


def with_overrides(cfg: RaycatConfig, changes: dict[str, dict[str, Any]]) -> RaycatConfig:
    """``cfg`` with ``changes`` applied, each changed section validated again.

    ``model_copy(update=...)`` alone does not validate, so a bad value would reach a stage;
    here it is a one-line ConfigError naming the field, as in a config file.
    """
    from pydantic import ValidationError

    from raycat.config import ConfigError

    sections = {}
    for name, values in changes.items():
        section = getattr(cfg, name)
        try:
            sections[name] = type(section).model_validate({**section.model_dump(), **values})
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in (name, *first["loc"]))
            raise ConfigError(f"command line: {where}: {first['msg']}") from None
    return cfg.model_copy(update=sections)


def _config_parser(sub, name: str, help_text: str, run) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_text, description=help_text)
    p.add_argument("--config", required=True, help="YAML config file (path or URL)")
    p.set_defaults(run=_with_config(run, name))
    return p


def _cutouts(cfg):
    from dataclasses import asdict

    from raycat.pipeline import materialise_cutouts

    summary = asdict(materialise_cutouts(cfg))
    summary["unit_counts"] = len(summary["unit_counts"])
    summary.pop("unit_hashes", None)  # one number per unit: not for a terminal
    return summary


def _plan(cfg):
    from raycat.plan.dryrun import dry_run

    return dry_run(cfg)


def _train(cfg):
    from raycat.pipeline import run_train

    return run_train(cfg)


def _infer(cfg):
    from raycat.pipeline import run_infer

    return run_infer(cfg)


def _add_stages(sub: argparse._SubParsersAction) -> None:
    p = _config_parser(
        sub,
        "cutouts",
        "cut every object into a Parquet dataset of 9-band cubes (reused across training epochs)",
        _cutouts,
    )
    p.add_argument(
        "--out", dest=f"{OVERRIDE}cutouts__output", metavar="URL", help="override cutouts.output"
    )
    _config_parser(
        sub,
        "plan",
        "plan the work alone (a dry run: nothing is written) and print its shape as JSON",
        _plan,
    )
    p = _config_parser(sub, "train", "train the redshift network on Ray Train", _train)
    p.add_argument(
        "--init-from",
        dest=f"{OVERRIDE}train__init_from",
        metavar="ARTIFACT",
        help="override train.init_from: fine-tune from this model artifact (same bands)",
    )
    p = _config_parser(sub, "infer", "predict every object and write the HATS catalog", _infer)
    p.add_argument(
        "--model", dest=f"{OVERRIDE}infer__model", metavar="PATH", help="override infer.model"
    )
    p.add_argument(
        "--catalog", dest=f"{OVERRIDE}infer__catalog", metavar="URL", help="override infer.catalog"
    )
    # checked by the config (one rule, one message), not by argparse
    p.add_argument(
        "--mode",
        dest=f"{OVERRIDE}infer__mode",
        metavar="MODE",
        help="override infer.mode: resume, overwrite or new",
    )
    p.add_argument(
        "--region",
        dest=f"{OVERRIDE}infer__region",
        metavar="REGION",
        help="rewrite only the partitions a region touches: a cone RA,DEC,RADIUS_DEG or "
        "HEALPix pixels ORDER/PIX,... (same model and settings as the catalog)",
    )


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from raycat.quality.evaluate import evaluate_catalog

    metrics = evaluate_catalog(
        args.catalog, args.truth, args.out, id_column=args.id_column, z_column=args.z_column
    )
    if args.stability:
        metrics["stability"] = _stability(args)
    print(json.dumps(metrics, indent=2, default=str))
    return 0


def _model_and_cutouts(args: argparse.Namespace):
    """(config, cutout dataset factory) from --config, for the sections that run the model."""
    from raycat.config import load_config
    from raycat.errors import RaycatError
    from raycat.pipeline import cutout_source

    if not args.config:
        raise RaycatError("--stability needs --config (it names the model and the cutouts)")
    cfg = load_config(args.config)
    return cfg, cutout_source(cfg)[1]


def _stability(args: argparse.Namespace) -> dict:
    from raycat.photoz.inputs import network_input
    from raycat.photoz.model import load_artifact
    from raycat.quality.report import (
        PLOT_STABILITY,
        STABILITY_OBJECTS,
        sample_cutouts,
        save_figures,
        stability,
        stability_figure,
    )
    from raycat.runtime import ray_session

    cfg, make = _model_and_cutouts(args)
    model, meta = load_artifact(cfg.infer.model, cfg.data.storage_options)
    with ray_session(cfg.ray):
        sample = sample_cutouts(make(), STABILITY_OBJECTS, ebv=meta.ebv_input)
    summary, shifts = stability(model, meta, network_input(sample, meta.ebv_input))
    save_figures({PLOT_STABILITY: stability_figure(shifts, summary)}, args.out, None)
    return summary


def _cmd_report(args: argparse.Namespace) -> int:
    from raycat.quality.report import build_report
    from raycat.runtime import ray_session

    if not args.config:
        path, _ = build_report(args.catalog, args.truth, args.out)
    else:
        cfg, make = _model_and_cutouts(args)
        with ray_session(cfg.ray):
            path, _ = build_report(
                args.catalog,
                args.truth,
                args.out,
                cutouts=make(),
                model_url=cfg.infer.model,
                storage_options=cfg.data.storage_options,
            )
    print(path)
    return 0


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="an HTML page of catalog diagnostics",
        description="One HTML page with PNG figures: sky maps of counts, flagged "
        "fraction and mean z, the stacked n(z) and the objects per flag; with --truth, "
        "photo-z against truth, PIT, accuracy against redshift and magnitude, attribution "
        "shares against redshift and, with --config, rotation stability and example "
        "cutouts with their PDFs.",
    )
    p.add_argument("--catalog", required=True, help="catalog root (path or URL)")
    p.add_argument(
        "--truth",
        default=None,
        help="truth table with id, z (and magnitudes); leave out for a production catalog",
    )
    p.add_argument("--out", required=True, help="directory for index.html and the figures")
    p.add_argument("--config", default=None, help="config naming the model and the cutouts")
    p.set_defaults(run=_cmd_report)


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="photo-z metrics and plots of a catalog against truth",
        description="NMAD, bias, outlier rates, PIT and CRPS of a catalog "
        "against true redshifts, beside RAIL's metrics (sigma_IQR, outlier rate, bias, PIT "
        "CvM/AD/outliers, CDE loss, on z_mode), printed as JSON, with PNG plots including "
        "the stacked n(z) of tomographic bins against the true n(z).",
    )
    p.add_argument("--catalog", required=True, help="catalog root (path or URL)")
    p.add_argument(
        "--truth",
        default=None,
        help="truth table with id and z (default: the catalog's own z_spec column)",
    )
    p.add_argument("--out", default="raycat-eval", help="directory for plots (default raycat-eval)")
    p.add_argument("--id-column", default="id")
    p.add_argument("--z-column", default="z")
    p.add_argument(
        "--stability",
        action="store_true",
        help="also predict a sample of cutouts under the 8 rotations and flips (needs --config)",
    )
    p.add_argument("--config", default=None, help="config naming the model and the cutouts")
    p.set_defaults(run=_cmd_evaluate)


def _cmd_export(args: argparse.Namespace) -> int:
    from raycat.catalog.export import export_qp

    summary = export_qp(args.catalog, args.out, _storage_options(args.storage_options))
    print(json.dumps(summary))
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write the catalog's PDFs in another format (qp, for RAIL)",
        description="Stream the catalog, partition by partition, into a qp ensemble (HDF5): "
        "hist PDFs on the catalog's bin edges, ancil id, zmode, zmean, zmedian, redshift, "
        "flags; objects without a PDF are kept as NaN rows. Needs the [rail] extra.",
    )
    p.add_argument("--catalog", required=True, help="catalog root (path or URL)")
    p.add_argument("--format", choices=["qp"], default="qp", help="output format (default qp)")
    p.add_argument("--out", required=True, help="output file (.hdf5; path or URL)")
    p.add_argument(
        "--storage-options", default=None, help="JSON fsspec options for the catalog and --out"
    )
    p.set_defaults(run=_cmd_export)


def _cmd_demo(args: argparse.Namespace) -> int:
    from raycat.demo import run_demo

    run_demo(args.workdir, n_galaxies=args.n_galaxies, epochs=args.epochs, seed=args.seed)
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the whole chain on a small mock sky and a local Ray",
        description="Simulate a small sky, cut it out, train, infer every "
        "object into a HATS catalog and print held-out metrics and plots.",
    )
    p.add_argument(
        "--workdir", default="demo-data", help="where everything goes (default demo-data)"
    )
    p.add_argument("--n-galaxies", type=_positive_int, default=2000)
    p.add_argument("--epochs", type=_positive_int, default=15)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=_cmd_demo)


def _cmd_index(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from raycat.surveys.indexer import build_index

    options = _storage_options(args.storage_options)
    summary = build_index(
        args.store,
        args.out,
        args.pattern,
        args.band_from,
        args.survey,
        options,
        allow_partial=args.allow_partial,
    )
    print(json.dumps(asdict(summary), indent=2))
    return 0


def _storage_options(text: str | None) -> dict:
    """``--storage-options JSON`` as a dict; credentials in it are refused."""
    from raycat.config import refuse_credentials

    try:
        options = json.loads(text) if text else {}
    except json.JSONDecodeError as err:
        raise RaycatError(f"--storage-options is not JSON: {err}") from None
    refuse_credentials(options, "--storage-options")
    return options


def _cmd_tiles(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from raycat.surveys.tile_build import build_tiles_index, parse_region

    survey = args.survey
    template = (
        args.uri_template
        or {
            "ps1": schema.PS1_URI_TEMPLATE,
            "unwise": schema.UNWISE_URI_TEMPLATE,
        }[survey]
    )
    summary = build_tiles_index(
        survey,
        [b.strip() for b in args.bands.split(",")],
        template,
        args.out,
        _storage_options(args.storage_options),
        parse_region(args.region),
        append=args.append,
    )
    print(json.dumps(asdict(summary)))
    return 0


def _add_tiles(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tiles",
        help="write the partitioned tile index of a computed tiling (PS1 skycells, unWISE)",
        description="Compute the tiles of a survey's published tiling (names, footprints, "
        "WCS) and write them as the HEALPix-partitioned tile index, in parallel on Ray. "
        "--append adds a survey to an existing index (e.g. unwise after ps1).",
    )
    p.add_argument("--survey", required=True, choices=["ps1", "unwise"])
    p.add_argument("--bands", required=True, help="comma-separated bands, e.g. ps1_g,ps1_r")
    p.add_argument("--out", required=True, help="index directory (path or URL)")
    p.add_argument(
        "--uri-template",
        default=None,
        help="tile URI relative to the store, with {tile} {band} {filter} (and {projcell} "
        "{skycell} for ps1); default: the survey archive's layout",
    )
    p.add_argument(
        "--region",
        default=None,
        metavar="RA_MIN:RA_MAX,DEC_MIN:DEC_MAX",
        help="only tiles that may touch this box (degrees; RA_MIN > RA_MAX wraps); "
        "default: the whole sky",
    )
    p.add_argument(
        "--append",
        action="store_true",
        help="add to the index at --out (its other bands stay) instead of replacing it",
    )
    p.add_argument(
        "--storage-options",
        default=None,
        metavar="JSON",
        help="fsspec options, e.g. '{\"anon\": true}' (never credentials)",
    )
    p.set_defaults(run=_cmd_tiles)


def _add_index(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "index",
        help="build the tile index of a store from FITS headers",
        description="List the store's FITS files, read only each file's "
        "header (ranged reads, in parallel on Ray) and write the tile index "
        "(footprints and WCS). Files without a celestial WCS are reported.",
    )
    p.add_argument("--store", required=True, help="store root (path or URL: s3://bucket/prefix)")
    p.add_argument(
        "--out", default=None, help="index directory to write (default: STORE/tile_index)"
    )
    p.add_argument(
        "--pattern",
        default=schema.INDEX_FILE_PATTERN,
        help="file name glob (a path glob if it holds '/'; default '*.fits*')",
    )
    p.add_argument(
        "--band-from",
        default=None,
        metavar="KEYWORD|REGEX",
        help="header keyword holding the band (FILTER), or a regex over the path "
        "whose group 'band' is the band (default: BAND, then FILTER keyword); write "
        "a regex that starts with '-' as --band-from=REGEX",
    )
    p.add_argument(
        "--survey",
        default=None,
        help="survey name for every row (default: the band's prefix, as in ps1_g)",
    )
    p.add_argument(
        "--storage-options",
        default=None,
        metavar="JSON",
        help="fsspec options, e.g. '{\"anon\": true}' (never credentials)",
    )
    p.add_argument(
        "--allow-partial",
        action="store_true",
        help="write the index even when some files cannot be read (default: fail and keep "
        "the old index)",
    )
    p.set_defaults(run=_cmd_index)


def _cmd_crosscheck(args: argparse.Namespace) -> int:
    from raycat.quality.crosscheck import main as crosscheck

    return crosscheck(args.arguments, prog="raycat crosscheck")


def _add_crosscheck(sub: argparse._SubParsersAction) -> None:
    # the check owns its options (raycat.quality.crosscheck.build_parser); '+' as the only prefix
    # hands every argument, --help included, to it unparsed
    p = sub.add_parser(
        "crosscheck",
        add_help=False,
        prefix_chars="+",
        help="cross-survey consistency check of one field: positions and AB "
        "fluxes of bright sources against a reference survey",
    )
    p.add_argument("arguments", nargs="*", help="see `raycat crosscheck --help`")
    p.set_defaults(run=_cmd_crosscheck)


COMMANDS = [
    _add_simulate,
    _add_stages,
    _add_evaluate,
    _add_export,
    _add_report,
    _add_demo,
    _add_index,
    _add_tiles,
    _add_crosscheck,
]


def _version() -> str:
    """The installed distribution's version (pyproject's), as pip and bug reports see it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("raycat")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raycat", description="Photometric-redshift catalogs from multi-survey images, on Ray."
    )
    parser.add_argument("--version", action="version", version=f"raycat {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_storage_clients()
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print(f"raycat {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        user = user_error(err)
        if user is None:
            raise  # a bug in raycat: the traceback is what a bug report needs
        print(f"raycat {args.command}: error: {one_line(user)}", file=sys.stderr)
        return 2


# Storage clients that log every retry, gcsfs with a traceback each time: raycat says in one
# line why a store failed, so their logs would only bury it.
QUIET_LOGGERS = ("gcsfs", "google.auth", "google.cloud", "s3fs", "aiobotocore", "botocore")


def _quiet_storage_clients() -> None:
    import logging

    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)


def run_job(command: str) -> None:
    """Entry point of the jobs/ files: ``raycat <command>`` with the script's arguments."""
    raise SystemExit(main([command, *sys.argv[1:]]))
