"""The timing loop shared by the index benchmark and its measuring processes (NumPy only).

`run_benchmark.py` times in-process searches with `timed`; `measure_saved_model.py` and
`measure_scann.py` run in processes of their own (a SavedModel process must not import towerkit,
ScaNN or Annoy, hence NumPy only here) and share their command line and settings loop too.
"""

import argparse
import json
import sys
import time

import numpy as np

from clustered_data import recall_at_k


def timed(search, queries, truth, batch, budget_s, max_queries):
    """Runs `search(batch_queries) -> rows` over the first `max_queries` queries for `budget_s`.

    The queries are searched in order, batch by batch (the last batch of a pass may be short);
    when a pass ends inside the budget another one starts, so fast methods are timed over many
    calls (a pass of 1,000 queries at batch 256 is 4 calls, too few on a noisy machine). A
    method too slow for one pass within the budget stops after the call that crosses it.
    `rows` is a `[batch, >= k]` array or one sequence per query, which may hold fewer than k
    ids (ScaNN and Annoy do when the searched part holds fewer); short rows are padded with -1.

    Returns `(recall, wall queries/s, CPU queries/s, queries run)`: recall over the first pass
    (or the part of it that ran), the rates over every timed call. CPU queries/s (queries per
    second of this process's CPU time) is what a dedicated core would give when the machine is
    shared: the searches run on one thread.
    """
    k = truth.shape[1]
    n = min(max_queries, len(queries))
    search(queries[:batch])  # warm-up (the first call builds kernels)
    found, done = [], 0
    start, cpu_start = time.perf_counter(), time.process_time()
    while True:
        for first in range(0, n, batch):
            rows = _top_rows(search(queries[first:first + batch]), k)
            if done < n:
                found.append(rows)
            done += len(rows)
            if time.perf_counter() - start > budget_s:
                break
        if time.perf_counter() - start > budget_s:
            break
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    found = np.concatenate(found)
    return recall_at_k(found, truth[:len(found)]), done / seconds, done / cpu, done


def _top_rows(rows, k):
    if isinstance(rows, np.ndarray) and rows.ndim == 2 and rows.shape[1] >= k:
        return rows[:, :k]
    rows = [list(r)[:k] for r in rows]
    return np.array([r + [-1] * (k - len(r)) for r in rows], np.int64)


def measurement_parser(target: str, settings_help: str) -> argparse.ArgumentParser:
    """Command line of a measuring process: TARGET QUERIES.npy TRUTH.npy SETTINGS [options]."""
    parser = argparse.ArgumentParser()
    parser.add_argument(target)
    parser.add_argument("queries")
    parser.add_argument("truth")
    parser.add_argument("settings", help=settings_help)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 256])
    parser.add_argument("--budget-s", type=float, default=10.0)
    parser.add_argument("--max-queries", type=int, default=1000)
    return parser


def run_settings(args, settings, configure) -> list:
    """Times every setting at every batch size; `configure(setting) -> search_for(batch)`.

    Prints each row to stderr as it is measured and returns the rows.
    """
    queries = np.load(args.queries)
    truth = np.load(args.truth)
    rows = []
    for setting in settings:
        search_for = configure(setting)
        for batch in args.batches:
            recall, qps, cpu_qps, done = timed(search_for(batch), queries, truth, batch,
                                               args.budget_s, args.max_queries)
            rows.append({"setting": setting, "batch": batch, "recall": recall, "qps": qps,
                         "cpu_qps": cpu_qps, "queries": done})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows
