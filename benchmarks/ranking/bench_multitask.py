"""Per-task test AUC of the six multi-task rankers and of single-task models, 3 seeds, one split.

Every run trains a towerkit recipe (`towerkit.recipes.multi_task_ranking`) on the MovieLens 100K
multi-task setting (`towerkit.data.build_exposures`: 100,000 ratings + 100,000 sampled unrated
exposures, `--data-seed 0` split 80/10/10, the same for every run), with the recipe defaults
(Adam 0.01, batch 4096, early stopping on the whole validation split with patience 2) and at most
`--epochs` epochs; only the training seed changes. AUCs are exact over the whole test split.
Writes `results.json` next to this file and prints the Markdown tables of RESULTS.md.

    python benchmarks/ranking/bench_multitask.py --epochs 8 --seeds 1 2 3
"""

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

import numpy as np

import towerkit  # noqa: F401  (legacy-Keras switch)
import tensorflow as tf
import tensorflow_recommenders as tfrs
from towerkit import recipes

HERE = pathlib.Path(__file__).resolve().parent
MODELS = [("shared_bottom", {}), ("mmoe", {}), ("cgc", {}), ("ple", {}), ("esmm", {}),
          ("aitm", {}), ("single_task", {"task": "click"}), ("single_task", {"task": "like"}),
          ("single_task", {"task": "ctcvr"})]
TASKS = ("click", "like", "ctcvr")


def label(recipe, params):
    return f"single_task ({params['task']})" if recipe == "single_task" else recipe


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--dataset", default="movielens/100k-ratings")
    parser.add_argument("--report", action="store_true",
                        help="only print the tables of the saved results.json")
    args = parser.parse_args()
    if args.report:
        print_tables(json.loads((HERE / "results.json").read_text())["results"])
        return

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for recipe_name, params in MODELS:
                config = recipes.make_run_config(recipe_name, args.dataset, seed=seed,
                                                 epochs=args.epochs, params=params)
                start = time.perf_counter()
                metrics = recipes.get_recipe(recipe_name)().train(
                    config, pathlib.Path(tmp) / f"{recipe_name}_{params.get('task', '')}_{seed}")
                row = {"model": label(recipe_name, params), "seed": seed,
                       "seconds": time.perf_counter() - start, **metrics}
                results.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "gates"}), flush=True)
                write(results)  # after every run, so that an interrupted benchmark keeps its rows
    print_tables(results)


def write(results):
    (HERE / "results.json").write_text(json.dumps(
        {"command": " ".join(["python", "benchmarks/ranking/bench_multitask.py"] + sys.argv[1:]),
         "versions": {"tensorflow": tf.__version__, "tfrs": tfrs.__version__,
                      "python": sys.version.split()[0]},
         "cpus": os.cpu_count(), "load_average": os.getloadavg()[0], "results": results},
        indent=1, default=float))


def print_tables(results):
    names = list(dict.fromkeys(r["model"] for r in results))
    print("\n| model | click AUC | like AUC | ctcvr AUC | epochs (best) | s/run |")
    print("|---|---|---|---|---|---:|")
    for name in names:
        rows = [r for r in results if r["model"] == name]
        cells = []
        for task in TASKS:
            values = [r[f"{task}_auc"] for r in rows if f"{task}_auc" in r]
            cells.append(f"{np.mean(values):.4f} [{min(values):.4f}, {max(values):.4f}]"
                         if values else "-")
        best = ", ".join(str(r["best_epoch"]) for r in rows)
        print(f"| {name} | {' | '.join(cells)} | {best} | "
              f"{np.mean([r['seconds'] for r in rows]):.0f} |")
    print("\nGate diagnostics (test split, mean over seeds): mean weight per expert; entropy / "
          "max entropy (nats)\n")
    print("| model | gate | mean weight per expert | entropy / max |")
    print("|---|---|---|---|")
    for name in names:
        rows = [r for r in results if r["model"] == name and r.get("gates")]
        if not rows:
            continue
        for gate in rows[0]["gates"]:
            weights = np.mean([r["gates"][gate]["mean_weights"] for r in rows], axis=0)
            entropy = np.mean([r["gates"][gate]["entropy"] for r in rows])
            print(f"| {name} | {gate} | {', '.join(f'{w:.3f}' for w in weights)} | "
                  f"{entropy:.3f} / {rows[0]['gates'][gate]['max_entropy']:.3f} |")


if __name__ == "__main__":
    main()
