"""The `towerkit` command line.

Errors towerkit raises for bad input (ValueError, TypeError, missing data) are printed as one
`towerkit <command>: error: ...` line with exit status 2; set `TOWERKIT_TRACEBACK=1` for the
traceback.

Each subcommand is a module `towerkit/cli/<module>.py` exposing `add_parser(subparsers)` (adds and
returns its sub-parser) and `run(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Optional, Sequence

# (command, module) in the order `towerkit --help` lists them.
COMMANDS = (
    ("quickstart", "quickstart"),
    ("train", "train"),
    ("evaluate", "evaluate"),
    ("export", "export"),
    ("check-export", "check_export"),
    ("recommend", "recommend"),
)


def _command_modules() -> dict:
    return {command: importlib.import_module(f"towerkit.cli.{module}")
            for command, module in COMMANDS}


def build_parser() -> argparse.ArgumentParser:
    """Builds the top-level parser with one sub-parser per available command."""
    parser = argparse.ArgumentParser(
        prog="towerkit",
        description="Two-tower retrieval, ANN indexes and TensorFlow Serving, built on TFRS.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command, module in _command_modules().items():
        sub = module.add_parser(subparsers)
        sub.set_defaults(_run=module.run, _accepts_extra=getattr(module, "ACCEPTS_EXTRA", False))
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the `towerkit` console script; returns the exit status."""
    import towerkit  # noqa: F401  (legacy-Keras switch before any command imports TF)

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help(sys.stderr)
        return 2
    if extra and not args._accepts_extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = list(extra)
    from towerkit.data import MovieLensUnavailableError

    try:
        return int(args._run(args) or 0)
    except (ValueError, TypeError, MovieLensUnavailableError) as e:
        # towerkit raises these with a message naming the problem and the fix: show just that.
        if os.environ.get("TOWERKIT_TRACEBACK"):
            raise
        print(f"towerkit {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
