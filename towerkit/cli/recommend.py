"""`towerkit recommend EXPORT_DIR_OR_URL --user 42 -k 10`: top candidates for one user.

A sequence export (gru, sasrec, ...) takes the user's watched movies instead:
`towerkit recommend EXPORT_DIR --history 50,181,1 -k 10` (oldest first).

The target is a local export (loaded in this process with the TensorFlow runtime) or a running
TensorFlow Serving: `http://host:8501` (REST) or `grpc://host:8500` (gRPC). All three print the
same table.
"""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "recommend", help="recommend for a user from an export or a running TF Serving",
        description="Query a towerkit export for one user: a local export directory, a REST URL "
                    "(http://host:8501) or a gRPC URL (grpc://host:8500).")
    parser.add_argument("target", metavar="EXPORT_DIR_OR_URL",
                        help="model base path, version directory, http(s):// or grpc:// URL")
    parser.add_argument("--user", default=None,
                        help="the user id, fed to the export's single query input")
    parser.add_argument("--history", default=None, metavar="ID,ID,...",
                        help="instead of --user, for a sequence export (gru, sasrec, ...): the "
                             "user's watched movie ids, oldest first, fed as `history` (padded "
                             "with \"\") and `history_length`")
    parser.add_argument("-k", type=int, default=None,
                        help="number of results (default: the export's max_k)")
    parser.add_argument("--model-name", default="movielens",
                        help="served model name, for URLs (default: %(default)s)")
    parser.add_argument("--version", type=int, default=None,
                        help="model version (URLs: pinned version; default: latest)")
    parser.add_argument("--input", default=None,
                        help="query input name (default: the signature's only input)")
    parser.add_argument("--feature", action="append", default=[], metavar="NAME=VALUE",
                        help="another input of the export, e.g. --feature timestamp=893286638 "
                             "for a retrieve-then-rank export (repeatable)")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds per request, for URLs (default: %(default)s)")
    return parser


def _typed(info, name: str, value: str, flag: str):
    import numpy as np

    if info.dtype.is_integer:
        try:
            return np.array([int(value)], dtype=info.dtype.as_numpy_dtype)
        except ValueError:
            raise ValueError(f"input {name!r} is {info.describe()}: {flag} must be an integer, "
                             f"got {value!r}.") from None
    if info.dtype.is_floating:
        try:
            return np.array([float(value)], dtype=info.dtype.as_numpy_dtype)
        except ValueError:
            raise ValueError(f"input {name!r} is {info.describe()}: {flag} must be a number, "
                             f"got {value!r}.") from None
    if info.dtype.name == "string":
        return np.array([value])
    raise ValueError(f"input {name!r} is {info.describe()}: `recommend` only feeds strings and "
                     "numbers; use towerkit.serving.Client for others.")


def _feature_inputs(signature, features) -> dict:
    """Parses `--feature NAME=VALUE` flags against the signature."""
    inputs = {}
    for item in features:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--feature takes NAME=VALUE, got {item!r}.")
        if name not in signature.inputs:
            raise ValueError(f"--feature {name!r} is not an input of serving_default; it takes "
                             f"{sorted(signature.inputs)}.")
        inputs[name] = _typed(signature.inputs[name], name, value, f"--feature {name}")
    return inputs


def _user_input(signature, user: str, input_name: str | None, features=()):
    """Maps `--user` (and `--feature` flags) to the signature's inputs, typed by dtype."""
    import numpy as np

    names = sorted(signature.inputs)
    extra = _feature_inputs(signature, features)
    if input_name is None:
        open_names = [n for n in names if n not in extra]
        if len(open_names) != 1:
            raise ValueError(f"the export takes the inputs {names}; --user fills one and "
                             "--feature NAME=VALUE the others: pick the user's with --input NAME "
                             "(or query with towerkit.serving.Client).")
        input_name = open_names[0]
    if input_name not in signature.inputs:
        raise ValueError(f"--input {input_name!r} is not an input of serving_default; it takes "
                         f"{names}.")
    info = signature.inputs[input_name]
    if info.dtype.is_integer:
        try:
            value = np.array([int(user)], dtype=info.dtype.as_numpy_dtype)
        except ValueError:
            raise ValueError(f"input {input_name!r} is {info.describe()}: --user must be an "
                             f"integer, got {user!r}.") from None
    elif info.dtype.name == "string":
        value = np.array([user])
    else:
        raise ValueError(f"input {input_name!r} is {info.describe()}: `recommend --user` only "
                         "feeds string or integer ids; use towerkit.serving.Client for others.")
    missing = sorted(set(names) - set(extra) - {input_name})
    if missing:
        raise ValueError(f"the export also takes {missing}: pass --feature NAME=VALUE for each.")
    return {**extra, input_name: value}


def _history_input(signature, history: str, features=()) -> dict:
    """Maps `--history 1,2,3` (and `--feature` flags) to a sequence export's `history`
    `[1, width]` strings, padded with "", and `history_length` `[1]`."""
    import numpy as np

    info = signature.inputs.get("history")
    if (info is None or "history_length" not in signature.inputs or info.dtype.name != "string"
            or info.shape is None or len(info.shape) != 2 or info.shape[1] is None):
        raise ValueError(f"--history needs a sequence export (inputs history: string "
                         f"[batch, width] and history_length); this one takes "
                         f"{sorted(signature.inputs)}: use --user.")
    ids = [i.strip() for i in history.split(",") if i.strip()]
    width = int(info.shape[1])
    if not ids or len(ids) > width:
        raise ValueError(f"--history takes 1 to {width} comma-separated movie ids (oldest "
                         f"first), got {len(ids)}; keep the latest {width}.")
    extra = _feature_inputs(signature, features)
    missing = sorted(set(signature.inputs) - set(extra) - {"history", "history_length"})
    if missing:
        raise ValueError(f"the export also takes {missing}: pass --feature NAME=VALUE for each.")
    length = signature.inputs["history_length"].dtype.as_numpy_dtype
    return {**extra, "history": np.array([ids + [""] * (width - len(ids))]),
            "history_length": np.array([len(ids)], dtype=length)}


def format_recommendations(result) -> str:
    """The table printed by `towerkit recommend`: rank, id, score."""
    lines = [f"{'rank':>4}  {'score':>10}  id"]
    lines += [f"{rank:>4}  {score:>10.4f}  {item}" for rank, item, score in result.rows(0)]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from towerkit import serving

    target = args.target
    try:
        if target.startswith(("http://", "https://", "grpc://")):
            model = serving.Client(target, args.model_name, version=args.version,
                                   timeout=args.timeout)
        else:
            path = target if args.version is None else f"{target.rstrip('/')}/{args.version}"
            model = serving.LocalModel(path)
        signatures = model.metadata()
        if "serving_default" not in signatures:
            raise ValueError(f"{target} has no serving_default signature (it has "
                             f"{sorted(signatures)}): not a towerkit export.")
        if (args.user is None) == (args.history is None):
            raise ValueError("pass exactly one of --user ID and --history ID,ID,... (a "
                             "sequence export's watched movies).")
        if args.history is not None:
            inputs = _history_input(signatures["serving_default"], args.history, args.feature)
        else:
            inputs = _user_input(signatures["serving_default"], args.user, args.input,
                                 args.feature)
        result = model.predict(inputs, k=args.k)
    except (ValueError, serving.ServingError) as error:
        print(f"towerkit recommend: {error}", file=sys.stderr)
        return 2
    if result.known_query is not None and not bool(result.known_query[0]):
        who = f"user {args.user!r}" if args.user is not None else "any movie of --history"
        print(f"towerkit recommend: note: the model does not know {who} "
              "(known_query is false): these are fallback recommendations, not personal ones.",
              file=sys.stderr)
    print(format_recommendations(result))
    return 0
