"""The dat recipe end to end on real MovieLens 100K through the CLI: train, evaluate, export
with every index kind, recommend, and the export answering in a TensorFlow-only process."""

import json
import re

import numpy as np
import pytest

import towerkit  # noqa: F401
import tensorflow as tf

from towerkit import recipes
from towerkit.cli.main import main
from towerkit.recipes import dat, two_tower
from towerkit.serving.clean_process import run_saved_model

pytestmark = pytest.mark.slow

KEYS = [f"top_{k}_categorical_accuracy" for k in (1, 5, 10, 50, 100)]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One short real DAT training through `towerkit train --model dat` (1 epoch, small towers)."""
    run_dir = tmp_path_factory.mktemp("dat") / "run"
    assert main(["train", "--model", "dat", "--dataset", "movielens/100k-ratings",
                 "--epochs", "1", "--seed", "3", "--out", str(run_dir), "--batch-size", "2048",
                 "--embedding-dim", "16", "--layers", "32,16"]) == 0
    return run_dir


def test_train_learns_and_evaluate_reports_the_two_tower_keys(run, capsys):
    metrics = json.loads((run / "metrics.json").read_text())
    # A random ranking finds the test movie in the top 100 of 1682 for ~6% of the rows; one
    # epoch of DAT is far above that, and near the popularity list.
    assert metrics["top_100_categorical_accuracy"] > 0.2
    # Every mimic and CAL term was computed and finite during training.
    for key in ("train_amm_user_loss", "train_amm_item_loss", "train_cal_loss",
                "train_main_loss"):
        assert np.isfinite(metrics[key]) and metrics[key] > 0, key
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    for key in KEYS:
        assert evaluated[key] == pytest.approx(metrics[key], abs=1e-9), key


def test_augmented_vectors_learned_and_unknown_users_use_the_zero_oov_row(run):
    recipe = recipes.get_recipe("dat")()
    query_tower, candidate_tower, data, _ = recipe.restore(run)
    table = query_tower.augment.embedding.embeddings.numpy()
    np.testing.assert_array_equal(table[0], 0.0)      # OOV row: untouched zeros
    assert np.abs(table[1:]).sum(axis=1).min() > 0    # every training user's a_u moved
    oov = query_tower({"user_id": tf.constant([b"no-such-user"])}).numpy()
    assert np.all(np.isfinite(oov)) and np.linalg.norm(oov) == pytest.approx(1.0, abs=1e-5)
    # AMM pulled a_v towards p_u of its users: closer than the zero vector it started from.
    train = data.split("train")
    rows = {k: tf.constant(v[:2000]) for k, v in two_tower._tensor_dict(
        train, ["user_id", "item_id"]).items()}
    p_u, _ = query_tower.encode(rows)
    _, a_v = candidate_tower.encode(rows)
    assert np.mean(np.sum((a_v - p_u) ** 2, 1)) < np.mean(np.sum(p_u.numpy() ** 2, 1))


@pytest.mark.parametrize("kind", ["brute-force", "portable", "annoy", "scann"])
def test_export_every_index_kind_and_answer(run, kind, tmp_path, capsys):
    base = tmp_path / "models"
    if kind == "scann":
        with pytest.warns(RuntimeWarning, match="custom ops"):
            status = main(["export", str(run), "--index", kind, "--model-base-path", str(base),
                           "--k", "10"])
    else:
        status = main(["export", str(run), "--index", kind, "--model-base-path", str(base),
                       "--k", "10"])
    assert status == 0
    version = base / "1"
    assert (version / "saved_model.pb").is_file()
    if kind == "scann":
        return  # ScaNN's custom ops are not stock TF: check-export says so (tests/serving)
    users = np.array([b"42", b"7", b"no-such-user"])
    clean = run_saved_model(version, {"user_id": users})  # TensorFlow alone, no towerkit
    ids = clean.outputs["ids"]
    assert ids.shape == (3, 10)
    recipe = recipes.get_recipe("dat")()
    inputs = recipe.index_inputs(run)
    queries = inputs.query_model({"user_id": tf.constant(users)}).numpy()
    expected, _ = two_tower.top_k_ids(queries, inputs.candidate_embeddings, 10)
    expected_ids = inputs.candidate_ids[expected]
    if kind == "brute-force":
        np.testing.assert_array_equal(ids.astype(bytes), expected_ids)
    else:  # approximate: most of the exact top 10
        overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in
                           zip(ids.astype(bytes), expected_ids)])
        assert overlap >= 0.7
    capsys.readouterr()
    assert main(["recommend", str(base), "--user", "42", "-k", "5"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()[1:]
    assert [r.split()[2] for r in rows] == [i.decode() for i in ids[0, :5].astype(bytes)]


def test_bce_with_rich_features_trains_through_the_recipe(tmp_path):
    config = recipes.make_run_config(
        "dat", "movielens/100k-ratings", seed=0, epochs=1,
        params={"features": "rich", "loss": "bce", "num_negatives": 4, "embedding_dim": 16,
                "layers": "32,16", "batch_size": 2048, "validation_fraction": 0.1})
    recipe = recipes.get_recipe("dat")()
    metrics = recipe.train(config, tmp_path / "run")
    assert metrics["top_100_categorical_accuracy"] > 0.1
    assert metrics["valid_top_100_categorical_accuracy"] > 0.1
    assert all(np.isfinite(metrics[f"train_{k}"]) for k in ("amm_user_loss", "cal_loss"))
    query_tower, _, data, _ = recipe.restore(tmp_path / "run")
    assert set(query_tower.feature_names) == set(two_tower.QUERY_FEATURES["rich"])
    assert len(data.split("valid")["user_id"]) == 8000
    again = recipe.evaluate(tmp_path / "run", split="valid")
    assert again["top_100_categorical_accuracy"] == pytest.approx(
        metrics["valid_top_100_categorical_accuracy"], abs=1e-9)


def test_first_genre_assignment_and_bad_params():
    genres = np.empty(3, dtype=object)
    genres[:] = [np.array([4, 14]), np.array([7]), np.array([0, 4, 16])]
    np.testing.assert_array_equal(dat.first_genres(genres), [4, 7, 0])
    genres[1] = np.array([], np.int64)
    with pytest.raises(ValueError, match="no item_genres"):
        dat.first_genres(genres)
    recipe = recipes.get_recipe("dat")()
    with pytest.raises(ValueError, match="Unknown dat params"):
        recipe._params({"params": {"amm_weight": 1.0}})
    with pytest.raises(ValueError, match="needs --num-negatives"):
        recipe._params({"params": {"loss": "bce", "num_negatives": 0}})
    with pytest.raises(ValueError, match="at least one tower layer"):
        dat.build_dat_towers({**dat.DEFAULT_PARAMS, "layers": ""}, {}, np.array([b"1"]),
                             np.array([b"t"]))


def test_unknown_users_are_flagged_by_known_queries(run):
    # The export's `known_query` output reads the query tower's `known_queries`: a user id
    # outside the vocabulary (and so the zero OOV augmented row) is flagged, a training user is not.
    query_tower, _, data, _ = recipes.get_recipe("dat")().restore(run)
    known_user = data.split("train")["user_id"][0]
    flags = query_tower.known_queries(
        {"user_id": tf.constant([known_user, b"no-such-user", b""])}).numpy()
    np.testing.assert_array_equal(flags, [True, False, False])


@pytest.mark.parametrize("flag,value,message", [
    ("--cal-weight", "-1", "cal_weight must be >= 0, got -1"),
    ("--temperature", "0", "temperature must be > 0, got 0"),
    ("--validation-fraction", "1", r"validation_fraction must be in \[0, 1\), got 1"),
])
def test_bad_params_are_refused_before_any_work(flag, value, message, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--model", "dat", "--dataset", "movielens/100k-ratings",
                 "--out", str(out), flag, value]) != 0
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert re.search(message, err), err
    assert not out.exists() and not list(tmp_path.iterdir())   # nothing written
