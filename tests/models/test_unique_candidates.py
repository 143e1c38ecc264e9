"""Scoring a batch's distinct candidates once (`TwoTowerModel(unique_candidates=True)`, the
default) gives the full `[batch, batch]` in-batch softmax's loss and gradients: checked against
the task's full path and against a NumPy oracle of TFRS's loss, with duplicates, temperature,
logQ, accidental-hit removal, sample weights and looked-up ids."""

import numpy as np
import pytest
import tensorflow as tf

import towerkit  # noqa: F401
from towerkit.features import FeatureSet, IdEmbedding
from towerkit.models import MLP, Tower, TwoTowerModel
from towerkit.tasks import Retrieval

USERS = [f"u{i}" for i in range(12)]
ITEMS = [f"i{i}" for i in range(7)]
# 10 examples, items repeating (i0 three times, i3 twice...) and one unknown item.
BATCH = {"user_id": tf.constant(["u0", "u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8", "u9"]),
         "item_id": tf.constant(["i0", "i3", "i0", "i5", "i3", "i0", "i1", "zz", "i6", "i5"]),
         "weight": tf.constant([1.0, 0.5, 2.0, 1.0, 1.0, 0.0, 1.5, 1.0, 1.0, 0.25])}
COUNTS = [30, 5, 9, 12, 4, 7, 2]


def _model(unique: bool, **task_kwargs) -> TwoTowerModel:
    tf.keras.utils.set_random_seed(7)
    query = Tower(FeatureSet({"user_id": IdEmbedding(USERS, 8)}), MLP([8]))
    candidate = Tower(FeatureSet({"item_id": IdEmbedding(ITEMS, 8)}))
    query(BATCH), candidate(BATCH)  # built here: both models get the same weights
    return TwoTowerModel(query, candidate, Retrieval(**task_kwargs), candidate_id_key="item_id",
                         sample_weight_key="weight", unique_candidates=unique)


def _loss_and_gradients(model, batch):
    with tf.GradientTape() as tape:
        loss = model.compute_loss(batch, training=True)
    variables = model.trainable_variables
    return float(loss), [g if not isinstance(g, tf.IndexedSlices) else tf.convert_to_tensor(g)
                         for g in tape.gradient(loss, variables)]


def _oracle(model, batch, temperature=1.0, logq=False, remove_hits=False) -> float:
    """TFRS's loss in NumPy: softmax over the [batch, batch] scores, diagonal labels, summed."""
    q = model.query_model(batch).numpy().astype(np.float64)
    c = model.candidate_model(batch).numpy().astype(np.float64)
    ids = batch["item_id"].numpy()
    scores = q @ c.T / temperature
    if logq:
        p = {i.encode(): n / sum(COUNTS) for i, n in zip(ITEMS, COUNTS)}
        smallest = min(p.values())
        scores -= np.log([p.get(i, smallest) for i in ids])[None, :]
    if remove_hits:
        same = (ids[:, None] == ids[None, :]) & ~np.eye(len(ids), dtype=bool)
        scores = np.where(same, -np.inf, scores)
    log_norm = np.log(np.exp(scores - scores.max(1, keepdims=True)).sum(1)) + scores.max(1)
    losses = log_norm - np.diag(scores)
    return float((losses * batch["weight"].numpy()).sum())


SETTINGS = {
    "plain": {},
    "temperature": {"temperature": 0.2},
    "logq": {"sampling_vocabulary": ITEMS, "sampling_counts": COUNTS},
    "accidental_hits": {"remove_accidental_hits": True},
    "all": {"temperature": 0.5, "remove_accidental_hits": True, "sampling_vocabulary": ITEMS,
            "sampling_counts": COUNTS},
}


@pytest.mark.parametrize("setting", sorted(SETTINGS))
@pytest.mark.parametrize("looked_up", [False, True])
def test_unique_candidates_give_the_full_loss_and_gradients(setting, looked_up):
    kwargs = SETTINGS[setting]
    full, unique = _model(False, **kwargs), _model(True, **kwargs)
    batch = unique.lookup_ids(BATCH) if looked_up else BATCH
    assert unique._unique_candidate_key(batch) is not None  # the fast path is taken
    full_loss, full_grads = _loss_and_gradients(full, batch)
    unique_loss, unique_grads = _loss_and_gradients(unique, batch)
    want = _oracle(full, BATCH, temperature=kwargs.get("temperature", 1.0),
                   logq="sampling_counts" in kwargs,
                   remove_hits=kwargs.get("remove_accidental_hits", False))
    assert full_loss == pytest.approx(want, rel=1e-5)
    assert unique_loss == pytest.approx(want, rel=1e-5)
    for a, b in zip(full_grads, unique_grads):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6)


def test_full_path_when_the_candidate_tower_reads_more_than_the_id_or_has_dropout():
    query = Tower(FeatureSet({"user_id": IdEmbedding(USERS, 8)}))
    two_features = Tower(FeatureSet({"item_id": IdEmbedding(ITEMS, 8),
                                     "user_id": IdEmbedding(USERS, 8)}))
    model = TwoTowerModel(query, two_features, Retrieval(), candidate_id_key="item_id")
    assert model._unique_candidate_key(BATCH) is None
    dropout = Tower(FeatureSet({"item_id": IdEmbedding(ITEMS, 8)}),
                    tf.keras.Sequential([tf.keras.layers.Dropout(0.2)]))
    model = TwoTowerModel(query, dropout, Retrieval(), candidate_id_key="item_id")
    assert model._unique_candidate_key(BATCH) is None
    hard = TwoTowerModel(query, Tower(FeatureSet({"item_id": IdEmbedding(ITEMS, 8)})),
                         Retrieval(num_hard_negatives=3), candidate_id_key="item_id")
    assert hard._unique_candidate_key(BATCH) is None
    off = TwoTowerModel(query, Tower(FeatureSet({"item_id": IdEmbedding(ITEMS, 8)})),
                        Retrieval(), candidate_id_key="item_id", unique_candidates=False)
    assert off._unique_candidate_key(BATCH) is None
    assert TwoTowerModel.from_config(off.get_config()).unique_candidates is False


def test_training_with_unique_candidates_matches_the_full_matrix():
    """A few Adagrad steps on repeated batches end at the same weights either way."""
    data = tf.data.Dataset.from_tensors(BATCH).repeat(5)
    finals = []
    for unique in (False, True):
        model = _model(unique, remove_accidental_hits=True)
        model.compile(optimizer=tf.keras.optimizers.Adagrad(0.5))
        model.fit(data, epochs=1, verbose=0)
        finals.append([v.numpy() for v in model.trainable_variables])
    for a, b in zip(*finals):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
