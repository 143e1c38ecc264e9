"""AITM: loss = click + ctcvr cross-entropies + the label constraint; transfer weights."""

import numpy as np

import towerkit  # noqa: F401
from towerkit.models import AITM

BATCH = 64


def test_aitm_loss_is_click_plus_ctcvr_plus_constraint(features, batch):
    model = AITM(features(), tower_sizes=[8])
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
