"""Atomic, resumable training runs: staging, checkpoints, completion records, checks.

Every `Recipe.train` goes through `train_atomically` (the `Recipe` base class wraps each
subclass's `train`), so a recipe inherits all of this by writing its run into the directory
it is given and training through `fit_resumable`:

- The run is trained in a staging directory beside `--out` (`.<name>.towerkit-partial`) and
  published with one `rename` when training has finished; `--out` then holds either the old
  run or the new one, never a mix. A non-empty `--out` is refused unless `overwrite=True`.
- `run.json` records `state`: `"training"` while staged, `"complete"` once finished, with
  `files`, the size and SHA-256 of every file of the run. `load_run` (every reader: evaluate,
  export, recommend, `index_inputs`) refuses a run that is not complete or whose files no
  longer match the record, with a message naming the file and the fix.
- `fit_resumable` checkpoints the model, its optimizer, the epoch/step counters and the
  per-epoch logs after every epoch and every `checkpoint_every` steps into
  `<staging>/checkpoints`. Each epoch's batches come from `make_dataset(epoch)` (shuffled with
  `epoch_seed(seed, epoch)`), so `resume=True` (`towerkit train --resume RUN`) restores the
  last checkpoint and continues with exactly the batches an uninterrupted run would have seen:
  no epoch or step is lost or repeated. A model without random ops in training (e.g.
  `two_tower`) ends with the same weights as an uninterrupted run; ops such as dropout draw new
  random numbers after a resume (their RNG state is not checkpointed).

Test hook: with `TOWERKIT_TEST_KILL_AFTER_STEPS=N` in the environment, `fit_resumable` kills
its own process (SIGKILL) after N training steps, to test resumption (with
`TOWERKIT_TEST_KILL_TASK=worker1` as well, only that multi-worker task).

Distributed runs (`config["distribute"]`, `towerkit train --distribute`): see
`towerkit.recipes.distribute`; checkpoints and resumption work the same (the chief writes them,
every worker restores them).
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import signal
import time
from typing import Callable, Iterable, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from towerkit.tasks.global_batch import GlobalBatchLoss

__all__ = [
    "CHECKPOINT_DIR",
    "STATE_COMPLETE",
    "STATE_TRAINING",
    "check_run_complete",
    "distribution",
    "epoch_seed",
    "fit_resumable",
    "json_default",
    "mark_run_complete",
    "staging_dir",
    "train_atomically",
    "validate_out_dir",
]

RUN_FILE = "run.json"
STATE_TRAINING = "training"
STATE_COMPLETE = "complete"
CHECKPOINT_DIR = "checkpoints"
PROGRESS_FILE = "progress.json"
STAGING_SUFFIX = ".towerkit-partial"
STATE_KEYS = ("state", "files", "completed_at")
KILL_HOOK = "TOWERKIT_TEST_KILL_AFTER_STEPS"
DEFAULT_CHECKPOINT_EVERY = 200

# Staging directories of runs being trained in this process: `load_run` accepts them (a
# recipe may evaluate its own run before it is published).
_ACTIVE: set = set()
_STEPS_RUN = [0]  # training steps in this process, for the test kill hook
_CHECKPOINT_EVERY = [None]  # set by train_atomically for the run being trained
_RESTORE_DIR = [None]  # a non-chief worker restores from the chief's staging directory
KILL_TASK = "TOWERKIT_TEST_KILL_TASK"  # with KILL_HOOK: kill only this multi-worker task


def staging_dir(out) -> pathlib.Path:
    """The staging directory of a run published at `out`: `<parent>/.<name>.towerkit-partial`."""
    out = pathlib.Path(os.path.abspath(os.fspath(out)))
    return out.parent / f".{out.name}{STAGING_SUFFIX}"


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffle seed of epoch `epoch` (0-based) of a run seeded with `seed`."""
    return int((int(seed) * 1_000_003 + int(epoch) * 7_919) % (2 ** 31 - 1))


def _read_json(path: pathlib.Path):
    return json.loads(path.read_text())


def _write_json(path: pathlib.Path, value) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, sort_keys=True, default=json_default) + "\n")
    os.replace(tmp, path)


def json_default(value):
    """`json.dumps` default for NumPy scalars and arrays (run files, layer configs)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"Cannot serialise {type(value).__name__} to JSON.")


def _progress(staging: pathlib.Path) -> Optional[dict]:
    path = staging / CHECKPOINT_DIR / PROGRESS_FILE
    if not path.is_file():
        return None
    try:
        return _read_json(path)
    except (OSError, json.JSONDecodeError):
        return None


def _describe_progress(staging: pathlib.Path) -> str:
    progress = _progress(staging)
    if progress is None:
        return "no checkpoint yet"
    return f"checkpoint at epoch {progress['epoch'] + 1}, step {progress['step']}"


def validate_out_dir(out, overwrite: bool = False, resume: bool = False) -> pathlib.Path:
    """Checks that a run can be written to `out` (before any work starts).

    Args:
      out: The run directory to publish.
      overwrite: Replace an existing non-empty `out` (and any unfinished staged run).
      resume: Continue the unfinished run staged for `out`.

    Returns:
      `out` as an absolute path.

    Raises:
      ValueError: `out` is a file, its parent cannot be created or written, `out` holds files
        and `overwrite` is off, an unfinished run is staged for it and neither `resume` nor
        `overwrite` is set, or `resume` finds nothing to resume.
    """
    if out is None or not os.fspath(out):
        raise ValueError("--out is empty: give the run directory to write, e.g. --out runs/tt.")
    out = pathlib.Path(os.path.abspath(os.fspath(out)))
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a directory: give a directory path for "
                         "the run (it is created if missing).")
    parent = out.parent
    missing = parent
    while not missing.exists():
        missing = missing.parent
    if not missing.is_dir():
        raise ValueError(f"--out {out}: {missing} is a file, so the run directory cannot be "
                         "created there; choose another --out.")
    if not os.access(missing, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: {missing} is not writable (permission denied); choose "
                         "a directory you can write to.")
    staged = staging_dir(out)
    if resume:
        if not (staged / RUN_FILE).is_file():
            if (out / RUN_FILE).is_file():
                raise ValueError(f"Nothing to resume: {out} is already a finished run. Train "
                                 "a new one with another --out, or retrain with --overwrite.")
            raise ValueError(f"Nothing to resume for {out}: no unfinished run is staged at "
                             f"{staged}. Start one with `towerkit train --model NAME --out "
                             f"{out}`.")
        return out
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        what = "a towerkit run" if (out / RUN_FILE).is_file() else "files"
        raise ValueError(f"--out {out} already holds {what}; pass --overwrite to replace it "
                         "(it is replaced only when the new run has finished), or choose "
                         "another --out.")
    if staged.exists() and not overwrite:
        raise ValueError(f"An unfinished run for {out} is staged at {staged} "
                         f"({_describe_progress(staged)}): continue it with `towerkit train "
                         f"--resume {out}` or start over with --overwrite.")
    return out


def _sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _run_files(run_dir: pathlib.Path) -> dict:
    files = {}
    for path in sorted(run_dir.rglob("*")):
        if path.is_file() and path.name != RUN_FILE:
            rel = path.relative_to(run_dir).as_posix()
            files[rel] = {"bytes": path.stat().st_size, "sha256": _sha256(path)}
    return files


def mark_run_complete(run_dir) -> dict:
    """Records `run_dir` as a complete run: `state`, and the size and SHA-256 of each file.

    `Recipe.train` calls it when training has finished; call it yourself only for a run
    directory written by your own code (with `write_run_config`), once every file is in place.

    Returns:
      The updated `run.json` dict.
    """
    run_dir = pathlib.Path(run_dir)
    path = run_dir / RUN_FILE
    if not path.is_file():
        raise ValueError(f"{run_dir} has no {RUN_FILE}; write it with write_run_config first.")
    config = _read_json(path)
    config["state"] = STATE_COMPLETE
    config["files"] = _run_files(run_dir)
    config["completed_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    _write_json(path, config)
    return config


def check_run_complete(run_dir, config: dict, verify_hashes: bool = True) -> None:
    """Raises a ValueError naming the fix unless `run_dir` is a complete, intact run.

    Args:
      run_dir: The run directory.
      config: Its `run.json` dict.
      verify_hashes: Also compare each file's SHA-256 (sizes are always compared).
    """
    run_dir = pathlib.Path(run_dir)
    if os.path.abspath(run_dir) in _ACTIVE:
        return
    state = config.get("state")
    if state != STATE_COMPLETE:
        staged = run_dir.name.endswith(STAGING_SUFFIX)
        if state == STATE_TRAINING or staged:
            target = (run_dir.parent / run_dir.name[1:-len(STAGING_SUFFIX)]) if staged else run_dir
            raise ValueError(f"{run_dir} is an unfinished run ({_describe_progress(run_dir)}): "
                             f"finish it with `towerkit train --resume {target}`, or retrain.")
        raise ValueError(f"{run_dir} has no completion record in {RUN_FILE} (it was written by an "
                         "older towerkit or by interrupted training): retrain it with `towerkit "
                         f"train --model {config.get('recipe', 'NAME')} --out {run_dir} "
                         "--overwrite`.")
    files = config.get("files")
    if not isinstance(files, dict):
        raise ValueError(f"{run_dir / RUN_FILE} lacks its 'files' record; the run is damaged: "
                         "retrain it with --overwrite.")
    for rel, record in sorted(files.items()):
        path = run_dir / rel
        if not path.is_file():
            raise ValueError(f"Run {run_dir} is damaged: {rel} is missing. Restore the run "
                             "directory from a copy or retrain it with --overwrite.")
        size = path.stat().st_size
        if size != record.get("bytes"):
            raise ValueError(f"Run {run_dir} is damaged: {rel} has {size} bytes, the run recorded "
                             f"{record.get('bytes')} (truncated or replaced). Restore it from a "
                             "copy or retrain the run with --overwrite.")
        if verify_hashes and _sha256(path) != record.get("sha256"):
            raise ValueError(f"Run {run_dir} is damaged: {rel} does not match the SHA-256 the run "
                             "recorded (modified or corrupt). Restore it from a copy or retrain "
                             "the run with --overwrite.")


def _same_config(a: dict, b: dict) -> bool:
    strip = lambda c: {k: v for k, v in c.items() if k not in STATE_KEYS}  # noqa: E731
    return json.loads(json.dumps(strip(a), default=json_default)) == json.loads(
        json.dumps(strip(b), default=json_default))


def distribution(config: dict) -> dict:
    """`{"strategy", "negatives"}` of a run config (its optional `distribute` key), defaults
    filled in (`"none"`, `"global"`).

    Raises:
      ValueError: an unknown strategy or negatives value, or unknown keys.
    """
    from towerkit.recipes.distribute import STRATEGIES
    from towerkit.tasks.retrieval import NEGATIVES

    value = config.get("distribute") or {}
    if not isinstance(value, dict) or set(value) - {"strategy", "negatives"}:
        raise ValueError(f"config['distribute'] must be a dict with 'strategy' and 'negatives', "
                         f"got {value!r}.")
    result = {"strategy": value.get("strategy", "none"),
              "negatives": value.get("negatives", "global")}
    if result["strategy"] not in STRATEGIES:
        raise ValueError(f"distribute strategy must be one of {STRATEGIES}, got "
                         f"{result['strategy']!r}.")
    if result["negatives"] not in NEGATIVES:
        raise ValueError(f"negatives must be one of {NEGATIVES}, got {result['negatives']!r}.")
    return result


def _resumable(staged: pathlib.Path, config: dict) -> bool:
    """A staged run of the same config with a checkpoint (a restarted worker resumes it)."""
    try:
        return _same_config(_read_json(staged / RUN_FILE), config) and _progress(staged) is not None
    except (OSError, ValueError):
        return False


def train_atomically(recipe, train_fn: Callable, config: dict, out, overwrite: bool = False,
                     resume: bool = False, checkpoint_every: Optional[int] = None) -> dict:
    """Runs `train_fn(recipe, config, staging)` in a staging directory and publishes it.

    The run's `tf.distribute` strategy (`config["distribute"]`, see `distribution`) is entered
    around `train_fn`, so the recipe creates its model and optimizer under it. In multi-worker
    training only the chief stages and publishes the run; the other workers train in a
    temporary directory beside it (removed at the end) and restore from the chief's
    checkpoints; a job restarted with the same config (every worker, as a cluster restarts
    failed jobs) resumes from the staged checkpoint as if `resume=True`.

    Args:
      recipe: The `Recipe` instance.
      train_fn: The recipe's own `train` (unwrapped).
      config: The run config (`make_run_config`).
      out: The run directory to publish.
      overwrite: Replace a non-empty `out` / an unfinished staged run.
      resume: Continue the unfinished staged run of `out` (its config must equal `config`).
      checkpoint_every: Steps between checkpoints within an epoch for `fit_resumable`
        (default `DEFAULT_CHECKPOINT_EVERY`; 0 = at epoch ends only).

    Returns:
      The metrics `train_fn` returned.
    """
    from towerkit.recipes import distribute as dist
    from towerkit.tasks import retrieval

    if checkpoint_every is not None:
        if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or (
                checkpoint_every < 0):
            raise ValueError(f"checkpoint_every must be an integer >= 0 (0 = at epoch ends "
                             f"only), got {checkpoint_every!r}.")
    setup = distribution(config)
    strategy = dist.make_strategy(setup["strategy"])
    multi_worker = bool(dist.worker_id(strategy))
    staged = staging_dir(out)
    if multi_worker and not resume and not overwrite and _resumable(staged, config):
        print(f"[towerkit] {dist.worker_id(strategy)}: resuming the staged run of {out}",
              flush=True)
        resume = True
    out = validate_out_dir(out, overwrite=overwrite, resume=resume)
    recipe.validate_config(config)
    staged = staging_dir(out)
    if resume:
        staged_config = _read_json(staged / RUN_FILE)
        if not _same_config(staged_config, config):
            raise ValueError(f"--resume: the staged run of {out} was started with another "
                             "config; resume it with its own (`towerkit train --resume RUN` "
                             "reads it from the run) or start over with --overwrite.")
        if staged_config.get("state") == STATE_COMPLETE:  # killed while publishing
            dist.worker_barrier(strategy)
            if dist.is_chief(strategy):
                _publish(staged, out)
            metrics = out / "metrics.json"
            return json.loads(metrics.read_text()) if metrics.is_file() else {}
    chief = dist.is_chief(strategy)
    # Every worker has checked the run before the chief changes the staging directory.
    dist.worker_barrier(strategy)
    if not chief:
        # Another worker: its own scratch directory, the chief's checkpoints to restore from.
        _RESTORE_DIR[0] = staged if resume else None
        staged = staged.parent / f"{staged.name}-{dist.worker_id(strategy)}"
        shutil.rmtree(staged, ignore_errors=True)
        staged.mkdir(parents=True)
    elif not resume:
        if staged.exists():
            shutil.rmtree(staged)
        staged.mkdir(parents=True)
        _write_json(staged / RUN_FILE, {**{k: v for k, v in config.items()
                                           if k not in STATE_KEYS}, "state": STATE_TRAINING})
    key = os.path.abspath(staged)
    _ACTIVE.add(key)
    _CHECKPOINT_EVERY[0] = checkpoint_every
    previous_negatives = retrieval.set_default_negatives(setup["negatives"])
    try:
        with strategy.scope():
            metrics = train_fn(recipe, config, staged)
    except BaseException:
        if chief and _progress(staged) is None and staged.exists():
            shutil.rmtree(staged, ignore_errors=True)  # nothing to resume from
        if not chief:
            shutil.rmtree(staged, ignore_errors=True)
        raise
    finally:
        _ACTIVE.discard(key)
        _CHECKPOINT_EVERY[0] = None
        _RESTORE_DIR[0] = None
        retrieval.set_default_negatives(previous_negatives)
    if not chief:
        shutil.rmtree(staged, ignore_errors=True)
    else:
        shutil.rmtree(staged / CHECKPOINT_DIR, ignore_errors=True)
        mark_run_complete(staged)
        _publish(staged, out)
    # No worker leaves (and shuts its collectives down) while another still works.
    dist.worker_barrier(strategy)
    return metrics


def _publish(staged: pathlib.Path, out: pathlib.Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.towerkit-old-{os.getpid()}"
        os.rename(out, old)
    os.rename(staged, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class _Spanning(tf.keras.callbacks.Callback):
    """Forwards callbacks across per-epoch `fit` calls as if they were one `fit`."""

    def __init__(self, callbacks: Sequence[tf.keras.callbacks.Callback]):
        super().__init__()
        self.callbacks = list(callbacks)

    def set_model(self, model):
        super().set_model(model)
        for c in self.callbacks:
            c.set_model(model)

    def set_params(self, params):
        super().set_params(params)
        for c in self.callbacks:
            c.set_params(params)

    def __getattribute__(self, name):
        if name.startswith("on_") and name not in ("on_train_begin", "on_train_end"):
            callbacks = object.__getattribute__(self, "callbacks")

            def forward(*args, **kwargs):
                for c in callbacks:
                    getattr(c, name)(*args, **kwargs)
            return forward
        return object.__getattribute__(self, name)


def _shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Auto-shard policy DATA (each worker keeps its share of every global batch) unless the
    recipe chose a policy itself."""
    policy = dataset.options().experimental_distribute.auto_shard_policy
    if policy != tf.data.experimental.AutoShardPolicy.AUTO:
        return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


class _StepCheckpoints(tf.keras.callbacks.Callback):
    def __init__(self, save: Callable, epoch: int, offset: int, every: int, steps: int):
        super().__init__()
        self.save, self.epoch, self.offset, self.every, self.steps = (save, epoch, offset,
                                                                      every, steps)
        self.last = offset
        self.kill_after = int(os.environ.get(KILL_HOOK, "0") or 0)
        task = os.environ.get(KILL_TASK)
        if task:
            from towerkit.recipes.distribute import worker_id
            if worker_id() != task:
                self.kill_after = 0

    def on_train_batch_end(self, batch, logs=None):
        done = self.offset + int(batch) + 1
        previous, self.last = self.last, done
        _STEPS_RUN[0] += done - previous
        # With steps_per_execution > 1 Keras reports every few steps: save when a multiple of
        # `every` was passed since the last report.
        if self.every and done < self.steps and done // self.every > previous // self.every:
            self.save(self.epoch, done)
        if self.kill_after and _STEPS_RUN[0] >= self.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)


def fit_resumable(model: tf.keras.Model, make_dataset: Callable[[int], tf.data.Dataset],
                  epochs: int, run_dir, callbacks: Iterable = (),
                  checkpoint_every: Optional[int] = None, verbose: int = 0) -> dict:
    """Trains a compiled model epoch by epoch with checkpoints, resuming from the last one.

    Args:
      model: A compiled Keras model (its optimizer is checkpointed with it); a `tfrs.Model`
        is built with `compute_loss(first batch, training=False)`, another model with a call
        on the first batch's features, before a checkpoint is restored.
      make_dataset: `epoch -> tf.data.Dataset` of that epoch's batches (finite, the same for
        the same epoch in any process: shuffle with `seed=epoch_seed(seed, epoch)` and
        `reshuffle_each_iteration=False`).
      epochs: int >= 1. Total epochs of the run.
      run_dir: The (staging) run directory; checkpoints go to `run_dir/checkpoints`.
      callbacks: Keras callbacks spanning the whole training (`on_train_begin` once,
        `on_train_end` once). A callback with `get_state() -> dict` (JSON-able, NumPy arrays
        allowed) and `set_state(dict)` is checkpointed at each epoch end and restored on resume.
      checkpoint_every: Save every this many steps within an epoch as well (default
        `DEFAULT_CHECKPOINT_EVERY`; 0 = at epoch ends only).
      verbose: Keras `fit` verbosity.

    Returns:
      `{log name: [value per epoch]}` over all epochs of the run (like `History.history`).
    """
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}.")
    if checkpoint_every is None:
        checkpoint_every = _CHECKPOINT_EVERY[0]
    every = DEFAULT_CHECKPOINT_EVERY if checkpoint_every is None else int(checkpoint_every)
    if every < 0:
        raise ValueError(f"checkpoint_every must be >= 0 (0 = epoch ends only), got {every}.")
    callbacks = list(callbacks)
    ckpt_dir = pathlib.Path(run_dir) / CHECKPOINT_DIR
    ckpt_dir.mkdir(parents=True, exist_ok=True)

    # Under a strategy, mean-reduced Keras losses in the model's tasks average over the
    # GLOBAL batch (Keras refuses them there otherwise; outside one they are the same mean).
    if tf.distribute.has_strategy():
        GlobalBatchLoss.wrap_model(model)

    # Create every variable (model and optimizer slots) before a restore can match them.
    first = next(iter(make_dataset(0).take(1)))
    if isinstance(model, tfrs.models.Model):
        model.compute_loss(first, training=False)
    else:
        model(first[0] if isinstance(first, tuple) else first, training=False)
    model.optimizer.build(model.trainable_variables)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)

    history: dict = {}
    start_epoch, start_step = 0, 0
    restore_dir = pathlib.Path(_RESTORE_DIR[0] or run_dir)
    progress = _progress(restore_dir)
    if progress is not None:
        source = restore_dir / CHECKPOINT_DIR
        checkpoint.read(str(source / progress["prefix"])).assert_existing_objects_matched()
        start_epoch, start_step = int(progress["epoch"]), int(progress["step"])
        history = progress["history"]
        for i, c in enumerate(callbacks):
            if hasattr(c, "set_state") and str(i) in progress.get("callbacks", {}):
                c.set_state(_load_state(source, progress["callbacks"][str(i)]))
        print(f"[towerkit] resuming at epoch {start_epoch + 1}, step {start_step}", flush=True)

    def save(epoch: int, step: int) -> None:
        prefix = f"ckpt-e{epoch}-s{step}"
        checkpoint.write(str(ckpt_dir / prefix))
        states = {}
        for i, c in enumerate(callbacks):
            if hasattr(c, "get_state"):
                states[str(i)] = _save_state(ckpt_dir, prefix, i, c.get_state())
        old = _progress(pathlib.Path(run_dir))
        _write_json(ckpt_dir / PROGRESS_FILE, {"epoch": epoch, "step": step, "prefix": prefix,
                                               "history": history, "callbacks": states})
        if old is not None and old["prefix"] != prefix:
            for path in ckpt_dir.glob(old["prefix"] + "*"):
                path.unlink(missing_ok=True)

    spanning = _Spanning(callbacks)
    spanning.set_model(model)
    for c in callbacks:
        c.set_model(model)
        if progress is None or not hasattr(c, "set_state"):
            c.on_train_begin()
    model.stop_training = False
    for epoch in range(start_epoch, epochs):
        dataset = make_dataset(epoch)
        steps = int(dataset.cardinality().numpy())
        if steps < 1:
            raise ValueError(f"Epoch {epoch + 1} has no batches (cardinality {steps}); "
                             "make_dataset must return a finite, non-empty dataset.")
        offset = start_step if epoch == start_epoch else 0
        if offset:
            dataset = dataset.skip(offset)
        if tf.distribute.has_strategy():
            dataset = _shard_by_data(dataset)
        step_cb = _StepCheckpoints(save, epoch, offset, every, steps)
        started = time.perf_counter()
        result = model.fit(dataset, epochs=epoch + 1, initial_epoch=epoch, verbose=verbose,
                           callbacks=[step_cb, spanning])
        if verbose:
            print(f"[towerkit] epoch {epoch + 1}: {steps - offset} steps in "
                  f"{time.perf_counter() - started:.3f} s", flush=True)
        for name, values in result.history.items():
            history.setdefault(name, []).append(float(values[-1]))
        save(epoch + 1, 0)
        if model.stop_training:
            break
    for c in callbacks:
        c.on_train_end()
    return history


def _save_state(ckpt_dir: pathlib.Path, prefix: str, i: int, state: dict) -> dict:
    arrays = {k: v for k, v in state.items() if isinstance(v, (np.ndarray, list))
              and k.startswith("array:")}
    plain = {k: v for k, v in state.items() if k not in arrays}
    record = {"plain": plain}
    if arrays:
        name = f"{prefix}-callback{i}.npz"
        flat = {}
        for key, value in arrays.items():
            for j, item in enumerate(value if isinstance(value, list) else [value]):
                flat[f"{key[6:]}__{j}"] = np.asarray(item)
        np.savez(ckpt_dir / name, **flat)
        record["arrays"] = {"file": name, "keys": {k[6:]: len(v) if isinstance(v, list) else -1
                                                    for k, v in arrays.items()}}
    return record


def _load_state(ckpt_dir: pathlib.Path, record: dict) -> dict:
    state = dict(record["plain"])
    if "arrays" in record:
        with np.load(ckpt_dir / record["arrays"]["file"]) as data:
            for key, count in record["arrays"]["keys"].items():
                if count < 0:
                    state["array:" + key] = data[f"{key}__0"]
                else:
                    state["array:" + key] = [data[f"{key}__{j}"] for j in range(count)]
    return state
