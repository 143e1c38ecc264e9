"""Runs a SavedModel the way stock TensorFlow Serving would: with TensorFlow alone.

This file is executed as a script in a separate interpreter (`python -I _clean_runtime.py`), never
imported by towerkit: it must not import towerkit, TFRS, ScaNN or Annoy, so that an op those
libraries register cannot leak into the check. It reads one JSON command on stdin and writes one
JSON line on stdout (TensorFlow's own logging goes to stderr).

Commands (`{"command": ...}`):
  unregistered_ops: `{"ops": [names]}` -> `{"unregistered": [names not in stock TensorFlow]}`.
  run: `{"path", "signature", "warmup": bool, "inputs_npz": path|null, "outputs_npz": path|null}`
    -> loads the SavedModel, runs the warmup requests in `assets.extra/tf_serving_warmup_requests`
    (if any) and/or the inputs in `inputs_npz` through the signature, saves the outputs to
    `outputs_npz`.
  check: `{"path", "ops"}` -> unregistered ops, then load and warmup as `run` does; a load or
    warmup failure is reported as `load_error` rather than failing the command.
  bench_rounds: `{"path", "signature", "inputs_npz", "warmup_calls"}`, then interactive (see
    `_bench_rounds`): per-call latencies (s) of single calls cycling through the rows of
    `inputs_npz`, in rounds that a caller can interleave with other measurements.
Every reply carries `"foreign_modules"`: the towerkit/TFRS/ScaNN/Annoy modules present in this
process (always expected to be empty).
"""

import json
import os
import sys
import time
import traceback

_FOREIGN = ("towerkit", "tensorflow_recommenders", "scann", "annoy")
_WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")


def _foreign_modules():
    return sorted(m for m in sys.modules if m.split(".")[0] in _FOREIGN)


def _unregistered_ops(command):
    import tensorflow  # noqa: F401  (registers the stock ops)
    from tensorflow.python.framework import op_def_registry

    return {"unregistered": sorted(op for op in command["ops"] if op_def_registry.get(op) is None)}


def _warmup_requests(path):
    """Yields (signature_name, {input: np.ndarray}) for each warmup PredictionLog."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    warmup_file = os.path.join(path, _WARMUP_FILE)
    if not os.path.isfile(warmup_file):
        return
    for record in tf.data.TFRecordDataset(warmup_file):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        if log.WhichOneof("log_type") != "predict_log":
            raise ValueError(f"warmup record holds {log.WhichOneof('log_type')!r}, not predict_log")
        request = log.predict_log.request
        inputs = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
        yield request.model_spec.signature_name or "serving_default", inputs


def _call(signature, inputs):
    import tensorflow as tf

    outputs = signature(**{name: tf.constant(value) for name, value in inputs.items()})
    # String tensors come back as object arrays of bytes; fixed-width bytes survive np.savez.
    return {name: value.numpy().astype(bytes) if value.dtype == tf.string else value.numpy()
            for name, value in outputs.items()}


def _run(command):
    import numpy as np
    import tensorflow as tf

    loaded = tf.saved_model.load(command["path"])
    reply = {"signatures": sorted(loaded.signatures.keys()), "warmup_requests": 0}
    if command.get("warmup"):
        for name, inputs in _warmup_requests(command["path"]):
            if name not in loaded.signatures:
                raise ValueError(f"warmup request names signature {name!r}, which the model lacks")
            _call(loaded.signatures[name], inputs)
            reply["warmup_requests"] += 1
    if command.get("inputs_npz"):
        with np.load(command["inputs_npz"], allow_pickle=False) as data:
            inputs = {name: data[name] for name in data.files}
        outputs = _call(loaded.signatures[command["signature"]], inputs)
        np.savez(command["outputs_npz"], **outputs)
        reply["outputs"] = sorted(outputs)
    return reply


def _check(command):
    reply = _unregistered_ops(command)
    try:
        reply.update(_run({"path": command["path"], "warmup": True}))
        reply["load_error"] = None
    except Exception as error:  # The point of the check: report why stock TensorFlow fails.
        reply["load_error"] = f"{type(error).__name__}: {error}"
    return reply


def _timed_calls(command):
    """Loads the model and returns `time_calls(n) -> [latency_s]`, cycling through the rows."""
    import numpy as np
    import tensorflow as tf

    loaded = tf.saved_model.load(command["path"])
    signature = loaded.signatures[command["signature"]]
    with np.load(command["inputs_npz"], allow_pickle=False) as data:
        columns = {name: data[name] for name in data.files}
    rows = len(next(iter(columns.values())))
    single = [{name: tf.constant(col[i:i + 1]) for name, col in columns.items()}
              for i in range(rows)]
    calls = [0]

    def time_calls(n):
        latencies = []
        for _ in range(n):
            inputs = single[calls[0] % rows]
            calls[0] += 1
            start = time.perf_counter()
            outputs = signature(**inputs)
            for value in outputs.values():
                value.numpy()
            latencies.append(time.perf_counter() - start)
        return latencies

    time_calls(command.get("warmup_calls", 10))
    return time_calls


def _bench_rounds(command):
    """Interactive: after a `{"ready": true}` line, each stdin line `n` times n calls and answers
    `{"latencies_s": [...]}`; `0` ends. Lets a caller interleave rounds with other runtimes."""
    time_calls = _timed_calls(command)
    sys.stdout.write(json.dumps({"ready": True}) + "\n")
    sys.stdout.flush()
    for line in sys.stdin:
        n = int(line)
        if n == 0:
            break
        sys.stdout.write(json.dumps({"latencies_s": time_calls(n)}) + "\n")
        sys.stdout.flush()
    return {}


def main():
    command = json.loads(sys.stdin.readline())
    handlers = {"unregistered_ops": _unregistered_ops, "run": _run, "check": _check,
                "bench_rounds": _bench_rounds}
    try:
        reply = handlers[command["command"]](command)
        reply["ok"] = True
    except Exception as error:  # Reported to the parent process, which raises or reports it.
        reply = {"ok": False, "error": f"{type(error).__name__}: {error}",
                 "traceback": traceback.format_exc()}
    reply["foreign_modules"] = _foreign_modules()
    sys.stdout.write("\n" + json.dumps(reply) + "\n")
    return 0 if reply["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
