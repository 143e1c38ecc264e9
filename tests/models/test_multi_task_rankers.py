"""Multi-task rankers: PLE(1) == CGC, ESMM's product and CVR gradient, AITM, gates, round-trips."""

import numpy as np
import pytest
import tensorflow as tf

import towerkit  # noqa: F401
from towerkit.features import AttributeEmbedding, FeatureSet
from towerkit.models import AITM, CGC, ESMM, MMoE, PLE, SharedBottom

BATCH = 64


def _features():
    users = [str(i) for i in range(20)]
    movies = [str(i) for i in range(30)]
    return FeatureSet({
        "user_id": AttributeEmbedding(users, [[1 + i % 3] for i in range(20)], 4, dim=4,
                                      id_dim=4),
        "movie_id": AttributeEmbedding(movies, [[1 + i % 5, 6] for i in range(30)], 7, dim=4,
                                       id_dim=4),
    })


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    click = (rng.random(BATCH) < 0.5).astype(np.float32)
    like = click * (rng.random(BATCH) < 0.5)
    return {"user_id": rng.integers(0, 20, BATCH).astype(str).astype(bytes),
            "movie_id": rng.integers(0, 30, BATCH).astype(str).astype(bytes),
            "click": click, "like": like.astype(np.float32), "ctcvr": (click * like).astype(
                np.float32), "rating": (click * rng.integers(1, 6, BATCH)).astype(np.float32)}


MODELS = {
    "shared_bottom": lambda: SharedBottom(_features(), ("click", "like", "rating"),
                                          bottom_sizes=[16], tower_sizes=[8]),
    "mmoe": lambda: MMoE(_features(), ("click", "like"), num_experts=3, expert_sizes=[16],
                         tower_sizes=[8], seed=1),
    "cgc": lambda: CGC(_features(), ("click", "like"), expert_sizes=[16], tower_sizes=[8],
                       seed=1),
    "ple": lambda: PLE(_features(), ("click", "like"), num_levels=2, expert_sizes=[16],
                       tower_sizes=[8], seed=1),
    "esmm": lambda: ESMM(_features(), tower_sizes=[8]),
    "aitm": lambda: AITM(_features(), tower_sizes=[8]),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_outputs_are_probabilities_and_ctcvr_is_the_product(name):
    model = MODELS[name]()
    out = {k: v.numpy() for k, v in model(_batch()).items()}
    for task in ("click", "like", "ctcvr"):
        assert out[task].shape == (BATCH,)
        assert ((out[task] >= 0) & (out[task] <= 1)).all()
    if name == "aitm":  # like is derived: p_ctcvr / p_click, capped at 1
        np.testing.assert_allclose(out["like"], np.minimum(out["ctcvr"] / out["click"], 1),
                                   rtol=1e-5)
    else:  # probabilities multiplied, not logits
        np.testing.assert_allclose(out["ctcvr"], out["click"] * out["like"], rtol=1e-6)
    for weights in model.gate_weights(_batch()).values():
        w = weights.numpy()
        assert (w >= 0).all()
        np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_config_roundtrip_and_one_training_step(name, tmp_path):
    model = MODELS[name]()
    batch = _batch()
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


def test_mixture_experts_start_different_so_task_outputs_differ():
    model = MODELS["mmoe"]()
    batch = _batch()
    x = model.features(batch)
    experts = model.experts(x).numpy()
    for i in range(3):
        for j in range(i + 1, 3):
            assert not np.allclose(experts[:, i], experts[:, j])
    gates = model.gate_weights(batch)
    assert not np.allclose(gates["click"].numpy(), gates["like"].numpy())


def test_ple_with_one_level_equals_cgc():
    cgc = CGC(_features(), ("click", "like"), expert_sizes=[16], tower_sizes=[8], seed=3)
    ple = PLE(_features(), ("click", "like"), num_levels=1, expert_sizes=[16], tower_sizes=[8],
              seed=4)
    batch = _batch()
    cgc(batch)
    ple(batch)
    assert [w.shape for w in cgc.weights] == [w.shape for w in ple.weights]
    assert ple.levels[0].shared_gate is None  # the last level has no shared gate
    ple.set_weights(cgc.get_weights())
    for task, value in cgc(batch).items():
        np.testing.assert_allclose(ple(batch)[task].numpy(), value.numpy(), rtol=1e-6)
    assert cgc.gate_weights(batch).keys() == ple.gate_weights(batch).keys()
    # Two levels: the lower level has a shared gate over all 2 * 2 + 2 experts.
    two = PLE(_features(), ("click", "like"), num_levels=2, expert_sizes=[16], seed=4)
    assert two.gate_weights(batch)["level_0/shared"].shape == (BATCH, 6)


def test_esmm_cvr_tower_learns_only_through_pctcvr():
    model = MODELS["esmm"]()
    batch = _batch()
    assert model.trained_tasks() == ("click", "ctcvr")
    cvr_vars = model.cvr_tower.trainable_variables

    def grads(features):
        with tf.GradientTape() as tape:
            loss = model.compute_loss(features)
        return tape.gradient(loss, cvr_vars)

    base = grads(batch)
    # The like labels are never read: flipping them (on clicked and non-clicked exposures)
    # changes nothing, i.e. there is no CVR loss on any space, let alone the non-clicked one.
    flipped = dict(batch, like=1.0 - batch["like"])
    for a, b in zip(base, grads(flipped)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # Oracle: the CVR gradient is that of the ctcvr cross-entropy on pCTR * pCVR alone.
    with tf.GradientTape() as tape:
        x = model.features(batch)
        p = tf.reshape(model.ctr_tower(x) * model.cvr_tower(x), [-1])
        y = batch["ctcvr"]
        p = tf.clip_by_value(p, 1e-7, 1 - 1e-7)
        oracle = -tf.reduce_mean(y * tf.math.log(p) + (1 - y) * tf.math.log(1 - p))
    for a, b in zip(base, tape.gradient(oracle, cvr_vars)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-7)
    # A non-clicked exposure moves the CVR tower only through pCTCVR (its ctcvr label 0):
    # with pCTR of that row forced to 0 it would get no gradient at all.
    out = model(batch)
    np.testing.assert_allclose(out["ctcvr"].numpy(), (out["click"] * out["like"]).numpy(),
                               rtol=1e-6)


def test_aitm_loss_is_click_plus_ctcvr_plus_constraint():
    model = MODELS["aitm"]()
    batch = _batch()
    out = model(batch)
    p_click, p_ctcvr = out["click"].numpy(), out["ctcvr"].numpy()

    def bce(y, p):
        p = np.clip(p, 1e-7, 1 - 1e-7)
        return -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))

    expected = (bce(batch["click"], p_click) + bce(batch["ctcvr"], p_ctcvr)
                + 0.6 * np.mean(np.maximum(p_ctcvr - p_click, 0)))
    np.testing.assert_allclose(float(model.compute_loss(batch)), expected, rtol=1e-5)
    transfer = model.gate_weights(batch)["transfer"].numpy()
    assert transfer.shape == (BATCH, 2)


def test_loss_weights_scale_task_losses_and_bad_weights_raise():
    batch = _batch()
    model = SharedBottom(_features(), ("click", "like"), loss_weights={"like": 0.0},
                         bottom_sizes=[8], tower_sizes=[4])
    out = model(batch)
    p = np.clip(out["click"].numpy(), 1e-7, 1 - 1e-7)
    y = batch["click"]
    np.testing.assert_allclose(float(model.compute_loss(batch)),
                               -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)), rtol=1e-5)
    with pytest.raises(ValueError, match="does not train"):
        ESMM(_features(), loss_weights={"like": 1.0})
    with pytest.raises(ValueError, match="tasks must be distinct"):
        SharedBottom(_features(), ("click", "clicks"))
    with pytest.raises(ValueError, match="lacks the label features"):
        model.compute_loss({"user_id": batch["user_id"], "movie_id": batch["movie_id"]})
