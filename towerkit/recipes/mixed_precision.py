"""`mixed_precision_policy`: train a recipe under `mixed_float16`, save float32 layers."""

from __future__ import annotations

import contextlib

import tensorflow as tf

__all__ = ["mixed_precision_policy", "float32_layer_config", "check_mixed_precision"]

MIXED_POLICY = "mixed_float16"  # never bfloat16: bf16 matmuls trap on some CPUs (SIGILL)


def check_mixed_precision(value) -> bool:
    """The `mixed_precision` param: a bool, else a TypeError naming the fix."""
    if not isinstance(value, bool):
        raise TypeError(f"mixed_precision must be true or false (--mixed-precision / "
                        f"--no-mixed-precision), got {value!r}.")
    return value


@contextlib.contextmanager
def mixed_precision_policy(enabled: bool):
    """Sets the global Keras policy to `mixed_float16` inside the block when `enabled`.

    Layers built inside compute in float16 with float32 variables, and `compile` wraps the
    optimizer in a `LossScaleOptimizer` (towerkit's `Model.train_step` applies the scale). The
    previous global policy is restored on exit, also after an exception.

    Example:
    ```python
    with mixed_precision_policy(params["mixed_precision"]):
        model = build_model(); model.compile(...); model.fit(...)
    ```
    """
    previous = tf.keras.mixed_precision.global_policy()
    if enabled:
        tf.keras.mixed_precision.set_global_policy(MIXED_POLICY)
    try:
        yield
    finally:
        tf.keras.mixed_precision.set_global_policy(previous)


def float32_layer_config(config):
    """A serialized layer config with every `mixed_float16` dtype policy replaced by float32.

    A run trained under mixed precision saves its towers this way, so evaluation, export and
    serving load float32 layers (same float32 variables; float32 outputs for the indexes).
    """
    if isinstance(config, dict):
        if (config.get("class_name") == "Policy"
                and config.get("config", {}).get("name") == MIXED_POLICY):
            return "float32"
        return {k: ("float32" if k == "dtype" and v == MIXED_POLICY else float32_layer_config(v))
                for k, v in config.items()}
    if isinstance(config, list):
        return [float32_layer_config(v) for v in config]
    return config
