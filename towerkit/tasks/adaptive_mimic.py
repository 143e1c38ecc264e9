"""The Adaptive-Mimic Mechanism loss of the Dual Augmented Two-tower model (DAT)."""

from __future__ import annotations

from typing import Optional

import tensorflow as tf

from towerkit.tasks.global_batch import global_mean

__all__ = ["AdaptiveMimicLoss"]

_REDUCTIONS = ("sum", "mean")


@tf.keras.utils.register_keras_serializable(package="towerkit")
class AdaptiveMimicLoss(tf.keras.layers.Layer):
    """Squared error between augmented vectors and the other tower's outputs, on positives only.

    DAT (Yu et al. 2021, eq. for `loss_u` / `loss_v`) gives every user an augmented vector `a_u`
    and every item an `a_v`, fed into the user and the item tower. The mimic losses are

        loss_u = 1/T sum_{(u, v, y)} [y a_u + (1 - y) p_v - p_v]^2
               = 1/T sum_{(u, v, y)} y ||a_u - p_v||^2          (y in {0, 1})
        loss_v = 1/T sum_{(u, v, y)} y ||a_v - p_u||^2

    over the `T` labelled pairs, where `p_u`, `p_v` are the tower outputs. The tower output is
    treated as a constant (`tf.stop_gradient`): the mimic loss moves only the augmented vector,
    never a tower weight. Negative pairs (`y = 0`) add exactly nothing. This layer computes one
    of the two losses: `augmented` is `a_u` (or `a_v`), `target` the *other* tower's output for
    the same pair, `p_v` (or `p_u`).

    Reduction: `"sum"` (the default) sums over the pairs, like towerkit's and TFRS's retrieval
    losses, so a weight `lambda` keeps the paper's ratio `lambda * loss_u : loss_p` when the
    main loss is summed too (both of the paper's terms are means over the same `T` pairs).
    `"mean"` divides by `T`, the number of pairs including negatives, as the paper writes it.
    The squared error is summed over the `dim` coordinates (a squared Euclidean distance).

    Example:
    ```python
    mimic = AdaptiveMimicLoss()
    loss_u = mimic(a_u, p_v)                  # in-batch softmax: every row is a positive pair
    loss_u = mimic(a_u_pairs, p_v_pairs, labels=y)  # sampled negatives: y = 0 rows add nothing
    ```

    Args:
      reduction: str. `"sum"` over the pairs (default) or `"mean"` over them.

    Call args:
      augmented: `[pairs, dim]` float. The augmented vectors (`a_u` or `a_v`) of each pair.
      target: `[pairs, dim]` float. The other tower's output for the same pair (`p_v` or `p_u`);
        no gradient flows into it.
      labels: Optional `[pairs]` float or int, 1 for a positive pair and 0 for a negative one;
        all ones when omitted (in-batch softmax, where every row is a labelled positive).

    Returns:
      A scalar float32 loss.

    Raises:
      ValueError: an unknown `reduction`; inputs of the wrong rank or mismatched shapes.

    References:
      Yu et al., "A Dual Augmented Two-tower Model for Online Large-scale Recommendation",
      DLP-KDD 2021 (workshop proceedings: https://dlp-kdd.github.io/). The full text was not
      readable offline; the equation above follows the paper as quoted by its public summaries
      and by EasyRec's and TorchEasyRec's `dat` (see `towerkit.models.DualAugmentedTwoTowerModel`).
    """

    def __init__(self, reduction: str = "sum", **kwargs):
        super().__init__(**kwargs)
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}.")
        self.reduction = reduction

    def call(self, augmented: tf.Tensor, target: tf.Tensor,
             labels: Optional[tf.Tensor] = None) -> tf.Tensor:
        augmented = tf.convert_to_tensor(augmented)
        target = tf.convert_to_tensor(target)
        if augmented.shape.rank != 2 or target.shape.rank != 2:
            raise ValueError(f"AdaptiveMimicLoss expects augmented and target of shape "
                             f"[pairs, dim], got {augmented.shape} and {target.shape}.")
        if not augmented.shape.is_compatible_with(target.shape):
            raise ValueError(
                f"The augmented vectors {augmented.shape} and the tower outputs {target.shape} "
                "must have the same shape: give the augmented vector the tower's output width.")
        target = tf.stop_gradient(tf.cast(target, augmented.dtype))
        squared = tf.reduce_sum(tf.square(augmented - target), axis=-1)
        if labels is not None:
            labels = tf.convert_to_tensor(labels)
            if labels.shape.rank != 1:
                raise ValueError(f"labels must be [pairs] (1 positive, 0 negative), got shape "
                                 f"{labels.shape}.")
            squared = squared * tf.cast(labels, squared.dtype)
        if self.reduction == "mean":  # over the global batch under tf.distribute
            return global_mean(squared)
        return tf.reduce_sum(squared)

    def get_config(self) -> dict:
        config = super().get_config()
        config["reduction"] = self.reduction
        return config
