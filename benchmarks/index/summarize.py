"""Prints Markdown tables from `results_<n>.json` (written by `run_benchmark.py`).

  python benchmarks/index/summarize.py benchmarks/index/results_100000.json
"""

import json
import sys

TARGET = 0.95


def best_at(points, batch, key, target=TARGET):
    """The fastest point at `batch` with recall >= target (None if none reaches it)."""
    ok = [p for p in points if p["batch"] == batch and p["recall"] >= target]
    return max(ok, key=lambda p: p[key]) if ok else None


def main(paths):
    for path in paths:
        result = json.load(open(path))
        methods = result["methods"]
        print(f"\n### n = {result['n']:,} x {result['dim']}, k = {result['k']}, "
              f"{result['num_queries']} queries\n")
        print("| method | build s | size MB | b=1 CPU-QPS @R>=0.95 (recall, setting) "
              "| b=256 CPU-QPS @R>=0.95 (recall, setting) |")
        print("|---|---|---|---|---|")
        best = {}
        for name, data in methods.items():
            if name.startswith("empty_saved_model"):
                continue
            cells = []
            for batch in (1, 256):
                p = best_at(data["points"], batch, "cpu_qps")
                best[(name, batch)] = p
                cells.append("not reached" if p is None else
                             f"{p['cpu_qps']:.0f} ({p['recall']:.3f}, {p['setting'] or '-'})")
            size = data.get("size_bytes")
            print(f"| {name} | {data.get('build_s', float('nan')):.1f} | "
                  f"{(size or 0) / 1e6:.1f} | {cells[0]} | {cells[1]} |")
        for floor_name, how in (("empty_saved_model_call", "TF2 signature call"),
                                ("empty_saved_model_session", "TF1 Session.run"),
                                ("empty_saved_model_c_api", "C API TF_SessionRun")):
            floor = methods.get(floor_name)
            if not floor:
                continue
            cells = {p["batch"]: p["cpu_qps"] for p in floor["points"]}
            print(f"\nFloor, {how}: an empty SavedModel (clean process, same harness) runs at "
                  f"{cells.get(1, float('nan')):.0f} calls per CPU-second at batch 1 and "
                  f"{cells.get(256, float('nan')):.0f} queries per CPU-second at batch 256.")
            scann_one = best.get(("native_scann", 1))
            if scann_one and 1 in cells:
                print(f"At batch 1 that floor alone is {cells[1] / scann_one['cpu_qps']:.2f}x "
                      "native ScaNN's best point at recall >= 0.95.")
        for ours_name in ("portable_saved_model", "portable_saved_model_session",
                          "portable_saved_model_c_api"):
            if (ours_name, 1) not in best:
                continue
            print(f"\nRatios of {ours_name} at recall >= 0.95 (CPU-QPS):\n")
            for batch in (1, 256):
                ours = best[(ours_name, batch)]
                for ref in ("native_scann", "tfrs_brute_force"):
                    theirs = best.get((ref, batch))
                    if ours and theirs:
                        print(f"- batch {batch}: {ours['cpu_qps'] / theirs['cpu_qps']:.2f}x {ref}")
        print("\nAll points (recall, wall QPS, CPU-QPS):\n")
        print("| method | setting | batch | recall@10 | wall QPS | CPU-QPS | queries |")
        print("|---|---|---|---|---|---|---|")
        for name, data in methods.items():
            for p in data["points"]:
                print(f"| {name} | {p['setting'] or '-'} | {p['batch']} | {p['recall']:.3f} | "
                      f"{p['qps']:.1f} | {p['cpu_qps']:.1f} | {p['queries']} |")
        tuned = methods.get("portable_saved_model", {}).get("tuned")
        if tuned:
            print(f"\nPortable `tune(target_recall=0.95)` on {tuned['tuning_queries']} held-out "
                  f"tuning queries chose {tuned['setting']} (batched recall "
                  f"{tuned['recall']:.3f}, one-query recall {tuned['one_query_recall']:.3f}).")


if __name__ == "__main__":
    main(sys.argv[1:])
