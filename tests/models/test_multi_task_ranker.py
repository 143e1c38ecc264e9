"""MultiTaskRanker and every model on it: probabilities, ctcvr as a product of
probabilities, gates as distributions, config/checkpoint round-trips, loss weights."""

import numpy as np
import pytest
import tensorflow as tf

import towerkit  # noqa: F401
from towerkit.models import AITM, CGC, ESMM, MMoE, PLE, SharedBottom

BATCH = 64


MODELS = {
    "shared_bottom": lambda features: SharedBottom(features(), ("click", "like", "rating"),
                                                   bottom_sizes=[16], tower_sizes=[8]),
    "mmoe": lambda features: MMoE(features(), ("click", "like"), num_experts=3,
                                  expert_sizes=[16], tower_sizes=[8], seed=1),
    "cgc": lambda features: CGC(features(), ("click", "like"), expert_sizes=[16],
                                tower_sizes=[8], seed=1),
    "ple": lambda features: PLE(features(), ("click", "like"), num_levels=2, expert_sizes=[16],
                                tower_sizes=[8], seed=1),
    "esmm": lambda features: ESMM(features(), tower_sizes=[8]),
    "aitm": lambda features: AITM(features(), tower_sizes=[8]),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_outputs_are_probabilities_and_ctcvr_is_the_product(name, features, batch):
    model = MODELS[name](features)
    out = {k: v.numpy() for k, v in model(batch).items()}
    for task in ("click", "like", "ctcvr"):
        assert out[task].shape == (BATCH,)
        assert ((out[task] >= 0) & (out[task] <= 1)).all()
    if name == "aitm":  # like is derived: p_ctcvr / p_click, capped at 1
        np.testing.assert_allclose(out["like"], np.minimum(out["ctcvr"] / out["click"], 1),
                                   rtol=1e-5)
    else:  # probabilities multiplied, not logits
        np.testing.assert_allclose(out["ctcvr"], out["click"] * out["like"], rtol=1e-6)
    for weights in model.gate_weights(batch).values():
        w = weights.numpy()
        assert (w >= 0).all()
        np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_config_roundtrip_and_one_training_step(name, tmp_path, features, batch):
    model = MODELS[name](features)
    expected = model(batch)
    clone = tf.keras.layers.deserialize(tf.keras.layers.serialize(model))
    assert type(clone) is type(model) and clone.get_config() == model.get_config()
    clone(batch)
    clone.set_weights(model.get_weights())
    for task, value in clone(batch).items():
        np.testing.assert_allclose(value.numpy(), expected[task].numpy(), rtol=1e-6)
    # Checkpoint round-trip (how runs are saved).
    tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt"))
    fresh = tf.keras.layers.deserialize(tf.keras.layers.serialize(model))
    fresh(batch)
    tf.train.Checkpoint(model=fresh).read(str(tmp_path / "ckpt")).assert_existing_objects_matched()
    for task, value in fresh(batch).items():
        np.testing.assert_allclose(value.numpy(), expected[task].numpy(), rtol=1e-6)
    model.compile(optimizer=tf.keras.optimizers.Adam(0.01))
    before = float(model.compute_loss(batch))
    model.fit(tf.data.Dataset.from_tensor_slices(batch).batch(BATCH).repeat(8), verbose=0)
    assert float(model.compute_loss(batch)) < before


def test_loss_weights_scale_task_losses_and_bad_weights_raise(features, batch):
    model = SharedBottom(features(), ("click", "like"), loss_weights={"like": 0.0},
                         bottom_sizes=[8], tower_sizes=[4])
    out = model(batch)
    p = np.clip(out["click"].numpy(), 1e-7, 1 - 1e-7)
    y = batch["click"]
    np.testing.assert_allclose(float(model.compute_loss(batch)),
                               -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)), rtol=1e-5)
    with pytest.raises(ValueError, match="does not train"):
        ESMM(features(), loss_weights={"like": 1.0})
    with pytest.raises(ValueError, match="tasks must be distinct"):
        SharedBottom(features(), ("click", "clicks"))
    with pytest.raises(ValueError, match="lacks the label features"):
        model.compute_loss({"user_id": batch["user_id"], "item_id": batch["item_id"]})
