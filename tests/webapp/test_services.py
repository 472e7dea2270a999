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


def test_a_development_worker_starts_on_a_fresh_data_dir_and_keeps_its_broker_there(
    settings, tmp_path, transactional_db
):
    """Development without CELERY_BROKER_URL uses kombu's filesystem broker: a worker
    started first on a new data directory runs (its folders are made at start), and
    writes nothing into the directory it was started from."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    db = settings.DATABASES["default"]
    env = {k: v for k, v in os.environ.items() if k != "CELERY_BROKER_URL"}
    env |= {
        "DJANGO_DEBUG": "1",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "GAD_DATA_DIR": str(tmp_path / "data"),
        "PYTHONPATH": str(root),
    }
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        argv = "-m celery -A webapp worker -Q cpu --pool solo --loglevel INFO --without-mingle"
        worker = subprocess.Popen(
            [sys.executable, *argv.split(), "--without-gossip"],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while b" ready." not in log.read_bytes() and worker.poll() is None:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        assert worker.poll() is None, log.read_text()  # it did not stop on a missing folder
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    broker = tmp_path / "data" / "broker"
    assert (broker / "control").is_dir() and (broker / "processed").is_dir()
    assert not list(cwd.iterdir())  # no control/ folder where it was started
