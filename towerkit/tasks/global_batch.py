"""Means over the GLOBAL batch under `tf.distribute`, so replicas' gradients sum to the
single-device ones.

Keras optimizers SUM the replicas' gradients. A loss summed over the batch is then right as it
is (each replica sums its share); a loss averaged over the batch is not (each replica's mean,
summed, is `replicas x` the global mean for equal shares). `global_mean` divides a replica's
sum by the weight of the whole global batch (all-reduced), and `GlobalBatchLoss` does the same
for a Keras loss with the default reduction (sum over batch size) that TFRS tasks hold, which
Keras would otherwise refuse under a strategy. Outside a strategy both are the plain mean.
"""

from __future__ import annotations

from typing import Optional

import tensorflow as tf

__all__ = ["GlobalBatchLoss", "global_mean"]


def global_mean(values: tf.Tensor, weights: Optional[tf.Tensor] = None) -> tf.Tensor:
    """`sum(w * v) / sum(w)` with the denominator over every replica's batch.

    Args:
      values: per-example values, any shape.
      weights: optional weights broadcastable to `values` (default: 1 each).

    Returns:
      Scalar; 0 when the global weight is 0. Summed over the replicas it is the mean of the
      global batch (the loss a single device computes on that batch).
    """
    values = tf.convert_to_tensor(values)
    weights = (tf.ones_like(values) if weights is None
               else tf.broadcast_to(tf.cast(weights, values.dtype), tf.shape(values)))
    total, count = tf.reduce_sum(values * weights), tf.reduce_sum(weights)
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
        count = context.all_reduce(tf.distribute.ReduceOp.SUM, count)
    return tf.math.divide_no_nan(total, count)


class GlobalBatchLoss:
    """Wraps a Keras loss of reduction AUTO / SUM_OVER_BATCH_SIZE: same value on one device,
    the global-batch mean under a strategy (sample weights weigh the examples; the
    denominator is the number of loss elements, as in Keras).

    Args:
      loss: a `tf.keras.losses.Loss` (e.g. `BinaryCrossentropy`).

    Example:
    ```python
    task._loss = GlobalBatchLoss(task._loss)  # what train_atomically does under a strategy
    ```
    """

    def __init__(self, loss: tf.keras.losses.Loss):
        if not isinstance(loss, tf.keras.losses.Loss):
            raise TypeError(f"GlobalBatchLoss wraps a tf.keras.losses.Loss, got {loss!r}.")
        self.loss = loss

    def __call__(self, y_true, y_pred, sample_weight=None):
        per_example = self.loss.call(tf.convert_to_tensor(y_true), tf.convert_to_tensor(y_pred))
        if sample_weight is not None:
            weights = tf.cast(sample_weight, per_example.dtype)
            if weights.shape.rank is not None and per_example.shape.rank is not None and (
                    weights.shape.rank > per_example.shape.rank):
                weights = tf.reshape(weights, tf.shape(per_example))
            weighted = per_example * weights
        else:
            weighted = per_example
        return global_mean(weighted)

    @staticmethod
    def wrap_model(model) -> list:
        """Wraps every mean-reduced Keras loss held as `_loss` by a layer of `model` (the TFRS
        tasks' convention).

        Returns:
          `[(layer, original loss)]`.
        """
        mean_reductions = (tf.keras.losses.Reduction.AUTO,
                           tf.keras.losses.Reduction.SUM_OVER_BATCH_SIZE)
        wrapped = []
        for layer in [model, *model.submodules]:
            loss = getattr(layer, "_loss", None)
            if isinstance(loss, tf.keras.losses.Loss) and loss.reduction in mean_reductions:
                layer._loss = GlobalBatchLoss(loss)
                wrapped.append((layer, loss))
        return wrapped
