"""The production web server's settings: ``gunicorn -c python:webapp.gunicorn webapp.wsgi``.

Threaded workers (gthread): a worker's main thread keeps answering gunicorn's heartbeat
while its threads serve requests, so ``timeout`` bounds a stuck worker, not a request.
A checkpoint archive of tens of GB streams for as long as the client's network needs,
and a large upload arrives at the client's pace; with the default sync workers both
would be killed after ``timeout`` seconds. (Serving the files from a proxy with
X-Accel-Redirect would also work, but the archive is built on the fly from the
checkpoint directory, which the proxy cannot do.)
"""

from __future__ import annotations

import os

bind = os.environ.get("GAD_WEB_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("GAD_WEB_WORKERS", "3"))
worker_class = "gthread"
threads = int(os.environ.get("GAD_WEB_THREADS", "8"))
timeout = int(os.environ.get("GAD_WEB_TIMEOUT_S", "60"))
graceful_timeout = timeout
keepalive = 5
accesslog = "-"
