"""`towerkit train`: trains a registered recipe and saves the run directory.

Recipe-specific flags (from `Recipe.add_arguments`) follow the common ones, e.g.
`towerkit train --model two_tower --out runs/tt --embedding-dim 64`; `towerkit train --model NAME
--help` lists them.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

# main.py passes flags it does not know (the recipe's) through as `args.extra`.
ACCEPTS_EXTRA = True


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train", add_help=False, help="train a recipe and save the run",
        description="Train a registered recipe on a TFDS dataset and save the run directory.")
    parser.add_argument("-h", "--help", action="store_true", help="show this help (with --model: "
                        "also the recipe's flags) and exit")
    parser.add_argument("--model", help="recipe name, e.g. two_tower")
    parser.add_argument("--dataset", default="movielens/100k-ratings",
                        help="TFDS dataset (default: %(default)s)")
    parser.add_argument("--data-dir", default=None,
                        help="TFDS data dir (default: $TFDS_DATA_DIR, then tfds' default)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="training epochs (default: the recipe's)")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default: %(default)s)")
    parser.add_argument("--out", help="run directory to write")
    parser.set_defaults(_parser=parser)
    return parser


def recipe_parser(recipe_cls) -> argparse.ArgumentParser:
    """A parser holding only the recipe's own flags."""
    parser = argparse.ArgumentParser(prog=f"towerkit train --model {recipe_cls.name}",
                                     add_help=False)
    recipe_cls.add_arguments(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from towerkit import recipes

    if args.help:
        args._parser.print_help()
        names = [args.model] if args.model else recipes.available_recipes()
        for name in names:
            print(f"\nflags of recipe {name!r}:")
            recipe_parser(recipes.get_recipe(name)).print_help()
        return 0
    if not args.model:
        args._parser.error("--model is required; one of: "
                           + ", ".join(recipes.available_recipes()))
    if not args.out:
        args._parser.error("--out RUN_DIR is required")
    try:
        recipe_cls = recipes.get_recipe(args.model)
    except ValueError as e:
        args._parser.error(str(e))
    params = vars(recipe_parser(recipe_cls).parse_args(args.extra))
    try:
        config = recipes.make_run_config(args.model, args.dataset, data_dir=args.data_dir,
                                         seed=args.seed, epochs=args.epochs, params=params)
    except (TypeError, ValueError) as e:
        args._parser.error(str(e))
    run_dir = pathlib.Path(args.out)
    recipes.write_run_config(run_dir, config)
    metrics = recipe_cls().train(config, run_dir)
    print(json.dumps({"run_dir": str(run_dir), "metrics": metrics}, indent=2, sort_keys=True,
                     default=float))
    sys.stdout.flush()
    return 0
