"""Atomic, resumable runs (issue 17, defects 1, 2 and 6): staging, kill-and-resume, readers.

The kill-and-resume test trains `two_tower` with tiny settings (embedding dim 8, 2 epochs,
batch 2,048: 25 steps per epoch on 50,000 training ratings, checkpoints every 3 steps) on
real MovieLens 100K: one uninterrupted run in this process, one run in a subprocess that kills
itself (SIGKILL, test hook `TOWERKIT_TEST_KILL_AFTER_STEPS=30`: step 5 of epoch 2, two steps
after the last checkpoint), then `towerkit train --resume` in a subprocess. The resumed run
must end with bit-identical weights and identical metrics.
"""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

import towerkit  # noqa: F401
import tensorflow as tf
import tensorflow_recommenders as tfrs
from towerkit import recipes
from towerkit.cli import main as cli
from towerkit.recipes import run_state

# Batch 2,048 rather than the default 8,192: the in-batch softmax costs batch^2 per step.
FLAGS = ["--epochs", "2", "--embedding-dim", "8", "--batch-size", "2048",
         "--train-fraction", "0.5", "--checkpoint-every", "3"]
STEPS_PER_EPOCH = 25  # ceil(50,000 / 2,048)


def _towerkit(*argv, env=None):
    return subprocess.run([sys.executable, "-m", "towerkit.cli.main", *argv],
                          capture_output=True, text=True, env={**os.environ, **(env or {})},
                          timeout=900)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """An uninterrupted run, trained in this process through the CLI."""
    out = tmp_path_factory.mktemp("runs") / "full"
    assert cli.main(["train", "--model", "two_tower", "--out", str(out), *FLAGS]) == 0
    return out


def _weights(run):
    reader = tf.train.load_checkpoint(str(run / "weights" / "towers"))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if "OBJECT_GRAPH" not in name}


def test_killed_run_resumes_to_the_uninterrupted_result(finished_run, tmp_path):
    out = tmp_path / "killed"
    killed = _towerkit("train", "--model", "two_tower", "--out", str(out), *FLAGS,
                       env={run_state.KILL_HOOK: str(STEPS_PER_EPOCH + 5)})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    staged = run_state.staging_dir(out)
    progress = json.loads((staged / "checkpoints" / "progress.json").read_text())
    assert (progress["epoch"], progress["step"]) == (1, 3)  # mid-epoch 2, after step 3
    assert not out.exists()  # nothing published

    # Readers and a plain rerun refuse the unfinished run and say how to continue it.
    with pytest.raises(ValueError, match=r"has not finished training .* --resume"):
        recipes.load_run(out)
    with pytest.raises(ValueError, match=r"towerkit train --resume"):
        recipes.load_run(staged)
    with pytest.raises(ValueError,
                       match=r"unfinished run .*checkpoint at epoch 2, step 3\): continue"):
        recipes.get_recipe("two_tower")().train(
            recipes.make_run_config("two_tower", "movielens/100k-ratings"), out)

    resumed = _towerkit("train", "--resume", str(out))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming at epoch 2, step 3" in resumed.stdout
    assert not staged.exists()
    config = json.loads((out / "run.json").read_text())
    assert config["state"] == "complete" and "checkpoints/progress.json" not in config["files"]

    expected, got = _weights(finished_run), _weights(out)
    assert sorted(expected) == sorted(got)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    assert (json.loads((out / "metrics.json").read_text())
            == json.loads((finished_run / "metrics.json").read_text()))


def test_resume_errors_name_the_fix(finished_run, tmp_path, capsys):
    assert cli.main(["train", "--resume", str(finished_run)]) == 2
    assert "Nothing to resume" in capsys.readouterr().err
    assert cli.main(["train", "--resume", str(tmp_path / "none")]) == 2
    assert "no unfinished run is staged" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["train", "--resume", str(finished_run), "--model", "two_tower"])
    assert "drop --model" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    # Defect 2: a non-empty --out is refused (also by another recipe, and by quickstart).
    (["train", "--model", "two_tower"], "already holds a towerkit run; pass --overwrite"),
    (["train", "--model", "popularity"], "already holds a towerkit run; pass --overwrite"),
])
def test_non_empty_out_is_refused_before_any_work(finished_run, argv, message, capsys):
    before = (finished_run / "run.json").read_text()
    assert cli.main([*argv, "--out", str(finished_run)]) == 2
    assert message in capsys.readouterr().err
    assert (finished_run / "run.json").read_text() == before  # defect 1: config untouched


def test_quickstart_refuses_its_own_out(tmp_path, capsys):
    (tmp_path / "qs").mkdir()
    (tmp_path / "qs" / "run").mkdir()
    assert cli.main(["quickstart", "--out", str(tmp_path / "qs")]) == 2
    assert "already holds files (an earlier quickstart?); pass --overwrite" in (
        capsys.readouterr().err)


def test_failures_after_the_config_leave_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--model", "two_tower", "--out", str(out), "--dataset",
                     "mnist"]) == 2
    assert "trains on an interaction log: a MovieLens ratings config" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["train", "--model", "two_tower", "--out", str(out), "--embedding-dim", "0"])
    assert "argument --embedding-dim: must be an integer >= 1, got 0" in capsys.readouterr().err
    # Python callers get the same check before any work.
    with pytest.raises(ValueError, match="embedding_dim must be >= 1, got 0"):
        recipes.get_recipe("two_tower")().train(recipes.make_run_config(
            "two_tower", "movielens/100k-ratings", params={"embedding_dim": 0}), out)
    assert list(tmp_path.iterdir()) == []


def test_out_that_is_a_file_or_under_a_file(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    assert cli.main(["train", "--model", "two_tower", "--out", str(target)]) == 2
    assert "is a file, not a directory" in capsys.readouterr().err
    assert cli.main(["train", "--model", "two_tower", "--out", str(target / "run")]) == 2
    assert "is a file, so the run directory cannot be created there" in capsys.readouterr().err


def _copy(run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    return copy


@pytest.mark.parametrize("damage, message", [
    (lambda r: (r / "weights" / "towers.data-00000-of-00001").write_bytes(
        (r / "weights" / "towers.data-00000-of-00001").read_bytes()[:100]),
     r"weights/towers.data-00000-of-00001 has 100 bytes, the run recorded \d+ \(truncated"),
    (lambda r: (r / "weights" / "towers.index").unlink(), r"weights/towers.index is missing"),
    (lambda r: (r / "query_tower.json").write_text(
        (r / "query_tower.json").read_text()[:-10] + "corrupt!!!"),
     r"query_tower.json does not match the SHA-256 the run recorded"),
])
def test_readers_refuse_a_damaged_run_naming_the_file(finished_run, tmp_path, damage, message,
                                                      capsys):
    run = _copy(finished_run, tmp_path)
    damage(run)
    with pytest.raises(ValueError, match=message):
        recipes.load_run(run)
    for command in (["evaluate", str(run)], ["export", str(run), "--model-base-path",
                                             str(tmp_path / "m")]):
        assert cli.main(command) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and "is damaged" in err and "with --overwrite" in err


def test_a_run_without_completion_record_is_refused(finished_run, tmp_path):
    run = _copy(finished_run, tmp_path)
    config = json.loads((run / "run.json").read_text())
    for key in run_state.STATE_KEYS:
        config.pop(key)
    (run / "run.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="no completion record .* --overwrite"):
        recipes.load_run(run)


class _Writer(recipes.Recipe):
    """A recipe without training: writes its params to a file (tests the run machinery)."""

    name = "test_run_state_writer"

    def train(self, config, run_dir):
        if config["params"].get("fail"):
            (run_dir / "partial.txt").write_text("half")
            raise RuntimeError("training failed")
        recipes.write_run_config(run_dir, config)
        (run_dir / "params.json").write_text(json.dumps(config["params"]))
        return {"ok": 1.0}

    def evaluate(self, run_dir, split="test", dump_topn=None):
        return {}

    def index_inputs(self, run_dir):
        raise ValueError("nothing to export")


recipes.register_recipe(_Writer)


def _config(**params):
    return recipes.make_run_config(_Writer.name, "synthetic", epochs=1, params=params)


def test_overwrite_replaces_only_when_finished(tmp_path):
    run = tmp_path / "run"
    _Writer().train(_config(v=1), run)
    (run / "extra.txt").write_text("from the old run")
    # A failing retrain leaves the published run as it was, and no staging directory.
    with pytest.raises(RuntimeError, match="training failed"):
        _Writer().train(_config(fail=True), run, overwrite=True)
    assert (run / "extra.txt").exists() and recipes.load_run(run)[1]["params"] == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    _Writer().train(_config(v=2), run, overwrite=True)
    assert not (run / "extra.txt").exists()  # replaced, not mixed with the old run
    _, loaded = recipes.load_run(run)
    assert loaded["params"] == {"v": 2} and loaded["state"] == "complete"
    assert sorted(loaded["files"]) == ["params.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


# ---- fit_resumable on a tiny model: step-level resume, callback state ----------------------

class _Tiny(tfrs.Model):
    def __init__(self):
        super().__init__()
        self.dense = tf.keras.layers.Dense(1, kernel_initializer="ones")

    def compute_loss(self, features, training=False):
        return tf.reduce_mean(tf.square(self.dense(features["x"])[:, 0] - features["y"]))


class _EpochCounter(tf.keras.callbacks.Callback):
    """A callback with state that must survive a resume."""

    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_train_begin(self, logs=None):
        self.epochs = []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(epoch)

    def get_state(self):
        return {"epochs": list(self.epochs), "array:last_kernel": self.model.get_weights()}

    def set_state(self, state):
        self.epochs = list(state["epochs"])
        assert len(state["array:last_kernel"]) == 2


class _Crash(tf.keras.callbacks.Callback):
    def __init__(self, at_step):
        super().__init__()
        self.at_step, self.steps = at_step, 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.steps == self.at_step:
            raise RuntimeError("simulated crash")


def _fit(run_dir, callbacks=()):
    tf.keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    data = tf.data.Dataset.from_tensor_slices(
        {"x": rng.normal(size=(64, 3)).astype(np.float32),
         "y": rng.normal(size=64).astype(np.float32)})
    model = _Tiny()
    model.compile(optimizer=tf.keras.optimizers.Adam(0.05))
    counter = _EpochCounter()
    history = run_state.fit_resumable(
        model, lambda epoch: data.shuffle(64, seed=run_state.epoch_seed(7, epoch),
                                          reshuffle_each_iteration=False).batch(8),
        3, run_dir, callbacks=[counter, *callbacks], checkpoint_every=2)
    return model, history, counter


def test_fit_resumable_continues_mid_epoch_with_callback_state(tmp_path):
    straight, history, counter = _fit(tmp_path / "straight")
    assert counter.epochs == [0, 1, 2] and len(history["loss"]) == 3
    with pytest.raises(RuntimeError, match="simulated crash"):
        _fit(tmp_path / "crashed", callbacks=[_Crash(13)])  # epoch 2, step 5 of 8
    progress = json.loads((tmp_path / "crashed" / "checkpoints" / "progress.json").read_text())
    assert (progress["epoch"], progress["step"]) == (1, 4)
    resumed, resumed_history, resumed_counter = _fit(tmp_path / "crashed")
    assert resumed_counter.epochs == [0, 1, 2]  # restored, not restarted
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert resumed_history == history
    assert int(resumed.optimizer.iterations.numpy()) == 24  # no step lost or repeated


def test_best_epoch_state_round_trips(tmp_path):
    from towerkit.recipes.multi_interest import BestEpoch

    stopper = BestEpoch(lambda: 0.0, patience=2)
    stopper.best_epoch, stopper.best_score, stopper.scores = 2, 0.5, [0.1, 0.5]
    stopper._best_weights = [np.ones((2, 3), np.float32), np.zeros(3, np.float32)]
    record = run_state._save_state(tmp_path, "ckpt", 0, stopper.get_state())
    restored = BestEpoch(lambda: 0.0, patience=2)
    restored.set_state(run_state._load_state(tmp_path, json.loads(json.dumps(record))))
    assert (restored.best_epoch, restored.best_score, restored.scores) == (2, 0.5, [0.1, 0.5])
    for a, b in zip(restored._best_weights, stopper._best_weights):
        np.testing.assert_array_equal(a, b)
