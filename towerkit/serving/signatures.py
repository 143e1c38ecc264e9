"""Reads a SavedModel's signatures and op names from `saved_model.pb`, without loading it.

Reading the protocol buffer (rather than `tf.saved_model.load`) works for models whose ops are not
registered in this process (a ScaNN index in an environment without scann), and costs milliseconds.
"""

import dataclasses
import pathlib

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

_SERVE_TAG = "serve"


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """One signature input or output.

    Attributes:
      dtype: tf.DType. The tensor's dtype.
      shape: tuple[int | None, ...] | None. Static shape, `None` for unknown dims; `None` when the
        rank itself is unknown.
    """

    dtype: tf.DType
    shape: tuple | None

    def describe(self) -> str:
        """Returns e.g. `string [batch]` or `float32 [batch, 64]` (unknown dims: `batch`, `?`)."""
        if self.shape is None:
            return f"{self.dtype.name} [any shape]"
        if not self.shape:
            return f"{self.dtype.name} scalar"
        dims = ["batch" if i == 0 and d is None else "?" if d is None else str(d)
                for i, d in enumerate(self.shape)]
        return f"{self.dtype.name} [{', '.join(dims)}]"


@dataclasses.dataclass(frozen=True)
class Signature:
    """A SavedModel signature: named inputs and outputs.

    Attributes:
      name: str. The signature key, e.g. `serving_default`.
      inputs: dict[str, TensorInfo]. Input name -> dtype and shape.
      outputs: dict[str, TensorInfo]. Output name -> dtype and shape.
    """

    name: str
    inputs: dict
    outputs: dict

    def describe(self) -> str:
        """Returns a one-line summary: `name(inputs) -> outputs`."""
        ins = ", ".join(f"{k}: {v.describe()}" for k, v in sorted(self.inputs.items()))
        outs = ", ".join(f"{k}: {v.describe()}" for k, v in sorted(self.outputs.items()))
        return f"{self.name}({ins}) -> {{{outs}}}"


def _tensor_info(proto) -> TensorInfo:
    if proto.tensor_shape.unknown_rank:
        shape = None
    else:
        shape = tuple(None if d.size < 0 else int(d.size) for d in proto.tensor_shape.dim)
    return TensorInfo(dtype=tf.dtypes.as_dtype(proto.dtype), shape=shape)


def signature_from_proto(name: str, proto) -> Signature:
    """Converts a `tensorflow.SignatureDef` proto (from a SavedModel or TF Serving metadata)."""
    return Signature(name=name,
                     inputs={k: _tensor_info(v) for k, v in proto.inputs.items()},
                     outputs={k: _tensor_info(v) for k, v in proto.outputs.items()})


def read_saved_model_proto(path) -> saved_model_pb2.SavedModel:
    """Parses `path/saved_model.pb`.

    Args:
      path: str | os.PathLike. A SavedModel directory (one version, e.g. `models/movielens/3`).

    Returns:
      The `SavedModel` protocol buffer.

    Raises:
      ValueError: `path` holds no `saved_model.pb`, or the file does not parse.
    """
    path = pathlib.Path(path)
    pb = path / "saved_model.pb"
    if not pb.is_file():
        hint = ""
        if path.is_dir():
            versions = sorted(p.name for p in path.iterdir() if p.name.isdigit())
            if versions:
                hint = (f" It looks like a model base path with versions {versions}: pass a "
                        f"version directory such as {path / versions[-1]}.")
        raise ValueError(f"{path} is not a SavedModel directory: {pb} does not exist.{hint}")
    proto = saved_model_pb2.SavedModel()
    try:
        proto.ParseFromString(pb.read_bytes())
    except Exception as error:  # protobuf raises DecodeError, or RuntimeWarning subclasses.
        raise ValueError(f"{pb} is corrupt: it does not parse as a SavedModel proto ({error}). "
                         "Re-export the model.") from error
    if not proto.meta_graphs:
        raise ValueError(f"{pb} holds no MetaGraph: re-export the model.")
    return proto


def _serving_meta_graph(proto, path):
    for meta_graph in proto.meta_graphs:
        if _SERVE_TAG in meta_graph.meta_info_def.tags:
            return meta_graph
    raise ValueError(f"{path} has no MetaGraph tagged {_SERVE_TAG!r}, which TF Serving loads. "
                     "Save it with tf.saved_model.save (which tags 'serve').")


def read_signatures(path) -> dict:
    """Returns the SavedModel's serving signatures.

    Args:
      path: str | os.PathLike. A SavedModel directory.

    Returns:
      dict[str, Signature], keyed by signature name (internal `__saved_model_init_op` excluded).

    Raises:
      ValueError: `path` is not a readable SavedModel.
    """
    meta_graph = _serving_meta_graph(read_saved_model_proto(path), path)
    return {name: signature_from_proto(name, sig)
            for name, sig in meta_graph.signature_def.items() if not name.startswith("__")}


def read_op_names(path) -> set:
    """Returns every op type the SavedModel's graph and function library use.

    Function calls by name (a node whose op is a library function) are excluded: they are not ops.

    Args:
      path: str | os.PathLike. A SavedModel directory.

    Returns:
      set[str] of op type names, e.g. {"MatMul", "TopKV2", "Scann>ScannSearchBatched"}.
    """
    proto = read_saved_model_proto(path)
    ops = set()
    functions = set()
    for meta_graph in proto.meta_graphs:
        library = meta_graph.graph_def.library
        functions.update(f.signature.name for f in library.function)
        ops.update(node.op for node in meta_graph.graph_def.node)
        for function in library.function:
            ops.update(node.op for node in function.node_def)
    return ops - functions


def validate_inputs(signature: Signature, inputs: dict, what: str = "inputs") -> dict:
    """Checks `inputs` against a signature's names, dtypes and ranks; returns them as NumPy arrays.

    Args:
      signature: Signature. The signature the inputs are for.
      inputs: dict[str, array-like]. Input name -> value with a leading batch dim.
      what: str. How to name the inputs in error messages.

    Returns:
      dict[str, np.ndarray], each cast to the signature dtype (str -> bytes for string inputs).

    Raises:
      ValueError: an input is missing or unknown, or has the wrong rank or fixed dim.
      TypeError: an input cannot be converted to the signature dtype.
    """
    if not isinstance(inputs, dict):
        raise TypeError(f"{what} must be a dict of input name -> array, got "
                        f"{type(inputs).__name__}.")
    expected = ", ".join(f"{k}: {v.describe()}" for k, v in sorted(signature.inputs.items()))
    missing = sorted(set(signature.inputs) - set(inputs))
    unknown = sorted(set(inputs) - set(signature.inputs))
    if missing or unknown:
        raise ValueError(f"{what} do not match signature {signature.name!r}: missing {missing}, "
                         f"unknown {unknown}. Expected inputs: {expected}.")
    converted = {}
    for name, value in inputs.items():
        info = signature.inputs[name]
        array = np.asarray(value)
        if info.dtype == tf.string:
            if array.dtype.kind not in "USO":
                raise TypeError(f"{what}[{name!r}] has dtype {array.dtype}, but signature "
                                f"{signature.name!r} takes {info.describe()}: pass strings, e.g. "
                                f"[str(x) for x in values].")
            array = np.array([s.encode() if isinstance(s, str) else bytes(s)
                              for s in array.ravel()], dtype=object).reshape(array.shape)
        else:
            target = info.dtype.as_numpy_dtype
            if array.dtype.kind in "USO" or (array.dtype.kind == "f" and info.dtype.is_integer):
                raise TypeError(f"{what}[{name!r}] has dtype {array.dtype}, but signature "
                                f"{signature.name!r} takes {info.describe()}: cast it with "
                                f"np.asarray(value, dtype=np.{np.dtype(target).name}).")
            array = array.astype(target)
        if info.shape is not None:
            if array.ndim != len(info.shape) or any(
                    d is not None and d != a for d, a in zip(info.shape, array.shape)):
                raise ValueError(f"{what}[{name!r}] has shape {list(array.shape)}, but signature "
                                 f"{signature.name!r} takes {info.describe()}. Expected inputs: "
                                 f"{expected}.")
        converted[name] = array
    return converted
