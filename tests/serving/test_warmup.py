"""TF Serving warmup records: TFRecord of PredictionLog protos whose requests run."""

import numpy as np
import pytest

import towerkit  # noqa: F401
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2
from towerkit.serving import warmup


def test_records_parse_as_prediction_logs_and_run(toy_export, toy):
    # Read the file independently of towerkit: raw TFRecord -> PredictionLog proto.
    path = toy_export / "assets.extra" / "tf_serving_warmup_requests"
    logs = [prediction_log_pb2.PredictionLog.FromString(record)
            for record in tf.data.TFRecordDataset(str(path)).as_numpy_iterator()]
    assert len(logs) == len(toy.WARMUP_USERS)
    loaded = tf.saved_model.load(str(toy_export))
    for log, user in zip(logs, toy.WARMUP_USERS):
        assert log.WhichOneof("log_type") == "predict_log"
        request = log.predict_log.request
        assert request.model_spec.signature_name == "serving_default"
        assert list(request.inputs) == ["user_id"]
        tensor = request.inputs["user_id"]
        assert tf.dtypes.as_dtype(tensor.dtype) == tf.string
        assert [d.size for d in tensor.tensor_shape.dim] == [1]  # one single-row request each
        assert list(tensor.string_val) == [user.encode()]
        # The request runs through the signature it names and gives the exact top-k.
        outputs = loaded.signatures[request.model_spec.signature_name](
            **{name: tf.make_ndarray(t) for name, t in request.inputs.items()})
        oracle_ids, oracle_scores = toy.numpy_top_k([user])
        np.testing.assert_array_equal(outputs["ids"].numpy().astype(str), oracle_ids)
        np.testing.assert_allclose(outputs["scores"].numpy(), oracle_scores, rtol=1e-5)
    # towerkit's reader (used by check) returns the same requests.
    requests = warmup.read_warmup_requests(toy_export)
    assert [signature for signature, _ in requests] == ["serving_default"] * len(logs)
    assert [inputs["user_id"].tolist() for _, inputs in requests] == [
        [user.encode()] for user in toy.WARMUP_USERS]


def test_write_rejects_what_tf_serving_cannot_use(tmp_path):
    with pytest.raises(ValueError, match="at most 1000 warmup records"):
        warmup.write_warmup_requests(tmp_path, {"user_id": np.array([b"u"] * 1001)})
    with pytest.raises(ValueError, match="same, non-zero number of rows"):
        warmup.write_warmup_requests(tmp_path, {"a": np.zeros(2), "b": np.zeros(3)})
    with pytest.raises(ValueError, match="same, non-zero number of rows"):
        warmup.write_warmup_requests(tmp_path, {"a": np.zeros(0)})
    assert not (tmp_path / "assets.extra").exists()


def test_corrupt_record_is_a_clear_error(tmp_path):
    (tmp_path / "assets.extra").mkdir()
    with tf.io.TFRecordWriter(str(tmp_path / warmup.WARMUP_FILE)) as writer:
        writer.write(b"\xff\xff not a proto")
    with pytest.raises(ValueError, match="record 0 is not a PredictionLog"):
        warmup.read_warmup_requests(tmp_path)
