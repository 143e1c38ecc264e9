"""`towerkit export RUN --index KIND --model-base-path DIR`: index a trained run and export it.

With `--rerank RANK_RUN --retrieve N --k K`, the export is retrieve-then-rank in one SavedModel:
the index retrieves N candidates, the ranker run scores them, their task probabilities are fused
(`--fusion`, see `towerkit.serving.ranker`) and the top K are returned. A ranker run given as
RUN (no `--rerank`) is exported alone, scoring `[batch, n]` candidate ids.
"""

from __future__ import annotations

import argparse
import json
import pathlib

from towerkit._validation import (check_float, check_int, parse_task_weights, positive_int,
                                  unit_fraction)

INDEX_KINDS = ("brute-force", "scann", "annoy", "portable")
DEFAULT_TARGET_RECALL = 0.95
# Class names the portable index may be exported under in `towerkit.index`.
_PORTABLE_NAMES = ("Portable", "PortableIndex", "PortableScaNN")


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "export", help="export a trained run's retrieval index for TensorFlow Serving",
        description="Build an index over a run's candidates (BruteForce, ScaNN, Annoy or the "
                    "portable ANN index) and write it as MODEL_BASE_PATH/VERSION, a SavedModel "
                    "with serving_default, top_k and query_embedding signatures.")
    parser.add_argument("run_dir", metavar="RUN", help="run directory written by `towerkit train`")
    parser.add_argument("--index", choices=INDEX_KINDS, default="brute-force",
                        help="index kind (default: %(default)s); 'scann' needs the ScaNN custom "
                             "ops at serving time, the others run on stock TF Serving")
    parser.add_argument("--model-base-path", required=True, metavar="DIR",
                        help="TF Serving base path; the version directory is created inside it")
    parser.add_argument("--version", type=positive_int, default=None,
                        help="version number (default: next after the largest existing one)")
    parser.add_argument("--k", type=positive_int, default=100,
                        help="max results per query, capped at the catalogue size (with "
                             "--rerank: at --retrieve) (default: %(default)s)")
    parser.add_argument("--target-recall", type=unit_fraction, default=None, metavar="R",
                        help="tune the ANN search (leaves/reorder, search_k) to reach recall@k "
                             ">= R against brute force on the run's held-out queries (default: "
                             f"{DEFAULT_TARGET_RECALL} for an approximate index unless its "
                             "catalogue is small enough to search exactly; not for brute-force)")
    parser.add_argument("--rerank", metavar="RANK_RUN", default=None,
                        help="a multi-task ranking run (mmoe, esmm, ...): export retrieve-then-"
                             "rank, the index retrieving --retrieve candidates for the ranker")
    parser.add_argument("--retrieve", type=positive_int, default=100, metavar="N",
                        help="with --rerank: candidates retrieved per query (default: "
                             "%(default)s)")
    parser.add_argument("--fusion", default="click=1,like=1", metavar="TASK=EXP,...",
                        help="with --rerank: score = prod p_task^EXP over the ranker's task "
                             "probabilities (default: %(default)s, i.e. p(click) * p(like | "
                             "click))")
    parser.add_argument("--json", action="store_true", help="print the export summary as JSON")
    return parser


def parse_fusion(spec: str) -> dict:
    """`'click=1,like=0.5'` -> `{'click': 1.0, 'like': 0.5}`."""
    return parse_task_weights(spec, "--fusion", "TASK=EXPONENT pairs such as 'click=1,like=1'")


def export_ranker(ranker_inputs, model_base_path, version: int | None = None) -> dict:
    """Exports a ranker alone (`RankerServable`) with warmup requests."""
    from towerkit.serving import RankerServable, export  # pylint: disable=g-import-not-at-top

    servable = RankerServable(ranker_inputs.model, ranker_inputs.request_signature,
                              ranker_inputs.candidate_feature)
    warmup = dict(ranker_inputs.sample_requests)
    warmup[ranker_inputs.candidate_feature] = ranker_inputs.sample_candidates
    path = export(servable, model_base_path, version=version, warmup_queries=warmup)
    return {"kind": "ranker", "tasks": list(ranker_inputs.tasks), "path": str(path),
            "custom_ops": []}


def export_retrieve_then_rank(inputs, ranker_inputs, kind: str, model_base_path,
                              retrieve: int = 100, k: int = 10, fusion: dict | None = None,
                              version: int | None = None,
                              target_recall: float | None = None) -> dict:
    """Builds the index (max_k = `retrieve`) and exports index + ranker as one SavedModel."""
    from towerkit.serving import RetrieveThenRank, export  # pylint: disable=g-import-not-at-top

    if k > retrieve:
        raise ValueError(f"--k {k} exceeds --retrieve {retrieve}: the ranker returns retrieved "
                         "candidates only.")
    index, summary = build_index(inputs, kind, k=retrieve, target_recall=target_recall)
    servable = RetrieveThenRank(index, inputs.query_signature, ranker_inputs.model,
                                ranker_inputs.request_signature, retrieve=index.max_k,
                                k=min(k, index.max_k), fusion=fusion, tasks=ranker_inputs.tasks,
                                candidate_feature=ranker_inputs.candidate_feature)
    rows = min(len(next(iter(inputs.sample_queries.values()))),
               len(next(iter(ranker_inputs.sample_requests.values()))))
    warmup = {name: ranker_inputs.sample_requests[name][:rows]
              for name in ranker_inputs.request_signature}
    warmup.update({name: value[:rows] for name, value in inputs.sample_queries.items()})
    path = export(servable, model_base_path, version=version, warmup_queries=warmup)
    summary.update({"kind": "retrieve_then_rank", "retrieve": servable.retrieve,
                    "max_k": servable.max_k, "fusion": servable.fusion, "path": str(path),
                    "custom_ops": list(index.custom_ops)})
    return summary


def index_class(kind: str):
    """The `towerkit.index` class for a CLI index kind."""
    from towerkit import index as index_lib  # pylint: disable=g-import-not-at-top

    if kind == "portable":
        import importlib  # pylint: disable=g-import-not-at-top
        import importlib.util  # pylint: disable=g-import-not-at-top

        modules = [index_lib]
        if importlib.util.find_spec("towerkit.index.portable") is not None:
            modules.append(importlib.import_module("towerkit.index.portable"))
        for module in modules:
            for name in _PORTABLE_NAMES:
                if hasattr(module, name):
                    return getattr(module, name)
        raise ValueError("The portable index is not available in this towerkit build; use "
                         "--index annoy or brute-force for stock TF Serving.")
    classes = {"brute-force": index_lib.BruteForce, "scann": index_lib.ScaNN,
               "annoy": index_lib.Annoy}
    if kind not in classes:
        raise ValueError(f"Unknown index kind {kind!r}; choose one of {', '.join(INDEX_KINDS)}.")
    return classes[kind]


def build_index(inputs, kind: str, k: int = 100, target_recall: float | None = None):
    """Builds (and tunes) an index over `IndexInputs`.

    An approximate index over a small catalogue searches it exactly (recall 1, see
    `Index.EXHAUSTIVE_MAX_FLOATS`); otherwise, without `target_recall`, it is tuned to recall@k
    >= `DEFAULT_TARGET_RECALL` on the run's held-out `tuning_queries` (`sample_queries` when the
    run has none), `k` being the export's max k. An explicit `target_recall` always tunes.

    Args:
        inputs: `IndexInputs` of a run.
        kind: One of `INDEX_KINDS`.
        k: int >= 1. Max results per query (capped at the catalogue size).
        target_recall: Optional float in (0, 1]; not for `brute-force` (always exact).

    Returns:
        `(index, summary dict)`.

    Raises:
        ValueError: bad `kind`, `k` or `target_recall` (checked before any work).
    """
    from towerkit.index import tune_for_recall  # pylint: disable=g-import-not-at-top

    if kind not in INDEX_KINDS:
        raise ValueError(f"Unknown index kind {kind!r}; choose one of {', '.join(INDEX_KINDS)}.")
    check_int("k", k)
    if target_recall is not None:
        check_float("target_recall", target_recall, low=0, high=1)
        if kind == "brute-force":
            raise ValueError("--target-recall does not apply to the brute-force index (it is "
                             "exact: recall 1); drop it or choose an approximate index.")
    n = len(inputs.candidate_ids)
    k = min(int(k), n)
    make_index = getattr(inputs, "make_index", None)
    index = (make_index(index_class(kind), k) if make_index is not None else
             index_class(kind)(query_model=inputs.query_model, k=k))
    index.index(inputs.candidate_embeddings, inputs.candidate_ids)
    summary = {"index": kind, "class": type(index).__name__, "num_candidates": n, "max_k": k,
               "build_seconds": round(index.build_seconds, 3), "size_bytes": index.size_bytes()}
    if index.is_exact():
        summary["tuning"] = {"note": "exact index: recall is 1", "recall": 1.0}
    elif getattr(index, "exhaustive", False) and target_recall is None:
        summary["tuning"] = {"note": "small catalogue: searched exactly (recall 1); pass "
                                     "--target-recall to use the ANN search", "recall": 1.0}
    else:
        target = DEFAULT_TARGET_RECALL if target_recall is None else target_recall
        queries = (inputs.tuning_queries if inputs.tuning_queries is not None
                   else inputs.sample_queries)
        report = tune_for_recall(index, queries, target_recall=target, k=k)
        keys = ("setting", "recall", "target_recall", "reached", "k")
        summary["tuning"] = {key: report[key] for key in keys}
        summary["tuning"]["num_queries"] = len(next(iter(queries.values())))
        summary["tuning"]["default_target"] = target_recall is None
    return index, summary


def export_inputs(inputs, kind: str, model_base_path, version: int | None = None, k: int = 100,
                  target_recall: float | None = None) -> dict:
    """Builds the index for `inputs` and writes `model_base_path/<version>/`."""
    index, summary = build_index(inputs, kind, k=k, target_recall=target_recall)
    from towerkit.serving import clean_stale_exports  # pylint: disable=g-import-not-at-top
    from towerkit.serving import export as serving_export  # pylint: disable=g-import-not-at-top

    stale = clean_stale_exports(model_base_path)
    if stale["removed"] or stale["in_progress"]:
        summary["stale_temporary_dirs"] = (
            f"removed {len(stale['removed'])} temporary director"
            f"{'y' if len(stale['removed']) == 1 else 'ies'} ({stale['removed_bytes'] / 1e6:.1f} "
            "MB) left by exports that did not finish"
            + (f"; {len(stale['in_progress'])} of running exports left alone"
               if stale["in_progress"] else ""))
    path = serving_export(index, pathlib.Path(model_base_path), version=version,
                          query_signature=inputs.query_signature,
                          warmup_queries=inputs.sample_queries)
    summary["path"] = str(path)
    summary["custom_ops"] = list(index.custom_ops)
    return summary


def run(args: argparse.Namespace) -> int:
    from towerkit import recipes  # pylint: disable=g-import-not-at-top

    if args.target_recall is not None and args.index == "brute-force":
        raise ValueError("--target-recall does not apply to --index brute-force (exact: recall "
                         "1); drop it or choose scann, annoy or portable.")
    if args.rerank is not None and args.k > args.retrieve:
        raise ValueError(f"--k {args.k} exceeds --retrieve {args.retrieve}: the ranker returns "
                         "retrieved candidates only; lower --k or raise --retrieve.")
    recipe, _ = recipes.load_run(args.run_dir)
    if args.rerank is None and hasattr(recipe, "ranker_inputs"):
        summary = export_ranker(recipe.ranker_inputs(args.run_dir), args.model_base_path,
                                version=args.version)
        print(json.dumps(summary, indent=2, sort_keys=True, default=str) if args.json else
              f"exported ranker (tasks {', '.join(summary['tasks'])}) to {summary['path']}")
        return 0
    inputs = recipe.index_inputs(args.run_dir)
    if args.rerank is not None:
        rank_recipe, _ = recipes.load_run(args.rerank)
        if not hasattr(rank_recipe, "ranker_inputs"):
            raise ValueError(f"--rerank {args.rerank} is not a ranking run (its recipe has no "
                             "ranker); train one with `towerkit train --model mmoe ...`.")
        summary = export_retrieve_then_rank(
            inputs, rank_recipe.ranker_inputs(args.rerank), args.index, args.model_base_path,
            retrieve=args.retrieve, k=args.k, fusion=parse_fusion(args.fusion),
            version=args.version, target_recall=args.target_recall)
        if args.json:
            print(json.dumps(summary, indent=2, sort_keys=True, default=str))
        else:
            print(f"exported retrieve-then-rank ({summary['class']} retrieves "
                  f"{summary['retrieve']} of {summary['num_candidates']}, ranker fuses "
                  f"{summary['fusion']}, top {summary['max_k']}) to {summary['path']}")
        return 0
    summary = export_inputs(inputs, args.index, args.model_base_path, version=args.version,
                            k=args.k, target_recall=args.target_recall)
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True, default=str))
    else:
        print(f"exported {summary['class']} over {summary['num_candidates']} candidates "
              f"(max_k {summary['max_k']}, {summary['size_bytes'] / 1e6:.1f} MB, built in "
              f"{summary['build_seconds']:.1f} s) to {summary['path']}")
        if "tuning" in summary:
            print(f"  tuning: {summary['tuning']}")
        if summary.get("stale_temporary_dirs"):
            print(f"  note: {summary['stale_temporary_dirs']}")
        if summary["custom_ops"]:
            print(f"  WARNING: needs custom ops {', '.join(summary['custom_ops'])}: stock "
                  "TensorFlow Serving cannot load it (use --index portable or annoy).")
    return 0
