"""The Dual Augmented Two-tower model (DAT): augmented vectors, AMM and CAL."""

from __future__ import annotations

from typing import Mapping, Optional

import tensorflow as tf
import tensorflow_recommenders as tfrs

from towerkit.models.augmented_tower import AugmentedTower
from towerkit.models.model import Model
from towerkit.tasks import AdaptiveMimicLoss, CategoryAlignmentLoss, Retrieval

__all__ = ["DualAugmentedTwoTowerModel"]

LOSSES = ("softmax", "bce")


@tf.keras.utils.register_keras_serializable(package="towerkit")
class DualAugmentedTwoTowerModel(Model):
    """Dual Augmented Two-tower model (Yu et al. 2021) as a `tfrs.Model`.

    Towers (`AugmentedTower`): the query tower reads `[e_1..e_n, a_u]` and outputs the
    L2-normalised `p_u`; the candidate tower reads `[e_1..e_m, a_v]` and outputs `p_v`. The
    score is `<p_u, p_v> / temperature`.

    Loss, per batch:

        loss = loss_p + amm_user_weight * loss_u + amm_item_weight * loss_v
               + cal_weight * T * loss_CA

    * `loss_p`, the main loss: with `loss="softmax"` (default) towerkit's in-batch softmax
      (`towerkit.tasks.Retrieval`: logQ correction, accidental-hit removal), over the batch's
      `B` labelled pairs; with `loss="bce"` (the paper's setting) binary cross-entropy on each
      positive pair (label 1) and on `S` sampled negatives per positive (label 0), which the
      batch carries under `negatives_key` as a dict of candidate features of shape `[B, S]`
      (the recipe samples them uniformly from the catalogue); a negative with the positive's
      id is masked out.
    * `loss_u`, `loss_v`: the Adaptive-Mimic Mechanism (`AdaptiveMimicLoss`): `a_u` mimics
      `p_v` of the same pair, `a_v` mimics `p_u`, on positive pairs only (negatives have
      `y = 0` and add nothing), with stop-gradient on the tower outputs.
    * `loss_CA`: the Category Alignment Loss (`CategoryAlignmentLoss`) over the candidate-tower
      outputs of the batch's positive items and their categories (`category_key`).

    Reduction (a choice the paper leaves open): the paper writes `loss_p`, `loss_u`, `loss_v`
    as means over the `T` labelled pairs of a batch and `loss_CA` once per batch. towerkit sums
    over pairs (as TFRS does), i.e. multiplies the first three by `T`; to keep the paper's
    balance, `loss_CA` is multiplied by `T` too (`T = B` for softmax, `B (1 + S)` for bce). So
    `loss` is exactly `T` times the paper's total and the weights mean what the paper's
    `lambda_1, lambda_2, lambda_3` mean.

    Example:
    ```python
    model = DualAugmentedTwoTowerModel(query_tower, candidate_tower,
                                       Retrieval(remove_accidental_hits=True),
                                       temperature=0.1, category_key="item_genre",
                                       num_categories=21, candidate_id_key="item_id")
    model.compile(tf.keras.optimizers.Adam(0.01))
    model.fit(train.batch(4096), epochs=3)
    ```

    Args:
      query_tower: AugmentedTower. Maps the feature dict to `p_u` `[batch, dim]`.
      candidate_tower: AugmentedTower. Maps the feature dict to `p_v` `[batch, dim]`.
      task: Retrieval or None. The in-batch softmax (with `loss="softmax"`); its own
        temperature must be unset (the model's `temperature` applies). Default `Retrieval()`.
      loss: str. `"softmax"` or `"bce"`.
      temperature: float > 0. Divides `<p_u, p_v>`.
      amm_user_weight: float >= 0. Weight of `loss_u` (0 turns the user-side mimic off); 0.5
        as reported for the paper.
      amm_item_weight: float >= 0. Weight of `loss_v`; 0.5 as reported for the paper.
      cal_weight: float >= 0. Weight of `loss_CA` (0 turns it off); 1.0 as reported for the
        paper (secondary source). The `dat` recipe uses 0.01, chosen on a validation split
        (`benchmarks/dat/RESULTS.md`).
      category_key: str or None. Feature holding each positive item's category id `[batch]`
        (needed when `cal_weight > 0`).
      num_categories: int or None. Number of category ids (needed when `cal_weight > 0`).
      candidate_id_key: str or None. Feature holding candidate ids (logQ, accidental hits).
      negatives_key: str. Batch key of the sampled negatives' candidate features (bce).

    Call returns `{"query_embedding": p_u, "candidate_embedding": p_v}`.

    Raises:
      TypeError: towers that are not `AugmentedTower`s.
      ValueError: an unknown loss, a non-positive temperature, negative weights, CAL without
        `category_key`/`num_categories`, a task with its own temperature, or (at train time) a
        bce batch without negatives.

    References:
      Yu et al., "A Dual Augmented Two-tower Model for Online Large-scale Recommendation",
      DLP-KDD 2021 (workshop proceedings: https://dlp-kdd.github.io/). The full text was not
      readable offline; equations follow the paper as quoted by its summaries and by EasyRec's
      and TorchEasyRec's `dat` (which omit CAL); the reduction above is towerkit's choice.
    """

    def __init__(self, query_tower: AugmentedTower, candidate_tower: AugmentedTower,
                 task: Optional[Retrieval] = None, loss: str = "softmax",
                 temperature: float = 0.1, amm_user_weight: float = 0.5,
                 amm_item_weight: float = 0.5, cal_weight: float = 1.0,
                 category_key: Optional[str] = None, num_categories: Optional[int] = None,
                 candidate_id_key: Optional[str] = None, negatives_key: str = "negatives",
                 **kwargs):
        super().__init__(**kwargs)
        for name, tower in (("query_tower", query_tower), ("candidate_tower", candidate_tower)):
            if not isinstance(tower, AugmentedTower):
                raise TypeError(f"{name} must be an AugmentedTower, got {type(tower).__name__}.")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}.")
        if not (isinstance(temperature, (int, float)) and temperature > 0):
            raise ValueError(f"temperature must be a number > 0, got {temperature!r}.")
        for name, weight in (("amm_user_weight", amm_user_weight),
                             ("amm_item_weight", amm_item_weight), ("cal_weight", cal_weight)):
            if not (isinstance(weight, (int, float)) and weight >= 0):
                raise ValueError(f"{name} must be a number >= 0, got {weight!r}.")
        if cal_weight > 0 and (not category_key or num_categories is None):
            raise ValueError("cal_weight > 0 needs category_key and num_categories (the "
                             "categories of the batch's items); pass them or set cal_weight=0.")
        task = task if task is not None else Retrieval()
        if getattr(task, "_temperature", None) is not None:
            raise ValueError("Set the temperature on DualAugmentedTwoTowerModel, not on its "
                             "Retrieval task (it divides <p_u, p_v> in both losses).")
        self.query_tower = query_tower
        self.candidate_tower = candidate_tower
        self.task = task
        self.loss_kind = loss
        self.temperature = float(temperature)
        self.amm_user_weight = float(amm_user_weight)
        self.amm_item_weight = float(amm_item_weight)
        self.cal_weight = float(cal_weight)
        self.category_key = category_key
        self.num_categories = num_categories
        self.candidate_id_key = candidate_id_key
        self.negatives_key = negatives_key
        self.mimic = AdaptiveMimicLoss(name="adaptive_mimic")
        self.category_alignment = (CategoryAlignmentLoss(int(num_categories),
                                                         name="category_alignment")
                                   if num_categories is not None else None)
        # Each term's running mean, shown by fit() next to the total loss.
        self.main_loss_tracker = tf.keras.metrics.Mean(name="main_loss")
        self.amm_user_loss_tracker = tf.keras.metrics.Mean(name="amm_user_loss")
        self.amm_item_loss_tracker = tf.keras.metrics.Mean(name="amm_item_loss")
        self.cal_loss_tracker = tf.keras.metrics.Mean(name="cal_loss")

    def call(self, features: Mapping[str, tf.Tensor], training: bool = False) -> dict:
        return {"query_embedding": self.query_tower(features, training=training),
                "candidate_embedding": self.candidate_tower(features, training=training)}

    def _get(self, features: Mapping[str, tf.Tensor], key: Optional[str]):
        if key is None:
            return None
        if key not in features:
            raise ValueError(f"The batch lacks feature {key!r} that this model was configured "
                             f"to read; the batch has {sorted(features)}.")
        return features[key]

    def loss_terms(self, features: Mapping[str, tf.Tensor], training: bool = False) -> dict:
        """The unweighted terms: `{"main", "amm_user", "amm_item", "cal", "pairs"}` (scalars).

        `amm_*` are summed over the labelled pairs, `cal` is per batch (not yet times `pairs`).
        """
        p_u, a_u = self.query_tower.encode(features, training=training)
        p_v, a_v = self.candidate_tower.encode(features, training=training)
        candidate_ids = self._get(features, self.candidate_id_key)
        if self.loss_kind == "softmax":
            main = self.task(p_u / self.temperature, p_v, candidate_ids=candidate_ids,
                             compute_metrics=not training)
            pairs = tf.cast(tf.shape(p_u)[0], p_u.dtype)
            user_side = (a_u, p_v, None)
            item_side = (a_v, p_u, None)
        else:
            main, pairs, user_side, item_side = self._bce(features, p_u, a_u, p_v, a_v,
                                                          candidate_ids, training)
        zero = tf.zeros([], p_u.dtype)
        amm_user = self.mimic(*user_side) if user_side[0] is not None else zero
        amm_item = self.mimic(*item_side) if item_side[0] is not None else zero
        cal = zero
        if self.category_alignment is not None and self.cal_weight > 0:
            cal = self.category_alignment(p_v, self._get(features, self.category_key))
        return {"main": main, "amm_user": amm_user, "amm_item": amm_item, "cal": cal,
                "pairs": pairs}

    def _bce(self, features, p_u, a_u, p_v, a_v, candidate_ids, training):
        negatives = features.get(self.negatives_key)
        if not isinstance(negatives, Mapping) or not negatives:
            raise ValueError(f"loss='bce' needs sampled negatives in the batch: "
                             f"batch[{self.negatives_key!r}] = a dict of candidate features of "
                             "shape [batch, num_negatives].")
        batch = tf.shape(p_u)[0]
        num_negatives = tf.shape(next(iter(negatives.values())))[1]
        flat = {k: tf.reshape(v, [-1]) for k, v in negatives.items()}
        p_n, a_n = self.candidate_tower.encode(flat, training=training)   # [B*S, dim]
        dim = tf.shape(p_u)[-1]
        p_n_rows = tf.reshape(p_n, [batch, num_negatives, dim])
        positive_logits = tf.reduce_sum(p_u * p_v, axis=-1) / self.temperature
        negative_logits = tf.einsum("bd,bsd->bs", p_u, p_n_rows) / self.temperature
        negative_weights = tf.ones_like(negative_logits)
        if candidate_ids is not None and self.candidate_id_key in negatives:
            same = tf.equal(negatives[self.candidate_id_key], candidate_ids[:, None])
            negative_weights = tf.where(same, tf.zeros_like(negative_weights), negative_weights)
        main = (tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(
                    labels=tf.ones_like(positive_logits), logits=positive_logits))
                + tf.reduce_sum(negative_weights * tf.nn.sigmoid_cross_entropy_with_logits(
                    labels=tf.zeros_like(negative_logits), logits=negative_logits)))
        pairs = tf.cast(batch * (1 + num_negatives), p_u.dtype)
        labels = tf.concat([tf.ones([batch], p_u.dtype),
                            tf.zeros([batch * num_negatives], p_u.dtype)], axis=0)
        user_side = item_side = (None, None, None)
        if a_u is not None:  # pair (u, v) and (u, n_s): a_u against p_v / p_n
            a_u_pairs = tf.concat([a_u, tf.repeat(a_u, num_negatives, axis=0)], axis=0)
            user_side = (a_u_pairs, tf.concat([p_v, p_n], axis=0), labels)
        if a_v is not None:  # a_v / a_n against p_u of the same pair
            a_v_pairs = tf.concat([a_v, a_n], axis=0)
            item_side = (a_v_pairs, tf.concat([p_u, tf.repeat(p_u, num_negatives, axis=0)],
                                              axis=0), labels)
        return main, pairs, user_side, item_side

    def compute_loss(self, features: Mapping[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        terms = self.loss_terms(features, training=training)
        cal = terms["cal"] * terms["pairs"]
        self.main_loss_tracker.update_state(terms["main"])
        self.amm_user_loss_tracker.update_state(terms["amm_user"])
        self.amm_item_loss_tracker.update_state(terms["amm_item"])
        self.cal_loss_tracker.update_state(cal)
        return (terms["main"] + self.amm_user_weight * terms["amm_user"]
                + self.amm_item_weight * terms["amm_item"] + self.cal_weight * cal)

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "query_tower": tf.keras.layers.serialize(self.query_tower),
            "candidate_tower": tf.keras.layers.serialize(self.candidate_tower),
            "task": tf.keras.layers.serialize(self.task),
            "loss": self.loss_kind, "temperature": self.temperature,
            "amm_user_weight": self.amm_user_weight, "amm_item_weight": self.amm_item_weight,
            "cal_weight": self.cal_weight, "category_key": self.category_key,
            "num_categories": self.num_categories, "candidate_id_key": self.candidate_id_key,
            "negatives_key": self.negatives_key,
        }

    @classmethod
    def from_config(cls, config: dict) -> "DualAugmentedTwoTowerModel":
        config = dict(config)
        for key in ("query_tower", "candidate_tower", "task"):
            config[key] = tf.keras.layers.deserialize(config[key])
        return cls(**config)
