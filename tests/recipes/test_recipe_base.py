"""The recipe contract: registry, run config files, load_run and IndexInputs validation."""

import json

import numpy as np
import pytest

import towerkit  # noqa: F401
import tensorflow as tf

from towerkit import recipes
from towerkit.recipes import base


def test_two_tower_is_registered_and_unknown_names_list_the_available_ones():
    assert "two_tower" in recipes.available_recipes()
    assert recipes.get_recipe("two_tower").name == "two_tower"
    with pytest.raises(ValueError, match="Available recipes: .*two_tower"):
        recipes.get_recipe("no_such_recipe")


def test_register_rejects_non_recipes_and_name_clashes():
    with pytest.raises(TypeError):
        recipes.register_recipe(dict)

    class Nameless(base.Recipe):
        def train(self, config, run_dir):
            return {}

        def evaluate(self, run_dir, split="test", dump_topn=None):
            return {}

        def index_inputs(self, run_dir):
            raise NotImplementedError

    with pytest.raises(ValueError, match="non-empty class attribute"):
        recipes.register_recipe(Nameless)
    clash = type("Clash", (Nameless,), {"name": "two_tower"})
    with pytest.raises(ValueError, match="already registered"):
        recipes.register_recipe(clash)


def test_run_config_round_trip(tmp_path):
    config = recipes.make_run_config("two_tower", "movielens/100k-ratings", seed=7,
                                     params={"embedding_dim": 8})
    assert config["epochs"] == recipes.get_recipe("two_tower").default_epochs
    assert set(config) == set(base.RUN_KEYS)
    recipes.write_run_config(tmp_path / "run", config)
    recipes.mark_run_complete(tmp_path / "run")
    recipe, loaded = recipes.load_run(tmp_path / "run")
    assert {k: v for k, v in loaded.items() if k in base.RUN_KEYS} == config
    assert loaded["state"] == "complete" and loaded["files"] == {}
    assert recipe.name == "two_tower"


def test_load_run_errors_name_the_fix(tmp_path):
    with pytest.raises(ValueError, match="towerkit train"):
        recipes.load_run(tmp_path)
    (tmp_path / "run.json").write_text("{corrupt")
    with pytest.raises(ValueError, match="corrupt"):
        recipes.load_run(tmp_path)
    (tmp_path / "run.json").write_text(json.dumps({"recipe": "nope"}))
    with pytest.raises(ValueError, match="Unknown recipe"):
        recipes.load_run(tmp_path)


@pytest.mark.parametrize("epochs, seed, error", [(0, 1, ValueError), (2, "x", TypeError)])
def test_make_run_config_validates(epochs, seed, error):
    with pytest.raises(error):
        recipes.make_run_config("two_tower", "movielens/100k-ratings", epochs=epochs, seed=seed)


def _inputs(**overrides):
    kwargs = dict(query_model=None,
                  query_signature={"user_id": tf.TensorSpec([None], tf.string)},
                  candidate_ids=np.array([b"a", b"b"]),
                  candidate_embeddings=np.ones((2, 3)),
                  sample_queries={"user_id": np.array([b"1"])})
    kwargs.update(overrides)
    return recipes.IndexInputs(**kwargs)


def test_index_inputs_normalises_dtypes():
    inputs = _inputs(candidate_ids=np.array([3, 4], dtype=np.int32))
    assert inputs.candidate_ids.dtype == np.int64
    assert inputs.candidate_embeddings.dtype == np.float32


@pytest.mark.parametrize("overrides, error, match", [
    ({"candidate_ids": np.array([b"a", b"a"])}, ValueError, "unique"),
    ({"candidate_ids": np.array([0.5, 1.5])}, TypeError, "bytes or int64"),
    ({"candidate_embeddings": np.ones((3, 2))}, ValueError, r"\[n=2, dim\]"),
    ({"sample_queries": {}}, ValueError, "user_id"),
    ({"tuning_queries": {"age": np.array([1])}}, ValueError, "tuning_queries lacks .*user_id"),
    ({"query_signature": {"user_id": "string"}}, TypeError, "TensorSpec"),
    ({"candidate_titles": np.array([b"x"])}, ValueError, "align"),
])
def test_index_inputs_rejects_bad_values(overrides, error, match):
    with pytest.raises(error, match=match):
        _inputs(**overrides)
