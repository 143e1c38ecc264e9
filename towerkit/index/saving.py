"""`save_index`: writes a built index as a SavedModel with the towerkit serving signatures."""

import json
import os
import warnings
from typing import Dict, Optional, Union

import tensorflow as tf

from towerkit.index.base import Index

#: Name of the JSON asset describing the saved index (kind, sizes, custom ops needed).
METADATA_FILE = "towerkit_index.json"
#: Feature name of the embedding input when a signature is given as a single TensorSpec.
QUERIES_KEY = "queries"

QuerySignature = Union[tf.TensorSpec, Dict[str, tf.TensorSpec]]


class _IndexModule(tf.Module):
    """The object that is saved: the index (for its variables) plus the serving functions."""

    def __init__(self, index: Index, signature: QuerySignature):
        super().__init__(name="towerkit_index")
        single = isinstance(signature, tf.TensorSpec)
        specs = {QUERIES_KEY: signature} if single else dict(signature)
        specs = {name: tf.TensorSpec(s.shape, s.dtype, name=name) for name, s in specs.items()}
        max_k = index.max_k

        def checked(features):
            # The raw SavedModel does not enforce the declared shapes (TF Serving and a raw
            # signature call feed any shape): check each input's rank, naming it.
            out = {}
            for name, spec in specs.items():
                value = features[name]
                rank = spec.shape.rank
                if rank is not None:
                    # EnsureShape is a runtime check (a rank test on the declared shape would be
                    # folded away at trace time); its error names the input.
                    value = tf.ensure_shape(value, spec.shape, name=f"check_{name}_shape")
                out[name] = value
            return out

        def as_queries(features):
            return features[QUERIES_KEY] if single else features

        known_fn = getattr(index.query_model, "known_queries", None)

        def with_known(outputs, features):
            # The query model can tell which queries it knows (e.g. user id in its vocabulary):
            # report it, so a client can tell a fallback list from a personal one.
            if callable(known_fn) and not single:
                outputs["known_query"] = tf.reshape(known_fn(features), [-1])
            return outputs

        # autograph=False: the serving code has no Python control flow on tensors (Keras converts
        # the query model's own `call`), and converting the index code is slow.
        @tf.function(input_signature=[specs], autograph=False)
        def serving_default(features):
            features = checked(features)
            scores, ids = index.call(as_queries(features), k=max_k)
            return with_known({"ids": ids, "scores": scores}, features)

        @tf.function(input_signature=[specs, tf.TensorSpec([], tf.int32, name="k")],
                     autograph=False)
        def top_k(features, k):
            k = checked_k(k, max_k)
            features = checked(features)
            scores, ids = index.call(as_queries(features), k=k)
            return with_known({"ids": ids, "scores": scores}, features)

        @tf.function(input_signature=[specs], autograph=False)
        def query_embedding(features):
            return {"embedding": index.query_embedding(as_queries(checked(features)))}

        self.serving_default = serving_default
        self.top_k = top_k
        self.query_embedding = query_embedding

    def trace(self, index: Index) -> dict:
        """Traces the signatures, then tracks the index's state.

        Tracing first lets a query model that was never called create its variables. The state
        (variables, lookup tables, assets) is tracked without the Keras objects themselves: Keras
        would re-trace every sub-layer's `call` for its own SavedModel format, which fails for
        models whose `call` takes no `training=` argument (and is not needed here).
        """
        signatures = {
                "serving_default": self.serving_default.get_concrete_function(),
                "top_k": self.top_k.get_concrete_function(),
                "query_embedding": self.query_embedding.get_concrete_function(),
        }
        self.state = _state_of(index)
        return signatures


def _state_of(index: Index) -> list:
    """Variables, resources and assets reachable from the index, in checkpoint order."""
    state, seen = [], set()
    for obj in tf.train.TrackableView(index).descendants():
        if isinstance(obj, (tf.Variable, tf.saved_model.experimental.TrackableResource,
                            tf.saved_model.Asset)) and id(obj) not in seen:
            seen.add(id(obj))
            state.append(obj)
    return state


def saved_model_ops(path: Union[str, os.PathLike]) -> set:
    """Names of all ops in a SavedModel's graphs and function library (no op registration needed).

    Used to detect SavedModels that need custom ops (e.g. ScaNN's `Scann>ScannSearchBatched`)
    before handing them to a stock TensorFlow Serving.
    """
    from tensorflow.core.protobuf import saved_model_pb2  # pylint: disable=g-import-not-at-top

    proto = saved_model_pb2.SavedModel()
    pb_path = os.path.join(os.fspath(path), "saved_model.pb")
    try:
        with open(pb_path, "rb") as f:
            proto.ParseFromString(f.read())
    except OSError as e:
        raise ValueError(f"No SavedModel at {path}: {e}. Pass the export directory.") from e
    ops = set()
    for meta_graph in proto.meta_graphs:
        ops.update(node.op for node in meta_graph.graph_def.node)
        for function in meta_graph.graph_def.library.function:
            ops.update(node.op for node in function.node_def)
    return ops


def default_query_signature(index: Index) -> QuerySignature:
    """The signature used when none is given.

    Without a query model: `[None, dim]` float32 embeddings. With a functional Keras query model:
    its input structure (a dict of inputs becomes a feature dict, one input one tensor).
    Otherwise a ValueError asks for `query_signature=`.
    """
    model = index.query_model
    if model is None:
        return tf.TensorSpec([None, index.dim], tf.float32)
    try:
        structure = model.input if getattr(model, "_is_graph_network", False) else None
    except AttributeError:
        structure = None
    if isinstance(structure, dict):
        return {name: tf.TensorSpec(t.shape, t.dtype) for name, t in structure.items()}
    if structure is not None and not isinstance(structure, (list, tuple)):
        return tf.TensorSpec(structure.shape, structure.dtype)
    raise ValueError(
        "Cannot infer the query model's inputs: pass query_signature= to save_index, e.g. "
        "{'user_id': tf.TensorSpec([None], tf.string)} (a dict is passed to the query model "
        "as a feature dict; a single TensorSpec is passed as one tensor).")


def save_index(index: Index, path: Union[str, os.PathLike],
               query_signature: Optional[QuerySignature] = None) -> str:
    """Saves a built index as a SavedModel (no warm-up call needed).

    Signatures:
        - `serving_default(**features) -> {"ids": [batch, max_k], "scores": [batch, max_k]}`
        - `top_k(**features, k: int32 []) -> {"ids": [batch, k], "scores": [batch, k]}`
            (`k` outside `[1, max_k]` fails with InvalidArgument naming both numbers).
        - Both add `"known_query": bool [batch]` when the query model has
            `known_queries(features)` (towerkit's towers and sequential query models do): False
            marks a query the model does not know (unknown, empty or non-UTF-8 user id; a
            history without a catalogue movie), whose results are generic fallbacks.
        Query embeddings with NaN/Inf fail the request (InvalidArgument, CheckNumerics); an
        input whose shape does not match its declared one fails with InvalidArgument naming
        the input (EnsureShape: the raw SavedModel and TF Serving do not check shapes).
        - `query_embedding(**features) -> {"embedding": [batch, dim] or [batch, interests, dim]}`

    Without a query model the single input feature is `queries` (float32 embeddings).
    `assets/towerkit_index.json` records the index kind, sizes and the custom ops it needs.

    Args:
        index: a built `towerkit.index.Index`.
        path: output directory.
        query_signature: `dict[str, tf.TensorSpec]` of raw query features (passed to the query
            model as a dict) or one `tf.TensorSpec` (passed as one tensor, input name `queries`).
            Defaults to the query model's inputs, or `[None, dim]` embeddings.

    Returns:
        The path written.

    Raises:
        ValueError: if the index is not built or the signature cannot be inferred.
        TypeError: if `index` is not a towerkit index or the signature has the wrong type.
    """
    if not isinstance(index, Index):
        raise TypeError(f"save_index expects a towerkit.index.Index; got {type(index).__name__}.")
    index._check_built()  # pylint: disable=protected-access
    if query_signature is None:
        query_signature = default_query_signature(index)
    if not isinstance(query_signature, tf.TensorSpec) and not (
        isinstance(query_signature, dict)
        and all(isinstance(s, tf.TensorSpec) for s in query_signature.values())):
        raise TypeError("query_signature must be a tf.TensorSpec or a dict[str, tf.TensorSpec]; "
                        f"got {query_signature!r}.")
    path = os.fspath(path)
    module = _IndexModule(index, query_signature)
    if index.custom_ops:
        warnings.warn(
            f"{type(index).__name__} SavedModel at {path} needs the custom ops "
            f"{', '.join(index.custom_ops)}: stock TensorFlow Serving cannot load it. Export a "
            "'portable' or 'annoy' index for stock TF Serving.", RuntimeWarning, stacklevel=2)
    tf.saved_model.save(module, path, signatures=module.trace(index))
    metadata = {
            "kind": type(index).__name__,
            "max_k": index.max_k,
            "dim": index.dim,
            "num_candidates": index.num_candidates,
            "identifier_dtype": index.identifiers.dtype.name,
            "size_bytes": index.size_bytes(),
            "is_exact": bool(index.is_exact()),
            "custom_ops": list(index.custom_ops),
    }
    os.makedirs(os.path.join(path, "assets"), exist_ok=True)
    with open(os.path.join(path, "assets", METADATA_FILE), "w") as f:
        json.dump(metadata, f, indent=2)
    return path


def checked_k(k: tf.Tensor, max_k: int) -> tf.Tensor:
    """`k` behind a graph check that `1 <= k <= max_k`: an exported `top_k` signature fails with
    an InvalidArgument naming both numbers instead of returning a short or empty list."""
    with tf.control_dependencies([tf.debugging.Assert(
            tf.logical_and(k >= 1, k <= max_k),
            [f"requested k must be in [1, max_k={max_k}]; got k =", k])]):
        return tf.identity(k)
