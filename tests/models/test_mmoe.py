"""MMoE: experts start different, so the task gates and outputs differ."""

import numpy as np

import towerkit  # noqa: F401
from towerkit.models import MMoE


def test_mixture_experts_start_different_so_task_outputs_differ(features, batch):
    model = MMoE(features(), ("click", "like"), num_experts=3, expert_sizes=[16],
                 tower_sizes=[8], seed=1)
    x = model.features(batch)
    experts = model.experts(x).numpy()
    for i in range(3):
        for j in range(i + 1, 3):
            assert not np.allclose(experts[:, i], experts[:, j])
    gates = model.gate_weights(batch)
    assert not np.allclose(gates["click"].numpy(), gates["like"].numpy())
