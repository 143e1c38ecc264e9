"""SampledSoftmax: golden values derived by hand (logQ, accidental hits, full softmax)."""

import math

import numpy as np
import pytest
import tensorflow as tf

import towerkit  # noqa: F401
from towerkit.tasks.sampled_softmax import SampledSoftmax

# Table rows: 0 = padding, 1 = [1, 0], 2 = [0, 1], 3 = [2, 0]. One query q = [1, 0], target 1.
TABLE = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [2.0, 0.0]], np.float32)
QUERY = np.array([[1.0, 0.0]], np.float32)
Q = [0.0, 0.5, 0.25, 0.25]


def test_sampled_loss_with_logq_golden():
    # S = 3 negatives [2, 3, 1]; logits <q, e_c> - log(S * Q(c)):
    #   target 1:   1 - log(3 * 0.5)  = 1 - 0.405465 = 0.594535
    #   negative 2: 0 - log(3 * 0.25) = 0.287682
    #   negative 3: 2 - log(0.75)     = 2.287682
    #   negative 1: the target itself (accidental hit) -> removed.
    # loss = log(e^0.594535 + e^0.287682 + e^2.287682) - 0.594535
    #      = log(1.812188 + 1.333333 + 9.852075) - 0.594535 = 2.564765 - 0.594535 = 1.970230
    task = SampledSoftmax(sampling_probability=Q, num_negatives=3)
    loss = task(QUERY, [1], TABLE, negative_ids=[2, 3, 1])
    assert float(loss) == pytest.approx(1.970230, abs=1e-5)
    expected = math.log(math.exp(1 - math.log(1.5)) + math.exp(-math.log(0.75))
                        + math.exp(2 - math.log(0.75))) - (1 - math.log(1.5))
    assert float(loss) == pytest.approx(expected, abs=1e-6)


def test_accidental_hit_kept_when_disabled():
    # Same as above plus the accidental hit's logit 0.594535 (e^ = 1.812188):
    # log(12.997596 + 1.812188) - 0.594535 = 2.695288 - 0.594535 = 2.100753
    task = SampledSoftmax(sampling_probability=Q, num_negatives=3, remove_accidental_hits=False)
    assert float(task(QUERY, [1], TABLE, negative_ids=[2, 3, 1])) == pytest.approx(2.100753, abs=1e-5)


def test_temperature_and_uniform_proposal():
    # Uniform Q over rows 1..3 (1/3 each): the correction log(S * 1/3) is the same for every
    # logit and cancels. T = 0.5 doubles the dots: target 2, negatives [4 (row 3), 0 (row 2)].
    # loss = log(e^2 + e^4 + e^0) - 2 = log(7.389056 + 54.598150 + 1) - 2 = 4.142932 - 2 = 2.142932
    task = SampledSoftmax(num_negatives=2, temperature=0.5)
    assert float(task(QUERY, [1], TABLE, negative_ids=[3, 2])) == pytest.approx(2.142932, abs=1e-5)


def test_full_softmax_golden():
    # Logits over rows 1..3 = [1, 0, 2] (padding row 0 excluded):
    # loss = log(e + 1 + e^2) - 1 = log(11.107338) - 1 = 1.407606
    task = SampledSoftmax()
    assert float(task(QUERY, [1], TABLE)) == pytest.approx(1.407606, abs=1e-5)
    # Sample weights: the weighted mean sum(w l) / sum(w). Query 0 (target 1) has loss
    # 1.407606; query 1 (target 3, logit 2) has log(11.107338) - 2 = 0.407606.
    # Weights [1, 0] -> 1.407606 (not the batch mean 0.703803); [3, 1] ->
    # (3 * 1.407606 + 0.407606) / 4 = 1.157606; all-zero weights -> 0.
    two = task(np.repeat(QUERY, 2, 0), [1, 3], TABLE, sample_weight=[1.0, 0.0])
    assert float(two) == pytest.approx(1.407606, abs=1e-5)
    weighted = task(np.repeat(QUERY, 2, 0), [1, 3], TABLE, sample_weight=[3.0, 1.0])
    assert float(weighted) == pytest.approx(1.157606, abs=1e-5)
    none = task(np.repeat(QUERY, 2, 0), [1, 3], TABLE, sample_weight=[0.0, 0.0])
    assert float(none) == 0.0


def test_sampling_follows_the_proposal_and_never_draws_padding():
    task = SampledSoftmax(sampling_probability=[0.0, 0.0, 1.0, 0.0], num_negatives=50, seed=3)
    # Only row 2 can be drawn, so every negative is [0, 1]: target row 1 scores 1 - log(50 * Qf)
    # where Q(1) = 0 is floored to the smallest positive Q (1.0); negatives score 0 - log(50).
    # loss = log(e^(1 - log 50) + 50 e^(-log 50)) - (1 - log 50) = log(e/50 + 1) - 1 + log 50
    expected = math.log(math.e / 50 + 1) - 1 + math.log(50)
    assert float(task(QUERY, [1], TABLE)) == pytest.approx(expected, abs=1e-5)


def test_sampled_normaliser_estimates_the_full_one():
    # With logQ correction, sum_j exp(s_j) / (S Q(j)) over S draws from Q is an unbiased
    # estimate of sum_{c != target} exp(s_c) (accidental hits removed). So for large S the loss
    # tends to log(Z - e^{s_t} + e^{s_t} / (S Q_t)) - s_t + log(S Q_t), Z the full normaliser
    # over rows 1.. (a NumPy oracle; the log(S Q_t) offset is constant in the parameters).
    rng = np.random.default_rng(0)
    table = rng.normal(size=(40, 4)).astype(np.float32)
    queries = rng.normal(size=(64, 4)).astype(np.float32)
    targets = rng.integers(1, 40, size=64)
    probs = rng.uniform(0.5, 1.5, size=40)
    probs[0] = 0.0
    probs /= probs.sum()
    num = 20000
    scores = queries.astype(np.float64) @ table.T.astype(np.float64)
    s_t = scores[np.arange(64), targets]
    z = np.exp(scores[:, 1:]).sum(axis=1)
    q_t = probs[targets]
    oracle = np.mean(np.log(z - np.exp(s_t) + np.exp(s_t) / (num * q_t)) - s_t + np.log(num * q_t))
    task = SampledSoftmax(sampling_probability=probs, num_negatives=num, seed=0)
    assert float(task(queries, targets, table)) == pytest.approx(oracle, abs=0.02)


def test_config_round_trip():
    task = SampledSoftmax(sampling_probability=Q, num_negatives=3, temperature=0.2, seed=7)
    clone = SampledSoftmax.from_config(task.get_config())
    args = (QUERY, [1], TABLE)
    assert float(clone(*args, negative_ids=[2, 3])) == pytest.approx(
        float(task(*args, negative_ids=[2, 3])))
    assert clone.get_config()["num_negatives"] == 3


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_negatives=0), "num_negatives"),
    (dict(temperature=0.0), "temperature"),
    (dict(sampling_probability=[0.0, 0.0]), "no mass"),
    (dict(sampling_probability=[0.1, -1.0, 2.0]), "non-negative"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SampledSoftmax(**kwargs)
