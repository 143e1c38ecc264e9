"""The retrieval task's loss against hand-derived values, options, config round-trip."""

import numpy as np
import pytest

import towerkit  # noqa: F401
import tensorflow as tf

from towerkit.tasks import Retrieval

Q = tf.constant([[1.0, 0.0], [0.0, 1.0]])
C = tf.constant([[1.0, 0.0], [1.0, 1.0]])
# Scores Q @ C^T = [[1, 1], [0, 1]]; labels are the diagonal.


def _log1p_exp(x):
    return float(np.log1p(np.exp(x)))


def test_plain_in_batch_softmax_is_summed_over_the_batch():
    # Row 0: logsumexp(1, 1) - 1 = log 2.  Row 1: logsumexp(0, 1) - 1 = log(1 + e^-1).
    expected = np.log(2.0) + _log1p_exp(-1.0)
    assert float(Retrieval()(Q, C)) == pytest.approx(expected, rel=1e-6)


def test_temperature_and_logq_correction():
    # Temperature 0.5 doubles the scores: [[2, 2], [0, 2]]. logQ with counts a:3, b:1 gives
    # p = [0.75, 0.25] and subtracts log p per column: + [0.2877, 1.3863].
    # Row 0: logits [2.2877, 3.3863] -> log(1 + e^(3.3863-2.2877)) = log(1 + 3) = log 4.
    # Row 1: logits [0.2877, 3.3863] -> log(1 + e^(0.2877-3.3863)) = log(1 + 1/3 * 0.75/... )
    #   e^(0.2877-3.3863) = e^-2 * 0.25/0.75 = e^-2 / 3.
    expected = np.log(4.0) + np.log1p(np.exp(-2.0) / 3.0)
    task = Retrieval(temperature=0.5, sampling_vocabulary=["a", "b"], sampling_counts=[3, 1])
    loss = task(Q, C, candidate_ids=tf.constant(["a", "b"]))
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(task.sampling_probability(tf.constant(["a", "b", "new"])).numpy(),
                               [0.75, 0.25, 0.25])  # unknown id -> smallest known probability


def test_logq_is_exact_below_tfrs_clip_of_one_in_a_million():
    # Counts a: 1, b: 9,999,999 -> p = [1e-7, 0.9999999]. TFRS clips p at 1e-6 (it would add
    # -log 1e-6 = 13.8155 to column a); the documented -log p adds -log 1e-7 = 16.1181.
    # Scores Q @ C^T = [[1, 1], [0, 1]] (temperature 1); column a is the positive of row 0.
    # Row 0: logits [1 + 16.1181, 1 - log(0.9999999)] -> log(1 + e^(1 + 1e-7 - 17.1181)),
    # Row 1: logits [0 + 16.1181, 1 + 1e-7]           -> log(1 + e^(16.1181 - 1 - 1e-7)).
    la, lb = -np.log(1e-7), -np.log(1 - 1e-7)
    expected = _log1p_exp((1 + lb) - (1 + la)) + _log1p_exp(la - (1 + lb))
    clipped = _log1p_exp((1 + lb) - (1 + -np.log(1e-6))) + _log1p_exp(-np.log(1e-6) - (1 + lb))
    assert abs(expected - clipped) > 2.0  # the clip would change this loss
    task = Retrieval(sampling_vocabulary=["a", "b"], sampling_counts=[1, 9_999_999])
    loss = task(Q, C, candidate_ids=tf.constant(["a", "b"]))
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    # Multi-head queries (max over heads): the correction is per candidate, still exact.
    heads = tf.stack([Q, -Q], axis=1)            # head 1 scores [[-1, -1], [0, -1]]: never max
    assert float(task(heads, C, candidate_ids=tf.constant(["a", "b"]))) == pytest.approx(
        expected, rel=1e-5)


def test_accidental_hits_are_removed():
    # Both candidates have id "x": the off-diagonal negatives are the positives' twins and are
    # masked, so each row's softmax holds only its positive: loss 0.
    task = Retrieval(remove_accidental_hits=True)
    assert float(task(Q, C, candidate_ids=tf.constant(["x", "x"]))) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="candidate_ids are required"):
        task(Q, C)


def test_sample_weights_scale_each_row():
    # Weights [2, 0]: 2 * log 2 + 0 * row 1.
    loss = Retrieval()(Q, C, sample_weight=tf.constant([2.0, 0.0]))
    assert float(loss) == pytest.approx(2 * np.log(2.0), rel=1e-6)


def test_hard_negatives_keep_the_highest_scoring_negatives():
    # Three queries/candidates; scores S = Q3 @ C3^T below. With 1 hard negative, each row keeps
    # its positive and its single highest-scoring negative.
    q = tf.constant([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    c = tf.constant([[1.0, 0.0], [0.0, 2.0], [0.5, 0.0]])
    # S = [[1, 0, .5], [0, 2, 0], [1, 2, .5]].
    # Row 0: pos 1, hardest neg .5 -> log(1 + e^-0.5). Row 1: pos 2, neg 0 -> log(1 + e^-2).
    # Row 2: pos .5, hardest neg 2 -> log(1 + e^1.5).
    expected = _log1p_exp(-0.5) + _log1p_exp(-2.0) + _log1p_exp(1.5)
    assert float(Retrieval(num_hard_negatives=1)(q, c)) == pytest.approx(expected, rel=1e-5)


def test_numpy_oracle_on_random_batch():
    rng = np.random.default_rng(0)
    q, c = rng.normal(size=(16, 8)).astype(np.float32), rng.normal(size=(16, 8)).astype(np.float32)
    counts = rng.integers(1, 50, size=16)
    ids = np.array([str(i) for i in range(16)])
    logits = q @ c.T / 0.2 - np.log(counts / counts.sum())[None, :]
    m = logits.max(axis=1, keepdims=True)
    expected = np.sum(np.log(np.exp(logits - m).sum(axis=1)) + m[:, 0] - np.diag(logits))
    task = Retrieval(temperature=0.2, sampling_vocabulary=list(ids), sampling_counts=counts)
    assert float(task(tf.constant(q), tf.constant(c), candidate_ids=tf.constant(ids))) == \
        pytest.approx(expected, rel=1e-4)


def test_bad_arguments():
    with pytest.raises(ValueError, match="temperature"):
        Retrieval(temperature=0.0)
    with pytest.raises(ValueError, match="both"):
        Retrieval(sampling_vocabulary=["a"])
    with pytest.raises(ValueError, match="positive"):
        Retrieval(sampling_vocabulary=["a"], sampling_counts=[0])
    with pytest.raises(ValueError, match=r"\[batch, dim\]"):
        Retrieval()(tf.constant([1.0, 2.0]), C)
    with pytest.raises(TypeError, match="sampling vocabulary"):
        Retrieval(sampling_vocabulary=["a"], sampling_counts=[1])(
            Q[:1], C[:1], candidate_ids=tf.constant([1.0]))


def test_config_round_trip_keeps_the_loss():
    task = Retrieval(temperature=0.5, num_hard_negatives=3, remove_accidental_hits=True,
                     sampling_vocabulary=["a", "b"], sampling_counts=[3, 1])
    clone = tf.keras.layers.deserialize(tf.keras.layers.serialize(task))
    assert clone.get_config() == task.get_config()
    ids = tf.constant(["a", "b"])
    assert float(clone(Q, C, candidate_ids=ids)) == pytest.approx(float(task(Q, C, candidate_ids=ids)))


def test_saved_model_round_trip(tmp_path):
    task = Retrieval(temperature=0.5, sampling_vocabulary=["a", "b"], sampling_counts=[3, 1])
    module = tf.Module()
    module.task = task
    module.loss = tf.function(
        lambda q, c, ids: task(q, c, candidate_ids=ids, compute_metrics=False),
        input_signature=[tf.TensorSpec([None, 2]), tf.TensorSpec([None, 2]),
                         tf.TensorSpec([None], tf.string)])
    tf.saved_model.save(module, str(tmp_path / "task"))
    loaded = tf.saved_model.load(str(tmp_path / "task"))
    ids = tf.constant(["a", "b"])
    assert float(loaded.loss(Q, C, ids)) == pytest.approx(float(task(Q, C, candidate_ids=ids)),
                                                          rel=1e-6)
