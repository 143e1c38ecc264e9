"""Peak memory and examples/s of the in-memory and the streamed-shards data paths.

Generates a synthetic interaction log (zipfian items, users, Unix-second timestamps, a
rating) as Parquet files in a temporary directory (deleted afterwards, never committed), then
runs each path in its own subprocess and reads its peak resident memory from
`resource.getrusage(RUSAGE_SELF).ru_maxrss`:

* `baseline`: imports towerkit and TensorFlow, reads nothing (the floor of every path);
* `in_memory`: `sources.read` of the Parquet files -> `Interactions.to_dataset(batch_size=B)`,
  one pass; `in_memory_shuffled` draws a random permutation of all rows per pass;
* `write_shards`: `write_shards` from the Parquet files, `--chunk-rows` rows at a time;
* `streamed`: `read_shards(batch_size=B)`, one pass; `streamed_shuffled` adds a 100k-row
  shuffle buffer.

Usage (the numbers in RESULTS.md):
  python benchmarks/data/run.py --rows 10000000 --users 1000000 --items 200000 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

PATHS = ("baseline", "in_memory", "in_memory_shuffled", "write_shards", "streamed",
         "streamed_shuffled")


def generate(directory: str, rows: int, users: int, items: int, files: int, seed: int) -> None:
    """Writes `files` Parquet files of a synthetic log with columns uid, sku, ts, stars."""
    import pandas as pd  # pylint: disable=import-outside-toplevel
    rng = np.random.default_rng(seed)
    # Zipf(1.05) over a finite catalogue: item rank k drawn with probability ~ k^-1.05.
    item_p = 1.0 / np.arange(1, items + 1) ** 1.05
    user_p = 1.0 / np.arange(1, users + 1) ** 0.5  # heavy users, flatter than items
    for f in range(files):
        n = rows // files + (f < rows % files)
        frame = pd.DataFrame({
            "uid": rng.choice(users, n, p=user_p / user_p.sum()).astype(np.int64),
            "sku": np.char.add("sku-", rng.choice(items, n, p=item_p / item_p.sum()).astype(str)),
            "ts": rng.integers(1_600_000_000, 1_700_000_000, n, dtype=np.int64),
            "stars": rng.integers(1, 6, n).astype(np.float32),
        })
        frame.to_parquet(os.path.join(directory, f"part-{f:03d}.parquet"))


def child(path: str, data: str, shards: str, batch_size: int, num_shards: int,
          chunk_rows: int) -> dict:
    """Runs one path in this process; returns its timings and peak memory."""
    import towerkit  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    from towerkit.data import Columns, read_shards, sources, write_shards  # pylint: disable=import-outside-toplevel
    columns = Columns(user="uid", item="sku", time="ts", rating="stars")
    pattern = os.path.join(data, "*.parquet")
    out = {"path": path}
    start = time.perf_counter()
    if path.startswith("in_memory"):
        log = sources.read(pattern, columns)
        out["load_s"] = time.perf_counter() - start
        ds = log.to_dataset(batch_size=batch_size, shuffle=path == "in_memory_shuffled",
                            seed=0).prefetch(8)
    elif path == "write_shards":
        manifest = write_shards(pattern, shards, num_shards, columns, chunk_rows=chunk_rows)
        out["rows"] = manifest["num_rows"]
        ds = None
    elif path.startswith("streamed"):
        ds = read_shards(shards, batch_size=batch_size, deterministic=False,
                         shuffle_buffer=100_000 if path == "streamed_shuffled" else 0, seed=0)
    else:
        ds = None
    if ds is not None:
        t = time.perf_counter()
        rows = 0
        for batch in ds:
            rows += int(batch["user"].shape[0])
        out["pass_s"] = time.perf_counter() - t
        out["rows"] = rows
        out["examples_per_s"] = rows / out["pass_s"]
    out["total_s"] = time.perf_counter() - start
    if path == "write_shards":
        out["examples_per_s"] = out["rows"] / out["total_s"]
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--num-shards", type=int, default=16)
    parser.add_argument("--chunk-rows", type=int, default=1 << 20)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results.json"))
    parser.add_argument("--child", choices=PATHS, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--shards", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.data, args.shards, args.batch_size,
                               args.num_shards, args.chunk_rows)))
        return

    work = tempfile.mkdtemp(prefix="towerkit-data-bench-")
    try:
        data, shards = os.path.join(work, "log"), os.path.join(work, "shards")
        os.makedirs(data)
        t = time.perf_counter()
        generate(data, args.rows, args.users, args.items, args.files, args.seed)
        generate_s = time.perf_counter() - t
        size = sum(os.path.getsize(os.path.join(data, f)) for f in os.listdir(data))
        runs = []
        for repeat in range(args.repeats):
            for path in PATHS:
                if path == "write_shards" and os.path.exists(shards):
                    shutil.rmtree(shards)
                cmd = [sys.executable, __file__, "--child", path, "--data", data, "--shards",
                       shards, "--batch-size", str(args.batch_size), "--num-shards",
                       str(args.num_shards), "--chunk-rows", str(args.chunk_rows)]
                proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                                      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
                if proc.returncode:
                    raise RuntimeError(f"{path} failed:\n{proc.stderr[-3000:]}")
                result = json.loads(proc.stdout.strip().splitlines()[-1])
                result["repeat"] = repeat
                print(json.dumps(result), flush=True)
                runs.append(result)
        shard_bytes = sum(os.path.getsize(os.path.join(shards, f)) for f in os.listdir(shards))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    import pandas, pyarrow, tensorflow as tf  # pylint: disable=import-outside-toplevel,multiple-imports
    record = {
        "args": {k: v for k, v in vars(args).items() if k not in ("child", "data", "shards", "out")},
        "generate_s": generate_s, "parquet_mib": size / 2**20, "shards_mib": shard_bytes / 2**20,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_at_end": os.getloadavg()},
        "versions": {"tensorflow": tf.__version__, "numpy": np.__version__,
                     "pandas": pandas.__version__, "pyarrow": pyarrow.__version__},
        "runs": runs,
    }
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
