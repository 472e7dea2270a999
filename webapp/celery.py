"""The Celery application shared by the web process and the workers.

Configuration comes from Django settings (the ``CELERY_`` prefix), so the broker is
whatever ``CELERY_BROKER_URL`` says; nothing connects at import time.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

app = Celery("gad_studio")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["worker"])


def broker_redis():
    """A client of the broker's Redis (short timeouts: callers report it down rather than
    wait): the sweep's record of itself, the queues' lengths, the messages it holds."""
    import redis

    return redis.Redis.from_url(app.conf.broker_url, socket_timeout=2)


@app.task(name="gad.ping", soft_time_limit=10, time_limit=20)
def ping() -> str:
    """Round trip through the broker; used by health checks and tests."""
    return "pong"
