"""Builds `tutorials/*.ipynb` from the Python sources in `tutorials/src/`.

The sources are the reviewable form of the tutorials; the notebooks are generated, committed
without outputs, and executed by `tests/tutorials/test_notebooks.py`. Regenerate after editing
a source:

    python tutorials/make_notebooks.py          # writes every notebook
    python tutorials/make_notebooks.py --check  # exits 1 if a notebook is out of date

Source format (a subset of the "percent" format that Jupytext and VS Code read, so each source
is also a plain Python script):

- `# %%` starts a code cell; `# %% [markdown]` a markdown cell whose lines are `# `-prefixed;
  `# %% tags=["parameters"]` the code cell holding the tunable sizes (papermill's convention).
- The first line may be `# towerkit: {...}`, JSON stored as the notebook's `towerkit` metadata,
  e.g. `{"test_parameters": {"EPOCHS": 1}}`: the values the test suite injects after the
  `parameters` cell to keep the run short.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import sys

import nbformat

TUTORIALS = pathlib.Path(__file__).resolve().parent
SOURCES = TUTORIALS / "src"
_CELL = re.compile(r"^# %%(?P<rest>.*)$")
_TAGS = re.compile(r"tags=(\[.*\])")


def _strip_blank(lines: list) -> list:
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def _markdown(lines: list, source: pathlib.Path) -> str:
    out = []
    for line in lines:
        if line.startswith("# "):
            out.append(line[2:])
        elif line.rstrip() == "#" or not line.strip():
            out.append("")
        else:
            raise ValueError(f"{source}: markdown lines must start with '# ', got {line!r}.")
    return "\n".join(_strip_blank(out))


def build(source: pathlib.Path) -> nbformat.NotebookNode:
    """Returns the notebook of one source file."""
    lines = source.read_text(encoding="utf-8").splitlines()
    metadata = {}
    if lines and lines[0].startswith("# towerkit:"):
        metadata = json.loads(lines.pop(0)[len("# towerkit:"):])
    nb = nbformat.v4.new_notebook()
    nb.metadata.update({
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "towerkit": metadata,
    })
    cells, current = [], None
    for line in lines:
        match = _CELL.match(line)
        if match:
            current = {"header": match.group("rest").strip(), "lines": []}
            cells.append(current)
        elif current is None:
            if line.strip():
                raise ValueError(f"{source}: text before the first '# %%' cell marker: {line!r}.")
        else:
            current["lines"].append(line)
    for cell in cells:
        header, body = cell["header"], _strip_blank(cell["lines"])
        if header.startswith("[markdown]"):
            nb.cells.append(nbformat.v4.new_markdown_cell(_markdown(body, source)))
            continue
        code = nbformat.v4.new_code_cell("\n".join(body))
        tags = _TAGS.search(header)
        if tags:
            code.metadata["tags"] = json.loads(tags.group(1))
        nb.cells.append(code)
    for i, cell in enumerate(nb.cells):  # stable ids keep regenerated files byte-identical
        cell["id"] = f"{source.stem[:40]}-{i:03d}".replace("_", "-")
    nbformat.validate(nb)
    return nb


def render(nb: nbformat.NotebookNode) -> str:
    return nbformat.writes(nb) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="report notebooks that differ from their sources; write nothing")
    args = parser.parse_args(argv)
    stale = []
    for source in sorted(SOURCES.glob("*.py")):
        target = TUTORIALS / f"{source.stem}.ipynb"
        text = render(build(source))
        if args.check:
            if not target.is_file() or target.read_text(encoding="utf-8") != text:
                stale.append(target.name)
        else:
            target.write_text(text, encoding="utf-8")
            print(f"wrote {target.relative_to(TUTORIALS.parent)}")
    if stale:
        print("out of date (run python tutorials/make_notebooks.py): " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
