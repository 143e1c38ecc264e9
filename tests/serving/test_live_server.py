"""Against a real TensorFlow Serving: REST and gRPC answers equal the in-process export.

Runs when `tensorflow_model_server` is on PATH (the test starts it on free loopback ports on a
small BruteForce export, then rolls a second version), or when TOWERKIT_TF_SERVING_URL points at a
running server (REST, e.g. http://127.0.0.1:8501) with TOWERKIT_TF_SERVING_EXPORT the model base
path it serves, and optionally TOWERKIT_TF_SERVING_GRPC (grpc://127.0.0.1:8500),
TOWERKIT_TF_SERVING_MODEL (default movielens) and TOWERKIT_TF_SERVING_USERS (comma-separated query
ids, default 1,2,3). Skips otherwise.
"""

import os
import shutil
import socket
import subprocess

import numpy as np
import pytest

import towerkit  # noqa: F401
from towerkit import serving

pytestmark = pytest.mark.live_serving

BINARY = shutil.which("tensorflow_model_server")
URL = os.environ.get("TOWERKIT_TF_SERVING_URL")
if not BINARY and not URL:
    pytest.skip("needs TensorFlow Serving: no tensorflow_model_server on PATH and "
                "TOWERKIT_TF_SERVING_URL is not set", allow_module_level=True)


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def live(tmp_path_factory, toy_index, toy):
    """(rest_url, grpc_url or None, model name, local base path, query users, server process)."""
    if URL:
        base = os.environ.get("TOWERKIT_TF_SERVING_EXPORT")
        if not base:
            pytest.skip("TOWERKIT_TF_SERVING_URL is set but TOWERKIT_TF_SERVING_EXPORT (the model "
                        "base path that server serves) is not: nothing to compare against")
        users = os.environ.get("TOWERKIT_TF_SERVING_USERS", "1,2,3").split(",")
        yield (URL, os.environ.get("TOWERKIT_TF_SERVING_GRPC"),
               os.environ.get("TOWERKIT_TF_SERVING_MODEL", "movielens"), base, users, None)
        return
    base = tmp_path_factory.mktemp("live") / toy.MODEL_NAME
    serving.export(toy_index, base, query_signature=toy.USER_SIGNATURE,
                   warmup_queries={"user_id": toy.WARMUP_USERS})
    grpc_port, rest_port = _free_port(), _free_port()
    process = subprocess.Popen(
        [BINARY, f"--port={grpc_port}", f"--rest_api_port={rest_port}",
         f"--model_name={toy.MODEL_NAME}", f"--model_base_path={base}",
         "--file_system_poll_wait_seconds=1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        serving.Client(f"http://127.0.0.1:{rest_port}", toy.MODEL_NAME).wait_for_version(1)
        yield (f"http://127.0.0.1:{rest_port}", f"grpc://127.0.0.1:{grpc_port}", toy.MODEL_NAME,
               base, ["u1", "u8", "stranger"], process)
    finally:
        process.terminate()
        process.wait(timeout=30)


def _local_input(local, users):
    signature = local.metadata()["serving_default"]
    (name, info), = signature.inputs.items()
    return {name: np.array(users).astype(info.dtype.as_numpy_dtype)
            if info.dtype.is_integer else np.array(users)}


def test_rest_and_grpc_equal_in_process(live):
    rest_url, grpc_url, name, base, users, _ = live
    local = serving.LocalModel(base)
    inputs = _local_input(local, users)
    expected = local.predict(inputs)
    clients = [serving.Client(rest_url, name, rest_format="columnar"),
               serving.Client(rest_url, name, rest_format="row")]
    if grpc_url:
        clients.append(serving.Client(grpc_url, name))
    for client in clients:
        with client:
            served = client.predict(inputs)
            np.testing.assert_array_equal(served.ids, expected.ids)
            np.testing.assert_allclose(served.scores, expected.scores, rtol=1e-5)
            top3 = client.predict(inputs, k=3)
            np.testing.assert_array_equal(top3.ids, expected.ids[:, :3])
            assert client.metadata()["serving_default"] == local.metadata()["serving_default"]
            with pytest.raises(serving.InvalidRequestError):
                client.predict({"no_such_input": np.array(["x"])})


def test_rolling_a_new_version(live, toy_index, toy):
    rest_url, grpc_url, name, base, users, process = live
    if process is None:
        pytest.skip("rolling a version needs the server this test starts (tensorflow_model_server "
                    "on PATH), not an external TOWERKIT_TF_SERVING_URL")
    client = serving.Client(rest_url, name)
    new = serving.export(toy_index, base, query_signature=toy.USER_SIGNATURE)
    assert new.name == "2"
    client.wait_for_version(2)
    pinned = serving.Client(rest_url, name, version=2)
    np.testing.assert_array_equal(pinned.predict({"user_id": users}).ids,
                                  toy.numpy_top_k(users)[0])
