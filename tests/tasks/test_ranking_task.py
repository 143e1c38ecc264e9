"""The ranking task: batch-mean losses against hand-derived values, metrics, round-trips."""

import numpy as np
import pytest

import towerkit  # noqa: F401
import tensorflow as tf

from towerkit.tasks import Ranking


def test_regression_loss_is_batch_mean_squared_error_and_rmse_metric():
    task = Ranking("regression")
    # errors (4-3), (2-4) -> squared 1, 4 -> mean 2.5; RMSE sqrt(2.5).
    loss = task(labels=tf.constant([4.0, 2.0]), predictions=tf.constant([[3.0], [4.0]]))
    assert float(loss) == pytest.approx(2.5)
    assert float(task._ranking_metrics[0].result()) == pytest.approx(np.sqrt(2.5))


def test_binary_loss_is_sigmoid_cross_entropy_on_logits():
    task = Ranking("binary")
    # logits 0 and 2, labels 1 and 0: [log 2 + log(1 + e^2)] / 2.
    loss = task(labels=tf.constant([1.0, 0.0]), predictions=tf.constant([0.0, 2.0]))
    assert float(loss) == pytest.approx((np.log(2) + np.log1p(np.exp(2.0))) / 2, rel=1e-5)
    # accuracy at threshold 0 on logits: 0 -> predicted 0 (wrong), 2 -> predicted 1 (wrong).
    assert float(task._ranking_metrics[1].result()) == pytest.approx(0.0)


def test_bad_kind_and_shape():
    with pytest.raises(ValueError, match="regression"):
        Ranking("ordinal")
    with pytest.raises(ValueError, match=r"\[batch, 1\]"):
        Ranking()(labels=tf.constant([1.0]), predictions=tf.constant([[1.0, 2.0]]))


def test_config_round_trip():
    task = Ranking("binary", name="clicks")
    clone = tf.keras.layers.deserialize(tf.keras.layers.serialize(task))
    assert clone.kind == "binary" and clone.name == "clicks"
    labels, logits = tf.constant([1.0, 0.0]), tf.constant([0.3, -1.0])
    assert float(clone(labels=labels, predictions=logits)) == pytest.approx(
        float(task(labels=labels, predictions=logits)))


def test_saved_model_round_trip(tmp_path):
    task = Ranking("regression")
    module = tf.Module()
    module.loss = tf.function(lambda y, p: task(labels=y, predictions=p, compute_metrics=False),
                              input_signature=[tf.TensorSpec([None]), tf.TensorSpec([None, 1])])
    tf.saved_model.save(module, str(tmp_path / "ranking"))
    loaded = tf.saved_model.load(str(tmp_path / "ranking"))
    assert float(loaded.loss(tf.constant([4.0, 2.0]), tf.constant([[3.0], [4.0]]))) == \
        pytest.approx(2.5)
