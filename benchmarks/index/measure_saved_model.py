"""Times an exported towerkit index SavedModel in a clean process (TensorFlow and NumPy only).

Run by `run_benchmark.py`; prints one JSON line. Fails if towerkit, scann, annoy or TFRS got
imported. Settings, if any, assign scalar variables of the SavedModel by name (the portable
index has none: its search setting is part of its graph, one export per setting).

  python measure_saved_model.py MODEL QUERIES.npy TRUTH.npy '[]' \
      --batches 1 256 --budget-s 10 --max-queries 1000 [--session]

Two ways to call the export: the TF2 signature function (`tf.saved_model.load(...).signatures`,
default), and `--session`: the graph loaded into a TF1 `Session` and fed with `Session.run`, the
path TensorFlow Serving's C++ server takes (SavedModelBundle + Session::Run), which skips the
Python function-call machinery of the TF2 call (about 0.27 ms per call here).
"""

import json
import sys

import numpy as np
import tensorflow as tf

from timing import measurement_parser, run_settings


class SessionSignature:
    """`serving_default` of a SavedModel run through a TF1 Session (TF Serving's path)."""

    def __init__(self, path):
        tf.compat.v1.disable_eager_execution()
        config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=1,
                                          inter_op_parallelism_threads=1)
        self.session = tf.compat.v1.Session(graph=tf.Graph(), config=config)
        meta = tf.compat.v1.saved_model.loader.load(self.session, ["serve"], path)
        signature = meta.signature_def["serving_default"]
        self.inputs = {key: value.name for key, value in signature.inputs.items()}
        self.ids = signature.outputs["ids"].name
        graph = self.session.graph
        self.handles = {}
        for op in graph.get_operations():
            if op.type == "VarHandleOp":
                self.handles[op.get_attr("shared_name").decode().split("/")[-1]] = op.outputs[0]

    def assign(self, name, value):
        matches = [h for key, h in self.handles.items() if key.split(":")[0].startswith(name)]
        if len(matches) != 1:
            raise SystemExit(f"knob {name}: {len(matches)} variables match in the session graph")
        with self.session.graph.as_default():
            dtype = matches[0].op.get_attr("dtype")
            self.session.run(tf.raw_ops.AssignVariableOp(resource=matches[0],
                                                         value=tf.constant(value, dtype)))

    def __call__(self, queries):
        """The `ids` output for `queries`, as a NumPy array."""
        return self.session.run(self.ids, {self.inputs["queries"]: np.asarray(queries)})


def main() -> None:
    parser = measurement_parser("model", "JSON list of {variable name: value} dicts")
    parser.add_argument("--session", action="store_true",
                        help="run the graph in a TF1 Session (TF Serving's path)")
    args = parser.parse_args()
    if args.session:
        serve = SessionSignature(args.model)
        assign = serve.assign
    else:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        loaded = tf.saved_model.load(args.model)
        signature = loaded.signatures["serving_default"]
        serve = lambda queries: signature(queries=tf.constant(queries))["ids"].numpy()  # noqa: E731
        knobs = {v.name.split(":")[0]: v for v in getattr(loaded, "state", [])
                 if isinstance(v, tf.Variable)}
        assign = lambda name, value: knobs[name].assign(value)  # noqa: E731

    def configure(setting):
        for name, value in setting.items():
            assign(name, value)
        return lambda batch: serve

    rows = run_settings(args, json.loads(args.settings) or [{}], configure)
    imported = sorted(m for m in ("towerkit", "scann", "annoy", "tensorflow_recommenders")
                      if m in sys.modules)
    if imported:
        raise SystemExit(f"not a clean process: imported {imported}")
    print(json.dumps({"rows": rows, "imported": imported}))


if __name__ == "__main__":
    main()
