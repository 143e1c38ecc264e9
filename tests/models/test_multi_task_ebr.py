"""MultiTaskEBR: in-cluster negatives, per-task prompt gradients, intent head, round-trips."""

import numpy as np
import pytest

import towerkit  # noqa: F401
import tensorflow as tf
from towerkit.models.multi_task_ebr import MultiTaskEBR
from towerkit.towers.sasrec import SASRecTower

NUM_ITEMS, DIM, K, L = 12, 8, 3, 5
# Items 1-4 cluster 0, 5-8 cluster 1, 9-12 cluster 2; row 0 (padding) -1.
CLUSTERS = np.array([-1] + [0] * 4 + [1] * 4 + [2] * 4)


def make_model(seed=0, **kwargs):
    tf.keras.utils.set_random_seed(seed)
    items = tf.keras.layers.Embedding(NUM_ITEMS + 1, DIM, name="items")
    tower = SASRecTower(items, max_length=L, num_blocks=1, dropout_rate=0.0)
    model = MultiTaskEBR(tower, CLUSTERS, K, **kwargs)
    model.query({"history": tf.constant([[1, 2, 0, 0, 0]])})
    return model


def batch(targets, seed=0):
    rng = np.random.default_rng(seed)
    history = rng.integers(1, NUM_ITEMS + 1, (len(targets), L))
    history[:, 3:] = 0
    return {"history": tf.constant(history), "target": tf.constant(targets, tf.int64)}


def test_retrieval_loss_is_the_in_cluster_softmax():
    model = make_model(temperature=0.5)
    features = batch([2, 6, 11, 9])
    clusters = CLUSTERS[[2, 6, 11, 9]]
    q = model.task_query(features, tf.constant(clusters)).numpy()
    table = model.candidates().numpy()
    # NumPy oracle: for each example, softmax over the 4 items of its target's cluster only.
    expected = []
    for row, target in enumerate([2, 6, 11, 9]):
        members = np.flatnonzero(CLUSTERS == CLUSTERS[target])
        logits = q[row] @ table[members].T / 0.5
        expected.append(np.log(np.exp(logits).sum()) - logits[members == target][0])
    np.testing.assert_allclose(model.retrieval_loss(features).numpy(), np.mean(expected),
                               rtol=1e-5)


def test_negatives_come_only_from_the_target_cluster():
    model = make_model(intent_weight=0.0)
    features = batch([2, 3, 1, 4])   # all targets in cluster 0; histories only reach
    features["history"] = tf.constant([[1, 2, 3, 0, 0]] * 4)   # cluster-0 items too
    with tf.GradientTape() as tape:
        loss = model.compute_loss(features)
    grad = tf.convert_to_tensor(tape.gradient(loss, model.candidate_embedding.embeddings))
    norms = np.linalg.norm(grad.numpy(), axis=1)
    assert (norms[1:5] > 0).all()            # cluster-0 items: positives and negatives
    np.testing.assert_array_equal(norms[5:], 0.0)   # other clusters: never a negative
    assert norms[0] == 0.0                   # padding is no negative either


def test_prompt_k_gets_gradient_only_from_task_k_examples():
    model = make_model(intent_weight=1.0)
    features = batch([2, 6, 7, 3])          # tasks 0 and 1 only

    def prompt_grad(f):
        with tf.GradientTape() as tape:
            loss = model.compute_loss(f)
        return tf.convert_to_tensor(tape.gradient(loss, model.prompts)).numpy()

    g = prompt_grad(features)
    assert np.abs(g[0]).sum() > 0 and np.abs(g[1]).sum() > 0
    np.testing.assert_array_equal(g[2], 0.0)
    # Row 0 of the batch gradient = (2/4) * the gradient of the task-0 examples alone (the loss
    # is a batch mean; the intent loss never reaches the task prompts).
    task0 = {k: tf.gather(v, [0, 3]) for k, v in features.items()}
    g0 = prompt_grad(task0)
    np.testing.assert_allclose(g[0], 0.5 * g0[0], rtol=1e-4, atol=1e-7)
    np.testing.assert_array_equal(g0[1:], 0.0)


def test_queries_apply_each_prompt_and_intent_is_a_distribution():
    model = make_model()
    model.prompts.assign(np.random.default_rng(0).uniform(0.5, 1.5, (K, DIM)))
    history = tf.constant([[1, 5, 9, 0, 0], [2, 0, 0, 0, 0]])
    out = model.query({"history": history})
    assert out["queries"].shape == (2, K, DIM) and out["intent"].shape == (2, K)
    np.testing.assert_allclose(out["intent"].numpy().sum(1), 1.0, rtol=1e-6)
    for k in range(K):
        scale = tf.tile(model.prompts[k:k + 1], [2, 1])
        direct = tf.math.l2_normalize(model.query_tower({"history": history},
                                                        token_scale=scale), axis=-1)
        np.testing.assert_allclose(out["queries"][:, k].numpy(), direct.numpy(), rtol=1e-5,
                                   atol=1e-6)


def test_intent_head_learns_the_target_cluster():
    # Histories of cluster-c items predict a target in cluster c: the intent must follow.
    model = make_model(intent_weight=1.0)
    rng = np.random.default_rng(0)
    c = rng.integers(0, K, 256)
    history = np.zeros((256, L), np.int64)
    history[:, :3] = 1 + 4 * c[:, None] + rng.integers(0, 4, (256, 3))
    target = 1 + 4 * c + rng.integers(0, 4, 256)
    ds = tf.data.Dataset.from_tensor_slices({"history": history, "target": target}).batch(64)
    model.compile(tf.keras.optimizers.Adam(0.05))
    model.fit(ds, epochs=15, verbose=0)
    p = model.query({"history": tf.constant(history[:30])})["intent"].numpy()
    assert (p.argmax(1) == c[:30]).mean() >= 0.9


def test_bad_arguments_are_clear_errors():
    items = tf.keras.layers.Embedding(NUM_ITEMS + 1, DIM)
    tower = SASRecTower(items, max_length=L)
    with pytest.raises(ValueError, match="padding row"):
        MultiTaskEBR(tower, np.r_[0, CLUSTERS[1:]], K)
    with pytest.raises(ValueError, match=r"num_items \+ 1"):
        MultiTaskEBR(tower, CLUSTERS[:-1], K)
    with pytest.raises(ValueError, match="temperature"):
        MultiTaskEBR(tower, CLUSTERS, K, temperature=0.0)
    with pytest.raises(TypeError, match="item_embedding"):
        MultiTaskEBR(tf.keras.layers.Dense(3), CLUSTERS, K)


def test_config_and_saved_model_round_trip(tmp_path):
    model = make_model(temperature=0.2, intent_weight=0.5)
    model.prompts.assign(np.random.default_rng(1).uniform(0.5, 1.5, (K, DIM)))
    clone = MultiTaskEBR.from_config(model.get_config())
    strip = lambda c: {k: v for k, v in c.items() if k != "query_tower"}  # noqa: E731
    assert strip(clone.get_config()) == strip(model.get_config())
    assert clone.query_tower.num_blocks == 1 and clone.query_tower.max_length == L
    history = tf.constant([[1, 5, 9, 0, 0], [2, 3, 0, 0, 0]], tf.int64)
    clone.query({"history": history})
    clone.set_weights(model.get_weights())
    want = model.query({"history": history})
    got = clone.query({"history": history})
    for key in want:
        np.testing.assert_allclose(got[key].numpy(), want[key].numpy(), rtol=1e-5, atol=1e-6)

    module = tf.Module()
    module.model = model
    module.f = tf.function(lambda h: model.query({"history": h}),
                           input_signature=[tf.TensorSpec([None, L], tf.int64)])
    tf.saved_model.save(module, str(tmp_path / "m"))
    loaded = tf.saved_model.load(str(tmp_path / "m"))
    got = loaded.f(history)
    for key in want:
        np.testing.assert_allclose(got[key].numpy(), want[key].numpy(), rtol=1e-5, atol=1e-6)
