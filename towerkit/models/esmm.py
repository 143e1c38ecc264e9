"""ESMM: CVR learned over the entire space through pCTCVR = pCTR * pCVR."""

from __future__ import annotations

import tensorflow as tf

from towerkit.models.multi_task_ranker import MultiTaskRanker

__all__ = ["ESMM"]


@tf.keras.utils.register_keras_serializable(package="towerkit")
class ESMM(MultiTaskRanker):
    """Entire Space Multi-task Model: a CTR and a CVR tower on shared embeddings.

    `pCTR = sigmoid(ctr_tower(x))`, `pCVR = sigmoid(cvr_tower(x))` (here p(like | click)) and
    `pCTCVR = pCTR * pCVR`, a product of probabilities. Only two losses are trained, both over
    *all* exposures: click on pCTR and ctcvr on pCTCVR. The CVR tower is never fitted to
    like-labels directly, so it never sees the non-clicked space as negatives (the sample
    selection bias ESMM removes), and it learns only through pCTCVR.

    Example:
    ```python
    model = ESMM(feature_set)
    model(features)  # {"click": pCTR, "like": pCVR, "ctcvr": pCTR * pCVR}, each [batch]
    ```

    Args:
      features: Layer mapping the feature dict to `[batch, d]` (the shared embedding).
      **kwargs: `loss_weights` (for `click` and `ctcvr`), `tower_sizes`, as in
        `MultiTaskRanker`.

    References:
      Ma et al., "Entire Space Multi-Task Model: An Effective Approach for Estimating Post-Click
      Conversion Rate", SIGIR 2018: https://doi.org/10.1145/3209978.3210104
    """

    def __init__(self, features, **kwargs):
        kwargs.pop("tasks", None)
        super().__init__(features, ("click", "like", "ctcvr"), **kwargs)
        self.ctr_tower = self.make_tower("click", "ctr_tower")
        self.cvr_tower = self.make_tower("like", "cvr_tower")

    def trained_tasks(self) -> tuple:
        return ("click", "ctcvr")

    def forward(self, features, training=False):
        x = self.features(features)
        p_ctr = tf.reshape(self.ctr_tower(x), [-1])
        p_cvr = tf.reshape(self.cvr_tower(x), [-1])
        return {"click": p_ctr, "like": p_cvr, "ctcvr": p_ctr * p_cvr}, {}

    def get_config(self) -> dict:
        config = super().get_config()
        config.pop("tasks")
        return config
