"""Executes every tutorial notebook top to bottom; a failing cell fails the test.

Adding a tutorial is cheap: drop `tutorials/NN_name.ipynb` with one cell tagged `parameters`
(papermill's convention) and, in the notebook metadata, `{"towerkit": {"test_parameters":
{"EPOCHS": 1, ...}}}`. The harness injects those values in a cell right after the tagged one, so
the suite runs each story with small epoch counts while readers run the full one.
"""

from __future__ import annotations

import importlib.util
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


def _generator():
    spec = importlib.util.spec_from_file_location("make_notebooks",
                                                  TUTORIALS / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_notebooks_match_their_sources():
    """Each `tutorials/src/NAME.py` (the reviewable source) has an up-to-date `NAME.ipynb`."""
    generator = _generator()
    sources = sorted(generator.SOURCES.glob("*.py"))
    assert sources, f"no sources in {generator.SOURCES}"
    for source in sources:
        target = TUTORIALS / f"{source.stem}.ipynb"
        assert target.is_file(), f"{target.name} is missing: run python tutorials/make_notebooks.py"
        assert target.read_text(encoding="utf-8") == generator.render(generator.build(source)), (
            f"{target.name} differs from {source.relative_to(TUTORIALS)}: edit the source, then "
            "run python tutorials/make_notebooks.py")


def test_generator_reads_cells_tags_and_metadata(tmp_path):
    source = tmp_path / "99_demo.py"
    source.write_text('# towerkit: {"test_parameters": {"EPOCHS": 1}}\n'
                      "# %% [markdown]\n# # Title\n#\n# Some *prose*.\n\n"
                      '# %% tags=["parameters"]\nEPOCHS = 5\n\n# %%\nprint(EPOCHS)\n')
    nb = _generator().build(source)
    assert [c.cell_type for c in nb.cells] == ["markdown", "code", "code"]
    assert nb.cells[0].source == "# Title\n\nSome *prose*."
    assert nb.cells[1].metadata["tags"] == ["parameters"] and nb.cells[1].source == "EPOCHS = 5"
    assert nb.cells[2].source == "print(EPOCHS)"
    assert nb.metadata["towerkit"] == {"test_parameters": {"EPOCHS": 1}}
    injected = _inject_test_parameters(nb)
    assert injected.cells[2].source.endswith("EPOCHS = 1\n")


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
    try:
        client.execute()  # raises CellExecutionError naming the failing cell
    finally:  # keep the executed notebook (outputs up to a failure) for debugging
        nbformat.write(nb, tmp_path / path.name)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
