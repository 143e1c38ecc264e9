"""Gate diagnostics of mixture-of-experts rankers: mean weight per expert and gate entropy."""

from __future__ import annotations

from typing import Mapping

import numpy as np

__all__ = ["GateStatistics"]


class GateStatistics:
    """Accumulates gate weights over batches: per gate, the mean weight of each expert and the
    mean entropy (nats) of the per-example distributions.

    A gate whose mean weights are near uniform with entropy near `log(num_experts)` does not
    route; one with low entropy routes each example to few experts; all tasks giving the same
    mean weights suggests the experts were never told apart.

    Example:
    ```python
    stats = GateStatistics()
    stats.update(model.gate_weights(batch))  # {"click": [batch, 4], ...}
    stats.result()  # {"click": {"mean_weights": [...], "entropy": 1.2, "max_entropy": 1.39}}
    ```
    """

    def __init__(self):
        self._sums, self._entropy, self._count = {}, {}, {}

    def update(self, gates: Mapping[str, np.ndarray]) -> None:
        """Adds one batch of `{gate name: [batch, num_experts]}` weights.

        Raises:
          ValueError: a gate is not 2-D or its rows are not distributions.
        """
        for name, weights in gates.items():
            w = np.asarray(weights, dtype=np.float64)
            if w.ndim != 2 or (w < 0).any() or not np.allclose(w.sum(axis=1), 1.0, atol=1e-4):
                raise ValueError(f"gate {name!r} must be [batch, num_experts] rows summing to 1.")
            entropy = -(w * np.log(np.clip(w, 1e-12, None))).sum(axis=1)
            self._sums[name] = self._sums.get(name, 0.0) + w.sum(axis=0)
            self._entropy[name] = self._entropy.get(name, 0.0) + entropy.sum()
            self._count[name] = self._count.get(name, 0) + len(w)

    def result(self) -> dict:
        """`{gate: {"mean_weights": [num_experts], "entropy": float, "max_entropy": float}}`."""
        return {name: {"mean_weights": [float(v) for v in self._sums[name] / self._count[name]],
                       "entropy": float(self._entropy[name] / self._count[name]),
                       "max_entropy": float(np.log(len(self._sums[name])))}
                for name in sorted(self._sums)}
