"""Enforces the one-way data flow: a towerkit module imports only from earlier stages.

Order: data, features, layers, towers, tasks, metrics, models, evaluation, index, serving, recipes,
cli. `metrics` (Keras metrics over a candidate corpus) comes right after `tasks`: a task takes a
metric object as an argument and never imports the package, while models and recipes build
metrics; a metric reads an index only through the TFRS `TopK` interface it is handed, so it
needs no import of the later `index` stage.
Shared helpers (`towerkit._*`) may be imported anywhere; `towerkit/__init__.py` is exempt.
"""

import ast
import pathlib

import pytest

STAGES = ("data", "features", "layers", "towers", "tasks", "metrics", "models", "evaluation",
          "index", "serving", "recipes", "cli")
PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "towerkit"


def _stage_of_module(dotted: str):
    """Stage name of an absolute `towerkit.<stage>...` module, None for shared/other modules."""
    parts = dotted.split(".")
    if parts[0] != "towerkit" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in STAGES else None


def _imported_modules(path: pathlib.Path):
    """Absolute dotted names imported by `path` (relative imports resolved), with line numbers."""
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    package = list(rel.parts[:-1])
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            yield module, node.lineno
            for alias in node.names:  # `from towerkit import index` imports a stage too
                yield f"{module}.{alias.name}", node.lineno


def _violations(path: pathlib.Path):
    own = _stage_of_module(".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts))
    if own is None:
        return []
    found = []
    for module, line in _imported_modules(path):
        stage = _stage_of_module(module)
        if stage is not None and STAGES.index(stage) > STAGES.index(own):
            found.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({own}) imports "
                         f"towerkit.{stage} (a later stage)")
    return sorted(set(found))


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if p != PACKAGE / "__init__.py")


def test_package_has_modules_in_every_early_stage():
    stages = {p.relative_to(PACKAGE).parts[0] for p in _modules()}
    assert {"data", "recipes", "cli"} <= stages


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_imports_only_earlier_stages(path):
    assert _violations(path) == []


def test_checker_catches_a_later_stage_import(tmp_path):
    # A fake package tree: data/bad.py imports towerkit.models (later) -> one violation;
    # models/ok.py imports towerkit.data and towerkit._shared -> none.
    fake = tmp_path / "towerkit"
    (fake / "data").mkdir(parents=True)
    (fake / "models").mkdir()
    (fake / "data" / "bad.py").write_text("from towerkit.models import two_tower\n")
    (fake / "models" / "ok.py").write_text("import towerkit.data.movielens\nfrom towerkit import _x\n"
                                           "from ..data import splits\n")
    (fake / "models" / "rel.py").write_text("from ..cli import main\n")
    globals()["PACKAGE"] = fake
    try:
        assert len(_violations(fake / "data" / "bad.py")) == 1
        assert _violations(fake / "models" / "ok.py") == []
        assert len(_violations(fake / "models" / "rel.py")) == 1
    finally:
        globals()["PACKAGE"] = pathlib.Path(__file__).resolve().parents[1] / "towerkit"
