"""ExtractionLayer (a CGC/PLE level): shared gate only below the last level, hand value,
round-trips."""

import numpy as np
import pytest
import tensorflow as tf

import towerkit  # noqa: F401
from towerkit.layers import ExtractionLayer


def test_extraction_layer_shapes_and_shared_gate_only_when_not_final():
    x = tf.random.stateless_normal([8, 6], seed=[1, 1])
    final = ExtractionLayer(2, 1, 2, [5], final=True, seed=1)
    outputs, gates = final([x, x, x])
    assert [o.shape for o in outputs] == [(8, 5), (8, 5)]
    assert [g.shape for g in gates] == [(8, 3), (8, 3)]
    assert final.shared_gate is None
    lower = ExtractionLayer(2, 1, 2, [5], final=False, seed=1)
    outputs, gates = lower([x, x, x])
    assert len(outputs) == 3 and gates[-1].shape == (8, 2 * 1 + 2)
    for g in gates:
        np.testing.assert_allclose(g.numpy().sum(axis=1), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="takes 3 inputs"):
        final([x, x])


def test_extraction_layer_golden_value():
    # One task, one task expert, one shared expert, width 1, kernels set by hand:
    # task expert relu(2x) = 2, shared expert relu(3x) = 3 for x = 1; gate logits (0, 0) ->
    # weights (1/2, 1/2) -> output 2.5.
    layer = ExtractionLayer(1, 1, 1, [1], final=True)
    x = tf.ones([1, 1])
    layer([x, x])
    layer.task_experts[0].experts[0][0].kernel.assign([[2.0]])
    layer.shared_experts.experts[0][0].kernel.assign([[3.0]])
    layer.task_gates[0].dense.kernel.assign(tf.zeros([1, 2]))
    outputs, gates = layer([x, x])
    np.testing.assert_allclose(outputs[0].numpy(), [[2.5]], rtol=1e-6)
    np.testing.assert_allclose(gates[0].numpy(), [[0.5, 0.5]], rtol=1e-6)


def test_config_and_saved_model_roundtrip(check_layer_roundtrips):
    check_layer_roundtrips(ExtractionLayer(2, 1, 1, [4], final=False, seed=3), ([tf.ones([2, 5])] * 3,))
