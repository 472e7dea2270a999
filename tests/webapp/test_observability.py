"""/metrics for Prometheus: the site's state at scrape time, restricted to a token or to
the loopback address."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def scrape(client, **headers) -> dict[str, list]:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.status_code
    families = text_string_to_metric_families(response.content.decode())
    return {f.name: f.samples for f in families}


def test_metrics_report_jobs_leases_queues_and_the_sweep(client, personas, settings):
    from worker.jobs import sweep

    sweep()  # celery beat's task, run here: it records itself
    client.get("/accounts/login/")  # a request, timed
    found = scrape(client)
    jobs = {s.labels["status"]: s.value for s in found["gad_jobs"]}
    assert jobs.get(personas.job.status) == 1
    assert found["gad_gpu_leases"][0].value == 0
    assert found["gad_broker_up"][0].value == 1
    assert {s.labels["queue"] for s in found["gad_queue_length"]} >= {"cpu", "gpu"}
    assert found["gad_sweep_runs"][0].value >= 1
    assert 0 <= found["gad_sweep_age_seconds"][0].value < 60
    assert "gad_teacher_tokens_month" in found
    assert any(s.name.endswith("_count") for s in found["gad_http_request_duration_seconds"])


def test_made_up_http_methods_add_no_series_to_metrics(client, db):
    """The review's attack: 20,000 requests with made-up methods grew a web process by
    117 MB and /metrics to 34 MB (one series per method). They are all "OTHER" now."""
    for i in range(300):
        client.generic(f"XM{i:03d}", "/healthz")
    client.generic("PATCH", "/healthz")
    found = scrape(client)
    methods = {s.labels["method"] for s in found["gad_http_request_duration_seconds"]}
    assert "OTHER" in methods and "PATCH" in methods
    assert not any(m.startswith("XM") for m in methods)
    assert methods <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "OTHER"}


def test_a_request_forwarded_by_a_local_proxy_is_not_taken_for_a_local_one(client, db, settings):
    """Behind a TLS proxy on the same host every request comes from 127.0.0.1: the
    loopback rule looks at the client the proxy saw."""
    settings.GAD_TRUSTED_PROXIES = 1
    forwarded = client.get("/metrics", HTTP_X_FORWARDED_FOR="203.0.113.9")
    assert forwarded.status_code == 404
    assert client.get("/metrics", HTTP_X_FORWARDED_FOR="127.0.0.1").status_code == 200


def test_metrics_are_not_for_everyone(client, db, settings):
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 404
    settings.GAD_METRICS_TOKEN = "s3cret-token"
    assert client.get("/metrics").status_code == 404  # loopback, but a token is required
    bad = client.get("/metrics", HTTP_AUTHORIZATION="Bearer nope")
    assert bad.status_code == 404
    good = client.get("/metrics", REMOTE_ADDR="10.1.2.3", HTTP_AUTHORIZATION="Bearer s3cret-token")
    assert good.status_code == 200 and b"gad_jobs" in good.content


def test_a_broker_that_is_down_shows_as_down_not_as_an_error(client, db, monkeypatch):
    import redis

    from webapp import observability

    monkeypatch.setattr(
        observability, "broker_redis", lambda: redis.Redis.from_url("redis://127.0.0.1:1/0")
    )
    found = scrape(client)
    assert found["gad_broker_up"][0].value == 0 and "gad_jobs" in found


def test_healthcheck_sweep_fails_until_a_sweep_ran_and_again_when_it_is_old(db, settings):
    import time

    import pytest
    from django.core.management import CommandError, call_command

    from webapp.celery import broker_redis
    from webapp.nodes.presence import SWEEP_LAST, record_sweep

    broker = broker_redis()
    broker.delete(SWEEP_LAST)
    with pytest.raises(CommandError, match="no sweep has run yet"):
        call_command("healthcheck", "sweep")
    record_sweep()
    call_command("healthcheck", "sweep")
    broker.set(SWEEP_LAST, time.time() - 4 * settings.GAD_SWEEP_S - 10)
    with pytest.raises(CommandError, match="is celery beat running"):
        call_command("healthcheck", "sweep")
    call_command("healthcheck", "sweep", "--max-age", "3600")


def test_healthcheck_worker_needs_a_live_worker_on_this_node(db, settings):
    import pytest
    from django.core.management import CommandError, call_command

    from webapp.nodes import actions

    settings.GAD_NODE_NAME = "node-x"
    actions.report("cpu@elsewhere", "node-y", ["cpu"], [])
    with pytest.raises(CommandError, match="no worker on node node-x"):
        call_command("healthcheck", "worker")
    actions.report("cpu@here", "node-x", ["cpu"], [])
    call_command("healthcheck", "worker")


def test_healthcheck_web_asks_this_hosts_server_and_says_what_is_down(live_server, monkeypatch):
    import pytest
    from django.core.management import CommandError, call_command

    from tests.conftest import free_port

    port = live_server.url.rsplit(":", 1)[-1]
    monkeypatch.setenv("GAD_WEB_BIND", f"0.0.0.0:{port}")
    call_command("healthcheck", "web")
    from kombu import Connection

    from webapp.celery import app

    # The live server answers from a thread of this process: its broker is now down.
    down = "redis://127.0.0.1:1/0"
    monkeypatch.setattr(app, "connection_for_write", lambda: Connection(down))
    with pytest.raises(CommandError, match="answered 503.*broker"):
        call_command("healthcheck", "web")
    monkeypatch.setenv("GAD_WEB_BIND", f"0.0.0.0:{free_port()}")
    with pytest.raises(CommandError, match="did not answer"):
        call_command("healthcheck", "web")
