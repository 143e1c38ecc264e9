"""The `towerkit` command line.

Errors towerkit raises for bad input (ValueError, TypeError, missing data) are printed as one
`towerkit <command>: error: ...` line with exit status 2; any other exception is printed as one
line too (`towerkit <command>: error: <type>: <message>`, exit status 1). `towerkit --debug
COMMAND ...` (or `TOWERKIT_TRACEBACK=1`) shows the traceback instead.

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
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of an error instead of one line")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command, module in _command_modules().items():
        sub = module.add_parser(subparsers)
        sub.set_defaults(_run=module.run, _accepts_extra=getattr(module, "ACCEPTS_EXTRA", False))
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the `towerkit` console script; returns the exit status."""
    import towerkit  # noqa: F401  (legacy-Keras switch before any command imports TF)

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug_anywhere = "--debug" in argv  # accepted after the command too
    argv = [a for a in argv if a != "--debug"]
    args, extra = parser.parse_known_args(argv)
    args.debug = args.debug or debug_anywhere
    if getattr(args, "_run", None) is None:
        parser.print_help(sys.stderr)
        return 2
    if extra and not args._accepts_extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = list(extra)
    from towerkit.data import MovieLensUnavailableError

    debug = bool(args.debug or os.environ.get("TOWERKIT_TRACEBACK"))
    try:
        return int(args._run(args) or 0)
    except (ValueError, TypeError, MovieLensUnavailableError) as e:
        # towerkit raises these with a message naming the problem and the fix: show just that.
        if debug:
            raise
        print(f"towerkit {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"towerkit {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # pylint: disable=broad-except
        if debug:
            raise
        print(f"towerkit {args.command}: error: {type(e).__name__}: {_one_line(e)} (run "
              f"`towerkit --debug {args.command} ...` for the traceback)", file=sys.stderr)
        return 1


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split("\n")).strip()
    return text[:2000] if text else type(error).__name__


if __name__ == "__main__":
    sys.exit(main())
