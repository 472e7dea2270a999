"""The Celery application shared by the web process and the workers.

Configuration comes from Django settings (the ``CELERY_`` prefix), so the broker is
whatever ``CELERY_BROKER_URL`` says; nothing connects at import time.
"""

import os
from pathlib import Path

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

app = Celery("gad_studio")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["worker"])

FILESYSTEM_FOLDERS = ("data_folder_in", "data_folder_out", "processed_folder", "control_folder")


@app.on_after_configure.connect
def _make_filesystem_broker_folders(sender: Celery, **kwargs) -> None:
    """kombu's filesystem transport (development without CELERY_BROKER_URL) lists its
    folders without creating them: a worker started on a fresh data directory would stop
    at once (FileNotFoundError). They are made when the app is first configured, in
    every process that uses it, never at import."""
    if not str(sender.conf.broker_url).startswith("filesystem://"):
        return
    options = sender.conf.broker_transport_options or {}
    for key in FILESYSTEM_FOLDERS:
        if options.get(key):
            Path(options[key]).mkdir(parents=True, exist_ok=True)


def broker_redis():
    """A client of the broker's Redis (short timeouts: callers report it down rather than
    wait): the sweep's record of itself, the queues' lengths, the messages it holds."""
    import redis

    return redis.Redis.from_url(app.conf.broker_url, socket_timeout=2)


@app.task(name="gad.ping", soft_time_limit=10, time_limit=20)
def ping() -> str:
    """Round trip through the broker; used by health checks and tests."""
    return "pong"
