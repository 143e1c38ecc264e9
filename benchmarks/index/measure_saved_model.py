"""Times an exported towerkit index SavedModel in a clean process (TensorFlow and NumPy only).

Run by `run_benchmark.py`; prints one JSON line. Fails if towerkit, scann, annoy or TFRS got
imported. Settings are applied by assigning the SavedModel's own knob variables (e.g. the
portable index's `leaves_to_search`), exactly what a re-export with that setting would hold.

  python measure_saved_model.py MODEL QUERIES.npy TRUTH.npy '[{"leaves_to_search": 40}]' \
      --batches 1 256 --budget-s 10 --max-queries 1000
"""

import argparse
import json
import sys
import time

import numpy as np
import tensorflow as tf


def measure(serve, queries, truth, batch, max_queries, budget_s):
    """(recall@k, wall queries/s, queries per CPU-second, queries run), time-budgeted."""
    k = truth.shape[1]
    serve(queries=tf.constant(queries[:batch]))  # warm-up (first call builds kernels)
    found, done = [], 0
    start, cpu_start = time.perf_counter(), time.process_time()
    while done < min(max_queries, len(queries)):
        found.append(serve(queries=tf.constant(queries[done:done + batch]))["ids"].numpy())
        done += len(found[-1])
        if time.perf_counter() - start > budget_s:
            break
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    found = np.concatenate(found)[:, :k]
    hits = sum(len(np.intersect1d(f, t)) for f, t in zip(found, truth[:done]))
    return hits / (done * k), done / seconds, done / cpu, done


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("queries")
    parser.add_argument("truth")
    parser.add_argument("settings", help="JSON list of {variable name: value} dicts")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 256])
    parser.add_argument("--budget-s", type=float, default=10.0)
    parser.add_argument("--max-queries", type=int, default=1000)
    args = parser.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    loaded = tf.saved_model.load(args.model)
    serve = loaded.signatures["serving_default"]
    knobs = {v.name.split(":")[0]: v for v in getattr(loaded, "state", [])
             if isinstance(v, tf.Variable)}
    queries = np.load(args.queries)
    truth = np.load(args.truth)
    rows = []
    for setting in json.loads(args.settings) or [{}]:
        for name, value in setting.items():
            knobs[name].assign(value)
        for batch in args.batches:
            recall, qps, cpu_qps, done = measure(serve, queries, truth, batch, args.max_queries,
                                                 args.budget_s)
            rows.append({"setting": setting, "batch": batch, "recall": recall, "qps": qps,
                         "cpu_qps": cpu_qps, "queries": done})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    imported = sorted(m for m in ("towerkit", "scann", "annoy", "tensorflow_recommenders")
                      if m in sys.modules)
    if imported:
        raise SystemExit(f"not a clean process: imported {imported}")
    print(json.dumps({"rows": rows, "imported": imported}))


if __name__ == "__main__":
    main()
