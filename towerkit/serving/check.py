"""Can stock TensorFlow Serving load and run this export? (`towerkit check-export`)."""

import dataclasses
import pathlib

from towerkit.serving import clean_process
from towerkit.serving.export import versions
from towerkit.serving import signatures as signatures_lib
from towerkit.serving import warmup as warmup_lib

# Registered in TensorFlow but backed by the Python interpreter, which TF Serving does not have.
PYTHON_ONLY_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})


@dataclasses.dataclass(frozen=True)
class CheckReport:
    """The result of `check`.

    Attributes:
      path: pathlib.Path. The SavedModel version directory checked.
      signatures: dict[str, Signature]. Every serving signature with inputs and outputs.
      non_stock_ops: list[str]. Ops a process with only `import tensorflow` does not register
        (e.g. `Scann>ScannSearchBatched`), plus Python-only ops (`PyFunc`, ...).
      load_error: str | None. Why loading in a clean TensorFlow process, or replaying a warmup
        request, failed; None when it worked.
      warmup_requests: int. Warmup records replayed in the clean process.
      problems: list[str]. Everything that stops stock `tensorflow/serving` from serving it.
      warnings: list[str]. Servable, but worth fixing (e.g. no warmup records).
    """

    path: pathlib.Path
    signatures: dict
    non_stock_ops: list
    load_error: str | None
    warmup_requests: int
    problems: list
    warnings: list

    @property
    def servable(self) -> bool:
        """True when stock TensorFlow Serving can load the model and run `serving_default`."""
        return not self.problems

    def format(self) -> str:
        """Returns the human-readable report printed by `towerkit check-export`."""
        lines = [f"SavedModel: {self.path}", "Signatures:"]
        for name in sorted(self.signatures):
            signature = self.signatures[name]
            lines.append(f"  {name}")
            for kind, tensors in (("input", signature.inputs), ("output", signature.outputs)):
                for tensor_name in sorted(tensors):
                    lines.append(f"    {kind:6} {tensor_name}: {tensors[tensor_name].describe()}")
        lines.append("Non-stock ops: " + (", ".join(self.non_stock_ops) or "none"))
        if self.load_error is None:
            lines.append(f"Clean TensorFlow process: loaded; {self.warmup_requests} warmup "
                         "request(s) ran")
        else:
            lines.append(f"Clean TensorFlow process: FAILED: {self.load_error}")
        lines.extend(f"Problem: {p}" for p in self.problems)
        lines.extend(f"Warning: {w}" for w in self.warnings)
        lines.append("Stock tensorflow/serving can load it: " + ("yes" if self.servable else "NO"))
        return "\n".join(lines)


def resolve_version_dir(path) -> pathlib.Path:
    """Returns `path` if it is a SavedModel, else its latest version `path/<N>/`.

    Raises:
      ValueError: neither `path` nor any `path/<N>/` is a SavedModel.
    """
    path = pathlib.Path(path)
    if (path / "saved_model.pb").is_file():
        return path
    published = versions(path)
    if not path.exists():
        raise ValueError(f"{path} does not exist: pass an export directory (a model base path with "
                         "version subdirectories, or one version directory).")
    if not published:
        raise ValueError(f"{path} is neither a SavedModel (no saved_model.pb) nor a model base "
                         "path (no numbered version directories). Pass what "
                         "towerkit.serving.export returned or its parent.")
    return path / str(published[-1])


def check(path, run: bool = True) -> CheckReport:
    """Checks that stock TensorFlow Serving can load an export and run its warmup requests.

    Lists the signatures; finds every op in the graph and function library that a process with
    only `import tensorflow` does not register (custom ops such as ScaNN's) and Python-only ops;
    then loads the model in a clean subprocess (TensorFlow alone: no towerkit, TFRS, ScaNN or
    Annoy) and replays `assets.extra/tf_serving_warmup_requests` through their signature.

    Args:
      path: str | os.PathLike. A SavedModel version directory, or a model base path (its latest
        version is checked).
      run: bool. Load and run in the clean process (the op check always runs); False skips the
        load, for a quick static check.

    Returns:
      CheckReport; `report.servable` is the verdict.

    Raises:
      ValueError: `path` is not a SavedModel or model base path, or `saved_model.pb` is corrupt.
    """
    path = resolve_version_dir(path)
    signatures = signatures_lib.read_signatures(path)
    ops = signatures_lib.read_op_names(path)
    problems, warnings = [], []
    if run:
        result = clean_process.check_saved_model(path, ops)
        load_error = result["load_error"]
        warmup_requests = result.get("warmup_requests", 0)
    else:
        result = {"unregistered": clean_process.unregistered_ops(ops)}
        load_error, warmup_requests = None, 0
    non_stock = sorted(set(result["unregistered"]) | (ops & PYTHON_ONLY_OPS))
    if result["unregistered"]:
        problems.append(
            f"ops not in stock TensorFlow: {', '.join(result['unregistered'])}. Stock "
            "tensorflow/serving cannot load them; export a stock-op index instead (BruteForce, or "
            "the portable ANN index), or build TF Serving with the custom op linked in.")
    if ops & PYTHON_ONLY_OPS:
        problems.append(f"Python-only ops {sorted(ops & PYTHON_ONLY_OPS)} (tf.py_function / "
                        "tf.numpy_function): TF Serving has no Python interpreter. Rewrite them "
                        "with TensorFlow ops.")
    if "serving_default" not in signatures:
        problems.append(f"no 'serving_default' signature (has {sorted(signatures)}): TF Serving "
                        "calls it when a request names no signature.")
    if load_error is not None:
        problems.append(f"loading or warming up in a clean TensorFlow process failed: {load_error}")
    if not (path / warmup_lib.WARMUP_FILE).is_file():
        warnings.append(f"no warmup records ({warmup_lib.WARMUP_FILE}): the first requests after a "
                        "version loads will be slow. Pass warmup_queries to "
                        "towerkit.serving.export.")
    return CheckReport(path=path, signatures=signatures, non_stock_ops=non_stock,
                       load_error=load_error, warmup_requests=warmup_requests,
                       problems=problems, warnings=warnings)
