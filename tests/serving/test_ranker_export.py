"""Ranker and retrieve-then-rank exports: equal to index + ranker run in process, round-trips,
stock-op check, `recommend` on the export, and bad arguments."""

import argparse

import numpy as np
import pytest

import towerkit  # noqa: F401  (legacy-Keras switch first)
import tensorflow as tf
from towerkit import serving
from towerkit.cli import recommend
from towerkit.features import AttributeEmbedding, FeatureSet, TimestampEmbedding
from towerkit.index import Annoy, BruteForce, PortableIndex
from towerkit.models import ESMM, MMoE
from towerkit.serving.ranker import RankerServable, RetrieveThenRank, fuse

USERS = [f"u{i}" for i in range(12)]
MOVIES = [f"m{i}" for i in range(40)]
QUERY = {"user_id": tf.TensorSpec([None], tf.string)}
REQUEST = {"user_id": tf.TensorSpec([None], tf.string),
           "timestamp": tf.TensorSpec([None], tf.int64)}


def _query_model():
    rng = np.random.default_rng(0)
    user_id = tf.keras.Input(shape=(), dtype=tf.string, name="user_id")
    rows = tf.keras.layers.StringLookup(vocabulary=USERS)(user_id)
    table = rng.normal(size=(len(USERS) + 1, 8)).astype("float32")
    embedding = tf.keras.layers.Embedding(
        len(USERS) + 1, 8, embeddings_initializer=tf.constant_initializer(table))(rows)
    return tf.keras.Model({"user_id": user_id}, embedding)


def _ranker(cls=MMoE):
    features = FeatureSet({
        "user_id": AttributeEmbedding(USERS, [[1 + i % 3] for i in range(len(USERS))], 4, dim=4,
                                      id_dim=4),
        "item_id": AttributeEmbedding(MOVIES, [[1 + i % 5] for i in range(len(MOVIES))], 6,
                                       dim=4, id_dim=4),
        "timestamp": TimestampEmbedding([100.0, 200.0], 4, mean=150.0, variance=2500.0),
    })
    return cls(features, tower_sizes=[8]) if cls is ESMM else cls(
        features, ("click", "like"), num_experts=3, expert_sizes=[8], tower_sizes=[8], seed=0)


def _index(cls=BruteForce, k=20):
    embeddings = np.random.default_rng(1).normal(size=(len(MOVIES), 8)).astype("float32")
    return cls(_query_model(), k=k).index(embeddings, identifiers=np.array(MOVIES, dtype=bytes))


REQUESTS = {"user_id": np.array([b"u1", b"u7", b"new"]),
            "timestamp": np.array([120, 180, 90], np.int64)}


def _oracle(index, ranker, retrieve, k, fusion):
    """Index top-`retrieve`, then every candidate scored by the ranker one row at a time."""
    _, ids = index({"user_id": tf.constant(REQUESTS["user_id"])}, k=retrieve)
    ids = ids.numpy()
    out_ids, out_scores, out_click = [], [], []
    for row in range(len(ids)):
        flat = {"user_id": np.repeat(REQUESTS["user_id"][row], retrieve),
                "timestamp": np.repeat(REQUESTS["timestamp"][row], retrieve),
                "item_id": ids[row]}
        probs = {t: v.numpy() for t, v in ranker(flat).items()}
        score = np.ones(retrieve)
        for task, weight in fusion.items():
            score = score * probs[task] ** weight
        order = np.argsort(-score, kind="stable")[:k]
        out_ids.append(ids[row][order])
        out_scores.append(score[order])
        out_click.append(probs["click"][order])
    return np.array(out_ids), np.array(out_scores), np.array(out_click)


@pytest.mark.parametrize("index_cls, fusion", [(BruteForce, {"click": 1.0, "like": 1.0}),
                                               (Annoy, {"click": 0.5, "like": 1.0}),
                                               (PortableIndex, {"click": 1.0, "like": 2.0})])
def test_retrieve_then_rank_export_equals_index_plus_ranker_in_process(index_cls, fusion,
                                                                       tmp_path):
    index, ranker = _index(index_cls), _ranker()
    servable = RetrieveThenRank(index, QUERY, ranker, REQUEST, retrieve=20, k=5, fusion=fusion)
    path = serving.export(servable, tmp_path / "rtr",
                          warmup_queries={k: v[:2] for k, v in REQUESTS.items()})
    assert path.name == "1" and (path / "assets.extra" / "tf_serving_warmup_requests").is_file()
    ids, scores, click = _oracle(index, ranker, 20, 5, fusion)
    loaded = tf.saved_model.load(str(path))
    out = loaded.signatures["serving_default"](**{k: tf.constant(v) for k, v in REQUESTS.items()})
    np.testing.assert_array_equal(out["ids"].numpy(), ids)
    np.testing.assert_allclose(out["scores"].numpy(), scores, rtol=1e-5)
    np.testing.assert_allclose(out["click"].numpy(), click, rtol=1e-5)
    # Scores are the fused probabilities, best first.
    assert (np.diff(out["scores"].numpy(), axis=1) <= 0).all()
    top3 = loaded.signatures["top_k"](k=tf.constant(3), **{k: tf.constant(v)
                                                           for k, v in REQUESTS.items()})
    np.testing.assert_array_equal(top3["ids"].numpy(), ids[:, :3])
    # Stock ops only; loads and runs its warmup in a TensorFlow-only process.
    report = serving.check(path)
    assert report.servable, report.format()
    assert report.warmup_requests == 2


def test_ranker_export_roundtrip_scores_candidate_lists(tmp_path):
    ranker = _ranker(ESMM)
    candidates = np.array([[b"m1", b"m2", b"m39"], [b"m5", b"nope", b"m1"]])
    requests = {k: v[:2] for k, v in REQUESTS.items()}
    path = serving.export(RankerServable(ranker, REQUEST), tmp_path / "ranker",
                          warmup_queries={**requests, "item_id": candidates})
    loaded = serving.LocalModel(path)
    out = loaded.predict_outputs({**requests, "item_id": candidates})
    assert set(out) == {"click", "like", "ctcvr"}
    for row in range(2):
        flat = {"user_id": np.repeat(requests["user_id"][row], 3),
                "timestamp": np.repeat(requests["timestamp"][row], 3),
                "item_id": candidates[row]}
        for task, value in ranker(flat).items():
            np.testing.assert_allclose(out[task][row], value.numpy(), rtol=1e-5)
    np.testing.assert_allclose(out["ctcvr"], out["click"] * out["like"], rtol=1e-6)
    assert serving.check(path, run=False).non_stock_ops == []


def test_recommend_cli_queries_the_retrieve_then_rank_export(tmp_path, capsys):
    index, ranker = _index(), _ranker()
    path = serving.export(RetrieveThenRank(index, QUERY, ranker, REQUEST, retrieve=20, k=5),
                          tmp_path / "rtr")
    parser = argparse.ArgumentParser()
    recommend.add_parser(parser.add_subparsers())
    args = parser.parse_args(["recommend", str(path.parent), "--user", "u7", "--feature",
                              "timestamp=180", "-k", "4"])
    assert recommend.run(args) == 0
    rows = [line.split() for line in capsys.readouterr().out.strip().splitlines()[1:]]
    ids, scores, _ = _oracle(index, ranker, 20, 5, {"click": 1.0, "like": 1.0})
    assert [r[2] for r in rows] == [i.decode() for i in ids[1][:4]]
    np.testing.assert_allclose([float(r[1]) for r in rows], scores[1][:4], atol=5e-5)
    # Without the timestamp the command names the missing input.
    args = parser.parse_args(["recommend", str(path.parent), "--user", "u7"])
    assert recommend.run(args) == 2
    assert "--feature" in capsys.readouterr().err


def test_fusion_hand_value_and_bad_arguments():
    # p_click = 0.5, p_like = 0.8: click^1 * like^1 = 0.4; click^0.5 * like^2 = 0.70711 * 0.64.
    probs = {"click": tf.constant([0.5]), "like": tf.constant([0.8])}
    np.testing.assert_allclose(fuse(probs, {"click": 1, "like": 1}).numpy(), [0.4], rtol=1e-6)
    np.testing.assert_allclose(fuse(probs, {"click": 0.5, "like": 2}).numpy(),
                               [0.5 ** 0.5 * 0.64], rtol=1e-6)
    index, ranker = _index(k=10), _ranker()
    with pytest.raises(ValueError, match="exceeds retrieve"):
        RetrieveThenRank(index, QUERY, ranker, REQUEST, retrieve=5, k=6)
    with pytest.raises(ValueError, match="max_k=10"):
        RetrieveThenRank(index, QUERY, ranker, REQUEST, retrieve=20, k=5)
    with pytest.raises(ValueError, match="fusion weights must name"):
        RetrieveThenRank(index, QUERY, ranker, REQUEST, retrieve=10, k=5, fusion={"rating": 1},
                         tasks=("click", "like", "ctcvr", "rating"))
    with pytest.raises(ValueError, match="one input cannot feed both"):
        RetrieveThenRank(index, {"user_id": tf.TensorSpec([None], tf.int64)}, ranker, REQUEST,
                         retrieve=10, k=5)
