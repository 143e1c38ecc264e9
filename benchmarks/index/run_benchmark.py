"""Index benchmark: recall@10 vs queries/s, one search thread, batch 1 and 256, side by side.

Data: `clustered_data.clustered_dataset` (mixture of 1,000 Gaussians, varied norms, MIPS), exact
top-10 as truth. Methods: TFRS BruteForce and towerkit BruteForce (in process, tf.function),
native ScaNN (tree + AH + reorder; `measure_scann.py`, own process), the Annoy library and
towerkit's Annoy SavedModel, and towerkit's PortableIndex SavedModel built on the native ScaNN
searcher's own partition. SavedModels are timed in clean processes three ways: the TF2
signature call and a TF1 `Session.run` from Python (`measure_saved_model.py`, TensorFlow only),
and TensorFlow's C API from a C program with no Python in it (`measure_c_api.py`: the
SavedModelBundle + Session::Run path of TF Serving's C++ server; needs a C compiler).

  python benchmarks/index/run_benchmark.py --sizes 100000 1000000 --workdir /tmp/tk_index_bench

Writes `results_<n>.json` and `recall_qps.png` next to this file (or `--out`); `--plot-only`
redraws the plot from the saved results.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import shutil
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402

import towerkit  # noqa: E402,F401  (legacy Keras before TensorFlow)
import tensorflow as tf  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

import scann  # noqa: E402
import tensorflow_recommenders as tfrs  # noqa: E402

from clustered_data import clustered_dataset, exact_top_k  # noqa: E402
from timing import timed  # noqa: E402
from towerkit.index import Annoy, BruteForce, PortableIndex, save_index  # noqa: E402

K = 10


def log(*args):
    print(time.strftime("%H:%M:%S"), *args, flush=True)


def dir_bytes(path) -> int:
    path = pathlib.Path(path)
    return path.stat().st_size if path.is_file() else sum(
        f.stat().st_size for f in path.rglob("*") if f.is_file())


def clean_process(model, queries_path, truth_path, settings, args, batches=(1, 256),
                  script="measure_saved_model.py", extra=()):
    cmd = [sys.executable, str(HERE / script), str(model), str(queries_path),
           str(truth_path), json.dumps(settings), "--budget-s", str(args.budget_s),
           "--max-queries", str(args.max_queries), "--batches", *map(str, batches), *extra]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])["rows"]


def public_args(argv):
    """Command-line arguments as results record them: the work directory as WORKDIR."""
    return ["WORKDIR" if i and argv[i - 1] == "--workdir" else a for i, a in enumerate(argv)]


def export_settings(index, settings, base):
    """One SavedModel per search setting: `[(setting, path)]` (the portable index's setting is
    part of its graph, as in a deployment that exports the tuned index)."""
    exports = []
    for setting in settings:
        index.set_search_params(**setting)
        path = pathlib.Path(base) / "_".join(f"{key}{value}" for key, value in setting.items())
        shutil.rmtree(path, ignore_errors=True)
        save_index(index, path)
        exports.append((dict(setting), path))
    return exports


def measure_exports(exports, queries_path, truth_path, args, batches=(1, 256),
                    script="measure_saved_model.py", extra=()):
    """`clean_process` over every export of `export_settings`, rows labelled by setting."""
    rows = []
    for setting, path in exports:
        for row in clean_process(path, queries_path, truth_path, [], args, batches,
                                 script=script, extra=extra):
            rows.append({**row, "setting": setting})
    return rows


def run_size(n: int, args) -> dict:
    work = pathlib.Path(args.workdir) / str(n)
    work.mkdir(parents=True, exist_ok=True)
    num_eval, num_tune = args.num_queries, args.num_tuning_queries
    log(f"n={n}: data")
    candidates, all_queries = clustered_dataset(n, num_eval + num_tune, seed=0)
    queries, tuning = all_queries[:num_eval], all_queries[num_eval:]
    truth_path = work / "truth.npy"
    if truth_path.exists():
        truth = np.load(truth_path)
    else:
        truth = exact_top_k(queries, candidates, K)
        np.save(truth_path, truth)
    np.save(work / "queries.npy", queries)
    result = {"n": n, "dim": candidates.shape[1], "k": K, "num_queries": num_eval,
              "methods": {}}
    methods = result["methods"]

    def add(method, setting, batch, recall, qps, cpu_qps, done):
        methods.setdefault(method, {"points": []})["points"].append(
            {"setting": setting, "batch": batch, "recall": recall, "qps": qps,
             "cpu_qps": cpu_qps, "queries": done})
        log(f"  {method} {setting} b={batch}: recall={recall:.3f} qps={qps:.1f} "
            f"cpu_qps={cpu_qps:.1f} ({done} q)")

    # ---------------------------------------------------------------- brute force (in process)
    for name, layer in (("tfrs_brute_force", tfrs.layers.factorized_top_k.BruteForce(k=K)),
                        ("towerkit_brute_force", BruteForce(k=K))):
        start = time.perf_counter()
        layer.index(candidates)
        build = time.perf_counter() - start
        fn = tf.function(lambda q, layer=layer: layer(q, k=K)[1],
                         input_signature=[tf.TensorSpec([None, candidates.shape[1]])])
        for batch in (1, 256):
            add(name, {}, batch, *timed(lambda q: fn(q).numpy(), queries, truth, batch,
                                        args.budget_s, args.max_queries))
        methods[name].update(build_s=build, size_bytes=candidates.nbytes)
        del layer, fn

    # ------------------------------------------------------------------------ native ScaNN
    num_leaves = args.num_leaves or int(2 * math.sqrt(n))
    log(f"n={n}: ScaNN build, {num_leaves} leaves")
    start = time.perf_counter()
    searcher = (scann.scann_ops_pybind.builder(candidates, K, "dot_product")
                .tree(num_leaves=num_leaves, num_leaves_to_search=num_leaves // 10,
                      training_sample_size=min(n, 250_000), min_partition_size=1)
                .score_ah(2, anisotropic_quantization_threshold=0.2)
                .reorder(1000).build())
    scann_build = time.perf_counter() - start
    searcher.set_num_threads(1)
    scann_dir = work / "scann"
    shutil.rmtree(scann_dir, ignore_errors=True)
    scann_dir.mkdir()
    searcher.serialize(str(scann_dir))
    del searcher  # timed from its serialized form, in its own process (measure_scann.py)
    methods["native_scann"] = {"points": [], "build_s": scann_build,
                               "size_bytes": dir_bytes(scann_dir), "num_leaves": num_leaves}
    # ---------------------------------------------------------- portable (ScaNN's own partition)
    log(f"n={n}: PortableIndex build")
    start = time.perf_counter()
    portable = PortableIndex(k=K, scann_artifacts_dir=scann_dir).index(candidates)
    portable_build = time.perf_counter() - start
    start = time.perf_counter()
    tune = portable.tune(tuning, target_recall=0.95, k=K)
    tune_s = time.perf_counter() - start
    log(f"  tuned: {tune['setting']} recall {tune['recall']:.3f} / one-query "
        f"{tune['one_query_recall']:.3f}")
    portable_dir = work / "portable"
    shutil.rmtree(portable_dir, ignore_errors=True)
    start = time.perf_counter()
    save_index(portable, portable_dir)
    save_s = time.perf_counter() - start
    methods["portable_saved_model"] = {
        "points": [], "build_s": scann_build + portable_build, "portable_build_s": portable_build,
        "save_s": save_s, "size_bytes": portable.size_bytes(),
        "saved_model_bytes": dir_bytes(portable_dir), "settings": dict(portable.settings),
        "tuned": {
            "setting": tune["setting"], "recall": tune["recall"], "num_settings_tried":
            len(tune["tried"]), "tune_s": tune_s,
            "one_query_recall": tune["one_query_recall"], "tuning_queries": num_tune}}
    shutil.rmtree(portable_dir, ignore_errors=True)
    leaves = portable.settings["num_leaves"]
    portable_settings = [
        {"leaves_to_search": max(1, int(round(f * leaves))), "blocks_to_search": b}
        for f in args.portable_leaf_fractions for b in args.portable_blocks]
    portable_settings.append(dict(tune["setting"]))
    exports = export_settings(portable, portable_settings, portable_dir)
    del portable
    floor_dir = work / "empty_signature"
    save_empty_signature(floor_dir, candidates.shape[1])
    methods["empty_saved_model_call"] = {"points": [], "note": "returns zeros: recall 0; the "
                                         "cost of calling any SavedModel signature from Python"}

    # Native ScaNN (serialized searcher), the portable SavedModel (TF2 signature call, TF1
    # Session.run and the C API) and an empty SavedModel are each timed in a process of
    # their own, in alternating rounds; each point keeps its best round: the machine is shared,
    # and interference that comes and goes would otherwise favour whichever ran in a quiet
    # minute.
    rounds = {}

    def keep(method, setting, batch, recall, qps, cpu_qps, done):
        key = (method, json.dumps(setting, sort_keys=True), batch)
        rounds.setdefault(key, []).append((cpu_qps, qps, recall, done, setting))

    # The C API process (no Python: TF Serving's SavedModelBundle + Session::Run path).
    c_api = ["--build-dir", str(work / "c_build")]
    scann_settings = [{"leaves_to_search": max(1, int(round(frac * num_leaves))),
                       "reorder": reorder}
                      for frac in args.scann_leaf_fractions for reorder in args.scann_reorder]
    pool = c_api + ["--inter-op", "1"]
    floor = [({}, floor_dir)]
    measured = (
        # A fine grid, so that ScaNN's fastest setting at recall >= 0.95 is found (not the
        # next coarse step above it): leaves searched x reorder depth.
        ("native_scann", "measure_scann.py", None, scann_settings, []),
        ("portable_saved_model", "measure_saved_model.py", exports, None, []),
        ("portable_saved_model_session", "measure_saved_model.py", exports, None, ["--session"]),
        ("portable_saved_model_c_api", "measure_c_api.py", exports, None, c_api),
        ("portable_saved_model_c_api_pool", "measure_c_api.py", exports, None, pool),
        ("empty_saved_model_call", "measure_saved_model.py", floor, None, []),
        ("empty_saved_model_session", "measure_saved_model.py", floor, None, ["--session"]),
        ("empty_saved_model_c_api", "measure_c_api.py", floor, None, c_api),
        ("empty_saved_model_c_api_pool", "measure_c_api.py", floor, None, pool))
    for method, *_ in measured[1:]:
        methods.setdefault(method, {"points": []})
    for suffix in ("session", "c_api", "c_api_pool"):
        methods[f"portable_saved_model_{suffix}"].update(
            {k: v for k, v in methods["portable_saved_model"].items() if k != "points"})
        methods[f"empty_saved_model_{suffix}"]["note"] = methods["empty_saved_model_call"]["note"]
    for suffix, how in (("c_api", "ops in the calling thread"),
                        ("c_api_pool", "ops in a one-thread pool")):
        methods[f"empty_saved_model_{suffix}"]["note"] = (
            f"returns zeros: recall 0; the cost of one TF_SessionRun call from C, {how}")
    for r in range(args.rounds):
        for method, script, targets, settings, extra in measured:
            log(f"n={n}: round {r + 1}/{args.rounds}: {method} (own process)")
            if targets is None:
                rows = clean_process(scann_dir, work / "queries.npy", truth_path, settings, args,
                                     script=script, extra=extra)
            else:
                rows = measure_exports(targets, work / "queries.npy", truth_path, args,
                                       script=script, extra=extra)
            for row in rows:
                keep(method, row["setting"], row["batch"], row["recall"], row["qps"],
                     row["cpu_qps"], row["queries"])
    for (method, _, batch), runs in rounds.items():
        cpu_qps, qps, recall, done, setting = max(runs, key=lambda run: run[0])
        add(method, setting, batch, recall, qps, cpu_qps, done)
        methods[method]["points"][-1]["cpu_qps_rounds"] = [run[0] for run in runs]
    shutil.rmtree(portable_dir, ignore_errors=True)

    # -------------------------------------------------------------------------------- Annoy
    if n <= args.annoy_max_n:
        log(f"n={n}: Annoy build, {args.n_trees} trees")
        start = time.perf_counter()
        annoy_file = work / "library.ann"
        annoy_index = Annoy(k=K, n_trees=args.n_trees, index_path=str(annoy_file)).index(candidates)
        annoy_build = time.perf_counter() - start
        methods["annoy_library"] = {"points": [], "build_s": annoy_build,
                                    "n_trees": args.n_trees,
                                    "size_bytes": dir_bytes(annoy_file)}
        methods["annoy_saved_model"] = {"points": [], "build_s": annoy_build,
                                        "size_bytes": annoy_index.size_bytes()}
        for search_k in args.annoy_search_k:
            lib = lambda q, s=search_k: annoy_index.library_search(q, K, s)[1]
            add("annoy_library", {"search_k": search_k}, 1,
                *timed(lib, queries, truth, 1, args.budget_s, args.max_queries))
            annoy_index.set_search_params(search_k=search_k)
            path = work / "annoy"
            shutil.rmtree(path, ignore_errors=True)
            save_index(annoy_index, path)
            # Batch 256 only where a warm-up batch finishes in reasonable time.
            batches = (1, 256) if n <= 100_000 and search_k <= 20_000 else (1,)
            for row in clean_process(path, work / "queries.npy", truth_path, [], args, batches):
                add("annoy_saved_model", {"search_k": search_k}, row["batch"], row["recall"],
                    row["qps"], row["cpu_qps"], row["queries"])
            shutil.rmtree(path, ignore_errors=True)
    return result


def save_empty_signature(path, dim):
    """A SavedModel whose `serving_default` does no search (zeros): the per-call floor."""

    class Empty(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, dim], tf.float32, name="queries")])
        def serve(self, queries):
            batch = tf.shape(queries)[0]
            return {"ids": tf.zeros([batch, K], tf.int64), "scores": tf.zeros([batch, K])}

    module = Empty()
    shutil.rmtree(path, ignore_errors=True)
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})


def plot(results, path):
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

    fig, axes = plt.subplots(len(results), 2, figsize=(12, 4.5 * len(results)), squeeze=False)
    for row, result in zip(axes, results):
        for ax, batch in zip(row, (1, 256)):
            for i, (method, data) in enumerate(result["methods"].items()):
                points = sorted((p for p in data["points"] if p["batch"] == batch),
                                key=lambda p: p["recall"])
                if points:
                    ax.plot([p["recall"] for p in points], [p["cpu_qps"] for p in points], "o-",
                            label=method, markersize=4, color=f"C{i}")
            ax.axvline(0.95, color="grey", linestyle=":")
            ax.set_yscale("log")
            ax.set_xlabel("recall@10")
            ax.set_ylabel("queries per CPU-second (one thread)")
            ax.set_title(f"n={result['n']:,} x {result['dim']}, batch {batch}")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--num-queries", type=int, default=1000)
    parser.add_argument("--num-tuning-queries", type=int, default=500)
    parser.add_argument("--num-leaves", type=int, default=None,
                        help="ScaNN/portable leaves (default 2 * sqrt(n))")
    parser.add_argument("--budget-s", type=float, default=10.0,
                        help="seconds of queries per point (fewer queries if slow)")
    parser.add_argument("--max-queries", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating measurement rounds of native ScaNN and the portable "
                             "SavedModel; each point keeps its best round")
    parser.add_argument("--scann-leaf-fractions", type=float, nargs="+",
                        default=[0.02, 0.04, 0.06, 0.08, 0.09, 0.1, 0.12, 0.16, 0.24, 0.32])
    parser.add_argument("--scann-reorder", type=int, nargs="+", default=[200, 500, 1000])
    parser.add_argument("--portable-leaf-fractions", type=float, nargs="+",
                        default=[0.04, 0.06, 0.08, 0.1, 0.12])
    parser.add_argument("--portable-blocks", type=int, nargs="+", default=[32, 48, 64, 96])
    parser.add_argument("--n-trees", type=int, default=20)
    parser.add_argument("--annoy-search-k", type=int, nargs="+", default=[20_000, 100_000])
    parser.add_argument("--annoy-max-n", type=int, default=1_000_000)
    parser.add_argument("--workdir", default="/tmp/towerkit_index_bench")
    parser.add_argument("--out", default=str(HERE))
    parser.add_argument("--plot-only", action="store_true",
                        help="only redraw recall_qps.png from the results_<n>.json in --out")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.plot_only:
        results = [json.loads(p.read_text()) for p in out.glob("results_*.json")]
        plot(sorted(results, key=lambda r: r["n"]), out / "recall_qps.png")
        return
    for n in args.sizes:
        result = run_size(n, args)
        result["command"] = " ".join(["python", os.path.relpath(sys.argv[0])]
                                     + public_args(sys.argv[1:]))
        (out / f"results_{n}.json").write_text(json.dumps(result, indent=1))
        results = [json.loads(p.read_text()) for p in out.glob("results_*.json")]
        plot(sorted(results, key=lambda r: r["n"]), out / "recall_qps.png")
    log("done")


if __name__ == "__main__":
    main()
