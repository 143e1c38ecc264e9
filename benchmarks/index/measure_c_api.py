"""Times an exported index SavedModel from C (TensorFlow's C API), a process with no Python in it.

Run by `run_benchmark.py`; prints one JSON line, as `measure_saved_model.py` does. This wrapper
compiles `time_saved_model.c` against the TensorFlow wheel's own headers and library
(`tf.sysconfig`, a C compiler is needed: `cc`), reads the signature's tensor names from
`saved_model.pb`, runs the program once per setting and batch size, and scores its ids against
the truth. The timed process loads the SavedModel with `TF_LoadSessionFromSavedModel` and calls
`TF_SessionRun`: the SavedModelBundle + Session::Run path of TensorFlow Serving's C++ server,
without the per-call cost of Python (about 0.25-0.3 ms) and without the server's RPC layer.
`--inter-op -1` (the default) runs the ops in the calling thread, `--inter-op 1` in a
one-thread pool that every call waits for (TF Serving's default configuration uses pools).
Settings, if any, assign scalar variables of the SavedModel by name (the portable index has
none: its search setting is part of its graph, one export per setting).

  python measure_c_api.py MODEL QUERIES.npy TRUTH.npy '[]' \
      --batches 1 256 --budget-s 10 --max-queries 1000 [--inter-op -1] [--build-dir DIR]
"""

import hashlib
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from clustered_data import recall_at_k
from timing import _top_rows, measurement_parser

HERE = pathlib.Path(__file__).resolve().parent
SOURCE = HERE / "time_saved_model.c"


def compile_timer(build_dir: pathlib.Path) -> pathlib.Path:
    """`time_saved_model` built for this TensorFlow (cached by source and TF version)."""
    key = hashlib.sha256(SOURCE.read_bytes() + tf.__version__.encode()).hexdigest()[:16]
    binary = build_dir / f"time_saved_model_{key}"
    if binary.exists():
        return binary
    build_dir.mkdir(parents=True, exist_ok=True)
    lib = tf.sysconfig.get_lib()
    libs = sorted(p.name for p in pathlib.Path(lib).glob("libtensorflow_cc.so*"))
    if not libs:
        raise SystemExit(f"no libtensorflow_cc.so in {lib}: this TensorFlow has no C API library")
    cmd = [os.environ.get("CC", "cc"), "-O2", str(SOURCE), "-o", str(binary),
           f"-I{tf.sysconfig.get_include()}", f"-L{lib}", f"-l:{libs[-1]}",
           "-l:libtensorflow_framework.so.2", f"-Wl,-rpath,{lib}"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"compiling {SOURCE.name} failed ({' '.join(cmd)}):\n{result.stderr}")
    return binary


def signature_tensors(model: str):
    """`(input name, ids name, ids dtype)` of `serving_default` in `MODEL/saved_model.pb`."""
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((pathlib.Path(model) / "saved_model.pb").read_bytes())
    for meta in saved.meta_graphs:
        if "serve" in meta.meta_info_def.tags:
            signature = meta.signature_def["serving_default"]
            ids = signature.outputs["ids"]
            return (signature.inputs["queries"].name, ids.name,
                    tf.dtypes.as_dtype(ids.dtype).as_numpy_dtype)
    raise SystemExit(f"{model}: no MetaGraph tagged 'serve'")


def main() -> None:
    parser = measurement_parser("model", "JSON list of {variable name: value} dicts")
    parser.add_argument("--inter-op", type=int, default=-1,
                        help="the session's inter_op_parallelism_threads (-1: calling thread)")
    parser.add_argument("--build-dir", default=None,
                        help="where the compiled timer is cached (default: a temporary dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        binary = compile_timer(pathlib.Path(args.build_dir) if args.build_dir else tmp)
        input_name, ids_name, ids_dtype = signature_tensors(args.model)
        queries = np.ascontiguousarray(np.load(args.queries), np.float32)
        truth = np.load(args.truth)
        queries_file, ids_file = tmp / "queries.f32", tmp / "ids.bin"
        queries.tofile(queries_file)
        rows = []
        for setting in json.loads(args.settings) or [{}]:
            knobs = [f"{name}={value}" for name, value in setting.items()]
            for batch in args.batches:
                cmd = [str(binary), args.model, input_name, ids_name, str(queries_file),
                       str(len(queries)), str(queries.shape[1]), str(batch),
                       str(args.max_queries), str(args.budget_s), str(ids_file),
                       str(args.inter_op), *knobs]
                result = subprocess.run(cmd, capture_output=True, text=True)
                if result.returncode != 0:
                    raise SystemExit(f"{' '.join(cmd)} failed:\n{result.stderr[-3000:]}")
                timing = json.loads(result.stdout.strip().splitlines()[-1])
                done = timing["queries"]
                ids = np.fromfile(ids_file, ids_dtype)  # the first pass (or the part that ran)
                ids = ids.reshape(min(done, args.max_queries, len(queries)), -1)
                rows.append({"setting": setting, "batch": batch,
                             "recall": recall_at_k(_top_rows(ids, truth.shape[1]),
                                                   truth[:len(ids)]),
                             "qps": done / timing["wall_s"], "cpu_qps": done / timing["cpu_s"],
                             "queries": done, "page_faults": timing["page_faults"]})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
