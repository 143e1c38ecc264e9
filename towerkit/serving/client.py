"""A TensorFlow Serving client over REST or gRPC, returning `Recommendations(ids, scores)`.

References:
  REST API: https://www.tensorflow.org/tfx/serving/api_rest
  gRPC API: tensorflow_serving/apis/prediction_service.proto, model_service.proto
"""

import base64
import json
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

from towerkit.serving import signatures as signatures_lib
from towerkit.serving import warmup as warmup_lib
from towerkit.serving.recommendations import (InvalidRequestError, ModelNotFoundError,
                                              Recommendations, ServerUnavailableError,
                                              ServingError, ServingTimeoutError)

REST_FORMATS = ("columnar", "row")
_MAX_BACKOFF_S = 5.0


def rest_url(base_url: str, model_name: str, version: int | None = None, verb: str = "") -> str:
    """Returns a REST endpoint: `<base>/v1/models/<name>[/versions/<N>][:<verb> | /metadata]`.

    Args:
      base_url: str. `http://host:port` of the server's REST port.
      model_name: str. The served model name.
      version: int | None. Pin a version; None lets the server pick (the latest it serves).
      verb: str. "" (status), "predict" (`:predict`) or "metadata" (`/metadata`).
    """
    url = f"{base_url.rstrip('/')}/v1/models/{urllib.parse.quote(model_name)}"
    if version is not None:
        url += f"/versions/{int(version)}"
    if verb == "metadata":
        return url + "/metadata"
    return url + (f":{verb}" if verb else "")


def _json_value(value):
    """NumPy value -> JSON value; bytes that are not UTF-8 use TF Serving's `{"b64": ...}`."""
    if isinstance(value, np.ndarray):
        return [_json_value(v) for v in value]
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, np.generic):
        return value.item()
    return value


def rest_predict_body(inputs: dict, signature_name: str = "serving_default",
                      format: str = "columnar") -> dict:
    """Builds the JSON body of a REST predict request.

    Args:
      inputs: dict[str, array-like]. Input name -> `[batch, ...]` value (scalars, e.g. `k`, only in
        the columnar format).
      signature_name: str. Signature to run.
      format: str. "columnar" -> `{"signature_name", "inputs": {name: value}}`; "row" ->
        `{"signature_name", "instances": [{name: value[i]}, ...]}` (every input batched alike).

    Returns:
      dict, ready for `json.dumps`.

    Raises:
      ValueError: unknown format, or a row request whose inputs are scalars or differ in batch size.
    """
    if format not in REST_FORMATS:
        raise ValueError(f"format must be one of {REST_FORMATS}, got {format!r}.")
    arrays = {name: np.asarray(value) for name, value in inputs.items()}
    if format == "columnar":
        return {"signature_name": signature_name,
                "inputs": {name: _json_value(a) if a.ndim else _json_value(a[()])
                           for name, a in arrays.items()}}
    sizes = {name: (len(a) if a.ndim else None) for name, a in arrays.items()}
    if None in sizes.values() or len(set(sizes.values())) != 1:
        raise ValueError(f"the row ('instances') format needs every input batched alike; got batch "
                         f"sizes {sizes} (None = scalar). Use format='columnar' for scalar inputs "
                         "such as k.")
    rows = next(iter(sizes.values()))
    return {"signature_name": signature_name,
            "instances": [{name: _json_value(a[i]) for name, a in arrays.items()}
                          for i in range(rows)]}


def _from_json(value) -> np.ndarray:
    """JSON output -> NumPy; strings stay str, `{"b64": ...}` becomes bytes."""
    def decode(v):
        if isinstance(v, dict) and "b64" in v:
            return base64.b64decode(v["b64"])
        if isinstance(v, list):
            return [decode(x) for x in v]
        return v
    return np.asarray(decode(value))


def parse_rest_predict_response(body: dict) -> dict:
    """Parses a REST predict response (`outputs` for columnar, `predictions` for row requests).

    Returns:
      dict[str, np.ndarray], output name -> `[batch, ...]` value.

    Raises:
      ServingError: the body has neither `outputs` nor `predictions`.
    """
    if "outputs" in body:
        outputs = body["outputs"]
        if not isinstance(outputs, dict):
            raise ServingError("the model has a single unnamed output; towerkit exports return "
                               "'ids' and 'scores'.")
        return {name: _from_json(value) for name, value in outputs.items()}
    if "predictions" in body:
        predictions = body["predictions"]
        if not predictions or not isinstance(predictions[0], dict):
            raise ServingError("the response has unnamed predictions; towerkit exports return "
                               "'ids' and 'scores'.")
        return {name: _from_json([row[name] for row in predictions]) for name in predictions[0]}
    raise ServingError(f"unexpected predict response without 'outputs' or 'predictions': "
                       f"{str(body)[:300]}")


class Client:
    """Queries a model served by TensorFlow Serving over REST or gRPC.

    Example:
      ```python
      client = towerkit.serving.Client("http://localhost:8501", "movielens")
      result = client.predict({"user_id": ["42"]}, k=10)
      result.ids, result.scores  # [1, 10] each
      grpc_client = towerkit.serving.Client("grpc://localhost:8500", "movielens")
      ```

    Args:
      url: str. `http://host:port` (REST port, 8501 by default) or `grpc://host:port` (8500).
      model_name: str. The model name in the server's config (`--model_name`).
      version: int | None. Pin a model version; None uses the server's latest.
      timeout: float. Seconds per attempt.
      retries: int. Extra attempts when the server is UNAVAILABLE (HTTP 503, connection refused),
        with exponential backoff `backoff * 2**attempt` (at most 5 s).
      backoff: float. First backoff in seconds.
      rest_format: str. "columnar" (`inputs`) or "row" (`instances`) REST bodies; requests with
        `k` always use columnar, since `k` is a scalar.

    Raises:
      ValueError: the URL scheme is not http, https or grpc, or an argument is out of range.
    """

    def __init__(self, url: str, model_name: str, version: int | None = None,
                 timeout: float = 10.0, retries: int = 3, backoff: float = 0.1,
                 rest_format: str = "columnar"):
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme not in ("http", "https", "grpc") or not parsed.netloc:
            raise ValueError(f"url must look like http://host:8501 (REST) or grpc://host:8500 "
                             f"(gRPC), got {url!r}.")
        if rest_format not in REST_FORMATS:
            raise ValueError(f"rest_format must be one of {REST_FORMATS}, got {rest_format!r}.")
        if timeout <= 0 or retries < 0 or backoff < 0:
            raise ValueError(f"need timeout > 0, retries >= 0, backoff >= 0; got {timeout}, "
                             f"{retries}, {backoff}.")
        self.url = url.rstrip("/")
        self.protocol = "grpc" if parsed.scheme == "grpc" else "rest"
        self.model_name = model_name
        self.version = version
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.rest_format = rest_format
        self._channel = None
        if self.protocol == "grpc":
            import grpc

            self._channel = grpc.insecure_channel(parsed.netloc)

    def close(self) -> None:
        """Closes the gRPC channel (no-op for REST)."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def predict(self, inputs: dict, k: int | None = None) -> Recommendations:
        """Returns the top candidates for a batch of raw queries.

        Args:
          inputs: dict[str, array-like]. Query features, `[batch, ...]` each, e.g.
            `{"user_id": ["42", "7"]}`.
          k: int | None. Number of results; None returns the export's `max_k` via
            `serving_default`, an int calls the `top_k` signature (k <= max_k).

        Returns:
          Recommendations with `ids` and `scores` of shape `[batch, k]`.

        Raises:
          InvalidRequestError: the server rejected the inputs (names, dtypes, shapes, k); the
            message adds the signature's expected inputs when the server reports them.
          ModelNotFoundError, ServerUnavailableError, ServingTimeoutError: see their docs.
        """
        inputs = dict(inputs)
        signature = "serving_default"
        if k is not None:
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
                raise ValueError(f"k must be a positive integer, got {k!r}.")
            inputs["k"] = np.int32(k)
            signature = "top_k"
        return Recommendations.from_outputs(self.predict_outputs(inputs, signature))

    def predict_outputs(self, inputs: dict, signature_name: str = "serving_default") -> dict:
        """Runs any signature and returns its raw outputs as NumPy arrays."""
        try:
            if self.protocol == "grpc":
                return self._grpc_predict(inputs, signature_name)
            return self._rest_predict(inputs, signature_name)
        except InvalidRequestError as error:
            raise InvalidRequestError(f"{error}{self._expected_inputs(signature_name)}") from None

    def status(self) -> list:
        """Returns `[{"version": int, "state": str, "error": str}]`, e.g. state "AVAILABLE"."""
        if self.protocol == "grpc":
            from tensorflow_serving.apis import model_service_pb2_grpc

            request = get_model_status_pb2.GetModelStatusRequest()
            self._model_spec(request.model_spec)
            stub = model_service_pb2_grpc.ModelServiceStub(self._channel)
            response = self._grpc_call(stub.GetModelStatus, request)
        else:
            response = json_format.ParseDict(
                self._rest_call(rest_url(self.url, self.model_name, self.version)),
                get_model_status_pb2.GetModelStatusResponse(), ignore_unknown_fields=True)
        return [{"version": int(s.version),
                 "state": get_model_status_pb2.ModelVersionStatus.State.Name(s.state),
                 "error": s.status.error_message} for s in response.model_version_status]

    def wait_for_version(self, version: int, timeout: float = 120.0, poll: float = 0.5) -> list:
        """Blocks until `version` of the model is AVAILABLE on the server; returns `status()`.

        For a server that was just started, or a new version just copied into the model base
        path: while the server is not up yet or has not found the model, `status()` fails with
        ServerUnavailableError or ModelNotFoundError, and those are waited out.

        Args:
          version: int. The version directory's number.
          timeout: float. Seconds to wait in all.
          poll: float. Seconds between two `status()` calls.

        Returns:
          The `status()` list of the call that saw the version AVAILABLE.

        Raises:
          ServingError: the server tried the version and gave up on it (state END with an error,
            e.g. a SavedModel that needs ops the server does not have); the message is the
            server's.
          ServingTimeoutError: the version was not AVAILABLE within `timeout`; the message gives
            the last states seen (or the last error).
        """
        if timeout <= 0 or poll <= 0:
            raise ValueError(f"need timeout > 0 and poll > 0, got {timeout} and {poll}.")
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while True:
            try:
                states = self.status()
            except (ServerUnavailableError, ModelNotFoundError) as error:
                last = f"last error: {error}"
            else:
                mine = [s for s in states if s["version"] == int(version)]
                if mine and mine[0]["state"] == "AVAILABLE":
                    return states
                if mine and mine[0]["state"] == "END" and mine[0]["error"]:
                    raise ServingError(f"{self.model_name} version {version} failed to load on "
                                       f"{self.url}: {mine[0]['error']}")
                last = "last states: " + (", ".join(
                    f"version {s['version']} {s['state']}" for s in states) or "none")
            if time.monotonic() + poll > deadline:
                raise ServingTimeoutError(f"{self.model_name} version {version} was not AVAILABLE "
                                          f"on {self.url} within {timeout} s ({last}).")
            time.sleep(poll)

    def metadata(self) -> dict:
        """Returns the served model's signatures: `{name: Signature}` with inputs and outputs."""
        if self.protocol == "grpc":
            from tensorflow_serving.apis import prediction_service_pb2_grpc

            request = get_model_metadata_pb2.GetModelMetadataRequest()
            self._model_spec(request.model_spec)
            request.metadata_field.append("signature_def")
            stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
            response = self._grpc_call(stub.GetModelMetadata, request)
            signature_map = get_model_metadata_pb2.SignatureDefMap()
            response.metadata["signature_def"].Unpack(signature_map)
        else:
            body = self._rest_call(rest_url(self.url, self.model_name, self.version, "metadata"))
            signature_map = json_format.ParseDict(body["metadata"]["signature_def"],
                                                  get_model_metadata_pb2.SignatureDefMap(),
                                                  ignore_unknown_fields=True)
        return {name: signatures_lib.signature_from_proto(name, sig)
                for name, sig in signature_map.signature_def.items() if not name.startswith("__")}

    # --- transport ------------------------------------------------------------------------------

    def _model_spec(self, spec) -> None:
        spec.name = self.model_name
        if self.version is not None:
            spec.version.value = int(self.version)

    def _expected_inputs(self, signature_name: str) -> str:
        try:
            signature = self.metadata().get(signature_name)
        except ServingError:
            return ""
        if signature is None:
            return f" (the model has no signature {signature_name!r})"
        expected = ", ".join(f"{k}: {v.describe()}" for k, v in sorted(signature.inputs.items()))
        return f" Expected inputs of {signature_name!r}: {expected}."

    def _with_retries(self, attempt_fn):
        """Calls `attempt_fn`, retrying ServerUnavailableError `self.retries` times with backoff."""
        attempt = 0
        while True:
            try:
                return attempt_fn()
            except ServerUnavailableError:
                if attempt >= self.retries:
                    raise
                time.sleep(min(self.backoff * 2 ** attempt, _MAX_BACKOFF_S))
                attempt += 1

    def _rest_predict(self, inputs: dict, signature_name: str) -> dict:
        fmt = "columnar" if any(np.ndim(v) == 0 for v in inputs.values()) else self.rest_format
        body = rest_predict_body(inputs, signature_name, fmt)
        url = rest_url(self.url, self.model_name, self.version, "predict")
        return parse_rest_predict_response(self._rest_call(url, body))

    def _rest_call(self, url: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()

        def attempt():
            request = urllib.request.Request(
                url, data=data, method="GET" if data is None else "POST",
                headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as error:
                message = _rest_error_message(error)
                if error.code == 503:
                    raise ServerUnavailableError(f"{url}: HTTP 503: {message}") from None
                if error.code == 404:
                    raise ModelNotFoundError(f"{url}: HTTP 404: {message}. Check the model name "
                                             f"and version (see `status()`).") from None
                if error.code == 400:
                    raise InvalidRequestError(f"{url}: the model rejected the request: "
                                              f"{message}.") from None
                raise ServingError(f"{url}: HTTP {error.code}: {message}") from None
            except urllib.error.URLError as error:
                if isinstance(error.reason, TimeoutError):
                    raise ServingTimeoutError(
                        f"{url}: no answer within {self.timeout} s.") from None
                raise ServerUnavailableError(f"{url}: {error.reason}") from None
            except TimeoutError:
                raise ServingTimeoutError(f"{url}: no answer within {self.timeout} s.") from None

        return self._with_retries(attempt)

    def _grpc_predict(self, inputs: dict, signature_name: str) -> dict:
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        request = grpc_predict_request(inputs, self.model_name, signature_name, self.version)
        stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        response = self._grpc_call(stub.Predict, request)
        return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}

    def _grpc_call(self, method, request):
        import grpc

        def attempt():
            try:
                return method(request, timeout=self.timeout)
            except grpc.RpcError as error:
                code, details = error.code(), error.details()
                where = f"{self.url} ({self.model_name})"
                if code == grpc.StatusCode.UNAVAILABLE:
                    raise ServerUnavailableError(f"{where}: UNAVAILABLE: {details}") from None
                if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise ServingTimeoutError(
                        f"{where}: no answer within {self.timeout} s.") from None
                if code == grpc.StatusCode.INVALID_ARGUMENT:
                    raise InvalidRequestError(f"{where}: the model rejected the request: "
                                              f"{details}.") from None
                if code == grpc.StatusCode.NOT_FOUND:
                    raise ModelNotFoundError(f"{where}: NOT_FOUND: {details}. Check the model "
                                             "name and version (see `status()`).") from None
                raise ServingError(f"{where}: {code.name}: {details}") from None

        return self._with_retries(attempt)


def grpc_predict_request(inputs: dict, model_name: str, signature_name: str = "serving_default",
                         version: int | None = None):
    """Builds the gRPC `PredictRequest`: `model_spec` plus one `TensorProto` per input.

    String inputs given as `str` are encoded to UTF-8 bytes (DT_STRING); integer and float arrays
    keep their NumPy dtype (e.g. int64 -> DT_INT64, float32 -> DT_FLOAT).
    """
    arrays = {}
    for name, value in inputs.items():
        array = np.asarray(value)
        if array.dtype.kind == "U":
            array = np.char.encode(array, "utf-8")
        arrays[name] = array
    return warmup_lib.make_predict_request(arrays, model_name, signature_name, version)


def _rest_error_message(error) -> str:
    try:
        return json.loads(error.read()).get("error", "")
    except (ValueError, AttributeError):
        return str(error.reason)
