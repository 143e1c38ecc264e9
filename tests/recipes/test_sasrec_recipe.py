"""The sasrec recipe end to end on real movielens/100k-ratings through the CLI (one short
epoch, dim 16): train, evaluate, export answering in a TensorFlow-only process, recommend, and
its flags refused at the door."""

import argparse
import json

import numpy as np
import pytest
import tensorflow as tf

import towerkit  # noqa: F401
from towerkit.cli.main import main
from towerkit.data.sequential_protocol import SequentialProtocol
from towerkit.evaluation import top_n_items
from towerkit.recipes import get_recipe, load_run, make_run_config
from towerkit.recipes.sasrec import SASRecRecipe
from towerkit.recipes.sequential import SequentialRecipe
from towerkit.serving.clean_process import run_saved_model
from towerkit.towers.sasrec import SASRecTower

TRAIN = ["train", "--model", "sasrec", "--dataset", "movielens/100k-ratings"]


@pytest.fixture(scope="module")
def protocol():
    return SequentialProtocol.from_tfds("100k-ratings")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """One short real SASRec training through the CLI (1 epoch, batch 1024, dim 16, 2 heads,
    dropout 0.2: the recipe's 0.5 needs more than one epoch)."""
    out = tmp_path_factory.mktemp("sasrec") / "run"
    assert main([*TRAIN, "--epochs", "1", "--seed", "2", "--out", str(out),
                 "--batch-size", "1024", "--learning-rate", "0.005", "--embedding-dim", "16",
                 "--num-heads", "2", "--dropout", "0.2"]) == 0
    return out


def test_one_epoch_beats_popularity_and_evaluate_reproduces_valid(run_dir, capsys):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # Popularity scores 0.156 valid recall@50 (tests/recipes/test_sequential_recipes.py).
    assert metrics["valid_recall@50"] > 0.156 + 0.03
    assert metrics["best_epoch"] == 1 and metrics["epochs_run"] == 1
    recipe, config = load_run(run_dir)
    assert isinstance(recipe, SASRecRecipe)
    assert config["params"]["num_heads"] == 2 and config["params"]["num_blocks"] == 2
    _, _, model = recipe.restore(run_dir)
    tower = model.query_tower
    assert isinstance(tower, SASRecTower)
    assert (tower.num_blocks, tower.num_heads, tower.max_length) == (2, 2, 20)
    assert tower.dropout_rate == pytest.approx(0.2)
    # The candidate table is the history item table (the paper's shared item embedding).
    assert model.candidate_embedding is tower.item_embedding
    capsys.readouterr()
    assert main(["evaluate", str(run_dir), "--split", "valid", "--json"]) == 0
    valid = json.loads(capsys.readouterr().out)
    for key in ("recall@20", "recall@50", "hr@50", "ndcg@50"):
        assert valid[key] == pytest.approx(metrics[f"valid_{key}"]), key
    assert main(["evaluate", str(run_dir), "--split", "test", "--json"]) == 0
    test = json.loads(capsys.readouterr().out)
    assert test["num_users"] == 95 and 0 < test["recall@50"] <= 1


def test_export_answers_in_a_tensorflow_only_process(run_dir, protocol, tmp_path, capsys):
    base = tmp_path / "models"
    assert main(["export", str(run_dir), "--model-base-path", str(base), "--k", "50"]) == 0
    version = base / "1"
    test = protocol.split("test")
    raw = {"history": protocol.item_ids[test.history].astype(bytes),
           "history_length": test.history_length.astype(np.int32)}
    clean = run_saved_model(version, raw)  # TensorFlow alone: no towerkit, no TFRS
    recipe, _ = load_run(run_dir)
    _, _, model = recipe.restore(run_dir)
    queries = model.query({k: tf.constant(v) for k, v in test.features.items()}).numpy()
    table = model.candidates().numpy()
    expected = top_n_items(queries, table, 50)
    served = clean.outputs["ids"].astype(bytes)
    np.testing.assert_array_equal(served, protocol.item_ids[expected].astype(bytes))
    scores = np.take_along_axis(queries @ table.T, expected, axis=1)
    np.testing.assert_allclose(clean.outputs["scores"], scores, rtol=1e-4, atol=1e-4)
    # An unknown movie inside a history is skipped, like padding.
    j = int(np.flatnonzero(raw["history_length"] < 20)[0])
    row, n = raw["history"][j:j + 1], int(raw["history_length"][j])
    holed = np.concatenate([row[:, :1], [[b"no-such-movie"]], row[:, 1:-1]], axis=1)
    again = run_saved_model(version, {"history": holed,
                                      "history_length": np.array([n + 1], np.int32)})
    np.testing.assert_array_equal(again.outputs["ids"].astype(bytes)[0], served[j])


def test_recommend_a_history_through_the_cli(run_dir, protocol, tmp_path, capsys):
    base = tmp_path / "models"
    assert main(["export", str(run_dir), "--model-base-path", str(base), "--k", "10"]) == 0
    test = protocol.split("test")
    n = int(test.history_length[0])
    movies = [m.decode() if isinstance(m, bytes) else str(m)
              for m in protocol.item_ids[test.history[0, :n]]]
    capsys.readouterr()
    assert main(["recommend", str(base), "--history", ",".join(movies), "-k", "5"]) == 0
    captured = capsys.readouterr()
    rows = captured.out.strip().splitlines()[1:]
    # The same list as the in-process query of that user's integer history.
    _, _, model = load_run(run_dir)[0].restore(run_dir)
    query = model.query({k: tf.constant(v[:1]) for k, v in test.features.items()}).numpy()
    expected = protocol.item_ids[top_n_items(query, model.candidates().numpy(), 5)[0]]
    assert [r.split()[2] for r in rows] == [str(m.decode() if isinstance(m, bytes) else m)
                                           for m in expected]
    assert "does not know" not in captured.err
    # Only unknown movies: flagged as a fallback answer, not a personal one.
    assert main(["recommend", str(base), "--history", "no-such-movie"]) == 0
    assert "does not know any movie of --history" in capsys.readouterr().err
    for argv, message in ((["--history", "1", "--user", "1"], "exactly one of --user"),
                          ([], "exactly one of --user"),
                          (["--history", ",".join(["1"] * 21)], "1 to 20 comma-separated")):
        assert main(["recommend", str(base), *argv]) == 2
        assert message in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (["--num-heads", "3", "--embedding-dim", "16"],
     "--num-heads 3 must divide --embedding-dim 16"),
])
def test_bad_params_are_refused_before_any_work(flags, message, tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*TRAIN, "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize("flags, message", [
    (["--dropout", "1.0"], "argument --dropout: must be in [0, 1), got 1.0"),
    (["--dropout", "-0.1"], "argument --dropout: must be in [0, 1), got -0.1"),
    (["--num-blocks", "0"], "argument --num-blocks: must be an integer >= 1, got 0"),
    (["--num-heads", "0"], "argument --num-heads: must be an integer >= 1, got 0"),
])
def test_flag_ranges_are_checked_by_the_parser(flags, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*TRAIN, "--out", str(tmp_path / "run"), *flags])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_python_api_validation_and_defaults():
    recipe = get_recipe("sasrec")()
    assert isinstance(recipe, SequentialRecipe)
    config = make_run_config("sasrec", "movielens/100k-ratings", params={"dropout": 1.5})
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got 1.5"):
        recipe.validate_config(config)
    with pytest.raises(TypeError, match="num_blocks must be an integer"):
        recipe.validate_config(make_run_config("sasrec", "movielens/100k-ratings",
                                               params={"num_blocks": 1.5}))
    # Hand-built params get the recipe's defaults; early stopping is on, epochs a cap.
    params = recipe.resolve_params({"params": {}})
    assert (params["num_blocks"], params["num_heads"], params["dropout"]) == (2, 1, 0.5)
    assert (params["batch_size"], params["learning_rate"]) == (1024, 3e-3)
    assert params["early_stopping"] == 3 and SASRecRecipe.default_epochs >= 15
    assert SASRecRecipe.early_stopping is SequentialRecipe.early_stopping
    parser = argparse.ArgumentParser()
    SASRecRecipe.add_arguments(parser)
    parsed = parser.parse_args([])
    assert (parsed.num_blocks, parsed.num_heads, parsed.dropout) == (2, 1, 0.5)
    assert (parsed.batch_size, parsed.learning_rate) == (1024, 3e-3)
    assert parsed.early_stopping == 3


def test_untrained_full_softmax_loss_is_near_log_catalogue(protocol):
    recipe = SASRecRecipe()
    model = recipe.build_model(recipe.resolve_params({"params": {"embedding_dim": 8}}), protocol)
    batch = next(iter(protocol.train_dataset(64, seed=0)))
    # Untrained: near-uniform softmax over the 1,349 items, loss close to log(1349) = 7.207.
    assert float(model.compute_loss(batch)) == pytest.approx(np.log(1349), abs=0.2)
