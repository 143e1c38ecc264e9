"""PLE: one level equals CGC (same weights, same outputs); lower levels have a shared gate."""

import numpy as np

import towerkit  # noqa: F401
from towerkit.models import CGC, PLE

BATCH = 64


def test_ple_with_one_level_equals_cgc(features, batch):
    cgc = CGC(features(), ("click", "like"), expert_sizes=[16], tower_sizes=[8], seed=3)
    ple = PLE(features(), ("click", "like"), num_levels=1, expert_sizes=[16], tower_sizes=[8],
              seed=4)
    cgc(batch)
    ple(batch)
    assert [w.shape for w in cgc.weights] == [w.shape for w in ple.weights]
    assert ple.levels[0].shared_gate is None  # the last level has no shared gate
    ple.set_weights(cgc.get_weights())
    for task, value in cgc(batch).items():
        np.testing.assert_allclose(ple(batch)[task].numpy(), value.numpy(), rtol=1e-6)
    assert cgc.gate_weights(batch).keys() == ple.gate_weights(batch).keys()
    # Two levels: the lower level has a shared gate over all 2 * 2 + 2 experts.
    two = PLE(features(), ("click", "like"), num_levels=2, expert_sizes=[16], seed=4)
    assert two.gate_weights(batch)["level_0/shared"].shape == (BATCH, 6)
