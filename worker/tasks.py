"""Imported by Celery's autodiscovery: registers every task of the worker package."""

from worker import evaluation, imports, jobs, presence, teachers  # noqa: F401
