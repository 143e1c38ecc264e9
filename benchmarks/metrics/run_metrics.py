"""FactorizedTopK benchmark: `tfrs.metrics.FactorizedTopK` vs `towerkit.metrics.FactorizedTopK`.

One process, same data, interleaved repeats (the order alternates each round), medians.
Candidates: `--candidates` x `--dim` Gaussian embeddings (seeded), fed to both metrics as the
same `tf.data.Dataset` batched by `--candidate-batch`. Queries: each query is its true
candidate's embedding plus Gaussian noise of scale `--noise` (so the accuracies are neither 0
nor 1), fed in `--query-batch` batches to `update_state` inside one `tf.function` per metric
(as `model.evaluate` does). Each repeat evaluates all `--queries` queries from a reset metric;
the score-based values (no ids) or id-based values (`--mode id`) of both are recorded.

Usage:
  python benchmarks/metrics/run_metrics.py [--json OUT.json] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import towerkit  # noqa: F401  (legacy Keras before TF)
import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from towerkit.metrics import FactorizedTopK


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--candidates", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--query-batch", type=int, default=1000)
    parser.add_argument("--candidate-batch", type=int, default=4096)
    parser.add_argument("--noise", type=float, default=2.0)
    parser.add_argument("--mode", choices=("score", "id"), default="score")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    candidates = rng.standard_normal((args.candidates, args.dim), dtype=np.float32)
    true_rows = rng.integers(0, args.candidates, args.queries)
    true = candidates[true_rows]
    queries = (true + args.noise * rng.standard_normal(true.shape, dtype=np.float32)).astype(np.float32)
    identifiers = np.arange(args.candidates, dtype=np.int64)
    if args.mode == "id":
        dataset = tf.data.Dataset.from_tensor_slices((identifiers, candidates))
    else:
        dataset = tf.data.Dataset.from_tensor_slices(candidates)
    dataset = dataset.batch(args.candidate_batch)
    batches = [(tf.constant(queries[i:i + args.query_batch]), tf.constant(true[i:i + args.query_batch]),
                tf.constant(identifiers[true_rows[i:i + args.query_batch]]))
               for i in range(0, args.queries, args.query_batch)]
    metrics = {"tfrs": tfrs.metrics.FactorizedTopK(candidates=dataset),
               "towerkit": FactorizedTopK(candidates=dataset)}

    def step_fn(metric):
        @tf.function
        def step(q, t, ids):
            metric.update_state(q, t, true_candidate_ids=ids if args.mode == "id" else None)
        return step

    steps = {name: step_fn(m) for name, m in metrics.items()}
    # Trace both once on a small batch (not timed).
    for name, metric in metrics.items():
        steps[name](*(b[:2] for b in batches[0]))
        metric.reset_states()

    runs = {name: [] for name in metrics}
    for round_ in range(args.repeats):
        order = list(metrics) if round_ % 2 == 0 else list(metrics)[::-1]
        for name in order:
            metric = metrics[name]
            metric.reset_states()
            wall, cpu = time.perf_counter(), time.process_time()
            for batch in batches:
                steps[name](*batch)
            values = [float(v) for v in metric.result()]
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            runs[name].append({"wall_s": wall, "cpu_s": cpu, "values": values})
            print(f"round {round_} {name}: {wall:.1f} s wall, {cpu:.1f} s CPU, {values}", flush=True)

    summary = {}
    for name, rs in runs.items():
        walls = [r["wall_s"] for r in rs]
        summary[name] = {"median_wall_s": statistics.median(walls), "min_wall_s": min(walls),
                         "max_wall_s": max(walls),
                         "median_cpu_s": statistics.median(r["cpu_s"] for r in rs),
                         "values": rs[0]["values"],
                         "values_equal_across_repeats": all(r["values"] == rs[0]["values"] for r in rs)}
    summary["speedup_median_wall"] = (summary["tfrs"]["median_wall_s"]
                                      / summary["towerkit"]["median_wall_s"])
    summary["speedup_median_cpu"] = (summary["tfrs"]["median_cpu_s"]
                                     / summary["towerkit"]["median_cpu_s"])
    summary["values_identical"] = all(
        a["values"] == b["values"] for a, b in zip(runs["tfrs"], runs["towerkit"]))
    results = {"machine": {"python": platform.python_version(), "tensorflow": tf.__version__,
                           "tfrs": tfrs.__version__, "numpy": np.__version__,
                           "cpus": os.cpu_count()},
               "config": vars(args), "ks": metrics["towerkit"].ks, "runs": runs, "summary": summary}
    print(json.dumps(summary, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
