"""The base of towerkit's multi-task rankers: shared features, per-task heads, weighted losses."""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import tensorflow as tf
import tensorflow_recommenders as tfrs

from towerkit.models.mlp import MLP
from towerkit.models.model import Model

__all__ = ["MultiTaskRanker", "TASKS", "TASK_LABELS"]

#: Tasks a ranker can predict: click (over all exposures), like (rating >= 4 given a click),
#: ctcvr (click and like, over all exposures) and rating (regression on clicks).
TASKS = ("click", "like", "ctcvr", "rating")
#: task -> (label feature, sample-weight feature or None). `like` and `rating` are observed on
#: clicks only, so a model that trains them directly weighs them by `click` (the clicked space).
TASK_LABELS = {"click": ("click", None), "like": ("like", "click"), "ctcvr": ("ctcvr", None),
               "rating": ("rating", "click")}


def _check_tasks(tasks: Sequence[str]) -> tuple:
    tasks = tuple(tasks)
    unknown = [t for t in tasks if t not in TASKS]
    if not tasks or unknown or len(set(tasks)) != len(tasks):
        raise ValueError(f"tasks must be distinct names from {TASKS}, got {list(tasks)}.")
    return tasks


class MultiTaskRanker(Model):
    """Scores exposures for several tasks from one feature encoder; one loss per trained task.

    Subclasses implement `forward(features, training) -> (outputs, gates)`. `outputs` maps task
    names to `[batch]` predictions: probabilities for `click`, `like` (p(like | click)) and
    `ctcvr`, a value for `rating`; when a model has both a click and a like head but no ctcvr
    head, `ctcvr = p_click * p_like` (probabilities multiplied, never logits). `gates` maps a gate
    name to its `[batch, num_experts]` weights (empty for models without gates).

    The loss is `sum_t loss_weights[t] * loss_t` over `trained_tasks`, each a
    `tfrs.tasks.Ranking` (binary cross-entropy on probabilities; mean squared error for
    `rating`), labelled and weighted as in `TASK_LABELS`, averaged over the batch.

    Args:
      features: Layer mapping the feature dict to `[batch, d]` (e.g. a `FeatureSet`).
      tasks: Sequence[str]. The tasks this model predicts (subset of `TASKS`).
      loss_weights: Mapping[str, float] or None. Weight per trained task (default 1 each).
      tower_sizes: Sequence[int]. Hidden widths of each task tower (before its output unit).
    """

    def trained_tasks(self) -> tuple:
        """Tasks that carry a loss: by default the predicted ones (ESMM and AITM override)."""
        return self.tasks

    def __init__(self, features: tf.keras.layers.Layer, tasks: Sequence[str] = ("click", "like"),
                 loss_weights: Optional[Mapping[str, float]] = None,
                 tower_sizes: Sequence[int] = (32,), **kwargs):
        super().__init__(**kwargs)
        self.features = features
        self.tasks = _check_tasks(tasks)
        self.tower_sizes = [int(s) for s in tower_sizes]
        weights = dict(loss_weights or {})
        unknown = sorted(set(weights) - set(self.trained_tasks()))
        if unknown:
            raise ValueError(f"loss_weights names tasks {unknown} that this model does not train; "
                             f"it trains {list(self.trained_tasks())}.")
        if any(float(w) < 0 for w in weights.values()):
            raise ValueError(f"loss_weights must be >= 0, got {weights}.")
        self.loss_weights = {t: float(weights.get(t, 1.0)) for t in self.trained_tasks()}
        self.ranking_tasks = {
            t: tfrs.tasks.Ranking(
                loss=(tf.keras.losses.MeanSquaredError() if t == "rating"
                      else tf.keras.losses.BinaryCrossentropy(from_logits=False)), name=f"{t}_task")
            for t in self.trained_tasks()}

    def make_tower(self, task: str, name: str) -> MLP:
        """A task tower: `tower_sizes` ReLU layers, then one sigmoid (or linear, rating) unit."""
        return MLP(self.tower_sizes + [1],
                   final_activation=None if task == "rating" else "sigmoid", name=name)

    @staticmethod
    def combine(heads: Mapping[str, tf.Tensor]) -> dict:
        """`[batch, 1]` head outputs -> `[batch]` task outputs, adding `ctcvr = click * like`."""
        outputs = {t: tf.reshape(v, [-1]) for t, v in heads.items()}
        if "ctcvr" not in outputs and "click" in outputs and "like" in outputs:
            outputs["ctcvr"] = outputs["click"] * outputs["like"]
        return outputs

    def forward(self, features: Mapping[str, tf.Tensor], training: bool = False) -> tuple:
        """Returns `(outputs, gates)`; see the class docstring."""
        raise NotImplementedError

    def call(self, features: Mapping[str, tf.Tensor], training: bool = False) -> dict:
        return self.forward(features, training=training)[0]

    def gate_weights(self, features: Mapping[str, tf.Tensor]) -> dict:
        """`{gate name: [batch, num_experts]}` softmax weights (empty without gates)."""
        return self.forward(features, training=False)[1]

    def extra_loss(self, outputs: Mapping[str, tf.Tensor]) -> tf.Tensor:
        """A loss term beyond the task losses (AITM's label constraint); zero by default."""
        return tf.constant(0.0)

    def compute_loss(self, features: Mapping[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        missing = sorted({key for t in self.trained_tasks() for key in TASK_LABELS[t]
                          if key is not None and key not in features})
        if missing:
            raise ValueError(f"The batch lacks the label features {missing}; build exposures "
                             "with towerkit.data.build_exposures.")
        outputs, _ = self.forward(features, training=training)
        loss = self.extra_loss(outputs)
        for task in self.trained_tasks():
            label_key, weight_key = TASK_LABELS[task]
            loss += self.loss_weights[task] * self.ranking_tasks[task](
                labels=tf.reshape(tf.cast(features[label_key], tf.float32), [-1, 1]),
                predictions=tf.reshape(outputs[task], [-1, 1]),
                sample_weight=None if weight_key is None else tf.reshape(
                    tf.cast(features[weight_key], tf.float32), [-1, 1]),
                training=training)
        return loss

    def get_build_config(self):
        """None: the model builds on its first call (string features cannot be traced from the
        float placeholders Keras would build it with)."""
        return None

    def get_config(self) -> dict:
        return {"name": self.name, "features": tf.keras.layers.serialize(self.features),
                "tasks": list(self.tasks), "loss_weights": dict(self.loss_weights),
                "tower_sizes": list(self.tower_sizes)}

    @classmethod
    def from_config(cls, config: dict):
        config = dict(config)
        config["features"] = tf.keras.layers.deserialize(config["features"])
        return cls(**config)
