"""One extraction level of CGC / PLE: task-specific and shared experts, gated per task."""

from __future__ import annotations

from typing import Optional, Sequence

import tensorflow as tf

from towerkit.layers.expert_gate import ExpertGate
from towerkit.layers.experts import Experts

__all__ = ["ExtractionLayer"]


@tf.keras.utils.register_keras_serializable(package="towerkit")
class ExtractionLayer(tf.keras.layers.Layer):
    """Customized Gate Control: each task mixes its own experts and the shared experts.

    Task `t`'s gate weighs `[task t's experts, shared experts]` and looks at task `t`'s input.
    A non-final level (PLE's lower levels) also has a shared gate that weighs *all* experts
    (every task's and the shared ones) from the shared input, producing the next level's shared
    input; the final level has no shared gate (Tang et al., Sec. 4.3, Fig. 5). CGC is one final
    level; PLE stacks `L - 1` non-final levels and one final level.

    Example:
    ```python
    level = ExtractionLayer(num_tasks=2, num_task_experts=1, num_shared_experts=1,
                            layer_sizes=[32], final=True)
    x = tf.zeros([8, 100])
    outputs, gates = level([x, x, x])  # 2 x [8, 32], 2 x [8, 2]
    ```

    Args:
      num_tasks: int. Number of tasks (>= 1).
      num_task_experts: int. Experts per task (>= 1).
      num_shared_experts: int. Shared experts (>= 1).
      layer_sizes: Sequence[int]. Every expert's dense layer widths.
      final: bool. Whether this is the last level (no shared gate, no shared output).
      seed: int or None. Base seed of the initializers; each expert bank and gate gets its own
        offset, so no two experts start alike.

    Call args:
      inputs: list of `num_tasks + 1` tensors `[batch, in_dim]`: each task's input, then the
        shared input (the first level passes the same tensor `num_tasks + 1` times).

    Returns:
      `(outputs, gates)`: `outputs` is a list of `num_tasks` tensors `[batch, units]`, followed
      by the shared output when not `final`; `gates` lists the matching gate weights,
      `[batch, num_task_experts + num_shared_experts]` per task and
      `[batch, num_tasks * num_task_experts + num_shared_experts]` for the shared gate.

    Raises:
      ValueError: counts below 1, or a wrong number of inputs.

    References:
      Tang et al., "Progressive Layered Extraction (PLE): A Novel Multi-Task Learning (MTL) Model
      for Personalized Recommendations", RecSys 2020: https://doi.org/10.1145/3383313.3412236
    """

    def __init__(self, num_tasks: int, num_task_experts: int, num_shared_experts: int,
                 layer_sizes: Sequence[int], final: bool = True, seed: Optional[int] = None,
                 **kwargs):
        super().__init__(**kwargs)
        for name, value in (("num_tasks", num_tasks), ("num_task_experts", num_task_experts),
                            ("num_shared_experts", num_shared_experts)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}.")
        self.num_tasks, self.num_task_experts = num_tasks, num_task_experts
        self.num_shared_experts, self.layer_sizes = num_shared_experts, [int(s) for s in
                                                                          layer_sizes]
        self.final, self.seed = bool(final), seed

        def offset(i):
            return None if seed is None else int(seed) + 100_000 * i

        self.task_experts = [Experts(num_task_experts, self.layer_sizes, seed=offset(t),
                                     name=f"task_{t}_experts") for t in range(num_tasks)]
        self.shared_experts = Experts(num_shared_experts, self.layer_sizes,
                                      seed=offset(num_tasks), name="shared_experts")
        self.task_gates = [ExpertGate(num_task_experts + num_shared_experts,
                                      seed=offset(num_tasks + 1 + t), name=f"task_{t}_gate")
                           for t in range(num_tasks)]
        self.shared_gate = None if self.final else ExpertGate(
            num_tasks * num_task_experts + num_shared_experts, seed=offset(2 * num_tasks + 1),
            name="shared_gate")

    def call(self, inputs: Sequence[tf.Tensor], training: bool = False) -> tuple:
        inputs = list(inputs)
        if len(inputs) != self.num_tasks + 1:
            raise ValueError(f"{self.name} takes {self.num_tasks + 1} inputs (one per task, then "
                             f"the shared input), got {len(inputs)}.")
        task_out = [experts(x) for experts, x in zip(self.task_experts, inputs)]
        shared_out = self.shared_experts(inputs[-1])
        outputs, gates = [], []
        for t, gate in enumerate(self.task_gates):
            mixed, weights = gate(inputs[t], tf.concat([task_out[t], shared_out], axis=1))
            outputs.append(mixed)
            gates.append(weights)
        if self.shared_gate is not None:
            mixed, weights = self.shared_gate(inputs[-1], tf.concat(task_out + [shared_out],
                                                                    axis=1))
            outputs.append(mixed)
            gates.append(weights)
        return outputs, gates

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"num_tasks": self.num_tasks, "num_task_experts": self.num_task_experts,
                       "num_shared_experts": self.num_shared_experts,
                       "layer_sizes": list(self.layer_sizes), "final": self.final,
                       "seed": self.seed})
        return config
