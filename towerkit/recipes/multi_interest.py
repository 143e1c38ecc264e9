"""Multi-interest retrieval recipes: `mind`, `comirec_dr`, `comirec_sa`.

They reuse the sequential protocol, training loop, evaluation, top-N dump and serving inputs of
`towerkit.recipes.sequential.SequentialRecipe`; what changes is

  * the query tower (`towerkit.towers.MIND`, `ComiRecDR`, `ComiRecSA`), which returns
    `[batch, num_interests, dim]`: retrieval scores an item by its best interest (max-merge,
    duplicates removed), in evaluation and in the exported index alike;
  * training: the tower's label-aware readout (`MultiInterestTower.training_vector`: MIND's
    `softmax(p * score)` attention, or the argmax of the signed dot product for ComiRec) turns
    the interests into one vector per target, which then goes through the same Retrieval task
    (full softmax, sampled softmax with logQ, or in-batch softmax with logQ);
  * `evaluate` adds interest-diversity diagnostics: the mean pairwise cosine of each user's
    active interests (`interest_mean_pairwise_cosine`), the share of training examples whose
    target is closest (signed dot) to each interest (`interest_share_k`, over an evenly spaced
    sample of at most 20,000 training examples), the mean number of
    active interests, and ComiRec's list diversity (`diversity@50`, mean pairwise genre
    distance inside the top 50). With `--aggregation-diversity LAMBDA > 0` the top 50 comes from
    ComiRec's controllable aggregation over the per-interest top 50 lists.
"""

from __future__ import annotations

import argparse
from typing import Optional

import numpy as np
import tensorflow as tf

from towerkit.data.sequential_protocol import SequentialProtocol
from towerkit.index.controllable_aggregation import ControllableAggregation
from towerkit.layers.capsule_routing import CapsuleRouting, coupling_statistics
from towerkit.layers.label_aware_attention import LabelAwareAttention
from towerkit.layers.profile_embedding import ProfileEmbedding
from towerkit.models.sequential_retrieval import MultiInterestRetrievalModel
from towerkit.recipes.base import register_recipe
from towerkit.recipes.best_epoch import BestEpoch
from towerkit.recipes.sequential import (TOP_N, SequentialRecipe, SequentialRetrievalModel,
                                         _dump, _metrics)
from towerkit.towers.comirec_dr import DEFAULT_STDDEV as DR_DEFAULT_STDDEV
from towerkit.towers.comirec_dr import ComiRecDR
from towerkit.towers.comirec_sa import READOUT_SOURCES, ComiRecSA
from towerkit.towers.mind import DEFAULT_STDDEV as MIND_DEFAULT_STDDEV
from towerkit.towers.mind import MIND

__all__ = ["MultiInterestRecipe", "MultiInterestRetrievalModel", "MINDRecipe",
           "ComiRecDRRecipe", "ComiRecSARecipe", "BestEpoch", "interest_diagnostics",
           "list_diversity"]  # BestEpoch: re-exported from towerkit.recipes.best_epoch


def _batches(inputs, batch_size: int):
    """Slices of `inputs` (an int `[n, length]` history array, or a dict of per-row arrays
    holding `"history"`) as tower input dicts of at most `batch_size` rows."""
    features = dict(inputs) if isinstance(inputs, dict) else {"history": inputs}
    n = len(features["history"])
    for start in range(0, n, batch_size):
        yield start, {k: tf.constant(v[start:start + batch_size]) for k, v in features.items()}


def interest_diagnostics(tower, histories, targets: Optional[np.ndarray] = None,
                         target_histories=None, batch_size: int = 4096) -> dict:
    """Diversity diagnostics of a multi-interest tower (inference mode).

    Args:
      tower: a `MultiInterestTower`.
      histories: int `[users, length]` histories whose interests are compared, or a dict of
        per-user feature arrays holding `"history"` (needed when the tower reads more, e.g.
        MIND's user profile).
      targets: optional int `[examples]` target items; with `target_histories`
        (`[examples, length]`, or a dict as above), counts which interest has the largest
        signed dot with each target.
      batch_size: int.

    Returns:
      dict: `interest_mean_pairwise_cosine` (mean over users with >= 2 active interests of the
      mean cosine between their active interests), `interest_active_mean`, and with targets
      `interest_share_k` for each interest k (shares sum to 1) and `interest_share_max`.
      Towers with dynamic routing (`tower.routing`, a `CapsuleRouting`: MIND, ComiRec-DR) add
      `routing_coupling_shift`, the mean over the valid behaviours (of users with >= 2 active
      interests) of the total-variation distance between the coupling coefficients before
      and after routing (0 = routing moved nothing), and `routing_coupling_max_excess`, the
      mean of `max_j w_ij - 1/K'` (0 = uniform coupling); see `coupling_statistics`.
    """
    cosines, active_counts = [], []
    routing = getattr(tower, "routing", None)
    coupling = {"shift_sum": 0.0, "max_excess_sum": 0.0, "count": 0}
    for _, batch in _batches(histories, batch_size):
        if isinstance(routing, CapsuleRouting):
            embeddings, history_mask = tower.embed_history(batch, training=False)
            stats = coupling_statistics(*(t.numpy() for t in routing.coupling(
                embeddings, mask=history_mask, training=False)))
            coupling = {k: coupling[k] + stats[k] for k in coupling}
        v, mask = tower.interests(batch, training=False)
        v, mask = v.numpy(), mask.numpy()
        unit = v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)
        cos = np.einsum("bkd,bld->bkl", unit, unit)
        k = mask.shape[1]
        pair = mask[:, :, None] & mask[:, None, :] & ~np.eye(k, dtype=bool)[None]
        n_pairs = pair.sum(axis=(1, 2))
        keep = n_pairs > 0
        cosines.append((np.where(pair, cos, 0.0).sum(axis=(1, 2))[keep] / n_pairs[keep]))
        active_counts.append(mask.sum(1))
    cosines = np.concatenate(cosines)
    out = {"interest_mean_pairwise_cosine": float(cosines.mean()) if len(cosines) else float("nan"),
           "interest_active_mean": float(np.concatenate(active_counts).mean())}
    if isinstance(routing, CapsuleRouting):
        n = max(coupling["count"], 1)
        out["routing_coupling_shift"] = coupling["shift_sum"] / n
        out["routing_coupling_max_excess"] = coupling["max_excess_sum"] / n
    if targets is not None:
        counts = np.zeros(tower.num_interests, np.int64)
        for start, batch in _batches(target_histories, batch_size):
            emb = tower.item_embedding(tf.constant(targets[start:start + batch_size]))
            picked = tower.assignments(batch, emb).numpy()
            counts += np.bincount(picked, minlength=tower.num_interests)
        shares = counts / max(counts.sum(), 1)
        for k, share in enumerate(shares):
            out[f"interest_share_{k}"] = float(share)
        out["interest_share_max"] = float(shares.max())
    return out


def list_diversity(topn: np.ndarray, aggregation: ControllableAggregation,
                   candidate_rows: np.ndarray) -> float:
    """ComiRec's Diversity@N: mean over users of the mean pairwise `g(i, j)` inside the list.

    Args:
      topn: int `[users, N]` item indices.
      aggregation: supplies the category distance `g`.
      candidate_rows: int `[num_items + 1]` row of each item index in `aggregation` (-1: none).
    """
    n = topn.shape[1]
    values = []
    for row in topn:
        rows = candidate_rows[row]
        g = aggregation.distance(rows, rows)
        values.append((g.sum() - np.trace(g)) / (n * (n - 1)))
    return float(np.mean(values))


class MultiInterestRecipe(SequentialRecipe):
    """Base of the multi-interest recipes; subclasses implement `build_query_tower`.

    Flags on top of the sequential ones: `--num-interests` (K, default 4), `--cosine-readout`
    (the training readout scores the interests by cosine, as retrieval does; default off,
    on for `comirec_dr`),
    `--aggregation-diversity` (lambda of the controllable aggregation used by `evaluate`,
    default 0 = plain max-merge), `--no-l2-normalize` (cosine scores with `--temperature 0.1`
    are the default here), `--dropout` (on the history embeddings, default 0), and the
    model's own flags. `--early-stopping` is common to every sequence recipe
    (`SequentialRecipe`).

    Defaults: at most 15 epochs with `--early-stopping 3`. On the valid users the recall of all
    three models plateaus after 2-4 epochs and then wanders by +-0.02 from epoch to epoch while
    the training loss keeps falling, so a fixed epoch count is a guess; stopping on the valid
    users and keeping the best epoch (as ComiRec's authors do) removes it
    (benchmarks/sequential/RESULTS.md).
    """

    default_epochs = 15

    @classmethod
    def add_tower_arguments(cls, parser: argparse.ArgumentParser) -> None:
        # Cosine scores at temperature 0.1 trained much faster than raw dot products on the
        # valid users (benchmarks/sequential/RESULTS.md): the default here.
        parser.set_defaults(l2_normalize=True, temperature=0.1)
        parser.add_argument("--no-l2-normalize", dest="l2_normalize", action="store_false",
                            help="raw dot-product scores instead of cosine / temperature")
        parser.add_argument("--num-interests", type=int, default=4)
        parser.add_argument("--cosine-readout", action=argparse.BooleanOptionalAction,
                            default=False,
                            help="score the interests against the target by cosine in the "
                                 "training readout (the score cosine retrieval ranks by; "
                                 "default %(default)s)")
        parser.add_argument("--aggregation-diversity", type=float, default=0.0,
                            help="lambda of ComiRec's controllable aggregation in evaluate")
        parser.add_argument("--dropout", type=float, default=0.0,
                            help="dropout rate on the history embeddings in training")
        parser.add_argument("--interest-diversity", type=float, default=0.0,
                            help="weight of the penalty on the mean pairwise cosine of each "
                                 "user's interests, added to the training loss (not in the "
                                 "papers; default %(default)s, mind: see its flags)")
        parser.add_argument("--interest-diversity-margin", type=float, default=0.0,
                            help="pairwise cosines at or below this cost nothing "
                                 "(default %(default)s)")
        cls.add_model_arguments(parser)

    @classmethod
    def add_model_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Model-specific flags."""

    def build_model(self, params: dict, protocol: SequentialProtocol) -> SequentialRetrievalModel:
        dim = int(params["embedding_dim"])
        if params.get("separate_candidate_embeddings"):
            raise ValueError("Multi-interest recipes score the history items with the candidate "
                             "table; drop --separate-candidate-embeddings.")
        items = tf.keras.layers.Embedding(protocol.num_items + 1, dim, name="item_embedding")
        tower = self.build_query_tower(params, protocol, items)
        model = MultiInterestRetrievalModel(tower, items, self.build_task(params, protocol),
                                            l2_normalize=bool(params["l2_normalize"]))
        model.query({k: tf.constant(v[:2]) for k, v in protocol.split("valid").features.items()})
        return model

    def _aggregation(self, protocol: SequentialProtocol, diversity: float):
        genres = protocol.sequences.item_genres
        if genres is None:
            return None
        return ControllableAggregation(np.arange(1, protocol.num_items + 1), genres[1:],
                                       diversity=diversity)

    def evaluate(self, run_dir, split: str = "test", dump_topn: Optional[str] = None) -> dict:
        if split not in ("valid", "test"):
            raise ValueError(f"split must be 'valid' or 'test' (held-out users), got {split!r}.")
        config, protocol, model = self.restore(run_dir)
        params = self.resolve_params(config)
        diversity = float(params.get("aggregation_diversity", 0.0))
        aggregation = self._aggregation(protocol, diversity)
        if diversity > 0:
            if aggregation is None:
                raise ValueError("--aggregation-diversity needs item genres, which this dataset "
                                 "lacks; set it to 0.")
            topn = self._aggregated_topn(model, protocol, split, aggregation)
        else:
            topn = self.top_n(model, protocol, split)
        if dump_topn:
            _dump(dump_topn, protocol, split, topn)
        metrics = _metrics(protocol, split, topn)
        # Interest shares over an evenly spaced sample of at most 20,000 training examples
        # (a share's standard error is then below 0.4 points; all 77k cost ~4x the time).
        examples = protocol.train_examples
        rows = np.unique(np.linspace(0, len(examples["target"]) - 1,
                                     min(len(examples["target"]), 20_000)).astype(np.int64))
        train_rows = {k: v[rows] for k, v in examples.items() if k != "target"}
        metrics.update(interest_diagnostics(model.query_tower, protocol.split(split).features,
                                            examples["target"][rows], train_rows))
        if aggregation is not None:
            rows = np.concatenate([[-1], np.arange(protocol.num_items)])
            metrics[f"diversity@{TOP_N}"] = list_diversity(topn, aggregation, rows)
        return metrics

    def _aggregated_topn(self, model, protocol, split, aggregation) -> np.ndarray:
        queries = self.query_embeddings(model, protocol, split)          # [users, K, dim]
        table = model.candidates().numpy()
        scores = np.einsum("bkd,nd->bkn", queries, table[1:])
        top = np.argsort(-scores, axis=-1, kind="stable")[:, :, :TOP_N]
        top_scores = np.take_along_axis(scores, top, axis=-1)
        _, items = aggregation(top_scores, top + 1, n=TOP_N)
        return items.astype(np.int64)


# Defaults of --routing-init-stddev: the towers' defaults (chosen on the valid users).
MIND_ROUTING_STDDEV = MIND_DEFAULT_STDDEV
DR_ROUTING_STDDEV = DR_DEFAULT_STDDEV


def _routing_initializer(params: dict):
    """`--routing-init-stddev`: `RandomNormal(stddev)` for the routing transform, or Glorot
    normal for 0 (the default of run configs written before the flag)."""
    stddev = float(params.get("routing_init_stddev", 0.0))
    if stddev < 0:
        raise ValueError(f"--routing-init-stddev must be >= 0, got {stddev}.")
    return tf.keras.initializers.RandomNormal(stddev=stddev) if stddev > 0 else "glorot_normal"


def _diversity(params: dict) -> dict:
    """The towers' `diversity_weight` / `diversity_margin` from `--interest-diversity[-margin]`
    (0 for run configs written before the flags: the model they trained)."""
    return {"diversity_weight": float(params.get("interest_diversity", 0.0)),
            "diversity_margin": float(params.get("interest_diversity_margin", 0.0))}


def _readout(params: dict, hard: bool = False) -> LabelAwareAttention:
    """MIND's label-aware attention (`--pow-p`) or, with `hard`, ComiRec's argmax readout."""
    cosine = bool(params.get("cosine_readout", False))
    if hard or params.get("hard_readout"):
        return LabelAwareAttention(hard=True, cosine=cosine)
    return LabelAwareAttention(p=float(params.get("pow_p", 1.0)), cosine=cosine)


@register_recipe
class MINDRecipe(MultiInterestRecipe):
    """`mind`: MIND (Li et al., CIKM 2019), label-aware attention in training.

    By default the user profile (age bucket, gender, occupation) is concatenated with every
    capsule, as in the paper, whenever the dataset has one (movielens 100k/1m ratings); the
    profile's raw values are then serving inputs beside the history. `--no-profile`
    trains the history-only model. On the valid users the profile added 0.015 recall@50 on each
    of three seeds (benchmarks/sequential/RESULTS.md, multi-interest tuning, fourth round).
    """

    name = "mind"

    @classmethod
    def add_model_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--hidden-units", default="256",
                            help="comma-separated ReLU widths after the capsules")
        parser.add_argument("--pow-p", type=float, default=1.0,
                            help="label-aware attention sharpness p: softmax(p * score)")
        parser.add_argument("--hard-readout", action="store_true",
                            help="train with the argmax interest (p -> inf)")
        parser.add_argument("--routing-iterations", type=int, default=3)
        parser.add_argument("--logit-stddev", type=float, default=1.0)
        # Chosen on the valid users (benchmarks/sequential/RESULTS.md, routing section): with
        # Glorot's S (stddev 0.125 for 64 x 64) routing barely moved the coupling; DeepMatch's
        # N(0, 1) separated the interests but cost valid recall; 0.3 moves it and holds.
        parser.add_argument("--routing-init-stddev", type=float, default=MIND_ROUTING_STDDEV,
                            help="draw the bilinear map S from N(0, stddev^2) (DeepMatch's "
                                 "MIND: 1.0); 0 = Glorot normal (default %(default)s)")
        parser.add_argument("--weight-decay", type=float, default=0.0,
                            help="L2 penalty on the shared bilinear map S")
        # Default (None): the paper's profile input whenever the dataset has one (movielens
        # 100k/1m ratings: age bucket, gender, occupation), chosen on the valid users
        # (benchmarks/sequential/RESULTS.md).
        parser.add_argument("--profile", dest="user_features",
                            action=argparse.BooleanOptionalAction,
                            default=None,
                            help="concatenate the user profile (age bucket, gender, occupation) "
                                 "with each capsule, as in the paper; they become serving "
                                 "inputs (default: on when the dataset has a profile; "
                                 "--no-profile: history only)")

    def build_query_tower(self, params, protocol, item_embedding):
        units = [int(u) for u in str(params.get("hidden_units", "256")).split(",") if u.strip()]
        # None = "when the dataset has a profile"; params without the key (runs trained before
        # the flag existed) rebuild the history-only model they trained.
        use_profile = params.get("user_features", False)
        if use_profile is None:
            use_profile = bool(protocol.user_feature_sizes)
        profile = None
        if use_profile:
            if not protocol.user_feature_sizes:
                raise ValueError("--profile needs a dataset with user profile features "
                                 "(movielens/100k-ratings or 1m-ratings); this one has none: "
                                 "use --no-profile.")
            profile = ProfileEmbedding(protocol.user_feature_sizes, dim=8, name="profile")
        return MIND(item_embedding, num_interests=int(params.get("num_interests", 4)),
                    hidden_units=units, profile_embedding=profile,
                    routing_iterations=int(params.get("routing_iterations", 3)),
                    logit_stddev=float(params.get("logit_stddev", 1.0)),
                    weight_decay=float(params.get("weight_decay", 0.0)),
                    dropout=float(params.get("dropout", 0.0)),
                    max_length=protocol.max_history,
                    kernel_initializer=_routing_initializer(params),
                    readout=_readout(params), seed=0, **_diversity(params))


@register_recipe
class ComiRecDRRecipe(MultiInterestRecipe):
    """`comirec_dr`: ComiRec-DR (Cen et al., KDD 2020), argmax readout in training.

    Defaults: `--temperature 0.2`, `--cosine-readout` (the argmax over cosines, the score
    retrieval ranks by) and `--position-order recent_first` (`W_0j` transforms the latest
    behaviour), all chosen on the valid users.
    """

    name = "comirec_dr"

    @classmethod
    def add_model_arguments(cls, parser: argparse.ArgumentParser) -> None:
        # Chosen on the valid users (benchmarks/sequential/RESULTS.md), mean
        # recall@50 over epochs 3-8, seed 0: temperature 0.2 rather than MIND's and ComiRec-SA's
        # 0.1 (0.05 / 0.1 / 0.2 / 0.3: 0.20 / 0.27 / 0.28 / 0.26); the cosine readout, which
        # trains the interest that cosine retrieval would rank the target by (0.282 -> 0.299);
        # and W indexed from the most recent behaviour (then 0.313; seed 1: 0.302).
        parser.set_defaults(temperature=0.2, cosine_readout=True)
        parser.add_argument("--routing-iterations", type=int, default=3)
        parser.add_argument("--weight-decay", type=float, default=0.0,
                            help="L2 penalty on the per-(position, interest) transforms W")
        # Chosen on the valid users (benchmarks/sequential/RESULTS.md, routing section): Glorot
        # over the whole [positions, K, d, d] tensor (stddev 0.014) left the coupling at 1/K.
        parser.add_argument("--routing-init-stddev", type=float, default=DR_ROUTING_STDDEV,
                            help="draw W from N(0, stddev^2) (the authors' code: 1.0); "
                                 "0 = Glorot normal over the whole W tensor "
                                 "(default %(default)s)")
        parser.add_argument("--position-order", choices=("oldest_first", "recent_first"),
                            default="recent_first",
                            help="which end of the history W_0j transforms "
                                 "(default %(default)s)")

    def build_query_tower(self, params, protocol, item_embedding):
        # Params without `position_order` / `cosine_readout` (runs trained before the flags
        # existed) rebuild the model they trained: oldest first, dot-product readout.
        return ComiRecDR(item_embedding, num_interests=int(params.get("num_interests", 4)),
                         max_length=protocol.max_history,
                         routing_iterations=int(params.get("routing_iterations", 3)),
                         position_order=str(params.get("position_order", "oldest_first")),
                         kernel_initializer=_routing_initializer(params),
                         weight_decay=float(params.get("weight_decay", 0.0)),
                         dropout=float(params.get("dropout", 0.0)),
                         readout=_readout(params, hard=True), **_diversity(params))


@register_recipe
class ComiRecSARecipe(MultiInterestRecipe):
    """`comirec_sa`: ComiRec-SA (Cen et al., KDD 2020), argmax readout in training.

    `--readout-source items` (default): interests are read out of the item embeddings, the
    positions only enter the attention (the authors' code); `items_and_positions` is the form
    benchmarked before the flag existed.
    """

    name = "comirec_sa"

    @classmethod
    def add_model_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--attention-units", type=int, default=None,
                            help="width of W1 (default 4 * embedding dim)")
        parser.add_argument("--readout-source", choices=READOUT_SOURCES, default="items",
                            help="read the interests out of the item embeddings (the authors' "
                                 "code; positions only enter the attention) or out of item + "
                                 "position embeddings (default %(default)s)")

    def build_query_tower(self, params, protocol, item_embedding):
        # Params without `readout_source` (runs trained before the flag) rebuild the model
        # they trained: item + position embeddings.
        return ComiRecSA(item_embedding, num_interests=int(params.get("num_interests", 4)),
                         max_length=protocol.max_history,
                         hidden_units=params.get("attention_units"),
                         readout_source=str(params.get("readout_source",
                                                       "items_and_positions")),
                         dropout=float(params.get("dropout", 0.0)),
                         readout=_readout(params, hard=True), **_diversity(params))
