"""Load test: exported BruteForce, Annoy and portable indexes under concurrent clients.

Exports a trained `two_tower` run with `towerkit export`'s defaults (`export_inputs`) as
BruteForce, Annoy and the portable index (on the 1,682-movie catalogue the approximate ones
search exactly by default), and Annoy and the portable index tuned to `--target-recall 0.95`
(their ANN search graphs), then, for each, starts `load_worker.py` in a process
with TensorFlow alone (`python -I`, as TF Serving would load it) that calls `serving_default`
with batch-1 queries (real held-out users of the run) from 8 client threads for `--seconds`,
checking every answer against the single-threaded one. Prints a Markdown table: requests/s,
p50/p99 latency, errors, mismatches.

    towerkit train --model two_tower --out RUN
    python benchmarks/serving/load_test.py --run RUN --seconds 60 --threads 8
"""

import argparse
import json
import pathlib
import shutil
import subprocess
import sys
import tempfile

import numpy as np

import towerkit  # noqa: F401  (legacy-Keras switch)
from towerkit import recipes
from towerkit.cli.export import export_inputs

WORKER = pathlib.Path(__file__).resolve().parent / "load_worker.py"
# (index kind, target recall): None = `towerkit export`'s default settings.
VARIANTS = "brute-force,annoy,portable,annoy:0.95,portable:0.95"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a two_tower run directory")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--queries", type=int, default=256, help="distinct users cycled")
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--variants", default=VARIANTS,
                        help="comma-separated KIND or KIND:TARGET_RECALL (default: %(default)s)")
    args = parser.parse_args()

    recipe, _ = recipes.load_run(args.run)
    inputs = recipe.index_inputs(args.run)
    queries = {name: np.asarray(values)[:args.queries]
               for name, values in inputs.tuning_queries.items()}
    work = pathlib.Path(tempfile.mkdtemp(prefix="towerkit-load-"))
    try:
        np.savez(work / "queries.npz", **queries)
        rows = []
        for variant in args.variants.split(","):
            kind, _, target = variant.partition(":")
            summary = export_inputs(inputs, kind, work / variant.replace(":", "_"), k=args.k,
                                    target_recall=float(target) if target else None)
            result = subprocess.run(
                [sys.executable, "-I", str(WORKER), summary["path"], str(work / "queries.npz"),
                 "--threads", str(args.threads), "--seconds", str(args.seconds)],
                capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise SystemExit(f"{kind}: worker failed:\n{result.stderr[-3000:]}")
            report = json.loads(result.stdout.strip().splitlines()[-1])
            report["kind"], report["tuning"] = variant, summary.get("tuning")
            rows.append(report)
            print(json.dumps(report), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n| index | requests/s | p50 ms | p99 ms | requests | errors | mismatches vs "
          f"single-threaded | foreign modules |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['kind']} | {r['requests_per_second']:.1f} | {r['p50_ms']:.2f} | "
              f"{r['p99_ms']:.2f} | {r['requests']} | {r['errors']} | {r['mismatches']} | "
              f"{r['foreign_modules'] or 'none'} |")


if __name__ == "__main__":
    main()
