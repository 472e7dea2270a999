"""The house's doors (docs/architecture.md): the web imports only the torch-free trainer
modules and never the worker; the trainer never imports Django, Celery, the web or the
worker. Read from the source, so a new import anywhere in a package is caught."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The trainer modules the web may import: torch-free (tests/judge/test_imports.py).
WEB_MAY_IMPORT = {"config", "data", "teacher", "judge", "score", "metrics_text", "plan", "errors"}


def imports(package: str) -> list[tuple[Path, int, str]]:
    """(file, line, imported module) for every import under ``package``, at any depth
    (function-level imports included)."""
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found += [(path, node.lineno, alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [f"{node.module}.{alias.name}" for alias in node.names]
                found += [(path, node.lineno, name) for name in names]
    return found


def where(path: Path, line: int) -> str:
    return f"{path.relative_to(ROOT)}:{line}"


def test_the_web_imports_only_torch_free_trainer_modules_and_never_the_worker():
    wrong = []
    for path, line, name in imports("webapp"):
        parts = name.split(".")
        if parts[0] == "worker":
            wrong.append(f"{where(path, line)} imports {name} (the web never imports worker/)")
        elif parts[0] == "trainer" and (len(parts) < 2 or parts[1] not in WEB_MAY_IMPORT):
            wrong.append(f"{where(path, line)} imports {name} (not a torch-free trainer module)")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("forbidden", ["django", "celery", "webapp", "worker"])
def test_the_trainer_imports_neither_django_nor_celery_nor_the_other_packages(forbidden):
    wrong = [
        f"{where(path, line)} imports {name}"
        for path, line, name in imports("trainer")
        if name.split(".")[0] == forbidden
    ]
    assert not wrong, "\n".join(wrong)
