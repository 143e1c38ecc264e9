"""Short sweep of the `sasrec` defaults on the VALID users (seed 0); test users never scored.

Each setting trains through `Recipe.train` exactly as the protocol does (full softmax, early
stopping on the valid users' recall@50 with patience 3, the epochs a cap) and records the valid
metrics at the kept epoch. The setting with the best valid recall@50 becomes the recipe default.

Usage:
  python benchmarks/sequential/sasrec_sweep.py --out benchmarks/sequential/sasrec_sweep.json
"""

from __future__ import annotations

import argparse
import json
import pathlib
import tempfile

import towerkit  # noqa: F401  (legacy Keras switch)
from towerkit.recipes import get_recipe, make_run_config

BASE = {"embedding_dim": 64, "batch_size": 1024, "learning_rate": 3e-3, "loss": "full",
        "early_stopping": 3, "num_blocks": 2, "num_heads": 1, "dropout": 0.2}
# One change at a time from BASE (the paper's ML-1M setting at the gru recipe's batch and lr).
SETTINGS = {
    "base": {},
    "lr_1e-3": {"learning_rate": 1e-3},
    "dropout_0.5": {"dropout": 0.5},
    "blocks_1": {"num_blocks": 1},
}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS))
    parser.add_argument("--epochs", type=int, default=20, help="cap (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="benchmarks/sequential/sasrec_sweep.json")
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    rows = json.loads(out.read_text())["rows"] if out.exists() else []
    recipe = get_recipe("sasrec")()
    for name in args.settings:
        params = {**BASE, **SETTINGS[name]}
        config = make_run_config("sasrec", "movielens/100k-ratings", data_dir=args.data_dir,
                                 seed=args.seed, epochs=args.epochs, params=params)
        with tempfile.TemporaryDirectory() as run_dir:
            trained = recipe.train(config, pathlib.Path(run_dir))
        row = {"setting": name, "seed": args.seed, "params": params,
               **{k: trained[k] for k in ("valid_recall@20", "valid_recall@50", "valid_hr@50",
                                          "valid_ndcg@50", "best_epoch", "epochs_run",
                                          "train_seconds", "valid_recall@50_per_epoch")}}
        rows.append(row)
        print(json.dumps(row), flush=True)
        out.write_text(json.dumps({"split": "valid", "rows": rows}, indent=1))
    for row in sorted(rows, key=lambda r: -r["valid_recall@50"]):
        print(f"{row['setting']:>12}  valid recall@50 {row['valid_recall@50']:.4f}  "
              f"recall@20 {row['valid_recall@20']:.4f}  best epoch {row['best_epoch']} of "
              f"{row['epochs_run']}  {row['train_seconds']:.0f}s")


if __name__ == "__main__":
    main()
