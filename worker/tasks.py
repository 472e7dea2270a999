"""Imported by Celery's autodiscovery: registers every task of the worker package."""

from celery.signals import worker_init

from worker import evaluation, imports, jobs, presence, teachers  # noqa: F401
from worker.sandbox import protect_worker


@worker_init.connect
def _protect(**kwargs) -> None:
    """A worker holds the site's secrets in its environment: no process of its user may
    read them from /proc (worker.sandbox.protect_worker)."""
    protect_worker()
