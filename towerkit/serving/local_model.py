"""An export loaded in this process with the TensorFlow runtime, queried like a served model."""

import numpy as np
import tensorflow as tf

from towerkit.serving.check import resolve_version_dir
from towerkit.serving import signatures as signatures_lib
from towerkit.serving.recommendations import InvalidRequestError, Recommendations


class LocalModel:
    """Loads an export with `tf.saved_model.load` and answers like `Client`.

    Example:
      ```python
      model = towerkit.serving.LocalModel("exports/movielens")  # latest version
      model.predict({"user_id": ["42"]}, k=10).ids
      ```

    Args:
      path: str | os.PathLike. A SavedModel version directory or a model base path (latest
        version).

    Raises:
      ValueError: `path` is not an export.
    """

    def __init__(self, path):
        self.path = resolve_version_dir(path)
        self._signatures = signatures_lib.read_signatures(self.path)
        self._loaded = tf.saved_model.load(str(self.path))

    def metadata(self) -> dict:
        """Returns `{name: Signature}`, as `Client.metadata` does."""
        return dict(self._signatures)

    @property
    def max_k(self) -> int | None:
        """The number of results `serving_default` returns (None when not static)."""
        ids = self._signatures.get("serving_default")
        shape = ids.outputs["ids"].shape if ids and "ids" in ids.outputs else None
        return shape[-1] if shape else None

    def predict(self, inputs: dict, k: int | None = None) -> Recommendations:
        """Same contract as `Client.predict`, run in this process.

        Raises:
          InvalidRequestError: wrong input names, dtypes or shapes, or `k` above `max_k`; the
            message names the expected inputs.
        """
        inputs = dict(inputs)
        signature_name = "serving_default"
        if k is not None:
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
                raise InvalidRequestError(f"k must be a positive integer, got {k!r}.")
            k = int(k)
            if self.max_k is not None and k > self.max_k:
                raise InvalidRequestError(f"k={k} exceeds the export's max_k={self.max_k}: ask for "
                                          f"k <= {self.max_k}, or re-export with a larger max_k.")
            inputs["k"] = k
            signature_name = "top_k"
        return Recommendations.from_outputs(self.predict_outputs(inputs, signature_name))

    def predict_outputs(self, inputs: dict, signature_name: str = "serving_default") -> dict:
        """Runs any signature after checking the inputs; returns NumPy outputs."""
        if signature_name not in self._signatures:
            raise InvalidRequestError(f"the export has no signature {signature_name!r}; it has "
                                      f"{sorted(self._signatures)}.")
        try:
            arrays = signatures_lib.validate_inputs(self._signatures[signature_name], inputs)
        except (TypeError, ValueError) as error:
            raise InvalidRequestError(str(error)) from None
        function = self._loaded.signatures[signature_name]
        try:
            outputs = function(**{name: tf.constant(value) for name, value in arrays.items()})
        except tf.errors.InvalidArgumentError as error:
            raise InvalidRequestError(f"the model rejected the request: {error.message}") from None
        return {name: value.numpy() for name, value in outputs.items()}
