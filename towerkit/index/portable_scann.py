"""ScaNN's k-means partitioner, read back from a serialized ScaNN searcher.

`PortableIndex` lets ScaNN train the partition (its k-means tree, optionally with anisotropic
`avq` centre updates) and then reads the leaf centres and the datapoint -> leaf assignment from the
searcher's serialized assets, so that the search itself can run in stock TensorFlow ops.

The assets are the ones `scann.scann_ops_pybind.ScannSearcher.serialize(dir)` writes:
`serialized_partitioner.pb` (a `research_scann.SerializedPartitioner` protobuf, parsed with the
protobuf modules shipped in the `scann` wheel) and `datapoint_to_token.npy` (int32 `[n]`).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import tempfile

import numpy as np

PARTITIONER_FILE = "serialized_partitioner.pb"
TOKENIZATION_FILE = "datapoint_to_token.npy"


@dataclasses.dataclass(frozen=True)
class Partition:
    """A flat k-means partition of a candidate set.

    Attributes:
        centroids: `[num_leaves, dim]` float32 leaf centres.
        assignment: `[num_candidates]` int32 leaf of every candidate, in `[0, num_leaves)`.
    """

    centroids: np.ndarray
    assignment: np.ndarray


def scann_partition(
        embeddings: np.ndarray,
        num_leaves: int,
        *,
        training_sample_size: int | None = None,
        training_iterations: int = 12,
        avq: float | None = None,
        training_threads: int = 0,
) -> Partition:
    """Trains ScaNN's k-means tree on `embeddings` and returns its leaves.

    Args:
        embeddings: `[n, dim]` float32 candidate embeddings.
        num_leaves: int. Number of k-means leaves (ScaNN's `num_leaves`).
        training_sample_size: int or None. Points sampled to train the centres (default: all, at
            most 250,000).
        training_iterations: int. k-means iterations.
        avq: float or None. ScaNN's anisotropic centre update (dot product only); None: plain
            k-means.
        training_threads: int. ScaNN training threads (0 = all cores).

    Returns:
        A `Partition` whose `assignment` indexes `embeddings` rows.

    Raises:
        ValueError: if `num_leaves` is not in `[1, n]`.
    """
    import scann  # pylint: disable=g-import-not-at-top  (heavy; only needed at build time)

    n = embeddings.shape[0]
    if not 1 <= num_leaves <= n:
        raise ValueError(f"num_leaves={num_leaves} must be between 1 and the number of "
                         f"candidates ({n}).")
    sample = min(n, training_sample_size or 250_000)
    builder = scann.scann_ops_pybind.builder(np.ascontiguousarray(embeddings, np.float32), 1,
                                             "dot_product")
    builder = builder.tree(num_leaves=num_leaves, num_leaves_to_search=1,
                           training_sample_size=sample, min_partition_size=1,
                           training_iterations=training_iterations, avq=avq)
    builder = builder.score_brute_force()
    if training_threads:
        builder = builder.set_n_training_threads(training_threads)
    searcher = builder.build()
    with tempfile.TemporaryDirectory(prefix="towerkit_scann_") as tmp:
        searcher.serialize(tmp)
        partition = read_scann_partition(tmp, expected_size=n)
    return partition


def read_scann_partition(artifacts_dir: str | os.PathLike, expected_size: int | None = None
                                                  ) -> Partition:
    """Reads leaf centres and datapoint -> leaf assignment from a serialized ScaNN searcher.

    Args:
        artifacts_dir: directory written by `ScannSearcher.serialize`.
        expected_size: int or None. If given, the number of candidates the assignment must cover.

    Returns:
        A `Partition`.

    Raises:
        ValueError: if a file is missing or corrupt, the tree has more than one level, or the
            assignment does not match the centres.
    """
    from scann.partitioning import partitioner_pb2  # pylint: disable=g-import-not-at-top
    from google.protobuf import message  # pylint: disable=g-import-not-at-top

    directory = pathlib.Path(artifacts_dir)
    partitioner_path = directory / PARTITIONER_FILE
    tokens_path = directory / TOKENIZATION_FILE
    for path in (partitioner_path, tokens_path):
        if not path.is_file():
            raise ValueError(f"{path} is missing: build the ScaNN searcher with `.tree(...)` and "
                             "call `searcher.serialize(dir)` before reading its partition.")
    proto = partitioner_pb2.SerializedPartitioner()
    try:
        proto.ParseFromString(partitioner_path.read_bytes())
    except message.DecodeError as e:
        raise ValueError(f"{partitioner_path} is not a valid ScaNN SerializedPartitioner ({e}); "
                         "re-serialize the searcher.") from e
    if not proto.HasField("kmeans"):
        raise ValueError(f"{partitioner_path} holds no k-means tree partitioner; only ScaNN's "
                         "`.tree(...)` partitioning can be read.")
    root = proto.kmeans.kmeans_tree.root
    if any(len(child.centers) for child in root.children):
        raise ValueError(f"{partitioner_path} is a multi-level k-means tree; build ScaNN with a "
                         "single-level tree (no `upper_tree`).")
    if not root.centers:
        raise ValueError(f"{partitioner_path} has no leaf centres; re-serialize the searcher.")
    centroids = np.array(
        [list(c.float_dimension) or list(c.dimension) for c in root.centers], dtype=np.float32)
    try:
        assignment = np.load(tokens_path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"{tokens_path} is not a readable .npy file ({e}); re-serialize the "
                         "searcher.") from e
    if assignment.ndim != 1 or not np.issubdtype(assignment.dtype, np.integer):
        raise ValueError(f"{tokens_path} must hold a 1-D integer array (one leaf per datapoint); "
                         f"got dtype {assignment.dtype} and shape {assignment.shape}. ScaNN "
                         "spilling (`soar_lambda`) is not supported.")
    if assignment.size and (assignment.min() < 0 or assignment.max() >= len(centroids)):
        raise ValueError(f"{tokens_path} assigns datapoints to leaves outside "
                         f"[0, {len(centroids)}): the partitioner and tokenization files come "
                         "from different searchers.")
    if expected_size is not None and assignment.shape[0] != expected_size:
        raise ValueError(f"{tokens_path} covers {assignment.shape[0]} datapoints but "
                         f"{expected_size} candidates were given: serialize a searcher built on "
                         "these candidates, in the same order.")
    return Partition(centroids=centroids, assignment=assignment.astype(np.int32))
