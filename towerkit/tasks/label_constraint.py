"""AITM's behavioural expectation calibrator: a later funnel step may not be likelier."""

from __future__ import annotations

import tensorflow as tf

from towerkit.tasks.global_batch import global_mean

__all__ = ["label_constraint"]


def label_constraint(p_later: tf.Tensor, p_earlier: tf.Tensor, weight: float = 0.6) -> tf.Tensor:
    """`weight * mean(max(p_later - p_earlier, 0))`: penalises p(convert) > p(click).

    In a funnel (exposure -> click -> conversion) a conversion implies a click, so
    `p(conversion) <= p(click)` must hold; the penalty is zero when it does. `weight = 0.6` is the
    value in the authors' code.

    Example:
    ```python
    label_constraint(tf.constant([0.5, 0.2]), tf.constant([0.3, 0.4]))  # 0.6 * 0.2 / 2 = 0.06
    ```

    Args:
      p_later: `[batch]` or `[batch, 1]` probabilities of the later step.
      p_earlier: same shape, probabilities of the earlier step.
      weight: float. The penalty's weight (>= 0).

    Returns:
      Scalar float32.

    Raises:
      ValueError: `weight` is negative or the shapes differ.

    References:
      Xi et al., "Modeling the Sequential Dependence among Audience Multi-step Conversions with
      Multi-task Learning in Targeted Display Advertising", KDD 2021, eq. (7):
      https://doi.org/10.1145/3447548.3467071
    """
    if weight < 0:
        raise ValueError(f"weight must be >= 0, got {weight!r}.")
    p_later = tf.convert_to_tensor(p_later, tf.float32)
    p_earlier = tf.convert_to_tensor(p_earlier, tf.float32)
    if not p_later.shape.is_compatible_with(p_earlier.shape):
        raise ValueError(f"p_later {p_later.shape} and p_earlier {p_earlier.shape} differ in "
                         "shape; pass one probability per example for both.")
    # global_mean: the mean over the global batch under tf.distribute (plain mean otherwise).
    return weight * global_mean(tf.maximum(p_later - p_earlier, 0.0))
