"""End to end on real MovieLens 100K through the installed CLI: train -> evaluate, quickstart.

Needs the prepared tfds data (`TFDS_DATA_DIR`, as `.ci/run` exports). Small epochs keep it short.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import towerkit  # noqa: F401
import tensorflow as tf

pytestmark = pytest.mark.slow


def _towerkit(*args, timeout=900):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-m", "towerkit.cli.main", *args], capture_output=True,
                          text=True, env=env, timeout=timeout)
    assert proc.returncode == 0, f"towerkit {' '.join(args)} failed:\n{proc.stderr[-4000:]}"
    return proc.stdout


def _last_json(stdout: str) -> dict:
    return json.loads(stdout[stdout.index("{"):])


def test_train_then_evaluate_reproduces_the_metrics(tmp_path):
    run = tmp_path / "run"
    trained = _last_json(_towerkit("train", "--model", "two_tower", "--dataset",
                                   "movielens/100k-ratings", "--epochs", "1", "--out", str(run),
                                   "--embedding-dim", "16", "--batch-size", "4096"))["metrics"]
    assert json.loads((run / "run.json").read_text())["params"]["embedding_dim"] == 16
    dump = tmp_path / "top.npz"
    evaluated = _last_json(_towerkit("evaluate", str(run), "--json", "--dump-topn", str(dump)))
    for key in ("top_10_categorical_accuracy", "top_100_categorical_accuracy"):
        assert evaluated[key] == pytest.approx(trained[key], abs=1e-9)
    assert evaluated["num_queries"] == 20_000 and evaluated["num_candidates"] == 1682
    # Re-derive top-100 accuracy from the dumped lists (independent of the recipe's counting).
    top = np.load(dump)
    hits = (top["topn_ids"] == top["true_ids"][:, None]).any(axis=1).mean()
    assert hits == pytest.approx(evaluated["top_100_categorical_accuracy"])
    assert np.all(np.diff(top["topn_scores"], axis=1) <= 1e-6)  # best first


def test_quickstart_prints_recommendations_and_exports_a_servable_model(tmp_path):
    out = _towerkit("quickstart", "--epochs", "1", "--out", str(tmp_path / "qs"))
    base = tmp_path / "qs" / "movielens"
    assert (base / "1" / "saved_model.pb").is_file()
    assert f"--model_base_path={base}" in out and "--model_name=movielens" in out
    assert "tensorflow/serving" in out and "MODEL_NAME=movielens" in out
    assert out.count("  1. ") == 3 and out.count(" 10. ") == 3  # top-10 for 3 users

    # The exported model answers like the trained towers: NumPy oracle from the run's weights.
    from towerkit import recipes
    recipe, _ = recipes.load_run(tmp_path / "qs" / "run")
    inputs = recipe.index_inputs(tmp_path / "qs" / "run")
    users = np.array([b"42", b"1", b"unknown-user"])
    queries = inputs.query_model({"user_id": tf.constant(users)}).numpy()
    expected = inputs.candidate_ids[np.argsort(-(queries @ inputs.candidate_embeddings.T),
                                               axis=1)[:, :10]]
    loaded = tf.saved_model.load(str(base / "1"))
    served = loaded.signatures["serving_default"](user_id=tf.constant(users))
    np.testing.assert_array_equal(served["ids"].numpy()[:2], expected[:2])
    assert served["ids"].shape == (3, 10)  # an unknown user still gets 10 movies (OOV row)
