"""The worker's side of GPU leases (the leases themselves are ``webapp.nodes``'): a task
whose GPUs are busy retries later, and a node's own queue reaches its workers."""

from __future__ import annotations

from typing import NoReturn

from celery import Task
from celery.exceptions import Reject
from django.conf import settings

from webapp.dispatch import Kind


class NoGpu(Exception):
    """Not enough free GPUs on this node now; the task retries later."""


def retry_later(task: Task, kind: Kind, pk: int) -> NoReturn:
    """Retry ``task`` (row ``pk`` of ``kind``) after settings.GAD_GPU_RETRY_S. When the
    retry cannot be sent (the broker is down: Celery rejects the message instead), the
    row is flagged unsent, so that the sweep sends its task again rather than leaving
    it waiting for nobody."""
    try:
        kind.still_waiting(pk)  # alive: not a lost message for the sweep
        task.retry(countdown=settings.GAD_GPU_RETRY_S)  # raises Retry once the retry is sent
    except Reject:
        kind.not_sent(pk)
        raise
    raise AssertionError("Task.retry returned")  # pragma: no cover


def node_queue(node: str) -> str:
    """The queue only the workers of ``node`` consume (the members of a multi-node job)."""
    return f"node.{node}"
