"""Runs a SavedModel in a clean interpreter: TensorFlow only, as stock TF Serving would load it.

The child runs `_clean_runtime.py` as a script in isolated mode (`python -I`), so neither towerkit
nor TFRS, ScaNN or Annoy is imported there; the child reports the modules it holds and this module
raises if any of them appears.
"""

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

_SCRIPT = pathlib.Path(__file__).with_name("_clean_runtime.py")


class CleanProcessError(RuntimeError):
    """The clean TensorFlow process failed to load or run the SavedModel."""


@dataclasses.dataclass(frozen=True)
class CleanRun:
    """What a clean-process run returned.

    Attributes:
      signatures: list[str]. Signature names of the loaded model.
      warmup_requests: int. Warmup records replayed without error.
      outputs: dict[str, np.ndarray]. Signature outputs for the given inputs (empty without).
    """

    signatures: list
    warmup_requests: int
    outputs: dict


def _call(command: dict, timeout: float) -> dict:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        result = subprocess.run([sys.executable, "-I", str(_SCRIPT)], input=json.dumps(command),
                                capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        raise CleanProcessError(f"the clean TensorFlow process did not finish within "
                                f"{timeout:.0f} s ({command['command']}).") from error
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise CleanProcessError(f"the clean TensorFlow process exited with code "
                                f"{result.returncode} and no reply. stderr tail:\n"
                                f"{result.stderr[-3000:]}")
    reply = json.loads(lines[-1])
    if reply["foreign_modules"]:
        raise CleanProcessError(f"the clean process imported {reply['foreign_modules']}; it must "
                                "run with TensorFlow alone.")
    if not reply["ok"]:
        raise CleanProcessError(f"in a clean TensorFlow process: {reply['error']}")
    return reply


def unregistered_ops(ops) -> list:
    """Returns the op names that a process with only `import tensorflow` does not register.

    Args:
      ops: iterable of str. Op type names (see `signatures.read_op_names`).

    Returns:
      list[str], sorted: ops that are not stock TensorFlow (e.g. `Scann>ScannSearchBatched`).
    """
    return _call({"command": "unregistered_ops", "ops": sorted(ops)}, timeout=300)["unregistered"]


def check_saved_model(path, ops, timeout: float = 300) -> dict:
    """Finds unregistered ops, then loads the model and replays its warmup, in one clean process.

    Args:
      path: str | os.PathLike. A SavedModel version directory.
      ops: iterable of str. The model's op type names.
      timeout: float. Seconds before the child is killed.

    Returns:
      dict with `unregistered` (list[str]), `load_error` (str | None: why loading or a warmup
      request failed), `signatures` and `warmup_requests` (when loading worked).
    """
    return _call({"command": "check", "path": str(pathlib.Path(path).resolve()),
                  "ops": sorted(ops)}, timeout)


def run_saved_model(path, inputs: dict | None = None, signature: str = "serving_default",
                    warmup: bool = False, timeout: float = 300) -> CleanRun:
    """Loads a SavedModel with TensorFlow alone and runs a signature and/or its warmup requests.

    Args:
      path: str | os.PathLike. A SavedModel version directory.
      inputs: dict[str, np.ndarray] | None. Inputs for `signature` (batched), or None.
      signature: str. Signature to call with `inputs`.
      warmup: bool. Replay `assets.extra/tf_serving_warmup_requests` through their signatures.
      timeout: float. Seconds before the child is killed.

    Returns:
      CleanRun with the outputs as NumPy arrays.

    Raises:
      CleanProcessError: loading or running failed in the clean process (e.g. an op that stock
        TensorFlow does not register), or a foreign module was imported there.
    """
    with tempfile.TemporaryDirectory(prefix="towerkit-clean-") as tmp:
        command = {"command": "run", "path": str(pathlib.Path(path).resolve()),
                   "signature": signature, "warmup": warmup, "inputs_npz": None,
                   "outputs_npz": None}
        if inputs is not None:
            command["inputs_npz"] = os.path.join(tmp, "inputs.npz")
            command["outputs_npz"] = os.path.join(tmp, "outputs.npz")
            np.savez(command["inputs_npz"], **{k: _storable(v) for k, v in inputs.items()})
        reply = _call(command, timeout)
        outputs = {}
        if inputs is not None:
            with np.load(command["outputs_npz"], allow_pickle=False) as data:
                outputs = {name: data[name] for name in data.files}
    return CleanRun(signatures=reply["signatures"], warmup_requests=reply["warmup_requests"],
                    outputs=outputs)


class CleanTimer:
    """A clean TensorFlow process holding a loaded SavedModel that times single calls on demand.

    Rounds of `time(n)` can be interleaved with other measurements in the calling process, so
    that both see the same machine load (the child waits, idle, between rounds).

    Args:
      path: str | os.PathLike. A SavedModel version directory.
      inputs: dict[str, np.ndarray]. `[n, ...]` rows; calls cycle through them as batches of 1.
      signature: str. Signature to call.
      warmup_calls: int. Untimed calls after loading.

    Raises:
      CleanProcessError: the child failed to load the model or to answer.
    """

    def __init__(self, path, inputs: dict, signature: str = "serving_default",
                 warmup_calls: int = 10):
        self._tmp = tempfile.TemporaryDirectory(prefix="towerkit-clean-")
        npz = os.path.join(self._tmp.name, "inputs.npz")
        np.savez(npz, **{k: _storable(v) for k, v in inputs.items()})
        env = dict(os.environ)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        self._process = subprocess.Popen(
            [sys.executable, "-I", str(_SCRIPT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True, env=env)
        self._send(json.dumps({"command": "bench_rounds", "signature": signature,
                               "path": str(pathlib.Path(path).resolve()), "inputs_npz": npz,
                               "warmup_calls": warmup_calls}))
        reply = self._receive()
        if not reply.get("ready"):
            self._process.wait(timeout=60)
            raise CleanProcessError(f"the clean TensorFlow process failed to load the model: "
                                    f"{reply.get('error')}")

    def _send(self, line: str) -> None:
        self._process.stdin.write(line + "\n")
        self._process.stdin.flush()

    def _receive(self) -> dict:
        while True:
            line = self._process.stdout.readline()
            if not line:
                raise CleanProcessError("the clean TensorFlow process exited unexpectedly.")
            if line.startswith("{"):
                return json.loads(line)

    def time(self, repeats: int) -> np.ndarray:
        """Returns `[repeats]` per-call latencies in seconds (call + outputs to NumPy)."""
        self._send(str(int(repeats)))
        reply = self._receive()
        if "latencies_s" not in reply:
            raise CleanProcessError(f"the clean TensorFlow process failed: {reply.get('error')}")
        return np.asarray(reply["latencies_s"])

    def close(self) -> None:
        """Ends the child process and checks that it stayed clean."""
        if self._process.poll() is None:
            self._send("0")
            reply = self._receive()
            self._process.wait(timeout=60)
            if reply.get("foreign_modules"):
                raise CleanProcessError(f"the clean process imported {reply['foreign_modules']}.")
        self._tmp.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def _storable(value) -> np.ndarray:
    """An array `np.load(allow_pickle=False)` reads back: strings become fixed-width bytes."""
    array = np.asarray(value)
    if array.dtype == object:
        array = np.asarray([v.encode() if isinstance(v, str) else v for v in array.ravel()],
                           dtype=bytes).reshape(array.shape)
    elif array.dtype.kind == "U":
        array = np.char.encode(array, "utf-8")
    return array
