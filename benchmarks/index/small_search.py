"""Small searches: native ScaNN vs the portable export through TensorFlow's C API, side by side.

Data (generated, not stored): 200,000 x 64 candidates and held-out queries from
`clustered_data.clustered_dataset` with `spread_scale=0.35`: clusters tight enough that native
ScaNN (894 leaves, `2 * sqrt(n)`) reaches recall@10 0.95 searching under 2% of its leaves.
Here a search touches a few hundred candidates, and the fixed per-call cost of a SavedModel
(executed op count, about 1 us an op through the C API) weighs as much as the arithmetic.

Methods, each timed in processes of its own, in alternating rounds:
  * native ScaNN (tree + AH + reorder, one thread; `measure_scann.py`) over a grid of leaves
    searched x reorder depth;
  * towerkit's `PortableIndex` built on that ScaNN searcher's own partition, one export
    (`save_index`) per setting of a grid of leaves x blocks around its
    `tune(target_recall=0.95)` setting, called through TensorFlow's C API from C
    (`measure_c_api.py`: the SavedModelBundle + Session::Run path of TF Serving's C++ server),
    in two session configurations: ops run in the calling thread (inter-op threads -1) and
    in a one-thread pool that each call hands its work to (inter-op threads 1);
  * an empty SavedModel through the C API in both configurations (the per-call floor).
For every round the fastest point of each method with recall@10 >= 0.95 is taken (CPU
queries/s, one thread), and the ratio portable / ScaNN is computed within the round; the
summary reports the median and range over rounds.

  python benchmarks/index/small_search.py --workdir /tmp/tk_small_search

Writes `small_search.json` next to this file (or `--out`) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402

from run_benchmark import (clean_process, export_settings, measure_exports,  # noqa: E402
                           public_args, save_empty_signature)  # (imports towerkit)
import scann  # noqa: E402

from clustered_data import clustered_dataset, exact_top_k  # noqa: E402
from towerkit.index import PortableIndex  # noqa: E402

K = 10
TARGET = 0.95
BATCHES = (1, 256)
# The two session configurations of the C API process (`measure_c_api.py --inter-op`).
CONFIGS = {"c_api": "Ops in the calling thread (inter_op_parallelism_threads -1):",
           "c_api_pool": "Ops in a one-thread pool (inter_op_parallelism_threads 1):"}


def log(*args):
    print(time.strftime("%H:%M:%S"), *args, flush=True)


def best_at_target(rows, batch):
    """The fastest row (CPU queries/s) at `batch` with recall >= TARGET, or None."""
    ok = [r for r in rows if r["batch"] == batch and r["recall"] >= TARGET]
    return max(ok, key=lambda r: r["cpu_qps"]) if ok else None


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-candidates", type=int, default=200_000)
    parser.add_argument("--spread-scale", type=float, default=0.35)
    parser.add_argument("--num-queries", type=int, default=1000)
    parser.add_argument("--num-tuning-queries", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--budget-s", type=float, default=1.0,
                        help="seconds of queries per point and round")
    parser.add_argument("--max-queries", type=int, default=1000)
    parser.add_argument("--scann-leaves", type=int, nargs="+", default=[6, 8, 10, 12, 14, 17])
    parser.add_argument("--scann-reorder", type=int, nargs="+", default=[50, 100, 200])
    parser.add_argument("--portable-leaves", type=int, nargs="+", default=None,
                        help="default: the tuned setting and its neighbours")
    parser.add_argument("--portable-blocks", type=int, nargs="+", default=None)
    parser.add_argument("--workdir", default="/tmp/tk_small_search")
    parser.add_argument("--out", default=str(HERE))
    args = parser.parse_args()
    work = pathlib.Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    n = args.num_candidates

    log(f"data: {n} x 64, spread_scale {args.spread_scale}")
    candidates, all_queries = clustered_dataset(
        n, args.num_queries + args.num_tuning_queries, spread_scale=args.spread_scale, seed=0)
    queries, tuning = all_queries[:args.num_queries], all_queries[args.num_queries:]
    truth = exact_top_k(queries, candidates, K)
    queries_path, truth_path = work / "queries.npy", work / "truth.npy"
    np.save(queries_path, queries)
    np.save(truth_path, truth)

    num_leaves = int(2 * np.sqrt(n))
    log(f"native ScaNN: {num_leaves} leaves")
    start = time.perf_counter()
    searcher = (scann.scann_ops_pybind.builder(candidates, K, "dot_product")
                .tree(num_leaves=num_leaves, num_leaves_to_search=max(args.scann_leaves),
                      training_sample_size=n, min_partition_size=1)
                .score_ah(2, anisotropic_quantization_threshold=0.2)
                .reorder(max(args.scann_reorder)).build())
    scann_build = time.perf_counter() - start
    scann_dir = work / "scann"
    shutil.rmtree(scann_dir, ignore_errors=True)
    scann_dir.mkdir()
    searcher.serialize(str(scann_dir))
    del searcher

    log("PortableIndex on ScaNN's partition")
    start = time.perf_counter()
    portable = PortableIndex(k=K, scann_artifacts_dir=scann_dir).index(candidates)
    portable_build = time.perf_counter() - start
    tune = portable.tune(tuning, target_recall=TARGET, k=K)
    log(f"tuned: {tune['setting']} recall {tune['recall']:.3f}")
    settings = dict(portable.settings)
    portable_dir = work / "portable"
    tuned_leaves = tune["setting"]["leaves_to_search"]
    tuned_blocks = tune["setting"]["blocks_to_search"]
    leaves_grid = args.portable_leaves or sorted(
        {max(1, tuned_leaves - 2), tuned_leaves, tuned_leaves + 2})
    blocks_grid = args.portable_blocks or sorted(
        {max(1, tuned_blocks - 4), tuned_blocks, tuned_blocks + 4})
    portable_settings = [{"leaves_to_search": leaves, "blocks_to_search": blocks}
                         for leaves in leaves_grid for blocks in blocks_grid]
    shutil.rmtree(portable_dir, ignore_errors=True)
    exports = export_settings(portable, portable_settings, portable_dir)
    del portable
    scann_settings = [{"leaves_to_search": leaves, "reorder": reorder}
                      for leaves in args.scann_leaves for reorder in args.scann_reorder]
    floor_dir = work / "empty_signature"
    save_empty_signature(floor_dir, candidates.shape[1])

    c_api = ["--build-dir", str(work / "c_build")]
    pool = c_api + ["--inter-op", "1"]
    floor = [({}, floor_dir)]
    measured = (("native_scann", "measure_scann.py", None, []),
                ("portable_c_api", "measure_c_api.py", exports, c_api),
                ("empty_c_api", "measure_c_api.py", floor, c_api),
                ("portable_c_api_pool", "measure_c_api.py", exports, pool),
                ("empty_c_api_pool", "measure_c_api.py", floor, pool))
    rounds = []
    for r in range(args.rounds):
        this = {}
        for method, script, targets, extra in measured:
            log(f"round {r + 1}/{args.rounds}: {method}")
            if targets is None:
                this[method] = clean_process(scann_dir, queries_path, truth_path,
                                             scann_settings, args, batches=BATCHES,
                                             script=script)
            else:
                this[method] = measure_exports(targets, queries_path, truth_path, args,
                                               batches=BATCHES, script=script, extra=extra)
        rounds.append(this)

    summary = {config: summarize(rounds, config) for config in CONFIGS}
    result = {
        "n": n, "dim": int(candidates.shape[1]), "k": K, "spread_scale": args.spread_scale,
        "num_queries": args.num_queries, "scann_num_leaves": num_leaves,
        "scann_build_s": scann_build, "portable_build_s": portable_build,
        "portable_settings": settings, "tuned": {key: tune[key] for key in
                                                  ("setting", "recall", "one_query_recall")},
        "command": " ".join(["python", os.path.relpath(sys.argv[0])] + public_args(sys.argv[1:])),
        "load_average_end": os.getloadavg(), "summary": summary, "rounds": rounds}
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "small_search.json").write_text(json.dumps(result, indent=1))
    print_table(result)


def summarize(rounds, config):
    """Per batch: each round's best point of native ScaNN and of the portable export through
    the C API in `config` (`c_api` or `c_api_pool`), their ratio, medians over rounds."""
    summary = {}
    for batch in BATCHES:
        per_round = []
        for this in rounds:
            ours = best_at_target(this[f"portable_{config}"], batch)
            theirs = best_at_target(this["native_scann"], batch)
            floor = [row for row in this[f"empty_{config}"] if row["batch"] == batch][0]
            per_round.append({
                "native_scann": theirs, "portable": ours, "empty_cpu_qps": floor["cpu_qps"],
                "ratio": ours["cpu_qps"] / theirs["cpu_qps"] if ours and theirs else None})
        ratios = [p["ratio"] for p in per_round if p["ratio"] is not None]
        pick = lambda m: [p[m]["cpu_qps"] for p in per_round if p[m]]  # noqa: E731
        summary[batch] = {
            "rounds": per_round,
            "ratio_median": statistics.median(ratios) if ratios else None,
            "ratio_range": [min(ratios), max(ratios)] if ratios else None,
            "native_scann_median": statistics.median(pick("native_scann")),
            "portable_median": (statistics.median(pick("portable")) if pick("portable")
                                else None),
            "empty_median": statistics.median(p["empty_cpu_qps"] for p in per_round)}
    return summary


def describe(row, key):
    return (f"{row['cpu_qps']:,.0f} ({row['recall']:.3f}, "
            + ", ".join(f"{v}" for v in row["setting"].values()) + ")") if row else "not reached"


def print_table(result):
    for config, title in CONFIGS.items():
        print(f"\n{title}\n")
        print("| batch | native ScaNN CPU-QPS | portable, C API CPU-QPS | ratio, median (range) "
              "| empty SavedModel, C API |")
        print("|---|---|---|---|---|")
        for batch, s in result["summary"][config].items():
            ratio = (f"**{s['ratio_median']:.2f}x** ({s['ratio_range'][0]:.2f}-"
                     f"{s['ratio_range'][1]:.2f})" if s["ratio_median"] else "-")
            print(f"| {batch} | {s['native_scann_median']:,.0f} | "
                  f"{s['portable_median'] or 0:,.0f} | {ratio} | {s['empty_median']:,.0f} |")
        print("\n| round | batch | native ScaNN (recall; leaves, reorder) | portable, C API "
              "(recall; leaves, blocks) | ratio |")
        print("|---|---|---|---|---|")
        for batch, s in result["summary"][config].items():
            for i, p in enumerate(s["rounds"]):
                ratio = f"{p['ratio']:.2f}x" if p["ratio"] else "-"
                print(f"| {i + 1} | {batch} | {describe(p['native_scann'], 'cpu_qps')} | "
                      f"{describe(p['portable'], 'cpu_qps')} | {ratio} |")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--table":
        print_table(json.loads(pathlib.Path(sys.argv[2]).read_text()))
    else:
        main()
