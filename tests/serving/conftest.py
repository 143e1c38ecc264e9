"""Fixtures for the serving tests: a small real BruteForce export and loopback model servers.

The loopback servers stand in for TF Serving where no `tensorflow_model_server` binary exists:
a gRPC `PredictionServiceServicer`/`ModelServiceServicer` and a REST `http.server`, both backed by
the SavedModel loaded with `tf.saved_model.load`, bound to 127.0.0.1 on a free port.
"""

import base64
import http.server
import json
import threading
from concurrent import futures

import numpy as np
import pytest

import towerkit  # noqa: F401  (legacy-Keras switch first)
import tensorflow as tf
from towerkit import serving
from towerkit.index import BruteForce

NUM_USERS = 20
NUM_ITEMS = 50
DIM = 8
MAX_K = 5
USER_SIGNATURE = {"user_id": tf.TensorSpec([None], tf.string)}
MODEL_NAME = "toy"


def make_query_model(seed: int = 0) -> tf.keras.Model:
    """{"user_id": string [batch]} -> [batch, DIM]; vocabulary u0..u19 (OOV row 0)."""
    rng = np.random.default_rng(seed)
    table = rng.normal(size=(NUM_USERS + 1, DIM)).astype("float32")
    user_id = tf.keras.Input(shape=(), dtype=tf.string, name="user_id")
    rows = tf.keras.layers.StringLookup(vocabulary=[f"u{i}" for i in range(NUM_USERS)])(user_id)
    embedding = tf.keras.layers.Embedding(
        NUM_USERS + 1, DIM, embeddings_initializer=tf.constant_initializer(table))(rows)
    return tf.keras.Model({"user_id": user_id}, embedding)


def make_catalogue(seed: int = 1):
    rng = np.random.default_rng(seed)
    ids = np.array([f"item{i}" for i in range(NUM_ITEMS)])
    return ids, rng.normal(size=(NUM_ITEMS, DIM)).astype("float32")


def make_index():
    ids, embeddings = make_catalogue()
    return BruteForce(make_query_model(), k=MAX_K).index(embeddings, identifiers=ids)


def numpy_top_k(user_ids, k=MAX_K):
    """NumPy oracle: exact dot-product top-k of the users' embeddings over the catalogue."""
    ids, embeddings = make_catalogue()
    table = np.random.default_rng(0).normal(size=(NUM_USERS + 1, DIM)).astype("float32")
    rows = [int(u[1:]) + 1 if u[1:].isdigit() and int(u[1:]) < NUM_USERS else 0 for u in user_ids]
    scores = table[rows] @ embeddings.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return ids[order], np.take_along_axis(scores, order, axis=1)


WARMUP_USERS = ["u1", "u2", "u3"]


@pytest.fixture(scope="session")
def toy_index():
    return make_index()


@pytest.fixture(scope="session")
def toy_export(tmp_path_factory, toy_index):
    """A published BruteForce export `<base>/1` with three warmup queries."""
    base = tmp_path_factory.mktemp("exports") / MODEL_NAME
    return serving.export(toy_index, base, query_signature=USER_SIGNATURE,
                          warmup_queries={"user_id": WARMUP_USERS})


# --------------------------------------------------------------------- loopback servers

def _run_signature(loaded, signature_name, inputs):
    """Runs a signature like TF Serving does; every input problem -> (400/INVALID_ARGUMENT, text)."""
    if signature_name not in loaded.signatures:
        raise LookupError(f"Serving signature name: \"{signature_name}\" not found in signature def")
    function = loaded.signatures[signature_name]
    expected = function.structured_input_signature[1]
    unknown = sorted(set(inputs) - set(expected))
    missing = sorted(set(expected) - set(inputs))
    if unknown or missing:
        raise ValueError(f"input names do not match the signature: unknown {unknown}, missing "
                         f"{missing}")
    tensors = {}
    for name, value in inputs.items():
        spec = expected[name]
        try:
            tensors[name] = tf.constant(value, dtype=spec.dtype)
        except (TypeError, ValueError) as error:
            raise ValueError(f"input {name!r}: expects {spec.dtype.name}: {error}") from None
        if not spec.shape.is_compatible_with(tensors[name].shape):
            raise ValueError(f"input {name!r}: shape {tensors[name].shape} is not compatible "
                             f"with {spec.shape}")
    try:
        outputs = function(**tensors)
    except tf.errors.InvalidArgumentError as error:
        raise ValueError(error.message) from None
    return {name: value.numpy() for name, value in outputs.items()}


class GrpcModelServer:
    """gRPC PredictionService + ModelService on 127.0.0.1 backed by a loaded SavedModel.

    The first `unavailable_first` Predict calls abort with UNAVAILABLE (to test retries);
    `delay_s` sleeps before answering (to test timeouts).
    """

    def __init__(self, export_dir, model_name=MODEL_NAME, unavailable_first=0, delay_s=0.0):
        import grpc
        from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                             model_service_pb2_grpc, predict_pb2,
                                             prediction_service_pb2_grpc)
        from tensorflow.core.protobuf import saved_model_pb2

        loaded = tf.saved_model.load(str(export_dir))
        proto = saved_model_pb2.SavedModel.FromString((export_dir / "saved_model.pb").read_bytes())
        signature_defs = proto.meta_graphs[0].signature_def
        version = int(export_dir.name)
        self.requests = []
        state = {"unavailable": unavailable_first}
        server_self = self

        def check_spec(spec, context):
            if spec.name != model_name or (spec.HasField("version")
                                           and spec.version.value != version):
                context.abort(grpc.StatusCode.NOT_FOUND,
                              f"Servable not found for request: {spec.name}")

        class Prediction(prediction_service_pb2_grpc.PredictionServiceServicer):
            def Predict(self, request, context):
                server_self.requests.append(request)
                if delay_s:
                    threading.Event().wait(delay_s)
                if state["unavailable"] > 0:
                    state["unavailable"] -= 1
                    context.abort(grpc.StatusCode.UNAVAILABLE, "loading")
                check_spec(request.model_spec, context)
                inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
                try:
                    outputs = _run_signature(
                        loaded, request.model_spec.signature_name or "serving_default", inputs)
                except (ValueError, LookupError) as error:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
                response = predict_pb2.PredictResponse()
                for name, value in outputs.items():
                    response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
                return response

            def GetModelMetadata(self, request, context):
                check_spec(request.model_spec, context)
                response = get_model_metadata_pb2.GetModelMetadataResponse()
                response.model_spec.name = model_name
                response.model_spec.version.value = version
                signature_map = get_model_metadata_pb2.SignatureDefMap()
                for name, sig in signature_defs.items():
                    signature_map.signature_def[name].CopyFrom(sig)
                response.metadata["signature_def"].Pack(signature_map)
                return response

        class Models(model_service_pb2_grpc.ModelServiceServicer):
            def GetModelStatus(self, request, context):
                check_spec(request.model_spec, context)
                response = get_model_status_pb2.GetModelStatusResponse()
                status = response.model_version_status.add()
                status.version = version
                status.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
                return response

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Prediction(),
                                                                            self._server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(Models(), self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()
        self.url = f"grpc://127.0.0.1:{self.port}"

    def stop(self):
        self._server.stop(grace=None)


def _to_json(value):
    """Nested lists of a tensor's values (any rank), bytes decoded, as TF Serving writes them."""
    if isinstance(value, list):
        return [_to_json(v) for v in value]
    return value.decode() if isinstance(value, bytes) else value


def _from_json(value, dtype):
    def decode(v):
        if isinstance(v, dict) and "b64" in v:
            return base64.b64decode(v["b64"])
        if isinstance(v, list):
            return [decode(x) for x in v]
        return v.encode() if isinstance(v, str) else v
    return np.asarray(decode(value), dtype=object if dtype == tf.string else None)


class RestModelServer:
    """TF Serving's REST predict/status/metadata endpoints on 127.0.0.1, backed by a SavedModel.

    `replies` (optional) is a list of (status, body dict) served before the model answers, e.g.
    [(503, {...})] to test retries; `status_replies` the same for the status endpoint (GET), e.g.
    a model still LOADING; `delay_s` sleeps before answering, to test timeouts.
    """

    def __init__(self, export_dir, model_name=MODEL_NAME, replies=(), delay_s=0.0,
                 status_replies=()):
        loaded = tf.saved_model.load(str(export_dir))
        version = str(int(export_dir.name))
        prefix = f"/v1/models/{model_name}"
        self.requests = []
        queue, status_queue = list(replies), list(status_replies)
        server_self = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

            def _route(self):
                path = self.path
                for suffix in (f"/versions/{version}", ""):
                    if path.startswith(prefix + suffix) and path[len(prefix + suffix):] in (
                            "", ":predict", "/metadata"):
                        return path[len(prefix + suffix):]
                return None

            def do_GET(self):
                server_self.requests.append(("GET", self.path, None))
                route = self._route()
                if route == "" and status_queue:
                    return self._send(*status_queue.pop(0))
                if route == "":
                    return self._send(200, {"model_version_status": [{
                        "version": version, "state": "AVAILABLE",
                        "status": {"error_code": "OK", "error_message": ""}}]})
                if route == "/metadata":
                    from google.protobuf import json_format
                    from towerkit.serving import signatures as signatures_lib

                    proto = signatures_lib.read_saved_model_proto(export_dir)
                    defs = {name: json_format.MessageToDict(sig, preserving_proto_field_name=True)
                            for name, sig in proto.meta_graphs[0].signature_def.items()}
                    return self._send(200, {
                        "model_spec": {"name": model_name, "signature_name": "",
                                       "version": version},
                        "metadata": {"signature_def": {"signature_def": defs}}})
                self._send(404, {"error": f"Servable not found for request: {self.path}"})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server_self.requests.append(("POST", self.path, body))
                if delay_s:
                    threading.Event().wait(delay_s)
                if queue:
                    return self._send(*queue.pop(0))
                if self._route() != ":predict":
                    return self._send(404, {"error": f"Servable not found: {self.path}"})
                signature_name = body.get("signature_name", "serving_default")
                specs = (loaded.signatures[signature_name].structured_input_signature[1]
                         if signature_name in loaded.signatures else {})
                dtype = lambda name: specs[name].dtype if name in specs else None  # noqa: E731
                try:
                    if "instances" in body:
                        names = body["instances"][0].keys()
                        inputs = {n: _from_json([row[n] for row in body["instances"]], dtype(n))
                                  for n in names}
                    else:
                        inputs = {n: _from_json(v, dtype(n)) for n, v in body["inputs"].items()}
                    outputs = _run_signature(loaded, signature_name, inputs)
                except (ValueError, LookupError, TypeError) as error:
                    return self._send(400, {"error": str(error)})
                as_json = {n: _to_json(v.tolist()) for n, v in outputs.items()}
                if "instances" in body:
                    rows = len(next(iter(as_json.values())))
                    return self._send(200, {"predictions": [
                        {n: v[i] for n, v in as_json.items()} for i in range(rows)]})
                return self._send(200, {"outputs": as_json})

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self):
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


@pytest.fixture(scope="session")
def grpc_server(toy_export):
    server = GrpcModelServer(toy_export)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def rest_server(toy_export):
    server = RestModelServer(toy_export)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def toy():
    """The helpers above, for test modules (conftest is not importable by name)."""
    import types

    return types.SimpleNamespace(
        NUM_ITEMS=NUM_ITEMS, DIM=DIM, MAX_K=MAX_K, MODEL_NAME=MODEL_NAME,
        USER_SIGNATURE=USER_SIGNATURE, WARMUP_USERS=WARMUP_USERS, make_index=make_index,
        make_query_model=make_query_model, make_catalogue=make_catalogue, numpy_top_k=numpy_top_k,
        GrpcModelServer=GrpcModelServer, RestModelServer=RestModelServer)
