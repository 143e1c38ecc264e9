"""towerkit.serving.Client and LocalModel: documented TF Serving formats, retries, errors.

Request bodies are checked against the TF Serving REST API doc
(https://www.tensorflow.org/tfx/serving/api_rest) and the PredictRequest proto
(tensorflow_serving/apis/predict.proto); behaviour against loopback servers (conftest.py).
"""

import socket

import numpy as np
import pytest

import towerkit  # noqa: F401
from google.protobuf import text_format
from tensorflow_serving.apis import predict_pb2
from towerkit import serving
from towerkit.serving import client as client_lib


def test_rest_urls_follow_the_documented_paths():
    base = "http://localhost:8501/"
    assert client_lib.rest_url(base, "movielens", verb="predict") == (
        "http://localhost:8501/v1/models/movielens:predict")
    assert client_lib.rest_url(base, "movielens", 3, "predict") == (
        "http://localhost:8501/v1/models/movielens/versions/3:predict")
    assert client_lib.rest_url(base, "movielens") == "http://localhost:8501/v1/models/movielens"
    assert client_lib.rest_url(base, "movielens", 2, "metadata") == (
        "http://localhost:8501/v1/models/movielens/versions/2/metadata")


def test_rest_bodies_are_the_documented_row_and_columnar_json():
    inputs = {"user_id": np.array([b"42", b"7"]), "age": np.array([31.5, 40.0], np.float32)}
    assert client_lib.rest_predict_body(inputs, format="columnar") == {
        "signature_name": "serving_default",
        "inputs": {"user_id": ["42", "7"], "age": [31.5, 40.0]}}
    assert client_lib.rest_predict_body(inputs, format="row") == {
        "signature_name": "serving_default",
        "instances": [{"user_id": "42", "age": 31.5}, {"user_id": "7", "age": 40.0}]}
    # k is a scalar: only the columnar format carries it.
    assert client_lib.rest_predict_body({"user_id": ["42"], "k": np.int32(3)}, "top_k") == {
        "signature_name": "top_k", "inputs": {"user_id": ["42"], "k": 3}}
    with pytest.raises(ValueError, match="format='columnar' for scalar inputs such as k"):
        client_lib.rest_predict_body({"user_id": ["42"], "k": np.int32(3)}, "top_k", "row")
    # Bytes that are not UTF-8 travel base64-encoded as {"b64": ...} (the doc's binary format).
    assert client_lib.rest_predict_body({"raw": np.array([b"\xff\x00"], dtype=object)}) == {
        "signature_name": "serving_default", "inputs": {"raw": [{"b64": "/wA="}]}}


def test_rest_responses_parse_in_both_formats():
    columnar = {"outputs": {"ids": [["a", "b"]], "scores": [[2.0, 1.0]]}}
    row = {"predictions": [{"ids": ["a", "b"], "scores": [2.0, 1.0]}]}
    for body in (columnar, row):
        result = serving.Recommendations.from_outputs(client_lib.parse_rest_predict_response(body))
        np.testing.assert_array_equal(result.ids, [["a", "b"]])
        np.testing.assert_array_equal(result.scores, np.array([[2.0, 1.0]], np.float32))
    with pytest.raises(serving.ServingError, match="without 'outputs' or 'predictions'"):
        client_lib.parse_rest_predict_response({"result": []})


def test_grpc_request_is_the_documented_predict_request():
    request = client_lib.grpc_predict_request({"user_id": ["42"], "k": np.int32(3)}, "movielens",
                                              "top_k", version=2)
    expected = text_format.Parse("""
        model_spec { name: "movielens" version { value: 2 } signature_name: "top_k" }
        inputs { key: "user_id" value { dtype: DT_STRING tensor_shape { dim { size: 1 } }
                                        string_val: "42" } }
        inputs { key: "k" value { dtype: DT_INT32 tensor_shape {} int_val: 3 } }
    """, predict_pb2.PredictRequest())
    assert request == expected


def test_client_rejects_bad_arguments():
    with pytest.raises(ValueError, match="http://host:8501"):
        serving.Client("localhost:8501", "m")
    with pytest.raises(ValueError, match="rest_format"):
        serving.Client("http://localhost:8501", "m", rest_format="json")
    with pytest.raises(ValueError, match="k must be a positive integer"):
        serving.Client("http://localhost:8501", "m").predict({"user_id": ["u1"]}, k=0)


@pytest.mark.parametrize("transport", ["rest-columnar", "rest-row", "grpc"])
def test_served_results_equal_local_and_numpy(transport, toy_export, rest_server, grpc_server,
                                              toy):
    users = ["u3", "u11", "stranger"]
    if transport == "grpc":
        client = serving.Client(grpc_server.url, toy.MODEL_NAME)
    else:
        client = serving.Client(rest_server.url, toy.MODEL_NAME,
                                rest_format=transport.split("-")[1])
    local = serving.LocalModel(toy_export.parent)
    with client:
        for k in (None, 3):
            served = client.predict({"user_id": users}, k=k)
            expected = local.predict({"user_id": users}, k=k)
            oracle_ids, oracle_scores = toy.numpy_top_k(users, k=k or toy.MAX_K)
            np.testing.assert_array_equal(served.ids, expected.ids)
            np.testing.assert_array_equal(served.ids, oracle_ids)
            np.testing.assert_allclose(served.scores, expected.scores, rtol=1e-6)
            np.testing.assert_allclose(served.scores, oracle_scores, rtol=1e-5)
            assert served.ids.shape == served.scores.shape == (3, k or toy.MAX_K)
        assert client.status() == [{"version": 1, "state": "AVAILABLE", "error": ""}]
        metadata = client.metadata()
        assert metadata == local.metadata()
        assert metadata["top_k"].inputs["k"].describe() == "int32 scalar"


def test_pinned_version_and_unknown_model(rest_server, grpc_server, toy):
    for url in (rest_server.url, grpc_server.url):
        assert serving.Client(url, toy.MODEL_NAME, version=1).predict(
            {"user_id": ["u1"]}).ids.shape == (1, toy.MAX_K)
        with pytest.raises(serving.ModelNotFoundError, match="Check the model name"):
            serving.Client(url, "nope", retries=0).predict({"user_id": ["u1"]})
        with pytest.raises(serving.ModelNotFoundError):
            serving.Client(url, toy.MODEL_NAME, version=9, retries=0).status()


BAD_REQUESTS = [
    # (inputs, k, what the message must name)
    ({"user": ["u1"]}, None, "user"),                 # wrong input name
    ({"user_id": np.array([1, 2])}, None, "string"),  # wrong dtype
    ({"user_id": [["u1", "u2"]]}, None, "shape"),     # wrong rank
    ({"user_id": ["u1"]}, 99, "max_k"),               # k above the export's max_k
]


@pytest.mark.parametrize("inputs,k,named", BAD_REQUESTS)
def test_invalid_requests_fail_clearly_everywhere(inputs, k, named, toy_export, rest_server,
                                                  grpc_server, toy):
    for url in (rest_server.url, grpc_server.url):
        with pytest.raises(serving.InvalidRequestError, match="rejected the request") as error:
            serving.Client(url, toy.MODEL_NAME, retries=0).predict(inputs, k=k)
        message = str(error.value)
        assert named in message, message
        # The client adds what the signature expects, from the server's metadata.
        signature = "top_k" if k else "serving_default"
        assert f"Expected inputs of '{signature}':" in message and "user_id: string [batch]" in message
    with pytest.raises(serving.InvalidRequestError, match=named):
        serving.LocalModel(toy_export).predict(inputs, k=k)
    assert isinstance(error.value, ValueError)  # callers may catch ValueError


def test_rest_retries_503_then_succeeds(toy_export, toy):
    unavailable = (503, {"error": "Servable not available yet"})
    server = toy.RestModelServer(toy_export, replies=[unavailable, unavailable])
    try:
        client = serving.Client(server.url, toy.MODEL_NAME, retries=3, backoff=0.01)
        result = client.predict({"user_id": ["u2"]})
        np.testing.assert_array_equal(result.ids, toy.numpy_top_k(["u2"])[0])
        assert [r[0] for r in server.requests] == ["POST", "POST", "POST"]
    finally:
        server.stop()


def test_rest_gives_up_after_bounded_retries(toy_export, toy):
    server = toy.RestModelServer(toy_export, replies=[(503, {"error": "overloaded"})] * 10)
    try:
        client = serving.Client(server.url, toy.MODEL_NAME, retries=2, backoff=0.01)
        with pytest.raises(serving.ServerUnavailableError, match="HTTP 503: overloaded"):
            client.predict({"user_id": ["u2"]})
        assert len(server.requests) == 3  # 1 attempt + 2 retries
    finally:
        server.stop()


def _status_body(version, state, error=""):
    """A GetModelStatus REST reply (TF Serving's JSON form of GetModelStatusResponse)."""
    return {"model_version_status": [{"version": str(version), "state": state, "status": {
        "error_code": "UNKNOWN" if error else "OK", "error_message": error}}]}


def test_wait_for_version_waits_out_a_starting_server(toy_export, rest_server, grpc_server, toy):
    for url in (rest_server.url, grpc_server.url):
        states = serving.Client(url, toy.MODEL_NAME).wait_for_version(1, timeout=10)
        assert states == [{"version": 1, "state": "AVAILABLE", "error": ""}]
    # Model not found yet (404), then loading, then available: three status calls waited out.
    server = toy.RestModelServer(toy_export, status_replies=[
        (404, {"error": "Servable not found for request: Latest(toy)"}),
        (200, _status_body(1, "LOADING"))])
    try:
        client = serving.Client(server.url, toy.MODEL_NAME, retries=0)
        assert client.wait_for_version(1, timeout=10, poll=0.01)[0]["state"] == "AVAILABLE"
        assert [r[0] for r in server.requests] == ["GET", "GET", "GET"]
    finally:
        server.stop()


def test_wait_for_version_reports_a_failed_load_and_a_timeout(toy_export, toy):
    failed = _status_body(1, "END", "Op type not registered 'ScannSearchBatched'")
    server = toy.RestModelServer(toy_export, status_replies=[(200, failed)])
    try:
        client = serving.Client(server.url, toy.MODEL_NAME, retries=0)
        with pytest.raises(serving.ServingError, match="version 1 failed to load.*ScannSearch"):
            client.wait_for_version(1, timeout=10, poll=0.01)
        # Version 2 never shows up: a timeout that names what the server did report.
        with pytest.raises(serving.ServingTimeoutError,
                           match="version 2 was not AVAILABLE.*version 1 AVAILABLE"):
            client.wait_for_version(2, timeout=0.3, poll=0.05)
        with pytest.raises(ValueError, match="timeout > 0"):
            client.wait_for_version(1, timeout=0)
    finally:
        server.stop()


def test_rest_timeout(toy_export, toy):
    server = toy.RestModelServer(toy_export, delay_s=1.5)
    try:
        client = serving.Client(server.url, toy.MODEL_NAME, timeout=0.2, retries=0)
        with pytest.raises(serving.ServingTimeoutError, match="within 0.2 s"):
            client.predict({"user_id": ["u2"]})
    finally:
        server.stop()


def test_grpc_timeout(toy_export, toy):
    server = toy.GrpcModelServer(toy_export, delay_s=1.5)
    try:
        with serving.Client(server.url, toy.MODEL_NAME, timeout=0.2, retries=0) as client:
            with pytest.raises(serving.ServingTimeoutError, match="within 0.2 s"):
                client.predict({"user_id": ["u2"]})
    finally:
        server.stop()


def test_grpc_retries_unavailable_then_succeeds(toy_export, toy):
    server = toy.GrpcModelServer(toy_export, unavailable_first=2)
    try:
        with serving.Client(server.url, toy.MODEL_NAME, retries=2, backoff=0.01) as client:
            result = client.predict({"user_id": ["u4"]})
        np.testing.assert_array_equal(result.ids, toy.numpy_top_k(["u4"])[0])
        assert len(server.requests) == 3
    finally:
        server.stop()


def test_nothing_listening_is_unavailable_after_retries():
    with socket.socket() as probe:  # a loopback port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for url in (f"http://127.0.0.1:{port}", f"grpc://127.0.0.1:{port}"):
        with serving.Client(url, "m", timeout=2, retries=1, backoff=0.01) as client:
            with pytest.raises(serving.ServerUnavailableError):
                client.predict({"user_id": ["u1"]})
