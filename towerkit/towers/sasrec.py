"""SASRec query tower: causal self-attention blocks over the watched items (Kang and McAuley,
ICDM 2018)."""

from __future__ import annotations

import math
from typing import Mapping, Optional

import tensorflow as tf

from towerkit.layers.causal_self_attention_block import CausalSelfAttentionBlock

__all__ = ["SASRecTower"]


@tf.keras.utils.register_keras_serializable(package="towerkit")
class SASRecTower(tf.keras.layers.Layer):
    """Self-attentive sequential recommendation: the block output at the last watched item.

    The history is left-aligned (`[i_1, ..., i_h, 0, ..., 0]`, 0 = padding, the convention of
    `GRUTower`). As in the paper (Section III-A..D):

        E_t = sqrt(d) * M[i_t] * token_scale + P[pos_t]     # input embedding, d = table width
        X   = Dropout(E) * valid mask                        # padded positions zeroed
        X   = block_b(X) for b = 1..num_blocks               # `CausalSelfAttentionBlock`
        F   = LayerNorm(X)[position of i_h]                  # [batch, d]

    Item embeddings are scaled by `sqrt(d)` before the learned position embedding `P` is added
    (the paper's code does this, as the Transformer does); the score of item `i` is then
    `F . M_i` with the same table `M` unscaled when the candidate table is shared (the paper's
    shared item embedding, Section III-D).

    Positions are counted from the END, as in the paper, whose sequences are padded on the
    left so that the latest item always sits at position n = `max_length`: item `t` of a
    history of `h` items gets position `max_length - h + t`. The left-aligned input therefore
    gives the paper's result exactly: causal attention never lets a real item see the padding
    after it, and padded keys get weight 0. Zeros inside the history (an unknown movie that the
    serving lookup maps to the padding index) are skipped like padding: the result equals that
    of the history without them.

    `token_scale` (optional, `[batch, d]`) multiplies every item-token embedding element-wise
    before the position embedding is added and the blocks run. It is the hook of the
    multi-task EBR task prompt (Zhang et al., WWW 2023: `e_u = Transformer([s_1 * t_k, ...,
    s_n * t_k])`, one prompt `t_k` per task). None (the default) is plain SASRec.

    An empty history (no item) returns the zero vector, as `GRUTower` does.

    Deliberate differences from the paper: the loss is the recipe's (towerkit trains the full
    softmax over the catalogue, not the paper's binary cross-entropy with one sampled negative
    per position) and only the last position is read out and trained (the paper trains every
    position of the sequence; towerkit's sequential protocol already turns each history
    prefix into one example). Multi-head attention (the paper uses one head) concatenates the
    heads without an output projection. Queries, keys and values all come from the
    layer-normalised input, as the paper's `g(x) = x + Dropout(g(LayerNorm(x)))` writes it (the
    authors' code normalises only the queries), and dropout acts on the embeddings and the two
    sublayer outputs, not on the attention weights. Positions are read from the end of the
    history (the paper's left padding) although towerkit's histories are left-aligned.

    Example:
    ```python
    items = tf.keras.layers.Embedding(num_items + 1, 64)
    tower = SASRecTower(items, max_length=20, num_blocks=2, num_heads=1, dropout_rate=0.2)
    user = tower({"history": history_ids})   # [batch, 64]
    ```

    Args:
      item_embedding: tf.keras.layers.Embedding. Item table, row `i` = item index `i`.
      max_length: int. n, the number of position embeddings; the history may be narrower but
        not wider.
      num_blocks: int. Self-attention blocks (b in the paper; 2 there).
      num_heads: int. Attention heads; must divide the embedding width (1 in the paper).
      dropout_rate: float in [0, 1). Dropout on the input embeddings and inside the blocks.
      epsilon: float. Layer-norm epsilon (1e-8 as in the paper's code).

    Call args:
      inputs: dict with `history` `[batch, max_history]` int item indices (0 = padding,
        `max_history <= max_length`); other keys are ignored.
      training: bool. Applies dropout when True.
      token_scale: optional float `[batch, d]`, multiplies every item token (see above).

    Returns:
      `[batch, d]` float32, the last block's (layer-normalised) output at the last item.

    Raises:
      ValueError: bad constructor arguments, no `history`, a history wider than `max_length`,
        or a `token_scale` that is not `[batch, d]`.
      TypeError: a non-Embedding `item_embedding` or a non-integer `history`.

    References:
      Kang and McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018,
      https://arxiv.org/abs/1808.09781; task prompts: Zhang et al., "Divide and Conquer:
      Towards Better Embedding-based Retrieval for Recommender Systems From a Multi-task
      Perspective", WWW 2023, https://arxiv.org/abs/2302.02657
    """

    def __init__(self, item_embedding: tf.keras.layers.Embedding, max_length: int = 20,
                 num_blocks: int = 2, num_heads: int = 1, dropout_rate: float = 0.2,
                 epsilon: float = 1e-8, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(item_embedding, tf.keras.layers.Embedding):
            raise TypeError("item_embedding must be a tf.keras.layers.Embedding, got "
                            f"{type(item_embedding).__name__}.")
        for name, value in (("max_length", max_length), ("num_blocks", num_blocks),
                            ("num_heads", num_heads)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}.")
        dim = int(item_embedding.output_dim)
        if dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide the embedding width {dim}; "
                             "choose a divisor of the embedding dimension.")
        if (isinstance(dropout_rate, bool) or not isinstance(dropout_rate, (int, float))
                or not 0.0 <= dropout_rate < 1.0):
            raise ValueError(f"dropout_rate must be a float in [0, 1), got {dropout_rate!r}.")
        self.item_embedding = item_embedding
        self.max_length = max_length
        self.num_blocks = num_blocks
        self.num_heads = num_heads
        self.dropout_rate = float(dropout_rate)
        self.epsilon = float(epsilon)
        self.dim = dim
        self.position_embedding = tf.keras.layers.Embedding(max_length, dim,
                                                            name="position_embedding")
        self.input_dropout = tf.keras.layers.Dropout(self.dropout_rate)
        self.blocks = [CausalSelfAttentionBlock(num_heads, self.dropout_rate, self.epsilon,
                                                name=f"block_{b}") for b in range(num_blocks)]
        self.final_norm = tf.keras.layers.LayerNormalization(epsilon=self.epsilon,
                                                             name="final_norm")

    def build(self, input_shape=None):
        self.position_embedding.build([None])
        for block in self.blocks:
            block.build([None, None, self.dim])
        self.final_norm.build([None, None, self.dim])
        super().build(input_shape)

    def _history(self, inputs) -> tf.Tensor:
        if not isinstance(inputs, Mapping) or "history" not in inputs:
            raise ValueError("SASRecTower expects a dict of features with 'history' "
                             "[batch, max_history] item indices (0 = padding).")
        history = tf.convert_to_tensor(inputs["history"])
        if not history.dtype.is_integer:
            raise TypeError(f"'history' must hold integer item indices, got {history.dtype.name}.")
        if history.shape.rank != 2:
            raise ValueError(f"'history' must be [batch, max_history], got shape {history.shape}.")
        width = history.shape[1]
        if width is not None and width > self.max_length:
            raise ValueError(f"'history' has {width} columns but the tower has max_length="
                             f"{self.max_length} positions; truncate the history to the latest "
                             f"{self.max_length} items or build the tower with a larger "
                             "max_length.")
        return history

    def sequence(self, inputs: Mapping[str, tf.Tensor], training: bool = False,
                 token_scale: Optional[tf.Tensor] = None, return_attention_scores: bool = False):
        """The final-normalised block outputs at every position, `[batch, max_history, d]`
        (zeros where the history is padded), and the valid mask `[batch, max_history]`; with
        `return_attention_scores`, also each block's weights `[batch, heads, t, s]`."""
        history = self._history(inputs)
        mask = tf.not_equal(history, 0)
        x = self.item_embedding(history) * math.sqrt(self.dim)
        if token_scale is not None:
            token_scale = tf.convert_to_tensor(token_scale, x.dtype)
            if token_scale.shape.rank != 2 or (token_scale.shape[-1] is not None
                                               and token_scale.shape[-1] != self.dim):
                raise ValueError(f"token_scale must be [batch, {self.dim}] (one scale per "
                                 f"embedding dimension), got shape {token_scale.shape}.")
            x = x * token_scale[:, tf.newaxis, :]
        # Position from the end: the latest item at max_length - 1, as with the paper's left
        # padding; holes (zeros inside the history) are skipped.
        count = tf.reduce_sum(tf.cast(mask, tf.int32), axis=1, keepdims=True)
        rank = tf.cumsum(tf.cast(mask, tf.int32), axis=1) - 1
        positions = tf.clip_by_value(self.max_length - count + rank, 0, self.max_length - 1)
        x = x + self.position_embedding(positions)  # clip: only padded entries, zeroed next
        valid = tf.cast(mask, x.dtype)[:, :, tf.newaxis]
        x = self.input_dropout(x, training=training) * valid
        scores = []
        for block in self.blocks:
            x, weights = block(x, mask=mask, training=training, return_attention_scores=True)
            scores.append(weights)
        x = self.final_norm(x) * valid
        return (x, mask, scores) if return_attention_scores else (x, mask)

    def call(self, inputs: Mapping[str, tf.Tensor], training: bool = False,
             token_scale: Optional[tf.Tensor] = None) -> tf.Tensor:
        x, mask = self.sequence(inputs, training=training, token_scale=token_scale)
        width = tf.shape(mask)[1]
        # Index of the last real item; argmax finds the first True of the reversed mask.
        last = width - 1 - tf.argmax(tf.cast(tf.reverse(mask, [1]), tf.int32), axis=1,
                                     output_type=tf.int32)
        out = tf.gather(x, last, batch_dims=1)
        # An empty history: the zero vector (its only position is padding, zeroed above).
        return tf.where(tf.reduce_any(mask, axis=1, keepdims=True), out, tf.zeros_like(out))

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"item_embedding": tf.keras.layers.serialize(self.item_embedding),
                       "max_length": self.max_length, "num_blocks": self.num_blocks,
                       "num_heads": self.num_heads, "dropout_rate": self.dropout_rate,
                       "epsilon": self.epsilon})
        return config

    @classmethod
    def from_config(cls, config: dict) -> "SASRecTower":
        config = dict(config)
        config["item_embedding"] = tf.keras.layers.deserialize(config["item_embedding"])
        return cls(**config)
