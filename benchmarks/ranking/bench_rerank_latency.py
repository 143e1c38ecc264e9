"""Batch-1 latency of a retrieve-then-rank export vs the index alone, in a TensorFlow-only process.

Exports, from a trained retrieval run and a trained ranking run, (a) the index alone (top `--k`)
and (b) retrieve-then-rank (the same index retrieves `--retrieve`, the ranker scores them, the
fused top `--k` is returned), for each `--index` kind; then times single-user requests to each
SavedModel's `serving_default` in clean child processes (TensorFlow alone, as TF Serving loads
it), in interleaved rounds so that all see the same machine load. Prints a Markdown table.

    towerkit train --model two_tower --out runs/two_tower --epochs 2
    towerkit train --model mmoe --out runs/mmoe --epochs 8
    python benchmarks/ranking/bench_rerank_latency.py runs/two_tower runs/mmoe
"""

import argparse
import os
import pathlib
import shutil
import sys
import tempfile

import numpy as np

import towerkit  # noqa: F401  (legacy-Keras switch)
import tensorflow as tf
from towerkit import recipes
from towerkit.cli.export import export_inputs, export_retrieve_then_rank
from towerkit.serving import clean_process


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("retrieval_run")
    parser.add_argument("rank_run")
    parser.add_argument("--index", nargs="+", default=["brute-force", "annoy"])
    parser.add_argument("--retrieve", type=int, default=100)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    retrieval, _ = recipes.load_run(args.retrieval_run)
    ranking, _ = recipes.load_run(args.rank_run)
    inputs = retrieval.index_inputs(args.retrieval_run)
    ranker = ranking.ranker_inputs(args.rank_run)
    users = np.asarray(inputs.tuning_queries["user_id"])[:200]
    timestamps = np.full(len(users), 890_000_000, np.int64)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="rerank-latency-"))
    exports = {}
    try:
        for kind in args.index:
            alone = export_inputs(inputs, kind, tmp / f"{kind}-alone", k=args.k)
            rtr = export_retrieve_then_rank(inputs, ranker, kind, tmp / f"{kind}-rtr",
                                            retrieve=args.retrieve, k=args.k)
            exports[(kind, "index alone")] = (alone["path"], {"user_id": users})
            exports[(kind, f"retrieve {args.retrieve} + rank")] = (
                rtr["path"], {"user_id": users, "timestamp": timestamps})
        per_round = max(1, args.repeats // args.rounds)
        timings = {key: [] for key in exports}
        timers = {key: clean_process.CleanTimer(path, queries, warmup_calls=20)
                  for key, (path, queries) in exports.items()}
        try:
            keys = list(exports)
            for r in range(args.rounds):
                for key in keys[r % len(keys):] + keys[:r % len(keys)]:
                    timings[key].append(timers[key].time(per_round))
        finally:
            for timer in timers.values():
                timer.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\nbatch 1, {per_round * args.rounds} calls per export in {args.rounds} interleaved "
          f"rounds, clean TensorFlow-only processes; {len(inputs.candidate_ids)} candidates, "
          f"k={args.k}; TF {tf.__version__}, Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs, load average at the end {os.getloadavg()[0]:.1f}\n")
    print("| index | export | p50 ms | p99 ms | p50 ratio to the index alone |")
    print("|---|---|---:|---:|---:|")
    for kind in args.index:
        base = None
        for (k, what), values in timings.items():
            if k != kind:
                continue
            lat = np.concatenate(values) * 1e3
            p50, p99 = np.percentile(lat, 50), np.percentile(lat, 99)
            base = p50 if base is None else base
            print(f"| {kind} | {what} | {p50:.3f} | {p99:.3f} | {p50 / base:.2f} |")


if __name__ == "__main__":
    main()
