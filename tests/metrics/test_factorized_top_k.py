"""towerkit.metrics.FactorizedTopK against a hand-derived case, a NumPy oracle and TFRS's metric."""

import numpy as np
import pytest

import towerkit  # noqa: F401
import tensorflow as tf
import tensorflow_recommenders as tfrs

from towerkit.features import FeatureSet, IdEmbedding
from towerkit.index import Annoy, BruteForce
from towerkit.metrics import FactorizedTopK
from towerkit.models import Tower, TwoTowerModel
from towerkit.tasks import Retrieval


def _values(metric):
    return [float(v) for v in metric.result()]


def _oracle(queries, true_rows, candidates, ids, ks, true_ids=None, weights=None):
    """NumPy reference of TFRS's two definitions (float64 scores; exact for integer data).

    Score-based: hit@k iff fewer than k corpus scores are strictly above <q, true candidate>.
    Id-based: sort the corpus by (score desc, row asc); hit@k iff the true id is among the
    first k.
    """
    scores = queries.astype(np.float64) @ candidates.astype(np.float64).T
    weights = np.ones(len(queries)) if weights is None else np.asarray(weights, np.float64)
    if true_ids is None:
        positive = np.sum(queries.astype(np.float64) * candidates[true_rows], axis=1)
        above = (scores > positive[:, None]).sum(axis=1)
        hits = np.stack([above < k for k in ks], axis=1)
    else:
        order = np.lexsort((np.broadcast_to(np.arange(len(ids)), scores.shape), -scores), axis=1)
        ranked = ids[order]
        hits = np.stack([(ranked[:, :k] == true_ids[:, None]).any(axis=1) for k in ks], axis=1)
    return list((hits * weights[:, None]).sum(axis=0) / weights.sum())


# Candidates a=[1,0], b=[0,1], c=[1,1], d=[2,0]; query q=[1,0] scores them [1, 0, 1, 2].
CANDIDATES = np.array([[1, 0], [0, 1], [1, 1], [2, 0]], np.float32)
IDS = np.array([b"a", b"b", b"c", b"d"])


@pytest.mark.parametrize("true_row, ids_expected, scores_expected", [
    # True a (score 1): one score (d: 2) is strictly above -> score-based hit from k=2.
    # Id order: d(2), a(1), c(1; a tie with a, the later row), b(0) -> a is 2nd.
    (0, [0.0, 1.0, 1.0], [0.0, 1.0, 1.0]),
    # True c (score 1): score-based counts the tie with a as a hit at k=2 (in_top_k), while the
    # id-based order puts c 3rd, after a, the earlier row with the same score.
    (2, [0.0, 0.0, 1.0], [0.0, 1.0, 1.0]),
])
def test_hand_derived_ties(true_row, ids_expected, scores_expected):
    q, t = np.array([[1, 0]], np.float32), CANDIDATES[[true_row]]
    score_based = FactorizedTopK(candidates=CANDIDATES, ks=(1, 2, 3))
    score_based.update_state(q, t)
    assert _values(score_based) == scores_expected
    id_based = FactorizedTopK(
        candidates=tf.data.Dataset.from_tensor_slices((IDS, CANDIDATES)).batch(3), ks=(1, 2, 3))
    id_based.update_state(q, t, true_candidate_ids=IDS[[true_row]])
    assert _values(id_based) == ids_expected
    tfrs_metric = tfrs.metrics.FactorizedTopK(
        candidates=tf.data.Dataset.from_tensor_slices((IDS, CANDIDATES)).batch(3), ks=(1, 2, 3))
    tfrs_metric.update_state(q, t, true_candidate_ids=IDS[[true_row]])
    assert _values(tfrs_metric) == ids_expected


def _integer_problem(seed=0, n=700, d=4, b=150):
    """Small-integer embeddings: exact float32 arithmetic and many tied scores."""
    rng = np.random.default_rng(seed)
    candidates = rng.integers(-2, 3, (n, d)).astype(np.float32)
    true_rows = rng.integers(0, n, b)
    queries = (candidates[true_rows] + rng.integers(-1, 2, (b, d))).astype(np.float32)
    ids = rng.permutation(n).astype(np.int64) * 7  # identifiers unrelated to row order
    return candidates, queries, true_rows, ids


@pytest.mark.parametrize("max_chunk_elements", [1 << 23, 150 * 64, 150 * 33])
def test_equals_numpy_oracle_and_tfrs_with_ties_weights_and_chunks(max_chunk_elements):
    candidates, queries, true_rows, ids = _integer_problem()
    ks = (1, 3, 10, 50)
    weights = np.random.default_rng(1).uniform(0.5, 2.0, len(queries)).astype(np.float32)
    ours = {m: FactorizedTopK(candidates=tf.data.Dataset.from_tensor_slices(
        (ids, candidates) if m == "id" else candidates).batch(128), ks=ks,
        max_chunk_elements=max_chunk_elements) for m in ("id", "score")}
    theirs = {m: tfrs.metrics.FactorizedTopK(candidates=tf.data.Dataset.from_tensor_slices(
        (ids, candidates) if m == "id" else candidates).batch(128), ks=ks) for m in ("id", "score")}
    for start in (0, 100):  # two update_state calls accumulate into one mean
        part = slice(start, start + 100)
        t, w = candidates[true_rows[part]], weights[part]
        for metrics in (ours, theirs):
            metrics["score"].update_state(queries[part], t, sample_weight=w)
            metrics["id"].update_state(queries[part], t, true_candidate_ids=ids[true_rows[part]],
                                       sample_weight=w)
    expected_score = _oracle(queries, true_rows, candidates, ids, ks, weights=weights)
    expected_id = _oracle(queries, true_rows, candidates, ids, ks, true_ids=ids[true_rows],
                          weights=weights)
    np.testing.assert_allclose(_values(ours["score"]), expected_score, rtol=1e-6)
    np.testing.assert_allclose(_values(ours["id"]), expected_id, rtol=1e-6)
    assert _values(ours["score"]) == _values(theirs["score"])
    assert _values(ours["id"]) == _values(theirs["id"])
    assert expected_score != expected_id  # ties make the two definitions differ here
    for metric in ours.values():
        metric.reset_state()
        assert _values(metric) == [0.0] * len(ks)


def test_identical_to_tfrs_on_float_embeddings_at_default_sizes():
    # Float scores: the true candidate's reduce_sum score and its matmul score can differ in the
    # last bit, which TFRS's score-based top-1 is sensitive to; the values must still match TFRS
    # exactly (same float32 arithmetic), at the default ks and chunk size, in a tf.function.
    rng = np.random.default_rng(2)
    n, d, b = 30_000, 64, 1000
    candidates = rng.standard_normal((n, d), dtype=np.float32)
    true_rows = rng.integers(0, n, b)
    queries = candidates[true_rows] + 2.0 * rng.standard_normal((b, d), dtype=np.float32)
    ids = np.array([str(i).encode() for i in range(n)])
    for with_ids in (False, True):
        data = tf.data.Dataset.from_tensor_slices((ids, candidates) if with_ids else candidates)
        metrics = [FactorizedTopK(candidates=data.batch(1024)),
                   tfrs.metrics.FactorizedTopK(candidates=data.batch(1024))]
        for metric in metrics:
            @tf.function
            def update(q, t, true_ids):
                metric.update_state(q, t, true_candidate_ids=true_ids if with_ids else None)
            update(queries, candidates[true_rows], ids[true_rows])
        ours, theirs = map(_values, metrics)
        assert ours == theirs
        assert 0.05 < ours[0] < ours[-1] < 1.0  # a discriminating case


def test_as_the_retrieval_task_metric_in_evaluate():
    rng = np.random.default_rng(3)
    users, movies = [str(i) for i in range(40)], [str(i) for i in range(60)]
    data = {"user_id": rng.choice(users, 600).astype(bytes),
            "item_id": rng.choice(movies, 600).astype(bytes)}
    corpus = tf.data.Dataset.from_tensor_slices(np.array(movies, dtype=bytes)).batch(16)
    results = []
    for metric_class in (FactorizedTopK, tfrs.metrics.FactorizedTopK):
        tf.keras.utils.set_random_seed(0)
        query = Tower(FeatureSet({"user_id": IdEmbedding(users, 8)}))
        candidate = Tower(FeatureSet({"item_id": IdEmbedding(movies, 8)}))
        metric = metric_class(candidates=corpus.map(lambda m: candidate({"item_id": m})),
                              ks=(1, 5, 10))
        model = TwoTowerModel(query, candidate, Retrieval(metrics=metric))
        model.compile(tf.keras.optimizers.Adagrad(0.5))
        batches = tf.data.Dataset.from_tensor_slices(data).batch(100)
        model.fit(batches, epochs=2, verbose=0)
        results.append(model.evaluate(batches, return_dict=True, verbose=0))
    assert results[0] == results[1]
    assert results[0]["factorized_top_k/top_10_categorical_accuracy"] > 0.1


def test_corpus_evaluation_through_exact_and_approximate_indexes():
    candidates, queries, true_rows, ids = _integer_problem(seed=4, n=400, d=8)
    ks = (1, 10, 50)
    exact = FactorizedTopK(candidates=BruteForce(k=50).index(candidates, ids), ks=ks)
    exact.update_state(queries, candidates[true_rows], true_candidate_ids=ids[true_rows])
    reference = FactorizedTopK(candidates=tf.data.Dataset.from_tensor_slices(
        (ids, candidates)).batch(64), ks=ks)
    reference.update_state(queries, candidates[true_rows], true_candidate_ids=ids[true_rows])
    assert exact.exact and _values(exact) == _values(reference)
    assert exact.metrics[0].name == "factorized_top_k/top_1_categorical_accuracy"

    index = Annoy(k=50, n_trees=2, search_k=60).index(candidates, ids).set_exhaustive(False)
    approximate = FactorizedTopK(candidates=index, ks=ks)
    assert not approximate.exact
    assert [m.name for m in approximate.metrics] == [
        f"factorized_top_k/approximate_top_{k}_categorical_accuracy" for k in ks]
    with pytest.raises(ValueError, match="approximate.*true_candidate_ids"):
        approximate.update_state(queries, candidates[true_rows])
    approximate.update_state(queries, candidates[true_rows], true_candidate_ids=ids[true_rows])
    _, found = index(queries, k=50)
    found = found.numpy()
    expected = [float(np.mean((found[:, :k] == ids[true_rows, None]).any(axis=1))) for k in ks]
    np.testing.assert_allclose(_values(approximate), expected, rtol=1e-6)


@pytest.mark.parametrize("ks", [(1, 2), (1, 4)])
def test_non_finite_scores_follow_in_top_k(ks):
    # in_top_k answers False when the true score or any of the top max(ks) scores is not finite.
    # Corpus [1,0], [0,1], [-inf,0], [.5,.5]. Query [1,0] (true row 0) scores [1, 0, -inf, .5]:
    # with max(ks) = 2 the -inf is not a top score -> hit at 1; with max(ks) = 4 it is -> miss.
    # Query [0,1] (true row 1) scores [0, 1, NaN (0 * -inf), .5]: TF's top_k ranks NaN last, so
    # the same holds (hit at 1 with max(ks) = 2, miss with 4). Query [NaN, 1]: NaN true score
    # -> miss.
    candidates = np.array([[1, 0], [0, 1], [-np.inf, 0], [0.5, 0.5]], np.float32)
    queries = np.array([[1, 0], [0, 1], [np.nan, 1]], np.float32)
    true = candidates[[0, 1, 1]]
    expected = [2 / 3, 2 / 3] if max(ks) == 2 else [0.0, 0.0]
    for cls in (FactorizedTopK, tfrs.metrics.FactorizedTopK):
        metric = cls(candidates=tf.data.Dataset.from_tensor_slices(candidates).batch(2), ks=ks)
        metric.update_state(queries, true)
        np.testing.assert_allclose(_values(metric), expected, rtol=1e-6, err_msg=cls.__module__)
    # A +inf score is always a top score: every query misses.
    metric = FactorizedTopK(candidates=np.array([[1, 0], [np.inf, 1]], np.float32), ks=(1, 2))
    metric.update_state(np.array([[1, 0]], np.float32), np.array([[1, 0]], np.float32))
    assert _values(metric) == [0.0, 0.0]


def test_float16_inputs_are_scored_in_float32():
    candidates, queries, true_rows, _ = _integer_problem(seed=5, n=100)
    metrics = [FactorizedTopK(candidates=candidates, ks=(1, 10)) for _ in range(2)]
    metrics[0].update_state(queries, candidates[true_rows])
    metrics[1].update_state(tf.cast(queries, tf.float16),
                            tf.cast(candidates[true_rows], tf.float16))  # small ints: exact
    assert _values(metrics[0]) == _values(metrics[1])


@pytest.mark.parametrize("kwargs, error, match", [
    ({"ks": ()}, ValueError, "ks must be"),
    ({"ks": (0, 5)}, ValueError, "ks must be"),
    ({"max_chunk_elements": 0}, ValueError, "max_chunk_elements"),
    ({"candidates": "movies"}, TypeError, "candidates must be"),
    ({"candidates": tf.data.Dataset.from_tensor_slices(np.zeros((4, 2), np.float32))},
     TypeError, "batch it first"),
    ({"candidates": np.zeros((0, 2), np.float32)}, ValueError, r"\[n >= 1, dim\]"),
])
def test_bad_arguments_name_the_problem(kwargs, error, match):
    kwargs = {"candidates": CANDIDATES, **kwargs}
    with pytest.raises(error, match=match):
        FactorizedTopK(**kwargs)
