"""`towerkit check-export PATH`: can stock TensorFlow Serving load and run this export?

Prints the signatures with their inputs and outputs, the ops that are not stock TensorFlow, and
the result of loading the model in a clean TensorFlow process and replaying its warmup requests.
Exit status: 0 servable, 1 not servable, 2 not an export.
"""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "check-export", help="check that stock TensorFlow Serving can load an export",
        description="List signatures and non-stock ops of a SavedModel export, load it in a clean "
                    "TensorFlow process and run its warmup requests. Exit 0 when stock "
                    "tensorflow/serving can serve it, 1 when not, 2 when PATH is not an export.")
    parser.add_argument("path", metavar="PATH",
                        help="a model base path (its latest version is checked) or one version "
                             "directory")
    parser.add_argument("--no-run", action="store_true",
                        help="only the static checks (signatures, ops); skip loading and warmup")
    return parser


def run(args: argparse.Namespace) -> int:
    from towerkit.serving import check

    try:
        report = check(args.path, run=not args.no_run)
    except ValueError as error:
        print(f"towerkit check-export: {error}", file=sys.stderr)
        return 2
    print(report.format())
    return 0 if report.servable else 1
