"""Feature layers: golden values, OOV handling, dtype errors, config and SavedModel round-trips."""

import numpy as np
import pytest

import towerkit  # noqa: F401
import tensorflow as tf

from towerkit.features import (FeatureSet, IdEmbedding, NormalizedNumeric, TextEmbedding,
                               TimestampEmbedding)


def _table(layer):
    return layer.embedding.embeddings.numpy()


def test_id_embedding_rows_and_oov_bucket():
    layer = IdEmbedding(["a", "b", "c"], embedding_dim=4)
    out = layer(tf.constant(["b", "zzz", "a"])).numpy()
    table = _table(layer)
    # StringLookup with one OOV index: OOV -> 0, "a" -> 1, "b" -> 2, "c" -> 3.
    np.testing.assert_array_equal(out, table[[2, 0, 1]])
    assert layer.vocabulary_size == 4


def test_integer_ids_accept_int32_and_bool():
    layer = IdEmbedding([0, 1], embedding_dim=2)
    out_bool = layer(tf.constant([True, False])).numpy()
    table = _table(layer)
    np.testing.assert_array_equal(out_bool, table[[2, 1]])  # 1 -> index 2, 0 -> index 1
    np.testing.assert_array_equal(layer(tf.constant([7], tf.int32)).numpy(), table[[0]])  # OOV


def test_id_embedding_wrong_dtype_names_the_fix():
    with pytest.raises(TypeError, match="tf.strings.as_string"):
        IdEmbedding(["1", "2"], 2)(tf.constant([1, 2]))
    with pytest.raises(TypeError, match="integer"):
        IdEmbedding([1, 2], 2)(tf.constant(["1"]))


@pytest.mark.parametrize("kwargs, error", [
    ({"vocabulary": [], "embedding_dim": 2}, ValueError),
    ({"vocabulary": ["a", "a"], "embedding_dim": 2}, ValueError),
    ({"vocabulary": ["a"], "embedding_dim": 0}, ValueError),
    ({"vocabulary": ["a", 1], "embedding_dim": 2}, TypeError),
])
def test_id_embedding_bad_construction(kwargs, error):
    with pytest.raises(error):
        IdEmbedding(**kwargs)


def test_normalized_numeric_golden():
    # values 20, 30, 40: mean 30, population variance ((10^2)+0+(10^2))/3 = 200/3.
    layer = NormalizedNumeric.adapt_from(np.array([20.0, 30.0, 40.0]))
    assert layer.mean == pytest.approx(30.0) and layer.variance == pytest.approx(200 / 3)
    out = layer(tf.constant([30.0, 40.0])).numpy()
    np.testing.assert_allclose(out, [[0.0], [10 / np.sqrt(200 / 3)]], rtol=1e-6)
    with pytest.raises(ValueError, match="positive variance"):
        NormalizedNumeric.adapt_from(np.array([1.0, 1.0]))
    with pytest.raises(TypeError):
        layer(tf.constant(["x"]))


def test_timestamp_embedding_buckets_and_standardised_value():
    # Timestamps 0..30: 4 buckets -> boundaries linspace(0, 30, 4)[1:-1] = [10, 20];
    # Bucketize: 5 -> 0, 10 -> 1 (boundary belongs to the upper bucket), 25 -> 2.
    ts = np.array([0, 10, 20, 30], dtype=np.int64)
    layer = TimestampEmbedding.adapt_from(ts, num_buckets=4, embedding_dim=3)
    assert list(layer.bin_boundaries) == [10.0, 20.0]
    out = layer(tf.constant([5, 10, 25], tf.int64)).numpy()
    table = _table(layer)
    np.testing.assert_array_equal(out[:, :3], table[[0, 1, 2]])
    # mean 15, variance (225+25+25+225)/4 = 125.
    np.testing.assert_allclose(out[:, 3], (np.array([5, 10, 25]) - 15) / np.sqrt(125), rtol=1e-6)


def test_timestamp_embedding_keeps_precision_of_unix_times():
    ts = np.array([879_000_000, 879_000_001, 893_000_000], dtype=np.int64)
    layer = TimestampEmbedding.adapt_from(ts, num_buckets=10, embedding_dim=2)
    out = layer(tf.constant(ts)).numpy()[:, -1]
    expected = (ts - ts.mean()) / ts.std()
    np.testing.assert_allclose(out, expected, rtol=1e-5)


def test_text_embedding_is_mean_of_token_rows():
    layer = TextEmbedding(["toy", "story", "1995"], embedding_dim=2)
    out = layer(tf.constant(["Toy Story (1995)", "Story", "", "unknown words"])).numpy()
    table = _table(layer)
    # TextVectorization: 0 pad, 1 OOV, toy 2, story 3, 1995 4; punctuation stripped, lower-cased.
    np.testing.assert_allclose(out[0], table[[2, 3, 4]].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(out[1], table[3], rtol=1e-6)
    np.testing.assert_array_equal(out[2], [0.0, 0.0])  # empty title: zeros, not NaN
    np.testing.assert_allclose(out[3], table[1], rtol=1e-6)  # two OOV tokens -> OOV row


def test_feature_set_concatenates_in_key_order_and_reports_missing_keys():
    features = FeatureSet({"u": IdEmbedding(["x"], 2), "a": NormalizedNumeric(0.0, 4.0)})
    out = features({"u": tf.constant(["x"]), "a": tf.constant([2.0]), "extra": tf.constant([1])})
    np.testing.assert_allclose(out.numpy()[0, 0], 1.0)  # "a" first: (2 - 0) / sqrt(4)
    assert out.shape == (1, 3)
    with pytest.raises(ValueError, match=r"missing features \['u'\]"):
        features({"a": tf.constant([1.0])})


def _layers_and_inputs():
    return [
        (IdEmbedding(["a", "b"], 3, name="ids"), tf.constant(["a", "q"])),
        (NormalizedNumeric(1.0, 2.0, name="num"), tf.constant([1.0, 3.0])),
        (TimestampEmbedding([10.0, 20.0], 2, 15.0, 125.0, name="ts"), tf.constant([5, 25], tf.int64)),
        (TextEmbedding(["toy", "story"], 2, name="text"), tf.constant(["toy story", "x"])),
        (FeatureSet({"u": IdEmbedding(["a"], 2), "n": NormalizedNumeric(0.0, 1.0)}, name="fs"),
         {"u": tf.constant(["a", "b"]), "n": tf.constant([1.0, 2.0])}),
    ]


@pytest.mark.parametrize("index", range(5))
def test_config_round_trip(index):
    layer, inputs = _layers_and_inputs()[index]
    expected = layer(inputs)
    clone = tf.keras.layers.deserialize(tf.keras.layers.serialize(layer))
    assert clone.get_config() == layer.get_config()
    clone(inputs)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone(inputs).numpy(), expected.numpy(), rtol=1e-6)


@pytest.mark.parametrize("index", range(5))
def test_saved_model_round_trip(index, tmp_path):
    layer, inputs = _layers_and_inputs()[index]
    expected = layer(inputs).numpy()
    signature = tf.nest.map_structure(lambda t: tf.TensorSpec([None], t.dtype), inputs)
    module = tf.Module()
    module.layer = layer
    module.serve = tf.function(lambda x: layer(x), input_signature=[signature])
    tf.saved_model.save(module, str(tmp_path / "sm"))
    loaded = tf.saved_model.load(str(tmp_path / "sm"))
    np.testing.assert_allclose(loaded.serve(inputs).numpy(), expected, rtol=1e-6)
