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


@pytest.mark.parametrize(
    "task,queue",
    [("gad.sweep", "cpu"), ("gad.test_teacher", "cpu"), ("gad.import_prompts", "imports")],
)
def test_a_task_sent_without_a_queue_lands_where_every_documented_worker_reads(
    settings, task, queue
):
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    broker.delete(queue, "celery")
    try:
        app.send_task(task, args=[0])  # as beat sends the sweep: no queue named
        assert broker.llen(queue) == 1 and broker.llen("celery") == 0
    finally:
        broker.delete(queue, "celery")
    queues = documented_worker_queues()
    assert queues and all("cpu" in q for q in queues), queues


def test_imports_reach_every_cpu_worker_and_no_gpu_worker():
    """A hostile upload may cost a worker: never a training node's. Every documented way
    to run a site has a worker reading the imports queue, and none that reads gpu does."""
    for source, commands in SOURCES.items():
        workers = [queues_of(argv) for role, argv in commands().items() if role.endswith("worker")]
        assert any("imports" in q for q in workers), (source, workers)
    queues = documented_worker_queues()
    assert not [q for q in queues if "gpu" in q and "imports" in q], queues
    assert [q for q in queues if "imports" in q], queues
