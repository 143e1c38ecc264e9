"""`towerkit evaluate RUN`: scores a trained run on one of its splits."""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate", help="evaluate a trained run",
        description="Score a run written by `towerkit train` on one of its splits.")
    parser.add_argument("run_dir", metavar="RUN", help="run directory")
    parser.add_argument("--split", default="test", help="split to score (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    parser.add_argument("--dump-topn", metavar="FILE.npz", default=None,
                        help="also write the top-N lists to this .npz file")
    return parser


def run(args: argparse.Namespace) -> int:
    from towerkit import recipes
    from towerkit.data import recipe_data

    recipe, config = recipes.load_run(args.run_dir)
    metrics = recipe.evaluate(args.run_dir, split=args.split, dump_topn=args.dump_topn)
    if args.json:
        print(json.dumps(metrics, indent=2, sort_keys=True, default=float))
    else:
        print(f"{config['recipe']} run {args.run_dir} ({recipe_data.describe(config)}, split "
              f"{args.split}):")
        for name in sorted(metrics):
            value = metrics[name]
            print(f"  {name}: {value:.4f}" if isinstance(value, float) else f"  {name}: {value}")
    return 0
