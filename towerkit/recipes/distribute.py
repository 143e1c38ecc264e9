"""Distribution of recipe training over `tf.distribute` strategies (`towerkit train --distribute`).

Every recipe trains under the strategy of the run without code of its own: `train_atomically`
enters `strategy.scope()` around the recipe's `train` (so the model, its optimizer and every
variable are created mirrored), and `fit_resumable`'s `model.fit` distributes each epoch's
dataset (auto-shard policy DATA: each worker keeps its share of every global batch; a recipe
that shards its input itself sets another policy and is left alone).

- `none`: the default strategy (one device).
- `mirrored`: `tf.distribute.MirroredStrategy` over this machine's GPUs (or its CPU).
- `multi-worker`: `tf.distribute.MultiWorkerMirroredStrategy`, one process per worker, the
  cluster read from the `TF_CONFIG` environment variable as on any cluster (Kubernetes,
  Vertex AI). The chief (task `chief`, or `worker` 0 when the cluster has no chief) writes the
  staged run and publishes it; the other workers write into temporary directories beside it
  that are removed at the end, and restore from the chief's checkpoints. `towerkit train
  --local-workers N` starts N such workers on this machine over loopback (`towerkit.cli.train`).

Batches: a recipe's `--batch-size` is the GLOBAL batch; each of the `R` replicas gets
`batch_size / R` examples of every step, so a run sees the same batches as on one device and
learning rates keep their single-device (global-batch) meaning. Losses are made to match:
`Retrieval` gathers in-batch negatives across replicas and sums (the optimizer sums the
replicas' gradients), `SampledSoftmax` divides by the global batch's weight.
"""

from __future__ import annotations

import json
import os
from typing import Optional

import tensorflow as tf

__all__ = [
    "STRATEGIES",
    "cluster_spec",
    "is_chief",
    "make_strategy",
    "num_replicas",
    "validate_distribute",
    "worker_barrier",
    "worker_id",
]

STRATEGIES = ("none", "mirrored", "multi-worker")
_CACHE: dict = {}


def cluster_spec(environ=None) -> dict:
    """The parsed and checked `TF_CONFIG` of this process.

    Returns:
      `{"cluster": {task type: [host:port, ...]}, "task": {"type": str, "index": int}}`.

    Raises:
      ValueError: `TF_CONFIG` is unset, not JSON, or lacks/mismatches the cluster or task.
    """
    environ = os.environ if environ is None else environ
    raw = environ.get("TF_CONFIG")
    if not raw:
        raise ValueError("--distribute multi-worker needs the cluster in the TF_CONFIG "
                         "environment variable (set by the cluster, e.g. Kubernetes or Vertex "
                         "AI); to try it on this machine use --local-workers N.")
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON ({e}); it must look like "
                         '{"cluster": {"worker": ["host:port", ...]}, '
                         '"task": {"type": "worker", "index": 0}}.') from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not cluster.get("worker") and not cluster.get("chief"):
        raise ValueError("TF_CONFIG lacks cluster.worker (the list of worker host:port); "
                         f"got {raw[:200]}.")
    if not isinstance(task, dict) or "type" not in task:
        raise ValueError(f"TF_CONFIG lacks task.type and task.index; got {raw[:200]}.")
    kind, index = task["type"], task.get("index", 0)
    if kind not in cluster or not isinstance(index, int) or not 0 <= index < len(cluster[kind]):
        raise ValueError(f"TF_CONFIG task {kind!r} #{index} is not in its cluster "
                         f"{ {k: len(v) for k, v in cluster.items()} }.")
    if kind not in ("chief", "worker"):
        raise ValueError(f"TF_CONFIG task type {kind!r}: towerkit train runs the chief and "
                         "worker tasks of multi-worker training (parameter servers: see "
                         "benchmarks/distributed/parameter_server.py).")
    return {"cluster": cluster, "task": {"type": kind, "index": int(index)}}


def validate_distribute(distribute: str, local_workers: Optional[int] = None) -> None:
    """Checks the distribution flags before any work starts.

    Raises:
      ValueError: an unknown strategy, `local_workers` < 2 or without `multi-worker`, or
        `multi-worker` without a valid `TF_CONFIG` (and without `local_workers`).
    """
    if distribute not in STRATEGIES:
        raise ValueError(f"--distribute must be one of {', '.join(STRATEGIES)}, "
                         f"got {distribute!r}.")
    if local_workers is not None:
        if isinstance(local_workers, bool) or not isinstance(local_workers, int) or (
                local_workers < 2):
            raise ValueError(f"--local-workers must be an integer >= 2 (the number of worker "
                             f"processes to start), got {local_workers!r}.")
        if distribute != "multi-worker":
            raise ValueError("--local-workers starts multi-worker training: pass it with "
                             f"--distribute multi-worker (got --distribute {distribute}).")
        if os.environ.get("TF_CONFIG"):
            raise ValueError("--local-workers writes TF_CONFIG for the workers it starts, but "
                             "TF_CONFIG is already set: unset it, or drop --local-workers to "
                             "run as a worker of that cluster.")
        return
    if distribute == "multi-worker":
        cluster_spec()


def make_strategy(distribute: str) -> tf.distribute.Strategy:
    """The strategy of `distribute` (one per process: later calls return the same object;
    `"none"`: the current strategy, i.e. the default one unless called in a strategy's scope).

    `multi-worker` must be created before TensorFlow runs any op in the process (the CLI does
    it right after parsing the flags).
    """
    validate_distribute(distribute)
    if distribute == "none":
        return tf.distribute.get_strategy()  # the default one, or the caller's own scope's
    if distribute in _CACHE:
        return _CACHE[distribute]
    if distribute == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
    else:
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.RING)
        try:
            strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
        except RuntimeError as e:
            raise ValueError(f"Cannot start multi-worker training ({str(e).splitlines()[0]}): "
                             "create the strategy before TensorFlow runs any op in the process "
                             "(`towerkit train --distribute multi-worker` does).") from None
    _CACHE[distribute] = strategy
    return strategy


def num_replicas(strategy: Optional[tf.distribute.Strategy] = None) -> int:
    """Replicas in sync of `strategy` (default: the current one)."""
    return int((strategy or tf.distribute.get_strategy()).num_replicas_in_sync)


def _task(strategy) -> tuple:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return None, 0
    return resolver.task_type, int(resolver.task_id or 0)


def is_chief(strategy: Optional[tf.distribute.Strategy] = None) -> bool:
    """Whether this process writes the run: always for one-process strategies; for multi-worker
    the `chief` task, or `worker` 0 when the cluster has no chief."""
    strategy = strategy or tf.distribute.get_strategy()
    kind, index = _task(strategy)
    if kind is None:
        return True
    if kind == "chief":
        return True
    has_chief = "chief" in strategy.cluster_resolver.cluster_spec().as_dict()
    return kind == "worker" and index == 0 and not has_chief


def worker_id(strategy: Optional[tf.distribute.Strategy] = None) -> str:
    """`"<task type><index>"` of this process (`""` for one-process strategies)."""
    kind, index = _task(strategy or tf.distribute.get_strategy())
    return "" if kind is None else f"{kind}{index}"


def worker_barrier(strategy: tf.distribute.Strategy) -> None:
    """Blocks until every worker of `strategy` reaches it (one tiny all-reduce)."""
    if not worker_id(strategy):
        return

    @tf.function
    def step():
        return tf.distribute.get_replica_context().all_reduce(
            tf.distribute.ReduceOp.SUM, tf.constant(1.0))

    strategy.run(step)
