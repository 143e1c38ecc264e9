"""Divide-and-conquer EBR (`mt_ebr`) against single-task SASRec, plus the alpha trade-off.

For each seed, trains `sasrec` and `mt_ebr` with the same SASRec settings (`SHARED`, the
`sasrec` row of `run.py` when this ran, with dropout 0.2) on the sequential protocol, early stopping on the valid
users' recall@50 under the same epoch cap, and scores the test users: Recall@20/50, HR@50,
NDCG@50, train time, and list diversity (mean distinct genre clusters and distinct genres in
the top 50; for `sasrec` over the same first-genre clusters). Then, without retraining, the
`mt_ebr` run is re-ranked with each quota exponent alpha of `--alphas` (accuracy vs diversity,
test users, and valid users for choosing alpha).

Usage (the committed results; `--plot-only` redraws the figure from the JSON):
  python benchmarks/sequential/mt_ebr.py --seeds 0 1 2 --epochs 20 \
      --out benchmarks/sequential/mt_ebr_results.json
  python benchmarks/sequential/mt_ebr.py --plot-only --out benchmarks/sequential/mt_ebr_results.json
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import sys
import tempfile
import time

import numpy as np

import towerkit  # noqa: F401  (legacy Keras switch)
from towerkit.recipes import get_recipe, make_run_config
from towerkit.recipes.mt_ebr import diversity_metrics, item_clusters
from towerkit.recipes.sequential import _metrics

# The encoder settings of both models (those of the committed results).
SHARED = {"embedding_dim": 64, "batch_size": 1024, "learning_rate": 3e-3, "loss": "full",
          "early_stopping": 3, "num_blocks": 2, "num_heads": 1, "dropout": 0.2}
ALPHAS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 16.0)
COLUMNS = ("recall@20", "recall@50", "hr@50", "ndcg@50", "distinct_clusters@50",
           "distinct_genres@50", "best_epoch", "train_seconds")


def train_and_score(recipe_name: str, seed: int, params: dict, epochs: int, dataset: str,
                    alphas=()) -> dict:
    recipe = get_recipe(recipe_name)()
    config = make_run_config(recipe_name, dataset, seed=seed, epochs=epochs, params=params)
    with tempfile.TemporaryDirectory() as run_dir:
        trained = recipe.train(config, pathlib.Path(run_dir))
        _, protocol, model = recipe.restore(run_dir)
        genres = protocol.sequences.item_genres
        clusters = item_clusters(get_recipe("mt_ebr").resolve_params({"params": {}}), protocol)
        row = {"model": recipe_name, "seed": seed, "epochs": epochs, "params": params,
               "train_seconds": float(trained["train_seconds"]),
               "best_epoch": trained.get("best_epoch"),
               "valid_recall@50": float(trained["valid_recall@50"])}
        topn = recipe.top_n(model, protocol, "test")
        row.update(_metrics(protocol, "test", topn))
        row.update(diversity_metrics(topn, clusters, genres))
        sweep = []
        for alpha in alphas:
            entry = {"alpha": alpha}
            for split in ("valid", "test"):
                top = recipe.top_n(model, protocol, split, alpha=alpha)
                m = {**_metrics(protocol, split, top), **diversity_metrics(top, clusters, genres)}
                entry.update({f"{split}_{k}": float(v) for k, v in m.items()
                              if k != "num_users"})
            sweep.append(entry)
        if sweep:
            row["alpha_sweep"] = sweep
    return row


def table(rows: list) -> str:
    lines = ["| model | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        cells = []
        for c in COLUMNS:
            v = np.array([np.nan if r.get(c) is None else r[c] for r in mine], float)
            fmt = "{:.1f}" if c in ("train_seconds", "best_epoch", "distinct_clusters@50",
                                    "distinct_genres@50") else "{:.3f}"
            cells.append(f"{fmt.format(v.mean())} ({fmt.format(v.min())}-{fmt.format(v.max())})")
        lines.append(f"| {model} (n={len(mine)}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sweep_table(rows: list) -> str:
    runs = [r["alpha_sweep"] for r in rows if "alpha_sweep" in r]
    keys = ("test_recall@50", "test_ndcg@50", "test_distinct_clusters@50",
            "test_distinct_genres@50", "valid_recall@50")
    lines = ["| alpha | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for i, entry in enumerate(runs[0]):
        cells = [f"{np.mean([run[i][k] for run in runs]):.3f}" for k in keys]
        lines.append(f"| {entry['alpha']:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list, path: pathlib.Path) -> None:
    """Test recall@50 vs distinct genre clusters in the top 50, one point per alpha (mean over
    seeds), with single-task SASRec as a reference point."""
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

    runs = [r["alpha_sweep"] for r in rows if "alpha_sweep" in r]
    alphas = [e["alpha"] for e in runs[0]]
    x = [np.mean([run[i]["test_distinct_clusters@50"] for run in runs]) for i in range(len(alphas))]
    y = [np.mean([run[i]["test_recall@50"] for run in runs]) for i in range(len(alphas))]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(x, y, marker="o", label="mt_ebr, quota exponent alpha")
    for a, xi, yi in zip(alphas, x, y):
        ax.annotate(f"{a:g}", (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=8)
    base = [r for r in rows if r["model"] == "sasrec"]
    if base:
        ax.scatter([np.mean([r["distinct_clusters@50"] for r in base])],
                   [np.mean([r["recall@50"] for r in base])], color="black", marker="x",
                   label="sasrec (single task)")
    ax.set_xlabel("distinct genre clusters in the top 50 (test users)")
    ax.set_ylabel("recall@50 (test users)")
    ax.set_title(f"Accuracy vs diversity, mean of {len(runs)} seeds")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=["sasrec", "mt_ebr"])
    parser.add_argument("--epochs", type=int, default=4,
                        help="epoch cap of both models (early stopping within it)")
    parser.add_argument("--params", default="{}", help="JSON params added to both models")
    parser.add_argument("--mt-params", default="{}", help="JSON params of mt_ebr only")
    parser.add_argument("--alphas", nargs="+", type=float, default=list(ALPHAS))
    parser.add_argument("--dataset", default="movielens/100k-ratings")
    parser.add_argument("--out", default="benchmarks/sequential/mt_ebr_results.json")
    parser.add_argument("--plot-only", action="store_true")
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    if args.plot_only:
        rows = json.loads(out.read_text())["rows"]
    else:
        shared = {**SHARED, **json.loads(args.params)}
        rows = []
        for seed in args.seeds:
            for model in args.models:
                params = dict(shared, **(json.loads(args.mt_params) if model == "mt_ebr" else {}))
                start = time.perf_counter()
                row = train_and_score(model, seed, params, args.epochs, args.dataset,
                                      alphas=args.alphas if model == "mt_ebr" else ())
                row["wall_seconds"] = time.perf_counter() - start
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "alpha_sweep"}),
                      flush=True)
                out.write_text(json.dumps({"machine": f"{platform.machine()}, 2 cores shared",
                                           "argv": sys.argv[1:], "rows": rows}, indent=1))
    print(table(rows))
    if any("alpha_sweep" in r for r in rows):
        print(sweep_table(rows))
        plot(rows, out.with_name("mt_ebr_alpha.png"))


if __name__ == "__main__":
    main()
