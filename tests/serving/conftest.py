"""Shared fixtures for the serving tests: small indexes and exports.

Until towerkit.index lands this file builds a SavedModel that follows the `save_index` signature
contract (ARCHITECTURE.md) from a TFRS BruteForce; the tests then switch to the real classes.
"""

import numpy as np
import pytest

import towerkit  # noqa: F401  (legacy-Keras switch first)
import tensorflow as tf
import tensorflow_recommenders as tfrs

NUM_USERS = 20
NUM_ITEMS = 50
DIM = 8
MAX_K = 5


def make_query_model(seed: int = 0) -> tf.keras.Model:
    """user_id (string) -> [batch, DIM] embedding, vocabulary u0..u19."""
    vocab = [f"u{i}" for i in range(NUM_USERS)]
    lookup = tf.keras.layers.StringLookup(vocabulary=vocab, mask_token=None)
    rng = np.random.default_rng(seed)
    table = rng.normal(size=(NUM_USERS + 1, DIM)).astype("float32")
    embedding = tf.keras.layers.Embedding(NUM_USERS + 1, DIM,
                                          embeddings_initializer=tf.constant_initializer(table))
    return tf.keras.Sequential([lookup, embedding])


def make_catalogue(seed: int = 1):
    rng = np.random.default_rng(seed)
    ids = np.array([f"item{i}".encode() for i in range(NUM_ITEMS)], dtype=object)
    embeddings = rng.normal(size=(NUM_ITEMS, DIM)).astype("float32")
    return ids, embeddings


class _ContractModule(tf.Module):
    def __init__(self, query_model, index):
        super().__init__()
        self.query_model = query_model
        self.index = index

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="user_id")])
    def serving_default(self, user_id):
        scores, ids = self.index(self.query_model(user_id))
        return {"ids": ids, "scores": scores}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="user_id"),
                                  tf.TensorSpec([], tf.int32, name="k")])
    def top_k(self, user_id, k):
        tf.debugging.assert_less_equal(k, MAX_K, message=f"k must be <= max_k={MAX_K}")
        scores, ids = self.index(self.query_model(user_id))
        return {"ids": ids[:, :k], "scores": scores[:, :k]}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="user_id")])
    def query_embedding(self, user_id):
        return {"embedding": self.query_model(user_id)}


def save_contract_model(path):
    """Writes a SavedModel with the save_index signatures; returns (query_model, index)."""
    query_model = make_query_model()
    ids, embeddings = make_catalogue()
    index = tfrs.layers.factorized_top_k.BruteForce(k=MAX_K)
    index.index(tf.constant(embeddings), tf.constant(ids.astype(bytes)))
    module = _ContractModule(query_model, index)
    tf.saved_model.save(module, str(path), signatures={
        "serving_default": module.serving_default, "top_k": module.top_k,
        "query_embedding": module.query_embedding})
    return query_model, index


def numpy_top_k(query_model, user_ids, k=MAX_K):
    """NumPy oracle: exact dot-product top-k over the catalogue."""
    ids, embeddings = make_catalogue()
    queries = query_model(tf.constant(user_ids)).numpy()
    scores = queries @ embeddings.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return ids[order].astype(bytes), np.take_along_axis(scores, order, axis=1)


@pytest.fixture(scope="session")
def contract_saved_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("contract") / "model"
    query_model, index = save_contract_model(path)
    return path, query_model, index
