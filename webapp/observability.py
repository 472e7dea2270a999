"""``/metrics`` for Prometheus: what an operator watches (docs/deployment.md, "What to watch").

Read at scrape time from the database and the broker, so every web process answers the
same: jobs by state, GPU leases held, teacher tokens spent this month, each queue's
length, sweep runs and the age of the last sweep (the sweep records itself in the
broker's Redis, ``webapp.nodes.presence.record_sweep``). Request latency is a histogram of the web process
that answers the scrape (per process: scrape each one, or read it as a sample).

Restricted: with ``GAD_METRICS_TOKEN`` set, only ``Authorization: Bearer <token>``;
without it, only requests from the loopback address. Anyone else gets a 404.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Iterator

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from webapp.celery import broker_redis
from webapp.lib.http import client_ip
from webapp.nodes import presence

REQUEST_SECONDS = Histogram(
    "gad_http_request_duration_seconds",
    "Time to answer a request, by method and status (this web process).",
    ["method", "status"],
    registry=None,
)


class SiteCollector(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        from django.db.models import Count, Sum
        from django.utils import timezone

        from webapp.jobs.models import Job
        from webapp.nodes.models import GpuLease
        from webapp.teams.models import UsageKind, UsageRecord

        jobs = GaugeMetricFamily("gad_jobs", "Jobs by state.", labels=["status"])
        for row in Job.objects.values("status").annotate(n=Count("id")):
            jobs.add_metric([row["status"]], row["n"])
        yield jobs
        leases = GpuLease.objects.filter(expires_at__gte=timezone.now()).count()
        yield GaugeMetricFamily("gad_gpu_leases", "GPUs leased to jobs and evaluations.", leases)
        month = timezone.now().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        spent = UsageRecord.objects.filter(
            kind=UsageKind.TEACHER_TOKENS, created_at__gte=month
        ).aggregate(total=Sum("amount"))["total"]
        yield GaugeMetricFamily(
            "gad_teacher_tokens_month", "Teacher tokens spent this month, all teams.",
            float(spent or 0),
        )  # fmt: skip
        yield from _broker_metrics()


def _broker_metrics() -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    up = GaugeMetricFamily("gad_broker_up", "1 when the broker answered this scrape.")
    try:
        broker = broker_redis()
        queues = GaugeMetricFamily(
            "gad_queue_length", "Messages waiting per queue.", labels=["queue"]
        )
        for name in ("cpu", "gpu", "celery"):
            queues.add_metric([name], broker.llen(name))
        runs, last = presence.sweep_record(broker)
    except Exception:
        up.add_metric([], 0)
        yield up
        return
    up.add_metric([], 1)
    yield up
    yield queues
    yield CounterMetricFamily("gad_sweep_runs", "Sweeps run (celery beat's gad.sweep).", runs)
    age = time.time() - float(last) if last else float("inf")
    yield GaugeMetricFamily("gad_sweep_age_seconds", "Seconds since the last sweep ran.", age)


REGISTRY = CollectorRegistry()
REGISTRY.register(SiteCollector())
REGISTRY.register(REQUEST_SECONDS)


def metrics(request: HttpRequest) -> HttpResponse:
    token = settings.GAD_METRICS_TOKEN
    if token:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise Http404
    elif client_ip(request) not in ("127.0.0.1", "::1"):
        raise Http404
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)


class RequestTiming:
    """Middleware: each request's duration into ``gad_http_request_duration_seconds``."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        start = time.perf_counter()
        response = self.get_response(request)
        REQUEST_SECONDS.labels(method_label(request.method), str(response.status_code)).observe(
            time.perf_counter() - start
        )
        return response


# A label value makes a series kept for the life of the process: a client-chosen method
# (any token is a valid one) would grow /metrics and the process without bound.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str | None) -> str:
    return method if method in METHODS else "OTHER"
