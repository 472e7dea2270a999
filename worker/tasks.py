"""Imported by Celery's autodiscovery: registers every task of the worker package."""

from worker import evaluation, jobs, teachers  # noqa: F401
