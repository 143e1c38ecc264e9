"""ParameterServerStrategy on this machine: chief, parameter servers and workers on loopback.

For embedding tables larger than one machine's memory: the tables are split row-wise over the
parameter servers (`variable_partitioner`), workers compute the gradients of their batches
asynchronously, and the chief (coordinator) schedules steps on them. This example trains a
two-tower retrieval model (user and movie id embeddings, towerkit's `Retrieval` task) on
MovieLens 100K with both tables sharded over 2 parameter servers and 2 workers, all started
by this script as separate processes (each a `tf.distribute.Server`), then checks that the
trained query and candidate towers export as a plain SavedModel.

Differences from `towerkit train --distribute multi-worker` (synchronous all-reduce):
training is asynchronous (each worker applies its own batch's gradients to the shared
tables), so in-batch negatives are per worker batch (`Retrieval` sees one replica per
worker) and the learning rate applies per worker batch; a step has no global batch.

Usage:
  TFDS_DATA_DIR=... python benchmarks/distributed/parameter_server.py [--steps 200]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

NUM_PS, NUM_WORKERS = 2, 2


def _cluster(ports):
    hosts = [f"127.0.0.1:{p}" for p in ports]
    return {"chief": hosts[:1], "ps": hosts[1:1 + NUM_PS], "worker": hosts[1 + NUM_PS:]}


def serve(cluster: dict, task_type: str, index: int) -> None:
    """A parameter server or worker: a TensorFlow server until the chief stops it."""
    import tensorflow as tf

    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster), task_type=task_type, task_id=index, rpc_layer="grpc")
    server = tf.distribute.Server(resolver.cluster_spec(), job_name=task_type,
                                  task_index=index, protocol="grpc", start=True)
    server.join()


def chief(cluster: dict, steps: int, batch_size: int, export_dir: str) -> dict:
    """The coordinator: builds the sharded model under the strategy and trains it."""
    import numpy as np
    import towerkit  # noqa: F401  (legacy Keras before TensorFlow)
    import tensorflow as tf
    import tensorflow_recommenders as tfrs
    from towerkit.data import load_columns
    from towerkit.tasks import Retrieval

    columns = load_columns("100k-ratings", data_dir=os.environ.get("TFDS_DATA_DIR"))
    users, user_idx = np.unique(np.asarray(columns["user_id"]).astype(bytes), return_inverse=True)
    movies, movie_idx = np.unique(np.asarray(columns["movie_id"]).astype(bytes),
                                  return_inverse=True)
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster), task_type="chief", task_id=0, rpc_layer="grpc")
    strategy = tf.distribute.ParameterServerStrategy(
        resolver, variable_partitioner=tf.distribute.experimental.partitioners.
        MinSizePartitioner(min_shard_bytes=1 << 10, max_shards=NUM_PS))

    class Model(tfrs.Model):
        def __init__(self):
            super().__init__()
            self.query = tf.keras.layers.Embedding(len(users), 32, name="user_table")
            self.candidate = tf.keras.layers.Embedding(len(movies), 32, name="movie_table")
            self.task = Retrieval(remove_accidental_hits=True)

        def compute_loss(self, features, training=False):
            return self.task(self.query(features["user"]), self.candidate(features["movie"]),
                             candidate_ids=features["movie"], compute_metrics=False)

    with strategy.scope():
        model = Model()
        model.compile(optimizer=tf.keras.optimizers.Adagrad(0.1))
    data = {"user": user_idx.astype(np.int64), "movie": movie_idx.astype(np.int64)}

    def dataset_fn(input_context):
        # Each worker shuffles its own stream (asynchronous training: no shared order).
        return (tf.data.Dataset.from_tensor_slices(data)
                .shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
                .shuffle(20_000).repeat().batch(batch_size).prefetch(2))

    model.fit(tf.keras.utils.experimental.DatasetCreator(dataset_fn), epochs=1,
              steps_per_epoch=steps, verbose=0)
    shards = {"user_table": len(model.query.embeddings.variables)
              if hasattr(model.query.embeddings, "variables") else 1,
              "movie_table": len(model.candidate.embeddings.variables)
              if hasattr(model.candidate.embeddings, "variables") else 1}
    # The trained tables as plain variables: a SavedModel without strategy objects.
    query_table = tf.Variable(tf.convert_to_tensor(model.query.embeddings))
    serving = tf.Module()
    serving.table = query_table
    serving.call = tf.function(lambda ids: tf.gather(serving.table, ids),
                               input_signature=[tf.TensorSpec([None], tf.int64)])
    tf.saved_model.save(serving, export_dir, signatures={"serving_default": serving.call})
    probe = np.arange(3, dtype=np.int64)
    return {"shards": shards, "steps": steps, "batch_size": batch_size,
            "users": len(users), "movies": len(movies),
            "query_rows_head": np.asarray(query_table)[probe, :4].round(4).tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--role", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:  # a child process: "ps:0", "worker:1"
        kind, index = args.role.split(":")
        serve(json.loads(os.environ["TOWERKIT_PS_CLUSTER"]), kind, int(index))
        return
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))))
    from towerkit.cli.local_cluster import free_ports

    cluster = _cluster(free_ports(1 + NUM_PS + NUM_WORKERS))
    env = dict(os.environ, TOWERKIT_PS_CLUSTER=json.dumps(cluster), TF_CPP_MIN_LOG_LEVEL="2",
               CUDA_VISIBLE_DEVICES="")
    children = [subprocess.Popen([sys.executable, __file__, "--role", f"{kind}:{i}"], env=env,
                                 start_new_session=True, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
                for kind in ("ps", "worker") for i in range(len(cluster[kind]))]
    try:
        with tempfile.TemporaryDirectory(prefix="towerkit-ps-") as tmp:
            started = time.perf_counter()
            result = chief(cluster, args.steps, args.batch_size, os.path.join(tmp, "query"))
            result["train_and_export_s"] = round(time.perf_counter() - started, 1)
            # The export loads with TensorFlow alone (no towerkit, no strategy).
            check = subprocess.run(
                [sys.executable, "-I", "-c",
                 "import sys, tensorflow as tf; m = tf.saved_model.load(sys.argv[1]); "
                 "print(m.signatures['serving_default'](ids=tf.constant([0, 1, 2], tf.int64))"
                 "['output_0'].shape)", os.path.join(tmp, "query")],
                capture_output=True, text=True, env=env, timeout=300)
            result["clean_process_output_shape"] = check.stdout.strip().splitlines()[-1:]
        print(json.dumps(result, indent=2))
    finally:
        for child in children:
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            child.wait()


if __name__ == "__main__":
    main()
