"""`towerkit recommend`: same table from a local export, a REST server and a gRPC server."""

import argparse

import numpy as np
import pytest

import towerkit  # noqa: F401
from towerkit.cli import recommend


def _run(*argv):
    parser = argparse.ArgumentParser()
    recommend.add_parser(parser.add_subparsers())
    return recommend.run(parser.parse_args(["recommend", *argv]))


def _table(capsys):
    out = capsys.readouterr().out.strip().splitlines()
    return out[0], [line.split() for line in out[1:]]


def test_local_rest_and_grpc_print_the_same_table(toy_export, rest_server, grpc_server, toy,
                                                  capsys):
    tables = []
    for target in (str(toy_export.parent), rest_server.url, grpc_server.url):
        assert _run(target, "--user", "u6", "-k", "3", "--model-name", toy.MODEL_NAME) == 0
        tables.append(_table(capsys))
    assert tables[0] == tables[1] == tables[2]
    header, rows = tables[0]
    assert header.split() == ["rank", "score", "id"]
    oracle_ids, oracle_scores = toy.numpy_top_k(["u6"], k=3)
    assert [r[0] for r in rows] == ["1", "2", "3"]
    assert [r[2] for r in rows] == list(oracle_ids[0])
    np.testing.assert_allclose([float(r[1]) for r in rows], oracle_scores[0], atol=5e-5)


def test_default_k_is_max_k_and_version_pins(toy_export, toy, capsys):
    assert _run(str(toy_export.parent), "--user", "u6", "--version", "1") == 0
    assert len(_table(capsys)[1]) == toy.MAX_K


@pytest.mark.parametrize("argv,message", [
    (["--user", "u1", "-k", "99"], "k=99 exceeds the export's max_k=5"),
    (["--user", "u1", "--input", "age"], "--input 'age' is not an input"),
])
def test_errors_are_reported_with_exit_2(toy_export, argv, message, capsys):
    assert _run(str(toy_export), *argv) == 2
    assert message in capsys.readouterr().err


def test_not_an_export(tmp_path, capsys):
    assert _run(str(tmp_path), "--user", "1") == 2
    assert "neither a SavedModel" in capsys.readouterr().err
