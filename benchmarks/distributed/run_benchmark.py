"""1 vs 2 local workers (examples/s) and global vs per-replica in-batch negatives (accuracy).

Trains the `two_tower` recipe on MovieLens 100K through the CLI, interleaving per seed:
  one process            `towerkit train --model two_tower ...`
  2 workers, global      `... --local-workers 2 --negatives global`
  2 workers, per-replica `... --local-workers 2 --negatives per-replica`
at the same GLOBAL batch (`--batch-size`, split over the 2 replicas). Examples/s are the
training examples of the epochs after the first (tracing excluded) over their wall time, from
the chief's `[towerkit] epoch N: S steps in T s` lines; accuracy is the recipe's test
top-K categorical accuracy. Prints a Markdown table (mean and range over seeds) and writes the
raw records to `--work-dir/records.json`.

Usage:
  TFDS_DATA_DIR=... python benchmarks/distributed/run_benchmark.py --work-dir /tmp/dist-bench \
      --seeds 42 43 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

EPOCH_LINE = re.compile(r"\[towerkit\] epoch (\d+): (\d+) steps in ([0-9.]+) s")
SETUPS = {"1 process": [], "2 workers, global negatives": ["--local-workers", "2", "--negatives",
                                                           "global"],
          "2 workers, per-replica negatives": ["--local-workers", "2", "--negatives",
                                               "per-replica"]}


def run_one(work: pathlib.Path, name: str, seed: int, args) -> dict:
    slug = "".join(c if c.isalnum() else "_" for c in name)
    out = work / f"{slug}_{seed}"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "towerkit.cli.main", "train", "--model", "two_tower",
           "--out", str(out), "--seed", str(seed), "--epochs", str(args.epochs),
           "--batch-size", str(args.batch_size), *SETUPS[name]]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{name} seed {seed} failed: {proc.stderr[-2000:]}")
    epochs = [(int(e), int(s), float(t)) for e, s, t in EPOCH_LINE.findall(proc.stdout)]
    metrics = json.loads((out / "metrics.json").read_text())
    train_rows = round(100_000 * 0.8)
    later = [t for e, _, t in epochs if e > 1]
    return {"setup": name, "seed": seed, "wall_s": wall, "epoch_s": [t for *_, t in epochs],
            "examples_per_s": train_rows * len(later) / sum(later) if later else None,
            "top_10": metrics["top_10_categorical_accuracy"],
            "top_100": metrics["top_100_categorical_accuracy"],
            "train_loss": metrics["train_loss"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8192)
    args = parser.parse_args()
    work = pathlib.Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    records = []
    for seed in args.seeds:
        for name in SETUPS:
            records.append(run_one(work, name, seed, args))
            print(json.dumps(records[-1]), flush=True)
            (work / "records.json").write_text(json.dumps(records, indent=2))
    print("\n| setup | examples/s (epochs 2..) | test top-10 | test top-100 | final train loss |")
    print("|---|---|---|---|---|")
    for name in SETUPS:
        rows = [r for r in records if r["setup"] == name]

        def cell(key, fmt):
            values = [r[key] for r in rows]
            mean = sum(values) / len(values)
            return f"{mean:{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"
        print(f"| {name} | {cell('examples_per_s', '.0f')} | {cell('top_10', '.4f')} | "
              f"{cell('top_100', '.4f')} | {cell('train_loss', '.1f')} |")


if __name__ == "__main__":
    main()
