"""The sequential benchmark protocol on the real movielens/100k-ratings (issue 5 numbers)."""

import numpy as np
import pytest

import towerkit  # noqa: F401
from towerkit.data.sequential_protocol import SequentialProtocol
from towerkit.evaluation import evaluate_topn, popularity_topn


@pytest.fixture(scope="module")
def protocol():
    return SequentialProtocol.from_tfds("100k-ratings")


def test_protocol_numbers(protocol):
    assert protocol.num_items == 1349
    assert len(protocol.train_examples["target"]) == 77377
    assert (len(protocol.train_users), len(protocol.valid_users), len(protocol.test_users)) == (754, 94, 95)
    assert len(protocol.split("test")) == 95
    # Users are disjoint and cover everyone.
    all_users = np.concatenate([protocol.train_users, protocol.valid_users, protocol.test_users])
    assert np.array_equal(np.sort(all_users), np.arange(protocol.sequences.num_users))


def test_popularity_baseline_matches_issue(protocol):
    test = protocol.split("test")
    top = popularity_topn(protocol.train_item_counts, len(test), 50)
    metrics = evaluate_topn(top, test.ground_truth)
    assert round(metrics["recall@50"], 3) == 0.136


def test_real_training_examples_have_no_leakage(protocol):
    ex, s = protocol.train_examples, protocol.sequences
    rng = np.random.default_rng(0)
    for i in rng.choice(len(ex["target"]), 500, replace=False):
        start = s.offsets[ex["user"][i]]
        k = ex["position"][i]
        h = ex["history_length"][i]
        assert h == min(k, 20)
        # The history is exactly positions [k - h, k) of that user: nothing at or after k.
        np.testing.assert_array_equal(ex["history"][i, :h], s.items[start + k - h:start + k])
        assert s.timestamps[start + k - h:start + k].max() <= s.timestamps[start + k]


def test_eval_split_cut(protocol):
    test = protocol.split("test")
    for j, u in enumerate(test.users):
        seq = protocol.sequences.sequence(u)
        cut = max(1, (4 * len(seq)) // 5)  # floor(80%) in exact integer arithmetic
        np.testing.assert_array_equal(test.ground_truth[j], seq[cut:])
        h = test.history_length[j]
        np.testing.assert_array_equal(test.history[j, :h], seq[max(0, cut - 20):cut])


def test_train_dataset(protocol):
    batch = next(iter(protocol.train_dataset(batch_size=8, seed=0)))
    assert batch["history"].shape == (8, 20)
    assert set(batch) >= {"history", "history_length", "target", "example_age", "user_age"}
    with pytest.raises(ValueError, match="Unknown split"):
        protocol.split("dev")
