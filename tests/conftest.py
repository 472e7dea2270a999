"""Suite-wide hooks. Web fixtures live in tests/webapp/conftest.py."""

from __future__ import annotations


def pytest_report_header(config):
    try:
        from django.conf import settings

        settings.DATABASES  # noqa: B018 - raises when Django is not configured
    except Exception:
        return []

    db = settings.DATABASES["default"]
    broker = settings.CELERY_BROKER_URL
    return [
        f"database: {db['ENGINE'].rsplit('.', 1)[-1]} {db.get('HOST') or db['NAME']}",
        f"broker: {broker}",
    ]
