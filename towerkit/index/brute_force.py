"""`BruteForce`: exact maximum-inner-product retrieval, the reference for every recall number."""

from typing import Optional

import numpy as np
import tensorflow as tf

from towerkit.index.base import Index


class BruteForce(Index):
    """Exact top-k by scoring every candidate with a dot product.

    A drop-in replacement for `tfrs.layers.factorized_top_k.BruteForce` that also takes string
    or integer identifiers, `k` at call time, exclusions and multi-vector queries, and saves
    right after `index` (see `towerkit.index.save_index`).

    Example:

    ```python
    index = BruteForce(k=10).index(candidate_embeddings, identifiers=item_ids)
    scores, ids = index(query_embeddings, k=5)
    ```
    """

    def __init__(self, query_model: Optional[tf.keras.Model] = None, k: int = 10,
                 name: Optional[str] = None, **kwargs) -> None:
        """Initializes the layer.

        Args:
            query_model: Optional Keras model mapping raw query features to embeddings.
            k: int. Maximum (and default) number of results.
            name: Optional layer name.
            **kwargs: Passed to `Index` (e.g. `verbose=True`) and `tf.keras.Model`.
        """
        super().__init__(query_model=query_model, k=k, name=name, **kwargs)
        self._candidates = None

    def _build(self, candidates: np.ndarray) -> None:
        self._candidates = self._add_state("candidates", candidates)

    def _search(self, queries: tf.Tensor, k):
        scores = tf.matmul(queries, self._candidates, transpose_b=True)
        return tf.math.top_k(scores, k=k)

    def is_exact(self) -> bool:
        return True
