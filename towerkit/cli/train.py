"""`towerkit train`: trains a registered recipe and saves the run directory.

Recipe-specific flags (from `Recipe.add_arguments`) follow the common ones, e.g.
`towerkit train --model two_tower --out runs/tt --embedding-dim 64`; `towerkit train --model NAME
--help` lists them.

The run is trained beside `--out` and published when finished (a non-empty `--out` needs
`--overwrite`); it is checkpointed after each epoch and every `--checkpoint-every` steps, and
`towerkit train --resume RUN` continues a killed run with the config it was started with.

Scale-out: `--distribute mirrored` (this machine's GPUs) or `--distribute multi-worker` (one
process per worker, cluster from `TF_CONFIG`) trains any recipe under `tf.distribute`;
`--local-workers N` starts N workers on this machine over loopback. `--batch-size` stays the
GLOBAL batch (split over the replicas), so learning rates keep their meaning; `--negatives`
chooses global (default) or per-replica in-batch negatives. See `towerkit.recipes.distribute`.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

from towerkit._validation import non_negative_int, positive_int
from towerkit.recipes.run_state import DEFAULT_CHECKPOINT_EVERY

# main.py passes flags it does not know (the recipe's) through as `args.extra`.
ACCEPTS_EXTRA = True
DEFAULT_DATASET = "movielens/100k-ratings"
# The own-data flags: (flag, attribute).
DATA_FLAGS = (("--data", "data"), ("--data-format", "data_format"),
              ("--user-column", "user_column"), ("--item-column", "item_column"),
              ("--time-column", "time_column"), ("--rating-column", "rating_column"),
              ("--item-features", "item_features"), ("--item-key", "item_key"),
              ("--user-features", "user_features"), ("--user-key", "user_key"))


def add_parser(subparsers) -> argparse.ArgumentParser:
    # allow_abbrev=False: a recipe flag (e.g. the rankers' --rating) must not be taken for an
    # abbreviation of a common one (--rating-column); recipe flags pass through untouched.
    parser = subparsers.add_parser(
        "train", add_help=False, allow_abbrev=False, help="train a recipe and save the run",
        description="Train a registered recipe on a TFDS dataset (--dataset) or your own "
                    "interaction log (--data) and save the run directory.")
    parser.add_argument("-h", "--help", action="store_true", help="show this help (with --model: "
                        "also the recipe's flags) and exit")
    parser.add_argument("--model", help="recipe name, e.g. two_tower")
    parser.add_argument("--dataset", default=None,
                        help=f"TFDS dataset (default without --data: {DEFAULT_DATASET})")
    parser.add_argument("--data-dir", default=None,
                        help="TFDS data dir (default: $TFDS_DATA_DIR, then tfds' default)")
    own = parser.add_argument_group(
        "your own data", "train on an interaction log in files instead of --dataset; feature "
        "tables name their columns by role (items: title, genres; users: age, age_bucket, "
        "gender, occupation, zip_code), see towerkit.data.recipe_data")
    own.add_argument("--data", metavar="PATH", default=None,
                     help="interaction log: CSV/TSV, Parquet or TFRecord file, or a glob of them")
    own.add_argument("--data-format", choices=("csv", "parquet", "tfrecord"), default=None,
                     help="format of --data (default: from the extension)")
    own.add_argument("--user-column", metavar="C", help="user id column of --data")
    own.add_argument("--item-column", metavar="C", help="item id column of --data")
    own.add_argument("--time-column", metavar="C",
                     help="event time column (integers or datetimes; the sequential recipes "
                          "need it)")
    own.add_argument("--rating-column", metavar="C",
                     help="explicit rating column (the multi-task rankers need it)")
    own.add_argument("--item-features", metavar="PATH", help="item feature table (CSV/Parquet)")
    own.add_argument("--item-key", metavar="C",
                     help="item id column of --item-features (default: --item-column)")
    own.add_argument("--user-features", metavar="PATH", help="user feature table (CSV/Parquet)")
    own.add_argument("--user-key", metavar="C",
                     help="user id column of --user-features (default: --user-column)")
    parser.add_argument("--epochs", type=positive_int, default=None,
                        help="training epochs (default: the recipe's)")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default: %(default)s)")
    parser.add_argument("--out", help="run directory to write (published when training ends)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a non-empty --out (only once the new run has finished)")
    parser.add_argument("--resume", metavar="RUN", default=None,
                        help="continue the unfinished run RUN from its last checkpoint (with "
                             "the config it was started with; other flags are not allowed)")
    parser.add_argument("--checkpoint-every", type=non_negative_int, default=None, metavar="N",
                        help="also checkpoint every N training steps (default: "
                             f"{DEFAULT_CHECKPOINT_EVERY}; 0 = at epoch ends only)")
    parser.add_argument("--distribute", choices=("none", "mirrored", "multi-worker"),
                        default=None, help="tf.distribute strategy (default: none; "
                        "multi-worker reads the cluster from TF_CONFIG)")
    parser.add_argument("--local-workers", type=positive_int, default=None, metavar="N",
                        help="start N multi-worker processes on this machine over loopback "
                             "(implies --distribute multi-worker)")
    parser.add_argument("--negatives", choices=("global", "per-replica"), default=None,
                        help="in-batch negatives of retrieval tasks under a strategy: gathered "
                             "from every replica (global, default) or per replica (as TFRS)")
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
    from towerkit.recipes import distribute as dist

    if args.help:
        args._parser.print_help()
        names = [args.model] if args.model else recipes.available_recipes()
        for name in names:
            print(f"\nflags of recipe {name!r}:")
            recipe_parser(recipes.get_recipe(name)).print_help()
        return 0
    if args.local_workers is not None and args.distribute in (None, "multi-worker"):
        args.distribute = "multi-worker"
    try:
        dist.validate_distribute(args.distribute or "none", args.local_workers)
    except ValueError as e:
        args._parser.error(str(e))
    if args.resume:
        return _resume(args)
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
        data = _data_spec(args)
        dataset = None if data is not None else (args.dataset or DEFAULT_DATASET)
        config = recipes.make_run_config(args.model, dataset, data_dir=args.data_dir,
                                         seed=args.seed, epochs=args.epochs, params=params,
                                         data=data)
    except (TypeError, ValueError) as e:
        args._parser.error(str(e))
    if args.distribute or args.negatives:
        config["distribute"] = {"strategy": args.distribute or "none",
                                "negatives": args.negatives or "global"}
    run_dir = pathlib.Path(args.out)
    if args.local_workers:
        return _launch(args, config, recipe_cls(), run_dir)
    # Multi-worker collectives must be set up before TensorFlow runs any op in the process.
    strategy = dist.make_strategy(args.distribute or "none")
    metrics = recipe_cls().train(config, run_dir, overwrite=args.overwrite,
                                 checkpoint_every=args.checkpoint_every)
    return _report(run_dir, metrics) if dist.is_chief(strategy) else 0


def _data_spec(args: argparse.Namespace):
    """The run config's `data` entry from the own-data flags (None without --data)."""
    from towerkit.data.recipe_data import file_data

    given = [flag for flag, attr in DATA_FLAGS if getattr(args, attr) is not None]
    if args.data is None:
        if given:
            raise ValueError(f"{' '.join(given)} describe your own data; add --data PATH (the "
                             "interaction log) or drop them.")
        return None
    if args.dataset is not None or args.data_dir is not None:
        raise ValueError("--data trains on your own files; drop --dataset/--data-dir (they "
                         "name a tfds dataset).")
    missing = [f for f, v in (("--user-column", args.user_column),
                              ("--item-column", args.item_column)) if v is None]
    if missing:
        raise ValueError(f"--data needs {' and '.join(missing)} (which columns hold the user "
                         "and item ids).")
    return file_data(args.data, user=args.user_column, item=args.item_column,
                     time=args.time_column, rating=args.rating_column,
                     user_features=args.user_features, user_key=args.user_key,
                     item_features=args.item_features, item_key=args.item_key,
                     format=args.data_format)


def _worker_argv(args: argparse.Namespace) -> list:
    """The `train` arguments of each worker of `--local-workers`: these flags, no launcher."""
    argv = ["train", "--distribute", "multi-worker"]
    if args.resume:
        argv += ["--resume", str(args.resume)]
    else:
        argv += ["--model", args.model, "--seed", str(args.seed), "--out", str(args.out)]
        for flag, value in (("--dataset", args.dataset), ("--data-dir", args.data_dir),
                            ("--epochs", args.epochs), ("--negatives", args.negatives),
                            *((flag, getattr(args, attr)) for flag, attr in DATA_FLAGS)):
            if value is not None:
                argv += [flag, str(value)]
        if args.overwrite:
            argv.append("--overwrite")
    if args.checkpoint_every is not None:
        argv += ["--checkpoint-every", str(args.checkpoint_every)]
    return argv + list(args.extra)


def _launch(args: argparse.Namespace, config: dict, recipe, run_dir: pathlib.Path) -> int:
    """Checks the run like a worker would (before starting any), then runs the workers."""
    from towerkit.cli.local_cluster import run_local_workers
    from towerkit.recipes import run_state

    resume = bool(args.resume)
    staged = run_state.staging_dir(run_dir)
    if not resume and not args.overwrite and run_state._resumable(staged, config):
        resume = True  # the workers resume the staged run of the same config
    run_state.validate_out_dir(run_dir, overwrite=args.overwrite, resume=resume)
    recipe.validate_config(config)
    return run_local_workers(_worker_argv(args), args.local_workers)  # the chief reports


def _resume(args: argparse.Namespace) -> int:
    from towerkit.recipes import distribute as dist
    from towerkit.recipes import run_state

    given = [flag for flag, value in (("--model", args.model), ("--out", args.out),
                                      ("--epochs", args.epochs), ("--data-dir", args.data_dir),
                                      ("--overwrite", args.overwrite),
                                      ("--negatives", args.negatives), ("--dataset", args.dataset),
                                      *((flag, getattr(args, attr))
                                        for flag, attr in DATA_FLAGS)) if value]
    if given or args.extra:
        args._parser.error(f"--resume RUN continues a run with the config it was started with; "
                           f"drop {' '.join(given + list(args.extra))}.")
    run_dir = pathlib.Path(args.resume)
    run_state.validate_out_dir(run_dir, resume=True)
    config = json.loads((run_state.staging_dir(run_dir) / "run.json").read_text())
    config = {k: v for k, v in config.items() if k not in run_state.STATE_KEYS}
    strategy = run_state.distribution(config)["strategy"]
    if args.distribute and args.distribute != strategy:
        args._parser.error(f"--resume: the run was started with --distribute {strategy}; "
                           f"drop --distribute {args.distribute}.")
    from towerkit import recipes

    recipe = recipes.get_recipe(config["recipe"])()
    if args.local_workers:
        if strategy != "multi-worker":
            args._parser.error(f"--local-workers: the run was started with --distribute "
                               f"{strategy}, not multi-worker.")
        return _launch(args, config, recipe, run_dir)
    dist.validate_distribute(strategy)
    chief = dist.is_chief(dist.make_strategy(strategy))
    metrics = recipe.train(config, run_dir, resume=True, checkpoint_every=args.checkpoint_every)
    return _report(run_dir, metrics) if chief else 0


def _report(run_dir: pathlib.Path, metrics: dict) -> int:
    print(json.dumps({"run_dir": str(run_dir), "metrics": metrics}, indent=2, sort_keys=True,
                     default=float))
    sys.stdout.flush()
    return 0
