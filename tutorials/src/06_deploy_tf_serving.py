# towerkit: {"test_parameters": {"EPOCHS": 1}}
# %% [markdown]
# # Deploying to TensorFlow Serving
#
# A retrieval model in production is a SavedModel that takes raw query features (a user id)
# and returns the top-k candidate ids and scores, served by
# [TensorFlow Serving](https://www.tensorflow.org/tfx/guide/serving) over REST and gRPC. Getting
# there safely takes five steps, each shown below:
#
# 1. **export** a built index as a numbered version directory, written atomically so a server
#    polling the directory never loads half a model;
# 2. **check** that *stock* TF Serving can load it (no custom ops, no Python), in a clean
#    TensorFlow process;
# 3. **warm up**: ship a few real requests inside the export so the server runs them before
#    taking traffic, instead of the first users paying for graph initialisation;
# 4. **query** it with the REST or gRPC client (here: against a live server when
#    `tensorflow_model_server` is installed; otherwise we show the exact request bodies and
#    answer them with the same SavedModel loaded in this process);
# 5. **roll out a new version** next to the old one, and keep the old one for pinned clients and
#    instant rollback.

# %% tags=["parameters"]
EPOCHS = 3        # two_tower training epochs per version (the test suite uses 1)
MAX_K = 100       # results per request of `serving_default`; `top_k` serves any k <= MAX_K
MODEL_NAME = "movielens"

# %%
import json
import pathlib
import shutil
import socket
import subprocess
import tempfile

import towerkit  # first: switches TensorFlow to the legacy Keras that TFRS needs

import numpy as np
import tensorflow as tf

from towerkit import serving
from towerkit.index import BruteForce
from towerkit.recipes import get_recipe, make_run_config
from towerkit.serving.client import grpc_predict_request, rest_predict_body
from towerkit.serving.warmup import read_warmup_requests

workdir = pathlib.Path(tempfile.mkdtemp(prefix="towerkit-deploy-"))
model_base_path = workdir / "exports" / MODEL_NAME  # what TF Serving's --model_base_path points at

# %% [markdown]
# ## Train and index (version 1)
#
# We train the `two_tower` recipe (user id -> movie id, the TFRS basic retrieval model) on
# MovieLens via `tfds.load`. `index_inputs` returns the query tower, the candidate embeddings
# with their movie ids, the raw serving signature and a few real test queries. An exact
# `BruteForce` index with the query tower inside is the servable model: requests carry a
# `user_id` string, not an embedding.

# %%
recipe = get_recipe("two_tower")()


def train_and_index(seed, name):
    run_dir = workdir / "runs" / name
    metrics = recipe.train(make_run_config("two_tower", "movielens/100k-ratings", seed=seed,
                                           epochs=EPOCHS), run_dir)
    inputs = recipe.index_inputs(run_dir)
    index = BruteForce(query_model=inputs.query_model, k=MAX_K)
    index.index(inputs.candidate_embeddings, identifiers=inputs.candidate_ids)
    print(f"{name}: test top-100 accuracy {metrics['top_100_categorical_accuracy']:.3f}")
    return inputs, index


inputs_v1, index_v1 = train_and_index(seed=42, name="v1")
title_of = dict(zip(inputs_v1.candidate_ids, inputs_v1.candidate_titles))
print("serving inputs:", inputs_v1.query_signature)
print("warmup queries:", inputs_v1.sample_queries)

# %% [markdown]
# ## 1. Export
#
# `serving.export` writes `model_base_path/<version>/` through a hidden temporary directory and
# one atomic rename. The SavedModel has three signatures: `serving_default` (top `MAX_K`),
# `top_k` (takes an extra scalar `k`) and `query_embedding` (the query tower alone, handy for
# debugging or for a separate ANN service).

# %%
version_1 = serving.export(index_v1, model_base_path, query_signature=inputs_v1.query_signature,
                           warmup_queries=inputs_v1.sample_queries)
print("published", version_1.relative_to(workdir))
for path in sorted(version_1.rglob("*")):
    if path.is_file():
        print(f"  {str(path.relative_to(version_1)):<55} {path.stat().st_size:>10,} bytes")
assert serving.versions(model_base_path) == [1]

# %% [markdown]
# ## 2. Check
#
# `serving.check` (the `towerkit check-export` command) reads the signatures, lists every op the
# graph needs that plain TensorFlow does not register (ScaNN's custom ops would show up here),
# then loads the model in a **clean** TensorFlow process (no towerkit, TFRS, ScaNN or Annoy
# imported) and replays the warmup requests. If that works, the stock `tensorflow/serving`
# image can serve it.

# %%
report = serving.check(model_base_path)
print(report.format())
assert report.servable, report.problems

# %% [markdown]
# ## 3. Warmup
#
# The warmup file (`assets.extra/tf_serving_warmup_requests`) holds `PredictionLog` records,
# one single-row `serving_default` request per sample query. TF Serving replays them when it
# loads the version, before marking it `AVAILABLE`.

# %%
warmup = read_warmup_requests(version_1)
print(f"{len(warmup)} warmup requests; the first one:")
print(warmup[0])
assert len(warmup) == len(next(iter(inputs_v1.sample_queries.values())))

# %% [markdown]
# ## 4. Query it
#
# `towerkit.serving.Client` talks to TF Serving over REST (`http://host:8501`) or gRPC
# (`grpc://host:8500`) and returns `Recommendations(ids, scores)`; `LocalModel` gives the same
# answer from the export loaded in this process, which is how we test without a server. These
# are the request bodies the client sends:

# %%
query = {"user_id": ["42"]}
print("REST  POST /v1/models/movielens:predict")
print(json.dumps(rest_predict_body(query), indent=1))
print("REST  POST /v1/models/movielens:predict  (10 results via the top_k signature)")
print(json.dumps(rest_predict_body({**query, "k": np.int32(10)}, signature_name="top_k")))
print("\ngRPC  PredictionService/Predict request:")
print(grpc_predict_request({**query, "k": np.int32(10)}, MODEL_NAME, signature_name="top_k"))

# %% [markdown]
# With curl the first request is
# `curl -d '{"signature_name": "serving_default", "inputs": {"user_id": ["42"]}}' http://localhost:8501/v1/models/movielens:predict`.
#
# Now the answer. If `tensorflow_model_server` is on `PATH` we start it on the export (what
# `serving/start_server.sh` does, natively or with the `tensorflow/serving` Docker image) and
# query it over both protocols; either way we also answer the request with `LocalModel`, and
# check that every path agrees with the in-process index.

# %%
local = serving.LocalModel(model_base_path)
local_result = local.predict(query, k=10)
_, expected = index_v1({"user_id": tf.constant(["42"])}, k=10)
assert list(local_result.ids[0]) == [m.decode() for m in expected.numpy()[0]]

server, clients = None, {}
binary = shutil.which("tensorflow_model_server")


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


if binary:
    # Serve the two newest versions (TF Serving's default policy keeps only the latest one), as
    # serving/models.config does, so that a client pinned to version 1 survives the rollout.
    config = workdir / "models.config"
    config.write_text(
        f'model_config_list {{ config {{ name: "{MODEL_NAME}" base_path: "{model_base_path}" '
        'model_platform: "tensorflow" model_version_policy { latest { num_versions: 2 } } } }')
    grpc_port, rest_port = free_port(), free_port()
    server = subprocess.Popen([binary, f"--port={grpc_port}", f"--rest_api_port={rest_port}",
                               f"--model_config_file={config}",
                               "--file_system_poll_wait_seconds=1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    clients = {"REST": serving.Client(f"http://127.0.0.1:{rest_port}", MODEL_NAME),
               "gRPC": serving.Client(f"grpc://127.0.0.1:{grpc_port}", MODEL_NAME)}
    clients["REST"].wait_for_version(1)
    for protocol, client in clients.items():
        served = client.predict(query, k=10)
        assert list(served.ids[0]) == list(local_result.ids[0]), protocol
        print(f"{protocol} answer equals the local one")
else:
    print("tensorflow_model_server is not installed here: answering with LocalModel. To serve:\n"
          f"  serving/start_server.sh {model_base_path} {MODEL_NAME}\n"
          f"  then serving.Client('http://localhost:8501', '{MODEL_NAME}').predict({query}, k=10)")

print(f"\nTop 10 for user 42 (version {local.path.name}):")
for rank, movie, score in local_result.rows(0):
    print(f"{rank:>3}. {title_of[movie.encode()].decode():<50} {score:6.2f}")

# %% [markdown]
# Bad requests fail with a message that names the problem, whichever path you use:

# %%
for bad_request, k in (({"user_id": ["42"]}, MAX_K + 1), ({"userid": ["42"]}, 10)):
    try:
        local.predict(bad_request, k=k)
        raise AssertionError("the request should have been rejected")
    except serving.InvalidRequestError as error:
        print(f"{type(error).__name__}: {error}\n")

# %% [markdown]
# ## 5. Roll out version 2
#
# Retraining (new data, a new seed, a better model) produces a new version with the **same
# signature**: clients do not change. Export it to the same base path without a version number
# and it becomes `2`. A server polling the base path loads it and, with the policy in
# `serving/models.config` (`latest { num_versions: 2 }`), keeps version 1 loaded too:
# unpinned clients move to 2, clients pinned to `/versions/1` keep working, and rolling back is
# a config change, not a redeploy.

# %%
inputs_v2, index_v2 = train_and_index(seed=7, name="v2")
version_2 = serving.export(index_v2, model_base_path, query_signature=inputs_v2.query_signature,
                           warmup_queries=inputs_v2.sample_queries)
print("published", version_2.relative_to(workdir), "| versions:", serving.versions(model_base_path))
assert serving.versions(model_base_path) == [1, 2]
assert serving.check(version_2, run=False).servable

latest = serving.LocalModel(model_base_path)           # like an unpinned client
pinned = serving.LocalModel(model_base_path / "1")     # like a client pinned to version 1
print("latest version:", latest.path.name, "| pinned:", pinned.path.name)
new, old = latest.predict(query, k=10), pinned.predict(query, k=10)
assert list(old.ids[0]) == list(local_result.ids[0]), "version 1 answers as before"
overlap = len(set(new.ids[0]) & set(old.ids[0]))
print(f"user 42: {overlap} of the top 10 are shared between versions 1 and 2")

if server is not None:
    clients["REST"].wait_for_version(2)
    v1_client = serving.Client(clients["REST"].url, MODEL_NAME, version=1)
    assert list(clients["REST"].predict(query, k=10).ids[0]) == list(new.ids[0])
    assert list(v1_client.predict(query, k=10).ids[0]) == list(old.ids[0])
    print("live server: latest ->", [s["version"] for s in clients["REST"].status()])

# %% [markdown]
# The server side of this is configuration, not code (see `serving/models.config`):
#
# ```
# model_version_policy { latest { num_versions: 2 } }          # serve the newest two
# model_version_policy { specific { versions: 1 } }            # roll back to 1
# version_labels { key: "stable" value: 1 }                    # or route by label
# version_labels { key: "canary" value: 2 }
# ```
#
# Checklist before each rollout: `towerkit check-export` says servable, the warmup file is
# there, and a few known queries give sensible answers on the new version before clients move.

# %%
if server is not None:
    for client in clients.values():
        client.close()
    server.terminate()
    server.wait(timeout=30)
shutil.rmtree(workdir)
