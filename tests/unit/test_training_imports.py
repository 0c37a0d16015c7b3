"""The trainer runs in a GPU pod without Airflow or Spark: nothing it imports from ``loopline`` may need them.

Checked statically (following ``loopline`` imports transitively), so the test costs no heavy imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "include" / "loopline"
FORBIDDEN = ("airflow", "pyspark", "spark_jobs", "great_expectations")


def _module_file(name: str) -> Path | None:
    parts = name.split(".")[1:]
    base = PACKAGE.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def _optional(tree: ast.AST) -> set[int]:
    """Ids of the import nodes inside ``try: ... except ImportError``: optional, the module works without them."""
    optional = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
            isinstance(handler.type, ast.Name) and handler.type.id in ("ImportError", "ModuleNotFoundError")
            for handler in node.handlers
        ):
            optional |= {id(inner) for statement in node.body for inner in ast.walk(statement)}
    return optional


def _imports(path: Path) -> set[str]:
    names = set()
    tree = ast.parse(path.read_text())
    optional = _optional(tree)
    for node in ast.walk(tree):
        if id(node) in optional:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_trainer_imports_neither_airflow_nor_spark():
    todo = [f"loopline.training.{path.stem}" for path in (PACKAGE / "training").glob("*.py")]
    todo += ["loopline.training", "loopline"]
    seen: set[str] = set()
    offenders = []
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = _module_file(name)
        if path is None:
            continue
        for imported in _imports(path):
            if imported.split(".")[0] in FORBIDDEN:
                offenders.append(f"{name} imports {imported}")
            elif imported.startswith("loopline"):
                todo.append(imported)
    assert "loopline.training.trainer" in seen
    assert "loopline.lake" in seen
    assert not offenders, offenders
