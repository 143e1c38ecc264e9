"""save_index: SavedModels that load in a fresh process with TensorFlow alone, same results."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from towerkit.index import (METADATA_FILE, Annoy, BruteForce, ScaNN, save_index,
                            saved_model_ops)

# Loads each SavedModel with TensorFlow only and runs its signatures; fails if towerkit,
# TFRS, scann or annoy got imported. Loading the ScaNN model must fail on its custom op.
_CLEAN_PROCESS = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    from tensorflow.python.framework import op_def_registry
    spec = json.loads(sys.argv[1])
    out = {}
    for name, model in spec["models"].items():
        loaded = tf.saved_model.load(model["path"])
        inputs = {key: tf.constant(np.load(path)) for key, path in model["inputs"].items()}
        serve = loaded.signatures["serving_default"](**inputs)
        top = loaded.signatures["top_k"](**inputs, k=tf.constant(3))
        emb = loaded.signatures["query_embedding"](**inputs)
        try:
            loaded.signatures["top_k"](**inputs, k=tf.constant(model["max_k"] + 1))
            too_big = "no error"
        except tf.errors.InvalidArgumentError as e:
            too_big = str(e)
        np.save(model["out"] + "_ids.npy", serve["ids"].numpy())
        np.save(model["out"] + "_scores.npy", serve["scores"].numpy())
        np.save(model["out"] + "_top3.npy", top["ids"].numpy())
        np.save(model["out"] + "_emb.npy", emb["embedding"].numpy())
        out[name] = too_big
    try:
        tf.saved_model.load(spec["scann"])
        out["scann_load"] = "loaded"
    except Exception as e:  # The ScaNN op is not registered without the scann package.
        out["scann_load"] = str(e)[:2000]
    out["scann_op_registered"] = op_def_registry.get("Scann>ScannSearchBatched") is not None
    out["modules"] = sorted(m for m in ("towerkit", "tensorflow_recommenders", "scann", "annoy")
                            if m in sys.modules)
    print(json.dumps(out))
""")


def _user_model(dim):
    # A dict-input query model: StringLookup + Embedding, built only by being called below.
    lookup = tf.keras.layers.StringLookup(vocabulary=["u0", "u1", "u2", "u3"])
    embed = tf.keras.layers.Embedding(5, dim, embeddings_initializer=tf.keras.initializers.
                                      RandomNormal(seed=1))

    class UserModel(tf.keras.Model):
        def __init__(self):
            super().__init__()
            self.lookup, self.embed = lookup, embed

        def call(self, features):
            return self.embed(self.lookup(features["user_id"]))

    return UserModel()


def test_saved_indexes_run_in_a_clean_process(tmp_path, clustered):
    candidates, queries = clustered
    n, dim = candidates.shape
    titles = np.array([f"movie {i}".encode() for i in range(n)])
    users = np.array([b"u1", b"u3", b"nobody"])
    multi = queries[:6].reshape(3, 2, dim)
    cases = {
        "bf_strings": (BruteForce(_user_model(dim), k=8).index(candidates, titles),
                       {"user_id": tf.TensorSpec([None], tf.string)}, {"user_id": users}),
        "bf_multi": (BruteForce(k=8).index(candidates, np.arange(n, dtype=np.int64)),
                     tf.TensorSpec([None, 2, dim], tf.float32), {"queries": multi}),
        "annoy": (Annoy(k=8, n_trees=4, search_k=200).index(candidates),
                  None, {"queries": queries[:20]}),
    }
    spec = {"models": {}, "scann": str(tmp_path / "scann")}
    expected = {}
    for name, (index, signature, inputs) in cases.items():
        path = save_index(index, tmp_path / name, signature)
        features = inputs if name == "bf_strings" else inputs["queries"]
        expected[name] = [t.numpy() for t in index(features)] + [
            index(features, k=3)[1].numpy(), index.query_embedding(features).numpy()]
        files = {}
        for key, value in inputs.items():
            files[key] = str(tmp_path / f"{name}_{key}.npy")
            np.save(files[key], value)
        spec["models"][name] = {"path": str(path), "inputs": files, "max_k": 8,
                                "out": str(tmp_path / f"{name}_out")}
        metadata = json.loads((tmp_path / name / "assets" / METADATA_FILE).read_text())
        assert metadata["custom_ops"] == [] and metadata["max_k"] == 8
    with pytest.warns(RuntimeWarning, match="Scann>ScannSearchBatched"):
        save_index(ScaNN(k=8).index(candidates), spec["scann"])

    result = subprocess.run([sys.executable, "-c", _CLEAN_PROCESS, json.dumps(spec)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["modules"] == []
    for name, (scores, ids, top3, emb) in expected.items():
        prefix = tmp_path / f"{name}_out"
        np.testing.assert_array_equal(np.load(f"{prefix}_ids.npy", allow_pickle=True), ids)
        np.testing.assert_allclose(np.load(f"{prefix}_scores.npy"), scores, rtol=1e-5)
        np.testing.assert_array_equal(np.load(f"{prefix}_top3.npy", allow_pickle=True), top3)
        np.testing.assert_allclose(np.load(f"{prefix}_emb.npy"), emb, rtol=1e-6)
        assert "max_k=8" in out[name] and "9" in out[name]
    # ScaNN: the custom ops are in the graph, recorded in the assets, and unknown to plain TF.
    assert {"Scann>ScannSearchBatched", "Scann>TensorsToScann"} <= saved_model_ops(spec["scann"])
    metadata = json.loads((tmp_path / "scann" / "assets" / METADATA_FILE).read_text())
    assert metadata["custom_ops"] == ["Scann>ScannSearchBatched", "Scann>TensorsToScann"]
    assert not out["scann_op_registered"]
    assert "Scann" in out["scann_load"]


def test_scann_saved_model_runs_where_scann_is_installed(tmp_path, clustered):
    candidates, queries = clustered
    index = ScaNN(k=5).index(candidates)
    with pytest.warns(RuntimeWarning):
        save_index(index, tmp_path / "s")
    loaded = tf.saved_model.load(str(tmp_path / "s"))          # scann ops registered here
    got = loaded.signatures["serving_default"](queries=tf.constant(queries[:10]))
    np.testing.assert_array_equal(got["ids"].numpy(), index(queries[:10])[1].numpy())


def test_save_errors(tmp_path):
    with pytest.raises(ValueError, match="call index"):
        save_index(BruteForce(k=2), tmp_path / "x")
    with pytest.raises(TypeError, match="towerkit.index.Index"):
        save_index(tf.keras.layers.Dense(2), tmp_path / "x")
    index = BruteForce(tf.keras.Sequential([tf.keras.layers.Dense(4)]), k=2).index(
        np.ones((3, 4), np.float32))
    with pytest.raises(ValueError, match="query_signature"):
        save_index(index, tmp_path / "x")
    with pytest.raises(ValueError, match="No SavedModel"):
        saved_model_ops(tmp_path / "nothing")


def test_signature_inferred_from_a_functional_query_model(tmp_path):
    user_id = tf.keras.Input(shape=(), dtype=tf.string, name="user_id")
    lookup = tf.keras.layers.StringLookup(vocabulary=["a", "b"])
    model = tf.keras.Model({"user_id": user_id},
                           tf.keras.layers.Embedding(3, 4)(lookup(user_id)))
    index = BruteForce(model, k=2).index(np.eye(4, dtype=np.float32))
    save_index(index, tmp_path / "m")
    signature = tf.saved_model.load(str(tmp_path / "m")).signatures["serving_default"]
    assert list(signature.structured_input_signature[1]) == ["user_id"]
    got = signature(user_id=tf.constant(["b", "zzz"]))["ids"].numpy()
    np.testing.assert_array_equal(got, index({"user_id": tf.constant(["b", "zzz"])})[1].numpy())
