"""`towerkit.models.SequentialRetrievalModel` and `ServingQueryModel` on a plain `tf.data`
input (no recipe, no MovieLens): a synthetic "next item follows the last one" log is learned,
the loss matches a NumPy softmax, and the serving wrapper answers raw string ids."""

import numpy as np
import pytest
import tensorflow as tf

import towerkit  # noqa: F401
from towerkit.models import (MultiInterestRetrievalModel, SequentialRetrievalModel,
                             ServingQueryModel)
from towerkit.tasks.sampled_softmax import SampledSoftmax
from towerkit.towers.gru import GRUTower

NUM_ITEMS, MAX_HISTORY = 40, 6


def _successor(item):
    return item % NUM_ITEMS + 1  # items 1..NUM_ITEMS, 0 is padding


def _examples(n: int, seed: int) -> dict:
    """Histories of consecutive items (left-aligned, zero-padded); the target follows the last."""
    rng = np.random.default_rng(seed)
    history = np.zeros((n, MAX_HISTORY), np.int64)
    length = rng.integers(1, MAX_HISTORY + 1, n)
    target = np.zeros(n, np.int64)
    for row in range(n):
        item = int(rng.integers(1, NUM_ITEMS + 1))
        for position in range(length[row]):
            history[row, position] = item
            item = _successor(item)
        target[row] = item
    return {"history": history, "history_length": length.astype(np.int32), "target": target}


def _model(dim: int = 16) -> SequentialRetrievalModel:
    items = tf.keras.layers.Embedding(NUM_ITEMS + 1, dim, name="items")
    return SequentialRetrievalModel(GRUTower(items, units=dim), items, SampledSoftmax())


def test_learns_next_item_from_a_plain_dataset():
    tf.keras.utils.set_random_seed(0)
    model = _model()
    train = tf.data.Dataset.from_tensor_slices(_examples(4000, seed=1)).batch(128)
    model.compile(optimizer=tf.keras.optimizers.Adam(0.01))
    model.fit(train, epochs=8, verbose=0)
    test = _examples(500, seed=2)
    scores = model.query({k: tf.constant(v) for k, v in test.items()}).numpy() @ \
        model.candidates().numpy().T
    scores[:, 0] = -np.inf  # padding is never an answer
    top1 = scores.argmax(axis=1)
    # Chance is 1/40; a model that only counts items cannot beat it (targets are uniform).
    assert (top1 == test["target"]).mean() > 0.6


def test_full_softmax_loss_matches_numpy():
    model = _model(dim=8)
    batch = {k: tf.constant(v) for k, v in _examples(7, seed=3).items()}
    loss = float(model.compute_loss(batch))
    q = model.query(batch).numpy().astype(np.float64)
    table = model.candidates().numpy().astype(np.float64)
    logits = q @ table[1:].T  # full softmax over the items; row 0 (padding) never scores
    logits -= logits.max(axis=1, keepdims=True)
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    want = -log_softmax[np.arange(7), batch["target"].numpy() - 1]
    assert loss == pytest.approx(want.mean(), rel=1e-4)


def test_serving_query_model_maps_raw_ids_and_ignores_unknown_and_padding():
    model = _model(dim=8)
    ids = np.array([f"sku-{i}".encode() for i in range(1, NUM_ITEMS + 1)], dtype=object)
    serving = ServingQueryModel(ids, model, max_history=MAX_HISTORY)
    raw = tf.constant([[b"sku-3", b"sku-4", b"", b"", b"", b""],
                       [b"sku-3", b"nope", b"sku-4", b"sku-9", b"", b""]])
    got = serving({"history": raw, "history_length": tf.constant([2, 3])}).numpy()
    want = model.query({"history": tf.constant([[3, 4, 0, 0, 0, 0], [3, 0, 4, 0, 0, 0]]),
                        "history_length": tf.constant([2, 3], tf.int32)}).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    known = serving.known_queries({"history": tf.constant([[b"nope", b""], [b"", b"sku-1"]]),
                                   "history_length": tf.constant([1, 1])}).numpy()
    assert known.tolist() == [False, False]
    with pytest.raises(TypeError, match="item id strings"):
        serving({"history": tf.constant([[1, 2, 0, 0, 0, 0]]), "history_length": [2]})


def test_multi_interest_model_is_a_sequential_model():
    assert issubclass(MultiInterestRetrievalModel, SequentialRetrievalModel)
    # The recipes use (and re-export) these very classes.
    from towerkit.recipes import multi_interest, sequential
    assert sequential.SequentialRetrievalModel is SequentialRetrievalModel
    assert sequential.ServingQueryModel is ServingQueryModel
    assert multi_interest.MultiInterestRetrievalModel is MultiInterestRetrievalModel
