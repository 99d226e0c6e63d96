"""The `raycat` command. Heavy modules are imported inside each subcommand so --help is fast.

User errors (RaycatError) exit with status 2 and one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from raycat.errors import RaycatError


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
    from raycat.simulate import simulate_sky

    summary = simulate_sky(args.out, n_galaxies=args.n_galaxies, seed=args.seed,
                           area_deg2=args.area_deg2)
    print(summary)
    return 0


def _add_simulate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="write a mock multi-survey sky (tiles, truth, index)",
                       description="Write a mock 9-band sky: FITS tiles with WCS per survey "
                       "and band, truth.parquet and the tile index tiles.parquet.")
    p.add_argument("--out", required=True, help="output directory or URL (s3://bucket/prefix)")
    p.add_argument("--n-galaxies", type=_positive_int, default=2000,
                   help="number of target galaxies (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--area-deg2", type=_positive_float, default=None,
                   help="sky area in deg^2 (default: from a fixed target density)")
    p.set_defaults(run=_cmd_simulate)


COMMANDS = [_add_simulate]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raycat",
        description="Photometric-redshift catalogs from multi-survey images, on Ray.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except RaycatError as err:
        print(f"raycat {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"raycat {args.command}: interrupted", file=sys.stderr)
        return 130
