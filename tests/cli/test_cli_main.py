"""The CLI shell: command registration, help, argument errors (no training here)."""

import pytest

import towerkit  # noqa: F401

from towerkit.cli import main as cli


def test_registers_every_present_command_module():
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    for command in ("quickstart", "train", "evaluate"):
        assert command in subparsers.choices


def test_no_command_prints_help_and_fails(capsys):
    assert cli.main([]) == 2
    assert "COMMAND" in capsys.readouterr().err


def test_train_help_lists_the_recipe_flags(capsys):
    assert cli.main(["train", "--model", "two_tower", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--embedding-dim" in out and "--logq" in out and "--out" in out


@pytest.mark.parametrize("argv, message", [
    (["train", "--out", "x"], "--model is required"),
    (["train", "--model", "two_tower"], "--out RUN_DIR is required"),
    (["train", "--model", "nope", "--out", "x"], "Unknown recipe 'nope'"),
    (["train", "--model", "two_tower", "--out", "x", "--epochs", "0"],
     "argument --epochs: must be an integer >= 1, got 0"),
    (["train", "--model", "two_tower", "--out", "x", "--no-such-flag"], "unrecognized"),
    (["evaluate", "run", "--bogus"], "unrecognized arguments: --bogus"),
])
def test_argument_errors_exit_2_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_evaluate_of_a_non_run_names_the_fix(tmp_path, capsys):
    assert cli.main(["evaluate", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("towerkit evaluate: error:") and "towerkit train" in err
