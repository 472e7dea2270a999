"""Celery tasks: the only package that imports both ``webapp`` and ``trainer``."""
