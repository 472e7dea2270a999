"""A worker reports itself (queues, GPUs) while it runs and removes itself when it stops."""

from __future__ import annotations

import pytest

from tests.worker.conftest import wait_for
from webapp.nodes import presence
from webapp.nodes.models import WorkerNode

pytestmark = pytest.mark.slow


def test_a_running_worker_is_live_with_its_queues_and_gpus(workers, transactional_db):
    proc = workers.start("cpu,gpu", gpus="0,1")
    row = wait_for(lambda: WorkerNode.objects.first(), 60, "the worker's report", workers.logs)
    # The -Q queues, and the node's own queue (its part of a multi-node job) besides.
    assert row.queues == ["cpu", "gpu", f"node.{row.node}"] and row.gpus == [0, 1]
    assert presence.serves("gpu") and presence.most_gpus() == 2
    proc.terminate()  # a warm shutdown, as on Ctrl-C or SIGTERM
    proc.wait(30)
    assert not WorkerNode.objects.exists()


def test_a_worker_logs_json_lines_when_asked(workers, transactional_db):
    import json

    workers.start("cpu", name="json", GAD_LOG_FORMAT="json")
    wait_for(lambda: WorkerNode.objects.exists(), 60, "the worker's report", workers.logs)

    def reported():
        lines = [line for line in workers.logs().splitlines() if line.startswith("{")]
        records = [json.loads(line) for line in lines]
        return [r for r in records if "reporting queues" in r["message"]]

    record = wait_for(reported, 30, "a JSON log line", workers.logs)[0]
    assert record["level"] == "INFO" and record["logger"].startswith("worker")
