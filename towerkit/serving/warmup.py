"""TensorFlow Serving warmup records: `assets.extra/tf_serving_warmup_requests`.

TF Serving replays these requests when it loads a version, before it marks the version AVAILABLE,
so that the first user request does not pay for graph initialisation. The file is a TFRecord of
`tensorflow_serving.apis.prediction_log_pb2.PredictionLog` protos; TF Serving reads at most 1000.

References:
  https://www.tensorflow.org/tfx/serving/saved_model_warmup
"""

import os
import pathlib

import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_WARMUP_RECORDS = 1000  # TF Serving ignores records beyond this.


def make_predict_request(inputs: dict, model_name: str = "model",
                         signature_name: str = "serving_default",
                         version: int | None = None) -> predict_pb2.PredictRequest:
    """Builds a `PredictRequest` from NumPy inputs.

    Args:
      inputs: dict[str, np.ndarray]. Input name -> value; string inputs as bytes or str arrays.
      model_name: str. `model_spec.name` (TF Serving ignores it in warmup records).
      signature_name: str. The signature to run.
      version: int | None. `model_spec.version`, when pinned.

    Returns:
      The `PredictRequest` proto.
    """
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if version is not None:
        request.model_spec.version.value = int(version)
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return request


def write_warmup_requests(saved_model_dir, queries: dict,
                          signature_name: str = "serving_default") -> int:
    """Writes one single-row warmup request per query row into `saved_model_dir/assets.extra/`.

    Args:
      saved_model_dir: str | os.PathLike. The SavedModel version directory.
      queries: dict[str, np.ndarray]. Input name -> `[n, ...]` values, already checked against the
        signature (see `signatures.validate_inputs`); every input has the same `n`.
      signature_name: str. The signature the requests call.

    Returns:
      int. The number of records written (`n`).

    Raises:
      ValueError: `queries` is empty, its inputs disagree on `n`, or `n` exceeds 1000.
    """
    sizes = {name: len(value) for name, value in queries.items()}
    if not sizes or len(set(sizes.values())) != 1 or not next(iter(sizes.values())):
        raise ValueError(f"warmup queries need every input with the same, non-zero number of rows; "
                         f"got rows per input {sizes}.")
    rows = next(iter(sizes.values()))
    if rows > MAX_WARMUP_RECORDS:
        raise ValueError(f"{rows} warmup queries given, but TF Serving reads at most "
                         f"{MAX_WARMUP_RECORDS} warmup records: pass a sample of at most "
                         f"{MAX_WARMUP_RECORDS} rows.")
    path = pathlib.Path(saved_model_dir) / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(rows):
            row = {name: value[i:i + 1] for name, value in queries.items()}
            request = make_predict_request(row, signature_name=signature_name)
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return rows


def read_warmup_requests(saved_model_dir) -> list:
    """Reads the warmup records of a SavedModel.

    Args:
      saved_model_dir: str | os.PathLike. The SavedModel version directory.

    Returns:
      list[tuple[str, dict[str, np.ndarray]]]: (signature name, inputs) per record; empty when the
      model has no warmup file.

    Raises:
      ValueError: a record is not a `PredictionLog` with a `predict_log`.
    """
    path = pathlib.Path(saved_model_dir) / WARMUP_FILE
    if not path.is_file():
        return []
    requests = []
    for i, record in enumerate(tf.data.TFRecordDataset(str(path)).as_numpy_iterator()):
        log = prediction_log_pb2.PredictionLog()
        try:
            log.ParseFromString(record)
        except Exception as error:
            raise ValueError(
                f"{path} record {i} is not a PredictionLog proto ({error}).") from error
        if log.WhichOneof("log_type") != "predict_log":
            raise ValueError(f"{path} record {i} holds {log.WhichOneof('log_type')!r}; towerkit "
                             "only writes predict_log warmup records.")
        request = log.predict_log.request
        requests.append((request.model_spec.signature_name or "serving_default",
                         {name: tf.make_ndarray(t) for name, t in request.inputs.items()}))
    return requests

