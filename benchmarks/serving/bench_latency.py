"""Single-query latency of an exported BruteForce index: clean TF process vs in-process index.

Builds a BruteForce index over N random 64-d candidates with a small query model (user_id string ->
embedding table), exports it with `towerkit.serving.export`, then times batch-1 queries:

- in-process, eager: `index({"user_id": ...})` (the Keras layer call, as user code calls it);
- in-process, tf.function: the same call wrapped once in `tf.function` (graph, no Keras eager cost);
- clean process: a subprocess with TensorFlow alone (no towerkit/TFRS/ScaNN/Annoy imported) that
  loads the SavedModel and calls `serving_default`, the signature TF Serving runs.

All three run in this one invocation, on the same machine, one after the other; each reports
p50/p99 over the same query sequence. Prints a Markdown table.

    python benchmarks/serving/bench_latency.py --candidates 100000 --repeats 2000
"""

import argparse
import pathlib
import platform
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


def time_calls(fn, queries, repeats, warmup=20):
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

    queries = [{"user_id": tf.constant(user_ids[i:i + 1])} for i in range(len(user_ids))]
    eager = time_calls(lambda q: index(q), queries, args.repeats)
    graph_fn = tf.function(lambda q: index(q))
    graph = time_calls(graph_fn, queries, args.repeats)
    clean = clean_process.time_saved_model(path, {"user_id": user_ids}, repeats=args.repeats,
                                           warmup_calls=20)

    def row(name, lat):
        p50, p99 = np.percentile(lat, 50) * 1e3, np.percentile(lat, 99) * 1e3
        return name, p50, p99

    rows = [row("in-process index, eager call", eager),
            row("in-process index, tf.function", graph),
            row("clean process, SavedModel serving_default", clean)]
    base_p50, base_p99 = rows[0][1], rows[0][2]
    print(f"\nBruteForce, {args.candidates:,} x {args.dim} float32 candidates, k={args.k}, "
          f"batch 1, {args.repeats} calls each; {platform.processor() or platform.machine()}, "
          f"TF {tf.__version__}, Python {sys.version.split()[0]}, "
          f"intra-op threads default\n")
    print("| runtime | p50 ms | p99 ms | p50 / eager index p50 | p99 / eager index p99 |")
    print("|---|---:|---:|---:|---:|")
    for name, p50, p99 in rows:
        print(f"| {name} | {p50:.3f} | {p99:.3f} | {p50 / base_p50:.2f} | {p99 / base_p99:.2f} |")
    graph_p50 = rows[1][1]
    print(f"\nclean-process p50 / in-process tf.function p50: {rows[2][1] / graph_p50:.2f}")


if __name__ == "__main__":
    main()
