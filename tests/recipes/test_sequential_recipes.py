"""Sequential recipes end to end on the real movielens/100k-ratings protocol (short runs)."""

import json

import numpy as np
import pytest
import tensorflow as tf

import towerkit  # noqa: F401
from towerkit.cli.main import main
from towerkit.data.sequential_protocol import SequentialProtocol
from towerkit.evaluation import evaluate_topn
from towerkit.recipes import IndexInputs, get_recipe, load_run, make_run_config
from towerkit.recipes.sequential import GRURecipe, SequentialRecipe


@pytest.fixture(scope="module")
def protocol():
    return SequentialProtocol.from_tfds("100k-ratings")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """One short real YouTube-DNN training through the CLI (1 epoch, batch 512)."""
    out = tmp_path_factory.mktemp("ytdnn") / "run"
    assert main(["train", "--model", "youtube_dnn", "--dataset", "movielens/100k-ratings",
                 "--epochs", "1", "--seed", "3", "--out", str(out), "--batch-size", "512",
                 "--learning-rate", "0.003"]) == 0
    return out


def test_short_training_beats_popularity_on_valid(run_dir, protocol):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    popularity = get_recipe("popularity")()
    pop_dir = run_dir.parent / "pop"
    pop_valid = popularity.train(make_run_config("popularity", "movielens/100k-ratings"), pop_dir)
    # Popularity scores 0.156 recall@50 on valid (0.136 on test, the number).
    assert round(popularity.evaluate(pop_dir, "test")["recall@50"], 3) == 0.136
    assert metrics["valid_recall@50"] > pop_valid["valid_recall@50"] + 0.03
    assert metrics["valid_ndcg@50"] > pop_valid["valid_ndcg@50"]
    # Early stopping is on by default (one epoch here, so that one is the best).
    assert metrics["best_epoch"] == 1 and metrics["epochs_run"] == 1
    assert metrics["valid_recall@50_per_epoch"] == [pytest.approx(metrics["valid_recall@50"])]


def test_evaluate_cli_and_dump_rescored_independently(run_dir, protocol, tmp_path, capsys):
    dump = tmp_path / "top.npz"
    capsys.readouterr()
    assert main(["evaluate", str(run_dir), "--split", "test", "--json",
                 "--dump-topn", str(dump)]) == 0
    metrics = json.loads(capsys.readouterr().out)
    data = np.load(dump)
    assert data["topn_item_id"].shape == (95, 50)
    assert len(set(data["user_id"])) == 95
    # Re-score the dump from raw TFDS ids: ground truth rebuilt from the sequences by user id.
    seqs = protocol.sequences
    index_of_user = {u: i for i, u in enumerate(seqs.user_ids)}
    truth = []
    for uid in data["user_id"]:
        seq = seqs.item_ids[seqs.sequence(index_of_user[uid])]
        truth.append(seq[max(1, (4 * len(seq)) // 5):])
    rescored = evaluate_topn(data["topn_item_id"].astype(object), truth)
    for key in ("recall@20", "recall@50", "hr@50", "ndcg@50"):
        assert rescored[key] == pytest.approx(metrics[key])
    # Restoring the run reproduces the validation metrics recorded at training time.
    recipe, _ = load_run(run_dir)
    trained = json.loads((run_dir / "metrics.json").read_text())
    assert recipe.evaluate(run_dir, "valid")["recall@50"] == pytest.approx(trained["valid_recall@50"])


def test_index_inputs_serving_query_model(run_dir, protocol):
    recipe, _ = load_run(run_dir)
    inputs = recipe.index_inputs(run_dir)
    assert isinstance(inputs, IndexInputs)
    assert inputs.candidate_embeddings.shape == (1349, 64)
    assert inputs.query_signature["history"].dtype == tf.string
    _, _, model = recipe.restore(run_dir)
    test = protocol.split("test")
    # Raw string histories give the same embeddings as the integer features.
    got = inputs.query_model({k: tf.constant(v) for k, v in inputs.sample_queries.items()})
    want = model.query({k: tf.constant(v[:8]) for k, v in test.features.items()})
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)
    # Unknown movie ids and items beyond history_length are ignored like padding.
    j = int(np.flatnonzero(test.history_length < 19)[0])
    n = int(test.history_length[j])
    history = protocol.item_ids[test.history[j:j + 1]].astype(bytes)
    length = tf.constant([n], tf.int32)
    # The default youtube_dnn feeds the query-time example age: a serving input.
    assert inputs.query_signature["query_timestamp"].dtype == tf.int64
    stamp = tf.constant(test.features["query_timestamp"][j:j + 1])
    base = inputs.query_model({"history": tf.constant(history), "history_length": length,
                               "query_timestamp": stamp})
    np.testing.assert_allclose(base.numpy(), model.query(
        {k: tf.constant(v[j:j + 1]) for k, v in test.features.items()}).numpy(), rtol=1e-5)
    noisy = history.copy()
    noisy[0, n] = protocol.item_ids[1]  # beyond history_length
    extra = inputs.query_model({"history": tf.constant(noisy), "history_length": length,
                                "query_timestamp": stamp})
    np.testing.assert_allclose(extra.numpy(), base.numpy(), rtol=1e-6)
    unknown = np.concatenate([[b"no-such-movie"], history[0, :-1]])[None, :]
    shifted = inputs.query_model({"history": tf.constant(unknown),
                                  "history_length": tf.constant([n + 1], tf.int32),
                                  "query_timestamp": stamp})
    np.testing.assert_allclose(shifted.numpy(), base.numpy(), rtol=1e-5, atol=1e-6)


def test_gru_recipe_builds_and_its_loss_is_finite(protocol):
    recipe = GRURecipe()
    params = recipe.resolve_params({"params": {"embedding_dim": 8}})
    model = recipe.build_model(params, protocol)
    batch = next(iter(protocol.train_dataset(64, seed=0)))
    loss = float(model.compute_loss(batch))
    # Untrained full softmax over 1,349 items: close to log(1349) = 7.207.
    assert loss == pytest.approx(np.log(1349), abs=0.1)


@pytest.mark.parametrize("loss", ["sampled", "inbatch"])
def test_every_loss_trains(protocol, loss):
    # A few Adam steps on one batch must lower that batch's loss (sampled: fixed seed).
    from towerkit.recipes.sequential import YouTubeDNNRecipe

    tf.keras.utils.set_random_seed(0)
    recipe = YouTubeDNNRecipe()
    model = recipe.build_model(recipe.resolve_params({"params": {
        "embedding_dim": 8, "loss": loss, "num_negatives": 200}}), protocol)
    model.compile(optimizer=tf.keras.optimizers.Adam(0.05))
    batch = next(iter(protocol.train_dataset(128, seed=0)))
    before = float(model.compute_loss(batch))
    for _ in range(15):
        model.train_step(batch)
    after = float(model.compute_loss(batch))
    assert np.isfinite(before) and after < 0.8 * before


def test_sequential_recipe_is_reusable_and_validates():
    assert issubclass(GRURecipe, SequentialRecipe)
    with pytest.raises(ValueError, match="loss must be one of"):
        GRURecipe.resolve_params({"params": {"loss": "bpr"}})
    with pytest.raises(ValueError, match="not a towerkit run"):
        load_run("/nonexistent/run")


def test_exported_index_serves_the_same_top_n(run_dir, protocol, tmp_path):
    """SavedModel round-trip: the index over index_inputs returns evaluate's top-50 lists."""
    from towerkit.index.brute_force import BruteForce
    from towerkit.index.saving import save_index

    recipe, _ = load_run(run_dir)
    inputs = recipe.index_inputs(run_dir)
    index = BruteForce(query_model=inputs.query_model, k=50)
    index.index(inputs.candidate_embeddings, inputs.candidate_ids)
    save_index(index, str(tmp_path / "index"), query_signature=inputs.query_signature)
    loaded = tf.saved_model.load(str(tmp_path / "index"))
    out = loaded.signatures["serving_default"](
        **{k: tf.constant(v) for k, v in inputs.sample_queries.items()})
    dump = tmp_path / "top.npz"
    recipe.evaluate(run_dir, "test", dump_topn=str(dump))
    expected = np.load(dump)["topn_item_id"][:8]
    got = out["ids"].numpy()
    # Ties aside, the served lists equal the offline ones: compare as sets of the top 45.
    for row_got, row_want in zip(got, expected):
        assert len(set(row_got[:45]) & set(row_want[:50])) >= 44


def test_serving_query_model_maps_raw_user_features_and_genres(protocol):
    from towerkit.recipes.sequential import ServingQueryModel, YouTubeDNNRecipe

    recipe = YouTubeDNNRecipe()
    model = recipe.build_model(recipe.resolve_params({"params": {"embedding_dim": 8,
                                                          "user_features": True,
                                                          "genres": True}}), protocol)
    vocabularies = dict(protocol.sequences.user_feature_vocabularies)
    serving = ServingQueryModel(protocol.item_ids[1:], model, 20, vocabularies)
    test = protocol.split("test")
    raw = {"history": tf.constant(protocol.item_ids[test.history[:5]].astype(bytes)),
           "history_length": tf.constant(test.history_length[:5])}
    for name, vocab in vocabularies.items():
        raw[name] = tf.constant(vocab[test.features[name][:5] - 1].astype(np.int64))
    want = model.query({k: tf.constant(v[:5]) for k, v in test.features.items()})
    np.testing.assert_allclose(serving(raw).numpy(), want.numpy(), rtol=1e-5, atol=1e-6)
    # An unknown raw value is treated as missing (code 0), not as another user's value.
    raw["user_occupation"] = tf.constant([999] * 5, tf.int64)
    missing = {k: tf.constant(v[:5]) for k, v in test.features.items()}
    missing["user_occupation"] = tf.zeros([5], tf.int64)
    np.testing.assert_allclose(serving(raw).numpy(), model.query(missing).numpy(), rtol=1e-5,
                               atol=1e-6)


def test_youtube_dnn_query_age_comes_from_the_last_history_timestamp(run_dir, protocol):
    # The age of a held-out user's query: (t_max - t_last) / span on the training examples'
    # scale (make_training_examples: age = (t_max - t) / (t_max - t_min) over train targets).
    examples = protocol.train_examples
    t_max, span = protocol.example_age_scale
    assert t_max == examples["timestamp"].max()
    np.testing.assert_allclose(examples["example_age"],
                               (t_max - examples["timestamp"]) / span, rtol=1e-6)
    test = protocol.split("test")
    seqs = protocol.sequences
    for row, user in enumerate(test.users[:5]):
        cut = max(1, int(np.floor(0.8 * seqs.lengths[user] + 1e-9)))
        assert test.features["query_timestamp"][row] == seqs.timestamps[seqs.offsets[user] + cut - 1]
    _, _, model = load_run(run_dir)[0].restore(run_dir)
    assert model.example_age_scale == (t_max, span)
    features = {k: tf.constant(v[:5]) for k, v in test.features.items()}
    tower = model.query_tower
    want_age = (t_max - test.features["query_timestamp"][:5]) / span
    assert np.abs(want_age).max() > 0.05          # held-out users are not all at "now"
    expected = tower({**features, "example_age": tf.constant(want_age, tf.float32)})
    np.testing.assert_allclose(model.query(features).numpy(), expected.numpy(), rtol=1e-5,
                               atol=1e-6)
    # query_timestamp <= 0 is the documented "unknown": age 0, the former serving behaviour.
    unknown = model.query({**features, "query_timestamp": tf.zeros([5], tf.int64)})
    zero_age = tower({**features, "example_age": tf.zeros([5])})
    np.testing.assert_allclose(unknown.numpy(), zero_age.numpy(), rtol=1e-5, atol=1e-6)
    # Run configs written before --query-age (no key) keep age 0 at query time.
    recipe = get_recipe("youtube_dnn")()
    assert recipe.query_age_scale({"example_age": True}, protocol) is None
    assert recipe.query_age_scale({"query_age": "last_history"}, protocol) == (t_max, span)
    with pytest.raises(ValueError, match="query-age"):
        recipe.query_age_scale({"query_age": "now"}, protocol)


def test_youtube_dnn_relu_top_layer_option(protocol):
    from towerkit.recipes.sequential import YouTubeDNNRecipe
    from towerkit.towers.youtube_dnn import YouTubeDNN

    recipe = YouTubeDNNRecipe()
    relu = recipe.build_model(recipe.resolve_params({"params": {
        "embedding_dim": 8, "output_activation": "relu"}}), protocol)
    out = relu.query({k: tf.constant(v[:20]) for k, v in protocol.split("test").features.items()})
    assert (out.numpy() >= 0).all() and (out.numpy() > 0).any()
    config = relu.query_tower.get_config()
    assert config["output_activation"] == "relu"
    assert YouTubeDNN.from_config(config).output_activation == "relu"
    linear = recipe.build_model(recipe.resolve_params({"params": {"embedding_dim": 8}}), protocol)
    assert linear.query_tower.output_activation is None
    with pytest.raises(ValueError, match="output-activation"):
        recipe.build_model(recipe.resolve_params({"params": {
            "embedding_dim": 8, "output_activation": "tanh"}}), protocol)


def test_every_sequence_recipe_stops_early_by_default():
    # One mechanism (BestEpoch via SequentialRecipe.train) and one CLI default for all of them;
    # --epochs is then a cap.
    import argparse

    for name in ("youtube_dnn", "gru", "mind", "comirec_dr", "comirec_sa"):
        recipe = get_recipe(name)
        parser = argparse.ArgumentParser()
        recipe.add_arguments(parser)
        assert parser.parse_args([]).early_stopping == 3, name
        assert recipe.default_epochs >= 15, name
        assert recipe.early_stopping is SequentialRecipe.early_stopping, name
        # Hand-built params (the Python API) get the same default.
        assert recipe.resolve_params({"params": {}})["early_stopping"] == 3, name
