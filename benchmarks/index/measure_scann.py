"""Times a serialized native ScaNN searcher in its own process (one search thread).

Run by `run_benchmark.py` in alternating rounds with `measure_saved_model.py`, so that native
ScaNN and the SavedModels are each timed in a fresh process of their own; prints one JSON line.

  python measure_scann.py SCANN_DIR QUERIES.npy TRUTH.npy \
      '[{"leaves_to_search": 180, "reorder": 1000}]' --batches 1 256 --budget-s 10
"""

import argparse
import json
import sys
import time

import numpy as np
import scann


def measure(search, queries, truth, batch, max_queries, budget_s):
    """(recall@k, wall queries/s, queries per CPU-second, queries run), time-budgeted."""
    k = truth.shape[1]
    search(queries[:batch])  # warm-up
    found, done = [], 0
    start, cpu_start = time.perf_counter(), time.process_time()
    while done < min(max_queries, len(queries)):
        # ScaNN returns fewer than k neighbours when the searched leaves hold fewer: pad (-1).
        rows = [list(r)[:k] for r in search(queries[done:done + batch])]
        found.append(np.array([r + [-1] * (k - len(r)) for r in rows], np.int64))
        done += len(found[-1])
        if time.perf_counter() - start > budget_s:
            break
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    found = np.concatenate(found)
    hits = sum(len(np.intersect1d(f, t)) for f, t in zip(found, truth[:done]))
    return hits / (done * k), done / seconds, done / cpu, done


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("searcher")
    parser.add_argument("queries")
    parser.add_argument("truth")
    parser.add_argument("settings", help='JSON list of {"leaves_to_search", "reorder"} dicts')
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 256])
    parser.add_argument("--budget-s", type=float, default=10.0)
    parser.add_argument("--max-queries", type=int, default=1000)
    args = parser.parse_args()
    searcher = scann.scann_ops_pybind.load_searcher(args.searcher)
    searcher.set_num_threads(1)
    queries = np.load(args.queries)
    truth = np.load(args.truth)
    k = truth.shape[1]
    rows = []
    for setting in json.loads(args.settings):
        leaves, reorder = setting["leaves_to_search"], setting["reorder"]
        for batch in args.batches:
            if batch == 1:
                search = lambda q: [searcher.search(  # noqa: E731
                    q[0], final_num_neighbors=k, pre_reorder_num_neighbors=reorder,
                    leaves_to_search=leaves)[0]]
            else:
                search = lambda q: searcher.search_batched(  # noqa: E731
                    q, final_num_neighbors=k, pre_reorder_num_neighbors=reorder,
                    leaves_to_search=leaves)[0]
            recall, qps, cpu_qps, done = measure(search, queries, truth, batch,
                                                 args.max_queries, args.budget_s)
            rows.append({"setting": setting, "batch": batch, "recall": recall, "qps": qps,
                         "cpu_qps": cpu_qps, "queries": done})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
