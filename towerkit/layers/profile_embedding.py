"""User-profile embedding: categorical profile features -> one concatenated vector per user."""

from __future__ import annotations

from typing import Mapping

import tensorflow as tf

__all__ = ["ProfileEmbedding"]


@tf.keras.utils.register_keras_serializable(package="towerkit")
class ProfileEmbedding(tf.keras.layers.Layer):
    """Embeds named categorical profile features and concatenates them: `[batch, n * dim]`.

    Each feature is an int code in `[0, size)` per user, with 0 meaning unknown or missing; an
    unknown value embeds to the zero vector (it carries no information, and a user with no
    profile gets the same all-zero vector however many features are unknown). Features are
    concatenated in sorted name order, so the layout does not depend on dict order.

    This is MIND's user-profile input (Li et al., CIKM 2019, https://arxiv.org/abs/1904.08030,
    Figure 2: the profile embeddings are concatenated with each interest capsule before the
    ReLU layers).

    Args:
      sizes: mapping feature name -> vocabulary size including the 0 = unknown code.
      dim: int. Width of each feature's embedding.

    Call args:
      inputs: dict holding at least the features of `sizes`, each an int tensor `[batch]` or
        `[batch, 1]`.

    Returns:
      float32 `[batch, len(sizes) * dim]`.

    Raises:
      ValueError: a feature is missing or not one code per user, or the inputs are not a dict.
      TypeError: a feature holds non-integer values.
      tf.errors.InvalidArgumentError: a code is outside `[0, size)` (checked eagerly and in
        graphs, so also in an exported model). Every message names the feature and the fix.

    Example:
      >>> profile = ProfileEmbedding({"user_gender": 3, "user_age": 8}, dim=8)
      >>> profile({"user_gender": tf.constant([1, 0]), "user_age": tf.constant([3, 7])}).shape
      TensorShape([2, 16])
    """

    def __init__(self, sizes: Mapping[str, int], dim: int = 8, **kwargs):
        super().__init__(**kwargs)
        if not sizes:
            raise ValueError("ProfileEmbedding needs at least one feature in `sizes`.")
        for name, size in sizes.items():
            if not isinstance(size, int) or size < 2:
                raise ValueError(f"Vocabulary size of {name!r} must be an int >= 2 (code 0 is "
                                 f"'unknown'), got {size!r}.")
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive int, got {dim!r}.")
        self.sizes = {str(k): int(v) for k, v in sorted(sizes.items())}
        self.dim = dim
        self.embeddings = {name: tf.keras.layers.Embedding(size, dim, name=f"{name}_embedding")
                           for name, size in self.sizes.items()}

    @property
    def feature_names(self) -> tuple:
        """The profile features read, in concatenation order."""
        return tuple(self.sizes)

    def call(self, inputs):
        if not isinstance(inputs, Mapping):
            raise ValueError("ProfileEmbedding expects a dict of features, got "
                             f"{type(inputs).__name__}.")
        parts = []
        for name, table in self.embeddings.items():
            if name not in inputs:
                raise ValueError(f"Profile feature {name!r} is missing from the inputs (got "
                                 f"{sorted(inputs)}); pass it, with 0 for unknown.")
            codes = tf.convert_to_tensor(inputs[name])
            if not codes.dtype.is_integer:
                raise TypeError(f"Profile feature {name!r} must hold int codes, got "
                                f"{codes.dtype.name}.")
            rank = codes.shape.rank
            if rank is not None and not (rank == 1 or (rank == 2 and codes.shape[1] == 1)):
                raise ValueError(f"Profile feature {name!r} must be [batch] or [batch, 1] (one "
                                 f"code per user), got shape {codes.shape}.")
            codes = tf.reshape(tf.cast(codes, tf.int64), [-1])
            check = tf.debugging.assert_less(
                codes, tf.constant(self.sizes[name], tf.int64),
                message=f"Profile feature {name!r} has a code >= its vocabulary size "
                        f"{self.sizes[name]}; map raw values to codes 1.. with 0 = unknown.")
            check_low = tf.debugging.assert_non_negative(
                codes, message=f"Profile feature {name!r} has a negative code; use 0 for "
                               "unknown.")
            with tf.control_dependencies([check, check_low]):
                vectors = table(codes)
            known = tf.cast(codes > 0, vectors.dtype)[:, tf.newaxis]
            parts.append(vectors * known)
        return tf.concat(parts, axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update({"sizes": dict(self.sizes), "dim": self.dim})
        return config
