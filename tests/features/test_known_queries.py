"""`known_queries`: which queries a tower knows (issue 17, defect 9: unknown ids were silent).

Golden values by hand: a row is known when its id is in the vocabulary (an empty string, a new
id or bytes that are not UTF-8 fall to the out-of-vocabulary rows); a feature set needs every id
feature known; a sequential query needs one catalogue item within `history_length`.
"""

import numpy as np

import towerkit  # noqa: F401
import tensorflow as tf
from towerkit.features import FeatureSet, IdEmbedding, NormalizedNumeric
from towerkit.models import Tower
from towerkit.recipes.sequential import ServingQueryModel


def test_id_embedding_is_known_strings_ints_and_2d():
    users = IdEmbedding(["a", "b"], 4, num_oov_buckets=2)
    np.testing.assert_array_equal(
        users.is_known(tf.constant([b"a", b"x", b"", b"\xff", b"b"])).numpy(),
        [True, False, False, False, True])
    codes = IdEmbedding([3, 7], 4)
    np.testing.assert_array_equal(codes.is_known(tf.constant([[3, 0], [7, 7]], tf.int64)).numpy(),
                                  [[True, False], [True, True]])


def test_feature_set_and_tower_need_every_id_feature_known():
    features = FeatureSet({"user_id": IdEmbedding(["1", "2"], 4, name="user_id"),
                           "zip": IdEmbedding(["z"], 4, name="zip"),
                           "age": NormalizedNumeric(mean=30.0, variance=4.0, name="age")})
    tower = Tower(features, None)
    inputs = {"user_id": tf.constant(["1", "2", "9"]), "zip": tf.constant(["z", "q", "z"]),
              "age": tf.constant([20.0, 30.0, 40.0])}
    np.testing.assert_array_equal(tower.known_queries(inputs).numpy(), [True, False, False])
    only_numeric = FeatureSet({"age": NormalizedNumeric(mean=30.0, variance=4.0, name="age")})
    np.testing.assert_array_equal(only_numeric.known_queries(
        {"age": tf.constant([1.0, 2.0])}).numpy(), [True, True])


def test_sequential_query_known_needs_a_catalogue_item_within_the_length():
    model = ServingQueryModel(np.array([b"m1", b"m2"]), None, max_history=3)
    history = tf.constant([[b"m1", b"", b""], [b"x", b"m2", b""], [b"m2", b"", b""],
                           [b"", b"", b""]])
    length = tf.constant([1, 1, 0, 3], tf.int32)
    np.testing.assert_array_equal(
        model.known_queries({"history": history, "history_length": length}).numpy(),
        [True, False, False, False])
