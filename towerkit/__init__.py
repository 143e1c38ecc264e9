"""towerkit: two-tower retrieval, ANN indexes and TensorFlow Serving, built on TFRS.

Importing towerkit switches TensorFlow to legacy Keras (`TF_USE_LEGACY_KERAS=1`), which
TensorFlow Recommenders requires. It must therefore be imported before anything that
resolves `tf.keras`; otherwise a clear ImportError explains the fix.

Data flows one way through the subpackages:
`data -> features -> towers -> tasks/models -> index -> serving`.
"""

from towerkit._legacy_keras import ensure_legacy_keras as _ensure_legacy_keras

_ensure_legacy_keras()

__version__ = "0.1.0"

__all__ = ["__version__"]
