"""The Category Alignment Loss of the Dual Augmented Two-tower model (DAT)."""

from __future__ import annotations

import tensorflow as tf

__all__ = ["CategoryAlignmentLoss"]


@tf.keras.utils.register_keras_serializable(package="towerkit")
class CategoryAlignmentLoss(tf.keras.layers.Layer):
    """Squared Frobenius distance between per-category covariances of the item embeddings.

    DAT (Yu et al. 2021) aligns the item representations of rare categories with those of the
    most frequent one. In a batch, let `S^k` be the item-tower outputs of the items of category
    `k` and `C(S^k)` their covariance matrix `[dim, dim]`. With `major` the batch's most
    frequent category,

        loss_CA = sum_{k != major} || C(S^major) - C(S^k) ||_F^2.

    Choices the paper leaves open, made here:
      * `C` is the unbiased sample covariance, `1/(n_k - 1) sum_i (x_i - m_k)(x_i - m_k)^T`,
        centred on the category's own mean `m_k`, so shifting one category's embeddings by a
        constant changes nothing.
      * Categories with fewer than `min_count` (>= 2) items in the batch are skipped (a single
        item has no covariance), as are absent ones; the loss is then a sum over fewer terms,
        0 when no category besides the major one qualifies, and never NaN.
      * Ties for the most frequent category go to the smallest category id.
      * A category id of `-1` means "no category": the row takes no part in the loss.

    Example:
    ```python
    cal = CategoryAlignmentLoss(num_categories=21)
    loss = cal(candidate_embeddings, genre_ids)  # [batch, dim], [batch] int -> scalar
    ```

    Args:
      num_categories: int. Category ids are `0 .. num_categories - 1`.
      min_count: int. Fewest items a category needs in the batch to take part (>= 2).

    Call args:
      embeddings: `[batch, dim]` float. Item-tower outputs `p_v` of the batch's items.
      categories: `[batch]` int. Each item's category id, or `-1` for none. An id
        `>= num_categories` fails with an InvalidArgumentError naming the bound.

    Returns:
      A scalar float loss (per batch, not per example).

    Raises:
      ValueError: `num_categories < 1`, `min_count < 2`, or inputs of the wrong rank.
      TypeError: non-integer category ids.

    References:
      Yu et al., "A Dual Augmented Two-tower Model for Online Large-scale Recommendation",
      DLP-KDD 2021 (workshop proceedings: https://dlp-kdd.github.io/).
    """

    def __init__(self, num_categories: int, min_count: int = 2, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(num_categories, int) or num_categories < 1:
            raise ValueError(f"num_categories must be a positive int, got {num_categories!r}.")
        if not isinstance(min_count, int) or min_count < 2:
            raise ValueError(f"min_count must be an int >= 2 (a covariance needs two items), "
                             f"got {min_count!r}.")
        self.num_categories = num_categories
        self.min_count = min_count

    def covariances(self, embeddings: tf.Tensor, categories: tf.Tensor) -> tuple:
        """Per-category unbiased covariances and counts.

        Returns:
          `(covariances [num_categories, dim, dim], counts [num_categories])`; a category with
          fewer than 2 items gets a zero matrix.
        """
        embeddings = tf.convert_to_tensor(embeddings)
        categories = tf.convert_to_tensor(categories)
        if embeddings.shape.rank != 2:
            raise ValueError(f"embeddings must be [batch, dim], got shape {embeddings.shape}.")
        if categories.shape.rank != 1:
            raise ValueError(f"categories must be [batch] ids, got shape {categories.shape}.")
        if not categories.dtype.is_integer:
            raise TypeError(f"categories must be integer ids, got {categories.dtype.name}.")
        categories = tf.cast(categories, tf.int64)
        check = tf.debugging.assert_less(
            categories, tf.constant(self.num_categories, tf.int64),
            message=f"CategoryAlignmentLoss got a category id >= num_categories="
                    f"{self.num_categories}; build it with more categories.")
        with tf.control_dependencies([check]):
            weights = tf.one_hot(categories, self.num_categories, dtype=embeddings.dtype)  # -1 -> 0
        counts = tf.reduce_sum(weights, axis=0)                                           # [K]
        means = tf.matmul(weights, embeddings, transpose_a=True) / tf.maximum(counts, 1.0)[:, None]
        own_mean = tf.matmul(weights, means)                  # [B, dim]; zeros for id -1 rows
        centred = embeddings - own_mean
        scatter = tf.einsum("bk,bi,bj->kij", weights, centred, centred)
        covariances = scatter / tf.maximum(counts - 1.0, 1.0)[:, None, None]
        covariances = tf.where((counts >= 2.0)[:, None, None], covariances,
                               tf.zeros_like(covariances))
        return covariances, counts

    def call(self, embeddings: tf.Tensor, categories: tf.Tensor) -> tf.Tensor:
        covariances, counts = self.covariances(embeddings, categories)
        major = tf.argmax(counts, output_type=tf.int32)  # first maximum: smallest id on ties
        distance = tf.reduce_sum(tf.square(covariances - covariances[major]), axis=[1, 2])
        ids = tf.range(self.num_categories, dtype=tf.int32)
        enough = counts >= float(self.min_count)
        use = enough & (ids != major) & enough[major]
        return tf.reduce_sum(tf.where(use, distance, tf.zeros_like(distance)))

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"num_categories": self.num_categories, "min_count": self.min_count})
        return config
