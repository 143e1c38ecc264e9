"""`Model`: `tfrs.Model` with a train step that scales the loss under mixed precision."""

from __future__ import annotations

import tensorflow as tf
import tensorflow_recommenders as tfrs

__all__ = ["Model"]


class Model(tfrs.Model):
    """Base of towerkit's trainable models: `tfrs.Model` plus loss scaling.

    `tfrs.Model.train_step` differentiates the loss directly. Under the `mixed_float16` policy
    Keras' `compile` wraps the optimizer in a `LossScaleOptimizer`, whose scale must multiply
    the loss before the gradients and divide them after (float16 gradients underflow
    otherwise); this train step does that whenever the optimizer is a loss-scale optimizer, and
    is TFRS's train step otherwise (same ops, same numbers in float32). The returned logs are
    TFRS's: every metric, `loss`, `regularization_loss`, `total_loss` (unscaled).

    Subclasses implement `compute_loss(features, training)` as for `tfrs.Model`; losses must
    come out as float32 (towerkit's tasks cast their logits and loss to float32).

    Example:
    ```python
    tf.keras.mixed_precision.set_global_policy("mixed_float16")
    model = TwoTowerModel(query_tower, candidate_tower)  # a towerkit Model
    model.compile(tf.keras.optimizers.Adagrad(0.1))      # wrapped in a LossScaleOptimizer
    model.fit(batches)
    ```

    References:
      Micikevicius et al., "Mixed Precision Training", ICLR 2018 (loss scaling):
      https://arxiv.org/abs/1710.03740
    """

    def train_step(self, inputs):
        scaling = hasattr(self.optimizer, "get_scaled_loss")
        with tf.GradientTape() as tape:
            loss = self.compute_loss(inputs, training=True)
            regularization_loss = tf.reduce_sum(
                [tf.reduce_sum(tf.cast(loss, tf.float32)) for loss in self.losses])
            total_loss = loss + regularization_loss
            target = self.optimizer.get_scaled_loss(total_loss) if scaling else total_loss
        gradients = tape.gradient(target, self.trainable_variables)
        if scaling:
            gradients = self.optimizer.get_unscaled_gradients(gradients)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        metrics = {metric.name: metric.result() for metric in self.metrics}
        metrics["loss"] = loss
        metrics["regularization_loss"] = regularization_loss
        metrics["total_loss"] = total_loss
        return metrics
