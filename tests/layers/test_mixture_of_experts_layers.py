"""Experts, ExpertGate, ExtractionLayer and AttentionTransfer: golden values, distributions,
independent initialisation, config and SavedModel round-trips."""

import numpy as np
import pytest
import tensorflow as tf

import towerkit  # noqa: F401
from towerkit.layers import AttentionTransfer, ExpertGate, Experts, ExtractionLayer


def _saved_model_roundtrip(layer, inputs, tmp_path):
    """Saves `layer` inside a tf.Module with a traced call, reloads, returns both outputs."""
    specs = tf.nest.map_structure(lambda x: tf.TensorSpec(x.shape, x.dtype), inputs)
    module = tf.Module()
    module.layer = layer
    module.f = tf.function(lambda *args: layer(*args), input_signature=specs)
    expected = module.f(*inputs)
    tf.saved_model.save(module, str(tmp_path / "m"))
    loaded = tf.saved_model.load(str(tmp_path / "m"))
    return expected, loaded.f(*inputs)


def _assert_structures_close(a, b):
    for x, y in zip(tf.nest.flatten(a), tf.nest.flatten(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-6)


def test_experts_differ_at_initialisation_seeded_and_unseeded():
    x = tf.random.stateless_normal([16, 10], seed=[1, 2])
    for seed in (None, 7):
        experts = Experts(4, [8, 6], seed=seed)
        out = experts(x).numpy()
        assert out.shape == (16, 4, 6)
        kernels = [layers[0].kernel.numpy() for layers in experts.experts]
        for i in range(4):
            for j in range(i + 1, 4):
                assert not np.allclose(kernels[i], kernels[j]), (seed, i, j)
                assert not np.allclose(out[:, i], out[:, j]), (seed, i, j)


def test_experts_with_the_same_seed_are_reproducible():
    x = tf.ones([2, 3])
    np.testing.assert_array_equal(Experts(2, [4], seed=3)(x).numpy(),
                                  Experts(2, [4], seed=3)(x).numpy())


def test_experts_golden_value():
    # One expert, one ReLU layer: relu(x W + b) with W = [[1, -1], [2, 0]], b = 0.
    # x = (1, 1): (1 + 2, -1 + 0) -> relu -> (3, 0).
    experts = Experts(1, [2])
    experts(tf.zeros([1, 2]))
    experts.experts[0][0].kernel.assign([[1.0, -1.0], [2.0, 0.0]])
    np.testing.assert_allclose(experts(tf.constant([[1.0, 1.0]])).numpy(), [[[3.0, 0.0]]])


def test_experts_validation():
    with pytest.raises(ValueError, match="num_experts"):
        Experts(0, [4])
    with pytest.raises(ValueError, match="layer_sizes"):
        Experts(2, [])


def test_gate_weights_are_distributions_and_mix_golden():
    gate = ExpertGate(3, seed=0)
    x = tf.random.stateless_normal([32, 5], seed=[3, 4]) * 10.0
    experts = tf.random.stateless_normal([32, 3, 4], seed=[5, 6])
    mixed, weights = gate(x, experts)
    w = weights.numpy()
    assert w.shape == (32, 3) and (w >= 0).all()
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(mixed.numpy(), np.einsum("be,bed->bd", w, experts.numpy()),
                               rtol=1e-5, atol=1e-6)
    # Hand value: kernel 0, bias (0, ln 3, -inf) -> weights (1/4, 3/4, 0);
    # experts (0, 0), (4, 8), (9, 9) -> mixed 3/4 * (4, 8) = (3, 6).
    gate.dense.kernel.assign(tf.zeros([5, 3]))
    gate.dense.bias.assign([0.0, np.log(3.0), -np.inf])
    mixed, weights = gate(tf.ones([1, 5]), tf.constant([[[0.0, 0.0], [4.0, 8.0], [9.0, 9.0]]]))
    np.testing.assert_allclose(weights.numpy(), [[0.25, 0.75, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(mixed.numpy(), [[3.0, 6.0]], rtol=1e-6)


def test_gate_rejects_wrong_number_of_experts():
    with pytest.raises(ValueError, match="weighs 3 experts"):
        ExpertGate(3)(tf.ones([2, 4]), tf.ones([2, 2, 5]))


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


def test_attention_transfer_golden_value():
    # K = 2, W_info = I, b = 0: p = relu(q_prev) = (1, 0); q = (0, 2).
    # W_q = W_k = I: scores = (|p|^2, |q|^2) / sqrt(2) = (1, 4) / 1.41421 = (0.70711, 2.82843);
    # softmax -> w = (1, e^2.12132) / (1 + e^2.12132) = (1, 8.34215) / 9.34215
    #            = (0.107042, 0.892958).
    # W_v = 2 I: z = w_p * 2p + w_q * 2q = (0.214084, 3.571832).
    ait = AttentionTransfer(units=2)
    q, q_prev = tf.constant([[0.0, 2.0]]), tf.constant([[1.0, -3.0]])
    ait(q, q_prev)
    ait.info.kernel.assign(tf.eye(2))
    ait.info.bias.assign(tf.zeros([2]))
    ait.w_query.assign(tf.eye(2))
    ait.w_key.assign(tf.eye(2))
    ait.w_value.assign(2.0 * tf.eye(2))
    z, weights = ait(q, q_prev)
    np.testing.assert_allclose(weights.numpy(), [[0.107042, 0.892958]], rtol=1e-5)
    np.testing.assert_allclose(z.numpy(), [[0.214084, 3.571832]], rtol=1e-5)


def test_attention_transfer_info_vector_is_dense_relu_and_rejects_wrong_width():
    ait = AttentionTransfer(units=32)
    assert ait.info.units == 32 and ait.info.activation.__name__ == "relu"
    with pytest.raises(ValueError, match="must be \\[batch, 32\\]"):
        ait(tf.ones([2, 16]), tf.ones([2, 8]))


@pytest.mark.parametrize("make, inputs", [
    (lambda: Experts(3, [4, 2], seed=1), lambda: (tf.ones([2, 5]),)),
    (lambda: ExpertGate(3, seed=2), lambda: (tf.ones([2, 5]), tf.ones([2, 3, 4]))),
    (lambda: ExtractionLayer(2, 1, 1, [4], final=False, seed=3),
     lambda: ([tf.ones([2, 5])] * 3,)),
    (lambda: AttentionTransfer(units=4), lambda: (tf.ones([2, 4]), tf.ones([2, 6]))),
])
def test_config_and_saved_model_roundtrip(make, inputs, tmp_path):
    layer = make()
    args = inputs()
    expected = layer(*args)
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    clone(*args)
    clone.set_weights(layer.get_weights())
    _assert_structures_close(expected, clone(*args))
    revived = tf.keras.layers.deserialize(tf.keras.layers.serialize(layer))
    assert type(revived) is type(layer)
    before, after = _saved_model_roundtrip(layer, args, tmp_path)
    _assert_structures_close(before, after)
    _assert_structures_close(expected, after)
