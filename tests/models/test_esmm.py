"""ESMM: pCTCVR = pCTR * pCVR; the CVR tower learns only through pCTCVR."""

import numpy as np
import tensorflow as tf

import towerkit  # noqa: F401
from towerkit.models import ESMM


def test_esmm_cvr_tower_learns_only_through_pctcvr(features, batch):
    model = ESMM(features(), tower_sizes=[8])
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
    # pCTCVR is the product of the two probabilities (not of logits).
    out = model(batch)
    np.testing.assert_allclose(out["ctcvr"].numpy(), (out["click"] * out["like"]).numpy(),
                               rtol=1e-6)
