"""Exact streaming AUC against a pairwise NumPy oracle, ties and masks included."""

import numpy as np
import pytest

from towerkit.evaluation import StreamingAUC, roc_auc


def _pairwise_auc(labels, scores):
    """Oracle: P(s_pos > s_neg) + 0.5 P(tie), over every (positive, negative) pair."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    diff = pos[:, None] - neg[None, :]
    return ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size


def test_hand_value_with_ties():
    # Positives 0.8, 0.4; negatives 0.4, 0.1. Pairs: (0.8, 0.4) 1, (0.8, 0.1) 1, (0.4, 0.4) 0.5,
    # (0.4, 0.1) 1 -> 3.5 / 4 = 0.875.
    assert roc_auc([1, 1, 0, 0], [0.8, 0.4, 0.4, 0.1]) == pytest.approx(0.875)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_streaming_equals_oracle_over_whole_split_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = (rng.random(5000) < 0.3).astype(float)
    scores = np.round(rng.random(5000) + 0.3 * labels, 2)  # rounding makes many ties
    auc = StreamingAUC()
    for start in range(0, 5000, 333):
        auc.update(labels[start:start + 333], scores[start:start + 333])
    assert auc.count == 5000
    assert auc.result() == pytest.approx(_pairwise_auc(labels, scores), abs=1e-12)


def test_mean_of_per_batch_auc_is_not_the_split_auc():
    # Batch 1 has higher scores for everything: per batch each AUC is 1, but across batches a
    # negative of batch 1 outranks the positive of batch 2.
    labels = np.array([1, 0, 1, 0])
    scores = np.array([0.9, 0.8, 0.2, 0.1])
    auc = StreamingAUC()
    auc.update(labels[:2], scores[:2])
    auc.update(labels[2:], scores[2:])
    assert roc_auc(labels[:2], scores[:2]) == 1.0 and roc_auc(labels[2:], scores[2:]) == 1.0
    assert auc.result() == pytest.approx(0.75)  # (1 + 1 + 0 + 1) / 4


def test_mask_drops_rows_and_validation():
    auc = StreamingAUC()
    auc.update([1, 0, 1], [0.1, 0.5, 0.9], weights=[0, 1, 1])
    assert auc.result() == 1.0 and auc.count == 2
    assert np.isnan(roc_auc([1, 1], [0.2, 0.3]))
    with pytest.raises(ValueError, match="0/1 mask"):
        auc.update([1], [0.3], weights=[0.5])
    with pytest.raises(ValueError, match="differ in length"):
        auc.update([1, 0], [0.3])
    with pytest.raises(ValueError, match="0 or 1"):
        roc_auc([2, 0], [0.1, 0.2])
