"""One SavedModel, one clean process: the one-query path with exact float32 scoring (reorder=0)
vs int8 codes + exact reorder (reorder=10), 1M set, ScaNN partition from run_benchmark.py.

  python benchmarks/index/exact_vs_int8.py   # after run_benchmark.py --sizes 1000000 --workdir /tmp/e3_bench
"""
import sys, json, subprocess, time, shutil
sys.path.insert(0, 'benchmarks/index')
import towerkit
from clustered_data import clustered_dataset
from towerkit.index import PortableIndex, save_index
X, _ = clustered_dataset(1_000_000, 800, seed=0)
idx = PortableIndex(k=10, scann_artifacts_dir='/tmp/e3_bench/1000000/scann').index(X)
shutil.rmtree('/tmp/e3_bench/p2', ignore_errors=True)
save_index(idx, '/tmp/e3_bench/p2')
settings = [{"leaves_to_search": 128, "reorder": 0}, {"leaves_to_search": 128, "reorder": 10},
            {"leaves_to_search": 160, "reorder": 0}, {"leaves_to_search": 160, "reorder": 10}]
cmd = [sys.executable, 'benchmarks/index/measure_saved_model.py', '/tmp/e3_bench/p2',
       '/tmp/e3_bench/1000000/queries.npy', '/tmp/e3_bench/1000000/truth.npy', json.dumps(settings),
       '--budget-s', '5', '--max-queries', '500']
print(cmd, flush=True)
r = subprocess.run(cmd, capture_output=True, text=True)
print(r.stdout[-4000:], r.stderr[-1500:], flush=True)
shutil.rmtree('/tmp/e3_bench/p2', ignore_errors=True)
