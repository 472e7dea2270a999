"""The house's rules that import-linter cannot check (its contracts, in pyproject.toml,
check the imports: the apps' layers, the doors between web, worker and trainer, no
import circles; `make test` runs them).

The worker changes the database only through the apps' actions (docs/architecture.md,
"Rooms and doors"): no module under worker/ saves, creates, deletes or updates a row
itself, so one claim filter and one place per table guard every write. Read from the
source, so a new write anywhere in the package is caught.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Model and queryset methods that write. ``update`` is dict's too: the worker merges dicts
# with ``|`` instead, so that any ``.update(`` here is a queryset's.
WRITES = {
    "save",
    "create",
    "bulk_create",
    "bulk_update",
    "update",
    "update_or_create",
    "get_or_create",
    "delete",
}


def writes_in(path: Path, root: Path = ROOT) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in WRITES
        ):
            found.append(f"{path.relative_to(root)}:{node.lineno} calls .{node.func.attr}()")
    return found


def test_the_worker_writes_the_database_only_through_the_apps_actions():
    wrong = [hit for path in sorted((ROOT / "worker").rglob("*.py")) for hit in writes_in(path)]
    assert not wrong, (
        "move these writes to the actions.py of the app that owns the table:\n" + "\n".join(wrong)
    )


def test_the_write_check_finds_a_write(tmp_path):
    # The check above must be able to fail: a module that saves a row is caught.
    module = tmp_path / "writes.py"
    module.write_text("def f(job):\n    job.save()\n    Job.objects.filter(pk=1).update(x=2)\n")
    assert writes_in(module, tmp_path) == [
        "writes.py:2 calls .save()",
        "writes.py:3 calls .update()",
    ]
