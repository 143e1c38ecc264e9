"""Free text (e.g. movie titles) -> mean of token embeddings."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

__all__ = ["TextEmbedding"]


@tf.keras.utils.register_keras_serializable(package="towerkit")
class TextEmbedding(tf.keras.layers.Layer):
    """Tokenises text (lower-cased, punctuation stripped, split on whitespace) and averages
    the token embeddings. Unknown tokens share an OOV row; an empty string gives zeros.

    Example:
    ```python
    titles = TextEmbedding.adapt_from(train_titles, embedding_dim=32)
    titles(tf.constant(["Toy Story (1995)"]))  # [1, 32]
    ```

    Args:
      vocabulary: Sequence[str]. Known tokens (`adapt_from` builds it from a text column).
      embedding_dim: int. Output width.

    Input shape: `[batch]` strings. Output shape: `[batch, embedding_dim]`.

    References:
      TFRS featurization tutorial: https://www.tensorflow.org/recommenders/examples/featurization
    """

    def __init__(self, vocabulary: Sequence[str], embedding_dim: int, **kwargs):
        super().__init__(**kwargs)
        vocabulary = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in vocabulary]
        if not vocabulary:
            raise ValueError("TextEmbedding needs a non-empty token vocabulary.")
        self.vocabulary = vocabulary
        self.embedding_dim = int(embedding_dim)
        # Index 0 is padding (masked), 1 is OOV, known tokens start at 2.
        self.vectorize = tf.keras.layers.TextVectorization(vocabulary=vocabulary, name="tokens")
        self.embedding = tf.keras.layers.Embedding(len(vocabulary) + 2, self.embedding_dim,
                                                   mask_zero=True, name="embedding")

    @classmethod
    def adapt_from(cls, texts, embedding_dim: int = 32, max_tokens: int = 10_000,
                   **kwargs) -> "TextEmbedding":
        """Builds the token vocabulary of `texts` (most frequent first, ties alphabetical)."""
        texts = [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in np.asarray(texts)]
        layer = tf.keras.layers.TextVectorization(max_tokens=max_tokens + 2)
        layer.adapt(tf.constant(texts), batch_size=4096)
        tokens = [t for t in layer.get_vocabulary() if t not in ("", "[UNK]")]
        return cls(tokens, embedding_dim, **kwargs)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        inputs = tf.convert_to_tensor(inputs)
        if inputs.dtype != tf.string:
            raise TypeError(f"{self.name} expects tf.string text, got {inputs.dtype.name}.")
        tokens = self.vectorize(inputs)
        embedded = self.embedding(tokens)  # [batch, length, dim]
        mask = tf.cast(tf.not_equal(tokens, 0), embedded.dtype)[..., tf.newaxis]
        total = tf.reduce_sum(embedded * mask, axis=-2)
        return tf.math.divide_no_nan(total, tf.reduce_sum(mask, axis=-2))

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"vocabulary": list(self.vocabulary), "embedding_dim": self.embedding_dim})
        return config
