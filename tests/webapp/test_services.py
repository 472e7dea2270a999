"""The suite runs against the real services of DESIGN.md, and says so."""

import os

import pytest
from django.db import connection


@pytest.mark.django_db
def test_database_is_postgresql_under_make_test():
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        pytest.skip("DATABASE_URL is not PostgreSQL (make test sets it)")
    assert connection.vendor == "postgresql"
    with connection.cursor() as cursor:
        cursor.execute("SELECT version()")
        assert "PostgreSQL" in cursor.fetchone()[0]


def test_celery_task_round_trip_through_a_real_worker_on_redis(settings):
    if not settings.CELERY_BROKER_URL.startswith("redis://"):
        pytest.skip("CELERY_BROKER_URL is not Redis (make test sets it)")
    from celery import Celery
    from celery.contrib.testing.worker import start_worker

    # An app of its own with a result backend (the site's app needs none): the result
    # comes back over Redis, so the round trip proves both directions.
    app = Celery("roundtrip", broker=settings.CELERY_BROKER_URL, backend=settings.CELERY_BROKER_URL)
    app.conf.task_default_queue = "roundtrip"

    @app.task(name="roundtrip.ping")
    def ping():
        return "pong"

    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
        assert ping.delay().get(timeout=20) == "pong"


@pytest.mark.django_db
def test_healthz_reports_database_and_broker(client, settings):
    response = client.get("/healthz")
    body = response.json()
    assert body["database"] == "ok"
    if settings.CELERY_BROKER_URL.startswith("redis://"):
        assert body["broker"] == "ok"
        assert response.status_code == 200
