"""Tasks sent without a queue reach a queue every documented worker consumes: beat's
sweep and "Test connection" used to land in Celery's "celery" queue, which no worker
read, so dead workers' jobs were never re-queued."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import redis

from tests.processes import SOURCES, queues_of
from webapp.celery import app

ROOT = Path(__file__).resolve().parents[2]


def documented_worker_queues() -> list[set[str]]:
    """The -Q of every worker command in the compose file, the demo script and the
    deployment docs (anywhere in them, not only the blocks tests/processes.py reads)."""
    found = [
        queues_of(argv)
        for commands in SOURCES.values()
        for role, argv in commands().items()
        if role.endswith("worker")
    ]
    for path in (ROOT / "scripts" / "demo.sh", ROOT / "docs" / "deployment.md"):
        for match in re.finditer(r"celery -A webapp worker[^\n]*?-Q ([\w,|]+)", path.read_text()):
            found.append(set(re.split(r"[,|]", match.group(1))))
    return found


@pytest.mark.parametrize("task", ["gad.sweep", "gad.test_teacher", "gad.import_prompts"])
def test_a_task_sent_without_a_queue_lands_where_every_documented_worker_reads(settings, task):
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    broker.delete("cpu", "celery")
    try:
        app.send_task(task, args=[0])  # as beat sends the sweep: no queue named
        assert broker.llen("cpu") == 1 and broker.llen("celery") == 0
    finally:
        broker.delete("cpu", "celery")
    queues = documented_worker_queues()
    assert queues and all("cpu" in q for q in queues), queues
