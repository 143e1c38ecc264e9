"""`towerkit quickstart`: train -> index -> recommend -> export, on MovieLens 100K.

The steps are the ones a user runs separately: `towerkit train --model two_tower`, a
`towerkit.index.BruteForce` over the run's candidates, and `towerkit.serving.export` into the
TensorFlow Serving layout `OUT/movielens/<version>/`.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shlex

import numpy as np

from towerkit._validation import positive_int

MODEL_NAME = "movielens"
MAX_USERS = 8  # the run's sample queries


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "quickstart", help="train, index and export a MovieLens 100K two-tower model",
        description="Fit a two-tower model on MovieLens 100K (tfds), build a BruteForce index, "
                    "print top-10 movies for a few users and export the index for TensorFlow "
                    "Serving.")
    parser.add_argument("--data-dir", default=None,
                        help="TFDS data dir (default: $TFDS_DATA_DIR, then tfds' default)")
    parser.add_argument("--out", default="towerkit-quickstart",
                        help="output directory (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run and the export of an existing --out")
    parser.add_argument("--epochs", type=positive_int, default=3,
                        help="training epochs (default: 3)")
    parser.add_argument("--users", type=positive_int, default=3,
                        help=f"users to print recommendations for, 1-{MAX_USERS} (default: 3)")
    parser.add_argument("--seed", type=int, default=42)
    return parser


def run(args: argparse.Namespace) -> int:
    import tensorflow as tf

    from towerkit import recipes
    from towerkit.index import BruteForce
    from towerkit.serving import export

    if args.users > MAX_USERS:
        raise ValueError(f"--users must be between 1 and {MAX_USERS} (the run's sample users), "
                         f"got {args.users}.")
    out = pathlib.Path(args.out).resolve()
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a directory path.")
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise ValueError(f"--out {out} already holds files (an earlier quickstart?); pass "
                         "--overwrite to replace its run and export, or choose another --out.")
    run_dir = out / "run"
    print(f"[1/4] Training two_tower on movielens/100k-ratings for {args.epochs} epoch(s) "
          f"-> {run_dir}", flush=True)
    config = recipes.make_run_config("two_tower", "movielens/100k-ratings",
                                     data_dir=args.data_dir, seed=args.seed, epochs=args.epochs,
                                     params={})
    recipe = recipes.get_recipe("two_tower")()
    metrics = recipe.train(config, run_dir, overwrite=args.overwrite)
    print(f"      test top-100 accuracy {metrics['top_100_categorical_accuracy']:.3f}, "
          f"top-10 {metrics['top_10_categorical_accuracy']:.3f}", flush=True)

    print("[2/4] Building a BruteForce index over the movie catalogue", flush=True)
    inputs = recipe.index_inputs(run_dir)
    index = BruteForce(query_model=inputs.query_model, k=10)
    index.index(inputs.candidate_embeddings, inputs.candidate_ids)
    titles = dict(zip(inputs.candidate_ids.tolist(), inputs.candidate_titles.tolist()))

    print("[3/4] Top-10 recommendations", flush=True)
    users = list(dict.fromkeys(inputs.sample_queries["user_id"].tolist()))[:args.users]
    _, ids = index({"user_id": tf.constant(users)})
    for user, row in zip(users, ids.numpy()):
        print(f"  user {user.decode()}:")
        for rank, item_id in enumerate(row, 1):
            print(f"    {rank:2d}. {titles[item_id].decode()}")

    print("[4/4] Exporting for TensorFlow Serving", flush=True)
    base = out / MODEL_NAME
    if args.overwrite and base.exists():
        import shutil  # pylint: disable=g-import-not-at-top

        shutil.rmtree(base)  # --overwrite replaces the export too (version 1 again)
    version_dir = export(index, base, query_signature=inputs.query_signature,
                         warmup_queries={k: np.asarray(v)[:4]
                                         for k, v in inputs.sample_queries.items()})
    print(f"  wrote {version_dir}")
    print("\nServe it with the TensorFlow Serving binary:")
    print(f"  tensorflow_model_server --model_base_path={shlex.quote(str(base))} "
          f"--model_name={MODEL_NAME} --rest_api_port=8501")
    print("or with Docker:")
    print(f"  docker run -p 8501:8501 -v {shlex.quote(str(base))}:/models/{MODEL_NAME} "
          f"-e MODEL_NAME={MODEL_NAME} tensorflow/serving")
    print("then query it:")
    print(f"  curl -d '{{\"instances\": [{{\"user_id\": \"42\"}}]}}' "
          f"http://localhost:8501/v1/models/{MODEL_NAME}:predict")
    return 0
