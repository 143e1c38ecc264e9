"""Times an exported towerkit index SavedModel in a clean process (TensorFlow and NumPy only).

Run by `run_benchmark.py`; prints one JSON line. Fails if towerkit, scann, annoy or TFRS got
imported. Settings are applied by assigning the SavedModel's own knob variables (e.g. the
portable index's `leaves_to_search`), exactly what a re-export with that setting would hold.

  python measure_saved_model.py MODEL QUERIES.npy TRUTH.npy '[{"leaves_to_search": 40}]' \
      --batches 1 256 --budget-s 10 --max-queries 1000 [--session]

Two ways to call the export: the TF2 signature function (`tf.saved_model.load(...).signatures`,
default), and `--session`: the graph loaded into a TF1 `Session` and fed with `Session.run`, the
path TensorFlow Serving's C++ server takes (SavedModelBundle + Session::Run), which skips the
Python function-call machinery of the TF2 call (about 0.27 ms per call here).
"""

import argparse
import json
import sys
import time

import numpy as np
import tensorflow as tf


def measure(serve, queries, truth, batch, max_queries, budget_s):
    """(recall@k, wall queries/s, queries per CPU-second, queries run), time-budgeted."""
    k = truth.shape[1]
    serve(queries[:batch])  # warm-up (first call builds kernels)
    found, done = [], 0
    start, cpu_start = time.perf_counter(), time.process_time()
    while done < min(max_queries, len(queries)):
        found.append(serve(queries[done:done + batch])["ids"].numpy())
        done += len(found[-1])
        if time.perf_counter() - start > budget_s:
            break
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    found = np.concatenate(found)[:, :k]
    hits = sum(len(np.intersect1d(f, t)) for f, t in zip(found, truth[:done]))
    return hits / (done * k), done / seconds, done / cpu, done


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
        ids = self.session.run(self.ids, {self.inputs["queries"]: np.asarray(queries)})
        return {"ids": _Numpy(ids)}


class _Numpy:
    def __init__(self, value):
        self.value = value

    def numpy(self):
        return self.value


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("queries")
    parser.add_argument("truth")
    parser.add_argument("settings", help="JSON list of {variable name: value} dicts")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 256])
    parser.add_argument("--budget-s", type=float, default=10.0)
    parser.add_argument("--max-queries", type=int, default=1000)
    parser.add_argument("--session", action="store_true",
                        help="run the graph in a TF1 Session (TF Serving's path)")
    args = parser.parse_args()
    if args.session:
        session = SessionSignature(args.model)
        serve = lambda queries: session(queries)  # noqa: E731
        assign = session.assign
    else:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        loaded = tf.saved_model.load(args.model)
        signature = loaded.signatures["serving_default"]
        serve = lambda queries: signature(queries=tf.constant(queries))  # noqa: E731
        knobs = {v.name.split(":")[0]: v for v in getattr(loaded, "state", [])
                 if isinstance(v, tf.Variable)}
        assign = lambda name, value: knobs[name].assign(value)  # noqa: E731
    queries = np.load(args.queries)
    truth = np.load(args.truth)
    rows = []
    for setting in json.loads(args.settings) or [{}]:
        for name, value in setting.items():
            assign(name, value)
        for batch in args.batches:
            recall, qps, cpu_qps, done = measure(serve, queries, truth, batch, args.max_queries,
                                                 args.budget_s)
            rows.append({"setting": setting, "batch": batch, "recall": recall, "qps": qps,
                         "cpu_qps": cpu_qps, "queries": done})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    imported = sorted(m for m in ("towerkit", "scann", "annoy", "tensorflow_recommenders")
                      if m in sys.modules)
    if imported:
        raise SystemExit(f"not a clean process: imported {imported}")
    print(json.dumps({"rows": rows, "imported": imported}))


if __name__ == "__main__":
    main()
