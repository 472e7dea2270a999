"""The containers' healthchecks (docker/compose.yaml), usable by any supervisor.

    python manage.py healthcheck web      # this host's web process answers /healthz
    python manage.py healthcheck worker   # a worker on this node reported itself lately
    python manage.py healthcheck sweep    # beat's sweep ran lately (beat and a worker)

Exit status 0 when healthy; otherwise 1, with what is wrong on stderr.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from webapp.claims import node_name
from webapp.nodes import presence


class Command(BaseCommand):
    help = "Exit 0 when this node's web process, worker, or the site's sweep is healthy."

    def add_arguments(self, parser) -> None:
        parser.add_argument("what", choices=["web", "worker", "sweep"])
        parser.add_argument(
            "--max-age",
            type=float,
            default=None,
            help="sweep: seconds since the last sweep (default: 4 sweep periods, GAD_SWEEP_S)",
        )

    def handle(self, *args, what: str, max_age: float | None, **options) -> None:
        message = {"web": _web, "worker": _worker, "sweep": _sweep}[what](max_age)
        self.stdout.write(message)


def _web(max_age: float | None) -> str:
    port = os.environ.get("GAD_WEB_BIND", "0.0.0.0:8000").rsplit(":", 1)[-1]  # webapp.gunicorn
    url = f"http://127.0.0.1:{port}/healthz"
    # The Host the site answers to (DJANGO_ALLOWED_HOSTS), not the loopback address.
    hosts = [h.lstrip(".") for h in settings.ALLOWED_HOSTS if h not in ("*", "")]
    request = urllib.request.Request(url, headers={"Host": hosts[0]} if hosts else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return f"web: {response.read().decode()}"
    except urllib.error.HTTPError as exc:  # 503: the body names what is down
        raise CommandError(f"web: {url} answered {exc.code}: {exc.read().decode()[:200]}") from None
    except OSError as exc:
        raise CommandError(f"web: {url} did not answer: {exc}") from None


def _worker(max_age: float | None) -> str:
    node = node_name()
    names = sorted(w.name for w in presence.live_workers().filter(node=node))
    if not names:
        raise CommandError(
            f"worker: no worker on node {node} reported itself in the last {presence.LIVE_S} s"
        )
    return f"worker: {', '.join(names)} on {node}"


def _sweep(max_age: float | None) -> str:
    limit = max_age if max_age is not None else 4 * settings.GAD_SWEEP_S
    last = presence.last_sweep()
    if last is None:
        raise CommandError("sweep: no sweep has run yet (is celery beat running, and a worker?)")
    age = time.time() - last
    if age > limit:
        raise CommandError(
            f"sweep: the last sweep ran {age:.0f} s ago (limit {limit:.0f} s): is celery beat "
            "running (exactly one), and a worker on the cpu queue?"
        )
    return f"sweep: last ran {age:.0f} s ago"
