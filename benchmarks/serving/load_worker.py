"""Load-test worker: runs in a process with TensorFlow alone (`python -I load_worker.py ...`).

Loads one SavedModel, answers every query once single-threaded (the reference), then calls
`serving_default` with batch-1 queries from `--threads` client threads for `--seconds`, each
thread cycling through the queries from its own offset, and compares every answer with the
reference (ids equal, scores equal). Prints one JSON line: requests, requests/s, p50/p99 latency,
errors and mismatches, and the modules of towerkit/TFRS/ScaNN/Annoy present (expected none).

It must not import towerkit, TFRS, ScaNN or Annoy (the process TF Serving would be).
"""

import argparse
import json
import sys
import threading
import time

import numpy as np
import tensorflow as tf

_FOREIGN = ("towerkit", "tensorflow_recommenders", "scann", "annoy")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("path")
    parser.add_argument("queries", help=".npz of input arrays, one row per query")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()

    serve = tf.saved_model.load(args.path).signatures["serving_default"]
    with np.load(args.queries, allow_pickle=True) as data:
        inputs = {name: data[name] for name in data.files}
    n = len(next(iter(inputs.values())))
    rows = [{name: tf.constant(values[i:i + 1]) for name, values in inputs.items()}
            for i in range(n)]
    reference = []
    for row in rows:  # single-threaded answers
        out = serve(**row)
        reference.append((out["ids"].numpy(), out["scores"].numpy()))

    deadline = time.perf_counter() + args.seconds
    latencies = [[] for _ in range(args.threads)]
    errors, mismatches = [0] * args.threads, [0] * args.threads
    first_error = []

    def client(t: int) -> None:
        i = t * (n // args.threads)
        while time.perf_counter() < deadline:
            row = i % n
            start = time.perf_counter()
            try:
                out = serve(**rows[row])
                ids, scores = out["ids"].numpy(), out["scores"].numpy()
            except Exception as e:  # pylint: disable=broad-except
                errors[t] += 1
                if not first_error:
                    first_error.append(f"{type(e).__name__}: {e}"[:500])
                continue
            finally:
                i += 1
            latencies[t].append(time.perf_counter() - start)
            ref_ids, ref_scores = reference[row]
            if not (np.array_equal(ids, ref_ids) and np.array_equal(scores, ref_scores)):
                mismatches[t] += 1

    threads = [threading.Thread(target=client, args=(t,)) for t in range(args.threads)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    all_latencies = np.concatenate([np.asarray(x) for x in latencies]) * 1e3
    print(json.dumps({
        "requests": int(all_latencies.size), "seconds": round(wall, 2),
        "requests_per_second": round(all_latencies.size / wall, 1),
        "p50_ms": round(float(np.percentile(all_latencies, 50)), 3),
        "p99_ms": round(float(np.percentile(all_latencies, 99)), 3),
        "errors": int(sum(errors)), "mismatches": int(sum(mismatches)),
        "first_error": first_error[0] if first_error else None,
        "distinct_queries": n, "threads": args.threads,
        "foreign_modules": sorted(m for m in sys.modules if m.split(".")[0] in _FOREIGN),
    }))


if __name__ == "__main__":
    main()
