"""Executes every tutorial notebook top to bottom; a failing cell fails the test.

Adding a tutorial is cheap: drop `tutorials/NN_name.ipynb` with one cell tagged `parameters`
(papermill's convention) and, in the notebook metadata, `{"towerkit": {"test_parameters":
{"EPOCHS": 1, ...}}}`. The harness injects those values in a cell right after the tagged one, so
the suite runs each story with small epoch counts while readers run the full one.
"""

from __future__ import annotations

import json
import os
import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

TUTORIALS = pathlib.Path(__file__).resolve().parents[2] / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))


def _inject_test_parameters(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    overrides = nb.metadata.get("towerkit", {}).get("test_parameters", {})
    tagged = [i for i, cell in enumerate(nb.cells)
              if "parameters" in cell.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        raise ValueError(f"expected exactly one cell tagged 'parameters', found {len(tagged)}")
    source = "# Injected by tests/tutorials/test_notebooks.py\n" + "".join(
        f"{name} = {json.dumps(value)}\n" for name, value in overrides.items())
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(tagged[0] + 1, cell)
    return nb


def test_there_are_tutorials():
    assert NOTEBOOKS, f"no notebooks found in {TUTORIALS}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    dirty = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count"))]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs; clear them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, tmp_path):
    nb = _inject_test_parameters(nbformat.read(path, as_version=4))
    env_cwd = tmp_path / "cwd"
    env_cwd.mkdir()
    client = NotebookClient(nb, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(env_cwd)}})
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    client.execute()  # raises CellExecutionError naming the failing cell
    executed = tmp_path / path.name
    nbformat.write(nb, executed)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
