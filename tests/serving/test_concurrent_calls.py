"""Exported indexes under concurrent clients (issue 17's load test, shortened to 2 s each).

`benchmarks/serving/load_worker.py` loads each export in a process with TensorFlow alone, answers
every query single-threaded, then calls `serving_default` from 8 threads and compares every answer
with the single-threaded one. Annoy and the portable index run their ANN search graphs here
(`set_exhaustive(False)`), the paths with loops and gathers that concurrency could disturb.
"""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import towerkit  # noqa: F401
import tensorflow as tf
from towerkit import serving
from towerkit.cli.export import index_class

WORKER = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "serving" / "load_worker.py"


@pytest.mark.parametrize("kind", ["brute-force", "annoy", "portable"])
def test_eight_threads_no_errors_same_answers(kind, tmp_path):
    rng = np.random.default_rng(0)
    candidates = rng.normal(size=(3000, 16)).astype(np.float32)
    index = index_class(kind)(k=20).index(candidates, np.arange(3000, dtype=np.int64))
    if kind != "brute-force":
        index.set_exhaustive(False)
        assert not index.exhaustive
    path = serving.export(index, tmp_path / "model",
                          query_signature=tf.TensorSpec([None, 16], tf.float32))
    np.savez(tmp_path / "queries.npz", queries=rng.normal(size=(64, 16)).astype(np.float32))
    result = subprocess.run(
        [sys.executable, "-I", str(WORKER), str(path), str(tmp_path / "queries.npz"),
         "--threads", "8", "--seconds", "2"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["foreign_modules"] == []
    assert report["requests"] > 8 and report["threads"] == 8
    assert report["errors"] == 0, report["first_error"]
    assert report["mismatches"] == 0
