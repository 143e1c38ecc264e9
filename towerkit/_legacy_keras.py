"""Switches TensorFlow to legacy Keras (tf-keras 2.x) before TensorFlow is imported.

TensorFlow Recommenders 0.7.7 only works with Keras 2 (`tf-keras`). TensorFlow 2.16+
defaults `tf.keras` to Keras 3 unless `TF_USE_LEGACY_KERAS=1` is set *before*
`tf.keras` is first resolved. This module sets the variable and verifies the result.
"""

import os
import sys

_ENV = "TF_USE_LEGACY_KERAS"
_FIX = (
    "Fix: import towerkit (or tensorflow_recommenders) before anything that imports "
    "tensorflow/keras, or set the environment variable TF_USE_LEGACY_KERAS=1 before "
    "starting Python (e.g. `export TF_USE_LEGACY_KERAS=1`)."
)


def ensure_legacy_keras() -> None:
    """Makes `tf.keras` resolve to tf-keras 2.x, or raises an actionable ImportError.

    Raises:
      ImportError: `TF_USE_LEGACY_KERAS` was explicitly disabled, or TensorFlow
        already bound `tf.keras` to Keras 3 before towerkit was imported.
    """
    value = os.environ.get(_ENV)
    if value is not None and value.strip().lower() not in ("1", "true", "yes"):
        raise ImportError(
            f"towerkit needs legacy Keras, but {_ENV}={value!r} is set in the environment. "
            f"Unset it or set {_ENV}=1."
        )
    os.environ[_ENV] = "1"
    import tensorflow as tf  # noqa: E402  (must come after the switch)

    bound_to = getattr(tf.keras, "__name__", "")
    if not bound_to.startswith("tf_keras"):
        import keras  # noqa: E402  (Keras 3, only to name its version)

        version = getattr(keras, "__version__", "3")
        already = "tensorflow" in sys.modules
        raise ImportError(
            f"towerkit needs tf.keras to be tf-keras 2.x (TF_USE_LEGACY_KERAS=1), but "
            f"tf.keras is Keras {version or 'unknown'}: TensorFlow resolved tf.keras to "
            f"Keras 3 before towerkit was imported"
            f"{' (tensorflow was already imported)' if already else ''}. {_FIX}"
        )
