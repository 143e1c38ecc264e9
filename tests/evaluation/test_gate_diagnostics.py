"""GateStatistics: mean weight per expert and entropy against hand values."""

import numpy as np
import pytest

from towerkit.evaluation import GateStatistics


def test_gate_statistics_hand_values():
    stats = GateStatistics()
    stats.update({"click": np.array([[1.0, 0.0], [0.5, 0.5]])})
    stats.update({"click": np.array([[0.5, 0.5], [0.5, 0.5]])})
    result = stats.result()["click"]
    # Mean weights: ((1 + 0.5 * 3) / 4, (0 + 0.5 * 3) / 4) = (0.625, 0.375);
    # entropy: (0 + 3 ln 2) / 4 = 0.519860.
    np.testing.assert_allclose(result["mean_weights"], [0.625, 0.375])
    assert result["entropy"] == pytest.approx(3 * np.log(2) / 4)
    assert result["max_entropy"] == pytest.approx(np.log(2))
    with pytest.raises(ValueError, match="summing to 1"):
        stats.update({"like": np.array([[0.2, 0.2]])})
