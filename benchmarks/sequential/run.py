"""Sequential retrieval benchmark: any registered recipe, several seeds, test-user metrics.

Trains each model with `Recipe.train` on the sequential protocol (movielens/100k-ratings by
default), scores it with `Recipe.evaluate(split="test")` (Recall/HR/NDCG over the whole
catalogue, see towerkit.data.sequential_protocol), and writes one JSON file of per-seed results
plus a Markdown table (mean and min-max over seeds).

Usage (the protocol table, one command per model; the multi-interest models run through
`multi_interest.py`, which adds their diagnostics):
  python benchmarks/sequential/run.py --models popularity --seeds 0 1 2 --out seq/popularity.json
  python benchmarks/sequential/run.py --models youtube_dnn --seeds 0 1 2 --out seq/youtube_dnn.json
  python benchmarks/sequential/run.py --models youtube_dnn_profile_genres --seeds 0 1 2 \
      --out seq/youtube_dnn_profile_genres.json
  python benchmarks/sequential/run.py --models gru --seeds 0 1 2 --out seq/gru.json
  python benchmarks/sequential/run.py --models sasrec --seeds 0 1 2 \
      --out seq/sasrec.json
  python benchmarks/sequential/multi_interest.py --models mind --seeds 0 1 2 --out seq/mind.json
  python benchmarks/sequential/multi_interest.py --models comirec_dr --seeds 0 1 2 \
      --out seq/comirec_dr.json
  python benchmarks/sequential/multi_interest.py --models comirec_sa --seeds 0 1 2 \
      --out seq/comirec_sa.json
  python benchmarks/sequential/multi_interest.py --table-from seq/*.json \
      --merge-into benchmarks/sequential/results.json
  # another recipe with its own settings and result file:
  python benchmarks/sequential/run.py --models mind --params '{"mind": {"num_interests": 2}}' \
      --epochs '{"mind": 20}' --out seq/mind_k2.json

Settings of the built-in models are in `SETTINGS` (tuned on the valid users only);
`--params`/`--epochs` (JSON by model name) override or add to them.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import tempfile
import time

import numpy as np

import towerkit  # noqa: F401  (legacy Keras switch)
from towerkit.recipes import get_recipe, make_run_config

# model name -> (recipe, max epochs, params). Chosen on the valid split (see RESULTS.md). Every
# trainable model stops 3 epochs after its best valid recall@50 and keeps that epoch
# ("early_stopping": 3, the recipes' default); the epochs are a cap.
_YTDNN = {"embedding_dim": 64, "hidden_units": "128", "batch_size": 256, "learning_rate": 1e-3,
          "loss": "full", "early_stopping": 3, "query_age": "last_history",
          "output_activation": "linear"}
SETTINGS = {
    "popularity": ("popularity", 1, {}),
    "gru": ("gru", 20, {"embedding_dim": 64, "batch_size": 1024, "learning_rate": 3e-3,
                        "loss": "full", "unroll": True, "early_stopping": 3}),
    # Chosen on the valid users, seed 0 (benchmarks/sequential/sasrec_sweep.py, RESULTS.md "SASRec").
    "sasrec": ("sasrec", 20, {"embedding_dim": 64, "batch_size": 1024, "learning_rate": 3e-3,
                              "loss": "full", "early_stopping": 3, "num_blocks": 2,
                              "num_heads": 1, "dropout": 0.5}),
    "youtube_dnn": ("youtube_dnn", 30, dict(_YTDNN)),
    # The paper's model: + user profile (age, gender, occupation) and the history's genres.
    "youtube_dnn_profile_genres": ("youtube_dnn", 30, {**_YTDNN, "user_features": True,
                                                       "genres": True}),
}
COLUMNS = ("recall@20", "recall@50", "hr@50", "ndcg@50", "best_epoch", "valid_recall@50",
           "train_seconds")


def run_one(model: str, seed: int, dataset: str, data_dir, params: dict, epochs: int,
            recipe_name: str | None = None) -> dict:
    """Trains `model` (recipe `recipe_name`, default from SETTINGS) once; returns its test row."""
    if recipe_name is None:
        recipe_name = SETTINGS.get(model, (model,))[0]
    recipe = get_recipe(recipe_name)()
    config = make_run_config(recipe_name, dataset, data_dir=data_dir, seed=seed, epochs=epochs,
                             params=params)
    with tempfile.TemporaryDirectory() as run_dir:
        start = time.perf_counter()
        trained = recipe.train(config, pathlib.Path(run_dir))
        wall = time.perf_counter() - start
        test = recipe.evaluate(run_dir, split="test")
    return {"model": model, "seed": seed, "epochs": epochs, "params": params,
            "train_seconds": float(trained.get("train_seconds", wall)),
            "valid_recall@50": float(trained.get("valid_recall@50", float("nan"))),
            **{k: trained[k] for k in ("best_epoch", "valid_recall@50_per_epoch") if k in trained},
            **{k: float(v) for k, v in test.items()}}


def table(rows: list, columns=COLUMNS) -> str:
    """Markdown table of `columns`: mean (min-max) over the seeds of each model."""
    lines = ["| model | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        cells = []
        for c in columns:
            v = np.array([r.get(c, np.nan) for r in mine], dtype=float)
            if np.isnan(v).all():
                cells.append("-")
                continue
            fmt = "{:.1f}" if c in ("train_seconds", "best_epoch") else "{:.3f}"
            cells.append(f"{fmt.format(v.mean())} ({fmt.format(v.min())}-{fmt.format(v.max())})")
        lines.append(f"| {model} (n={len(mine)}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["popularity", "gru", "youtube_dnn"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--dataset", default="movielens/100k-ratings")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--params", default="{}", help="JSON: model -> params overrides")
    parser.add_argument("--epochs", default="{}", help="JSON: model -> epochs")
    parser.add_argument("--out", default="seq/results.json")
    args = parser.parse_args(argv)
    rows = run_models(args, lambda model: SETTINGS.get(model, (model, 10, {}))[1:], rows=[])
    pathlib.Path(args.out).with_suffix(".md").write_text(table(rows) + "\n")


def run_models(args: argparse.Namespace, settings, rows: list, run=run_one,
               render=table) -> list:
    """Runs every `args.models` x `args.seeds`, saving `args.out` after each run.

    `settings(model)` gives `(default epochs, params)`; `args.params`/`args.epochs` (JSON by
    model name) override them. Returns all rows (`rows` first) and prints their table.
    """
    overrides, epochs = json.loads(args.params), json.loads(args.epochs)
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for model in args.models:
        default_epochs, params = settings(model)
        params = {**params, **overrides.get(model, {})}
        for seed in args.seeds:
            row = run(model, seed, args.dataset, args.data_dir, params,
                      int(epochs.get(model, default_epochs)))
            rows.append(row)
            print(json.dumps(row), flush=True)
            out.write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                                       "rows": rows}, indent=1))
    print(render(rows))
    return rows


if __name__ == "__main__":
    main()
