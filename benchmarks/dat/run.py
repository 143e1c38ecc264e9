"""DAT ablation on MovieLens 100K: DAT, the same towers without augmentation, DAT without AMM,
DAT without CAL; test top-10/50/100 accuracy over seeds on the two-tower 80/20 split.

Modes:

  python benchmarks/dat/run.py tune --out benchmarks/dat/tune.json
      Chooses the temperature (for DAT and for the no-augmentation towers) and DAT's loss
      weights on a validation split: the last 10% of the (shuffled) training rows of seed 0
      (`--validation-fraction 0.1`), by validation top-100 accuracy; the test split is never
      read for choices. Trials already recorded in --out are reused.

  python benchmarks/dat/run.py test --settings benchmarks/dat/tune.json \
      --out benchmarks/dat/results.json
      Trains every variant on the full training split per seed and records test accuracy;
      all variants share epochs, optimiser, batch size and the chosen settings.

  python benchmarks/dat/run.py table --out benchmarks/dat/results.json \
      --settings benchmarks/dat/tune.json
      Prints RESULTS.md's tables.

Each run goes through the `dat` recipe (what `towerkit train --model dat` runs).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import tempfile
import time

import towerkit  # noqa: F401  (selects tf-keras before TensorFlow is used)
import tensorflow as tf
import tensorflow_recommenders as tfrs

from towerkit import recipes

KEYS = ("top_10_categorical_accuracy", "top_50_categorical_accuracy",
        "top_100_categorical_accuracy")
# Overrides of DAT's chosen settings. "no augmentation" rows take the temperature chosen for
# the plain towers; the first keeps DAT's CAL weight (only the augmented vectors, hence AMM,
# are removed), the second is the plain two-tower model with the same towers (no CAL either).
VARIANTS = {
    "DAT": {},
    "no augmentation (same towers)": {"augment": False},
    "DAT without AMM": {"amm_user_weight": 0.0, "amm_item_weight": 0.0},
    "DAT without CAL": {"cal_weight": 0.0},
    "no augmentation, no CAL": {"augment": False, "cal_weight": 0.0},
}


def run_one(params: dict, seed: int, epochs: int) -> dict:
    config = recipes.make_run_config("dat", "movielens/100k-ratings", seed=seed, epochs=epochs,
                                     params=params)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.time()
        metrics = recipes.get_recipe("dat")().train(config, pathlib.Path(tmp) / "run")
        metrics["seconds"] = time.time() - start
    return metrics


def tune(args) -> dict:
    base = {"validation_fraction": 0.1}
    rows = []
    out = pathlib.Path(args.out)
    # Trials already in --out (same name, params and epochs) are reused, so a grid can grow.
    done = ({(r["name"], json.dumps(r["params"], sort_keys=True)): r
             for r in json.loads(out.read_text())["rows"]}
            if out.is_file() and json.loads(out.read_text()).get("epochs") == args.epochs
            else {})

    def trial(name, params):
        cached = done.get((name, json.dumps(params, sort_keys=True)))
        if cached is not None:
            rows.append(cached)
            return cached["valid_top_100_categorical_accuracy"]
        m = run_one({**base, **params}, seed=0, epochs=args.epochs)
        row = {"name": name, "params": params,
               **{f"valid_{k}": m[f"valid_{k}"] for k in KEYS}, "seconds": m["seconds"]}
        rows.append(row)
        print(json.dumps(row), flush=True)
        return row["valid_top_100_categorical_accuracy"]

    best = {}
    # Stage 1: temperature x learning rate, separately for DAT and the plain towers.
    for label, extra in (("DAT", {}), ("no augmentation", {"augment": False})):
        scores = {}
        for temperature in args.temperatures:
            for lr in args.learning_rates:
                scores[(temperature, lr)] = trial(
                    f"{label} t={temperature} lr={lr}",
                    {**extra, "temperature": temperature, "learning_rate": lr})
        best[label] = max(scores, key=scores.get)
    # Stage 2: DAT's loss weights at its best temperature / learning rate.
    temperature, lr = best["DAT"]
    weights = {}
    for amm in args.amm_weights:
        for cal in args.cal_weights:
            params = {"temperature": temperature, "learning_rate": lr,
                      "amm_user_weight": amm, "amm_item_weight": amm, "cal_weight": cal}
            weights[(amm, cal)] = trial(f"DAT amm={amm} cal={cal}", params)
    amm, cal = max(weights, key=weights.get)
    plain_temperature, plain_lr = best["no augmentation"]
    return {"rows": rows, "epochs": args.epochs,
            "best": {"DAT": {"temperature": temperature, "learning_rate": lr,
                             "amm_weight": amm, "cal_weight": cal},
                     "no augmentation": {"temperature": plain_temperature,
                                         "learning_rate": plain_lr}}}


def test(args) -> dict:
    shared = json.loads(pathlib.Path(args.settings).read_text())["best"] if args.settings else {}
    results = {}
    for name, extra in VARIANTS.items():
        params = dict(extra)
        if shared:
            b = shared["DAT"]
            params = {"temperature": b["temperature"], "learning_rate": b["learning_rate"],
                      "amm_user_weight": b["amm_weight"], "amm_item_weight": b["amm_weight"],
                      "cal_weight": b["cal_weight"], **extra}
            if not extra.get("augment", True):
                plain = shared["no augmentation"]
                params.update(temperature=plain["temperature"],
                              learning_rate=plain["learning_rate"])
        runs = []
        for seed in args.seeds:
            m = run_one(params, seed=seed, epochs=args.epochs)
            runs.append({"seed": seed, **{k: m[k] for k in KEYS}, "seconds": m["seconds"]})
            print(name, json.dumps(runs[-1]), flush=True)
        results[name] = {"params": params, "runs": runs}
    return {"variants": results, "epochs": args.epochs, "seeds": args.seeds}


def table(args) -> None:
    """Prints the markdown tables of RESULTS.md from results.json (and tune.json)."""
    results = json.loads(pathlib.Path(args.out).read_text())
    print("| variant | " + " | ".join(k.split("_categorical")[0] for k in KEYS) + " |")
    print("|---|" + "---|" * len(KEYS))
    for name, variant in results["variants"].items():
        cells = []
        for key in KEYS:
            values = [r[key] for r in variant["runs"]]
            cells.append(f"{sum(values) / len(values):.4f} ({min(values):.4f}-{max(values):.4f})")
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.settings:
        print()
        print("| trial (validation split) | valid top_10 | valid top_50 | valid top_100 | s |")
        print("|---|---|---|---|---|")
        for row in json.loads(pathlib.Path(args.settings).read_text())["rows"]:
            print(f"| {row['name']} | " + " | ".join(
                f"{row[f'valid_{k}']:.4f}" for k in KEYS) + f" | {row['seconds']:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("tune", "test", "table"))
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--settings", default=None, help="tune.json whose 'best' to use")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.05, 0.1, 0.2])
    parser.add_argument("--learning-rates", type=float, nargs="+", default=[0.01, 0.003])
    parser.add_argument("--amm-weights", type=float, nargs="+", default=[0.5, 0.1])
    parser.add_argument("--cal-weights", type=float, nargs="+", default=[1.0, 0.1])
    args = parser.parse_args()
    if args.mode == "table":
        return table(args)
    out = tune(args) if args.mode == "tune" else test(args)
    out["command"] = "python benchmarks/dat/run.py " + " ".join(
        __import__("sys").argv[1:])
    out["machine"] = {"python": platform.python_version(), "tensorflow": tf.__version__,
                      "tfrs": tfrs.__version__, "cpu_count": __import__("os").cpu_count()}
    pathlib.Path(args.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
