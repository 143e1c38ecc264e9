"""Single-query latency of an exported BruteForce index: clean TF process vs in-process index.

Builds a BruteForce index over N random 64-d candidates with a small query model (user_id string ->
embedding table), exports it with `towerkit.serving.export`, then times batch-1 queries:

- in-process, eager: `index({"user_id": ...})` (the Keras layer call, as user code calls it);
- in-process, tf.function: the same call wrapped once in `tf.function` (graph, no Keras eager cost);
- clean process: a subprocess with TensorFlow alone (no towerkit/TFRS/ScaNN/Annoy imported) that
  loads the SavedModel and calls `serving_default`, the signature TF Serving runs.

All three run in this one invocation, on the same machine, in interleaved rounds (the order rotated
every round) so that they see the same machine load; each reports p50/p99 over the same queries.
Prints a Markdown table.

    python benchmarks/serving/bench_latency.py --candidates 100000 --repeats 2000
"""

import argparse
import os
import pathlib
import shutil
import sys
import time

import numpy as np

import towerkit  # noqa: F401  (legacy-Keras switch)
import tensorflow as tf
from towerkit import serving
from towerkit.index import BruteForce
from towerkit.serving import clean_process

WORK = pathlib.Path(__file__).resolve().parent / "_work"


def build_index(candidates: int, dim: int, users: int, k: int, seed: int):
    rng = np.random.default_rng(seed)
    user_id = tf.keras.Input(shape=(), dtype=tf.string, name="user_id")
    rows = tf.keras.layers.StringLookup(vocabulary=[str(u) for u in range(users)])(user_id)
    table = rng.normal(size=(users + 1, dim)).astype("float32")
    embedding = tf.keras.layers.Embedding(
        users + 1, dim, embeddings_initializer=tf.constant_initializer(table))(rows)
    query_model = tf.keras.Model({"user_id": user_id}, embedding)
    embeddings = rng.normal(size=(candidates, dim)).astype("float32")
    ids = np.arange(candidates, dtype=np.int64)
    return BruteForce(query_model, k=k).index(embeddings, identifiers=ids)


def time_calls(fn, queries, repeats, warmup=5):
    for i in range(warmup):
        fn(queries[i % len(queries)])
    latencies = np.empty(repeats)
    for i in range(repeats):
        query = queries[i % len(queries)]
        start = time.perf_counter()
        scores, ids = fn(query)
        scores.numpy(), ids.numpy()
        latencies[i] = time.perf_counter() - start
    return latencies


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--candidates", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=10,
                        help="interleaved rounds; each times repeats/rounds calls per runtime")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    index = build_index(args.candidates, args.dim, args.users, args.k, args.seed)
    shutil.rmtree(WORK, ignore_errors=True)
    user_ids = np.array([str(u) for u in np.random.default_rng(1).integers(0, args.users, 256)])
    path = serving.export(index, WORK / "bruteforce",
                          query_signature={"user_id": tf.TensorSpec([None], tf.string)},
                          warmup_queries={"user_id": user_ids[:10]})

    # Same answers everywhere before timing anything.
    check = clean_process.run_saved_model(path, {"user_id": user_ids[:8]})
    scores, ids = index({"user_id": tf.constant(user_ids[:8])})
    np.testing.assert_array_equal(check.outputs["ids"], ids.numpy())
    np.testing.assert_allclose(check.outputs["scores"], scores.numpy(), rtol=1e-5)

    # Interleaved rounds (order rotated each round) so that all runtimes see the same load on a
    # shared machine; the clean child process waits idle while this process measures.
    queries = [{"user_id": tf.constant(user_ids[i:i + 1])} for i in range(len(user_ids))]
    graph_fn = tf.function(lambda q: index(q))
    per_round = max(1, args.repeats // args.rounds)
    timings = {"eager": [], "graph": [], "clean": []}
    with clean_process.CleanTimer(path, {"user_id": user_ids}, warmup_calls=20) as clean:
        measure = {"eager": lambda: time_calls(lambda q: index(q), queries, per_round),
                   "graph": lambda: time_calls(graph_fn, queries, per_round),
                   "clean": lambda: clean.time(per_round)}
        order = list(measure)
        for r in range(args.rounds):
            for name in order[r % 3:] + order[:r % 3]:
                timings[name].append(measure[name]())
    eager, graph, clean = (np.concatenate(timings[n]) for n in ("eager", "graph", "clean"))

    def pct(lat, q):
        return np.percentile(lat, q) * 1e3

    base_p50, base_p99 = pct(eager, 50), pct(eager, 99)
    print(f"\nBruteForce, {args.candidates:,} x {args.dim} float32 candidates, k={args.k}, batch 1, "
          f"{per_round * args.rounds} calls per runtime in {args.rounds} interleaved rounds; "
          f"TF {tf.__version__}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
          f"load average at the end {os.getloadavg()[0]:.1f}\n")
    print("| runtime | p50 ms | p99 ms | p50 ratio to in-process eager | p99 ratio |")
    print("|---|---:|---:|---:|---:|")
    for name, lat in (("in-process index, eager call", eager),
                      ("in-process index, tf.function", graph),
                      ("clean process, SavedModel serving_default", clean)):
        print(f"| {name} | {pct(lat, 50):.3f} | {pct(lat, 99):.3f} | "
              f"{pct(lat, 50) / base_p50:.2f} | {pct(lat, 99) / base_p99:.2f} |")
    print(f"\nclean process / in-process tf.function: p50 {pct(clean, 50) / pct(graph, 50):.2f}, "
          f"p99 {pct(clean, 99) / pct(graph, 99):.2f}")

if __name__ == "__main__":
    main()
