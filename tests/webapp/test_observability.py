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
        observability, "_redis", lambda: redis.Redis.from_url("redis://127.0.0.1:1/0")
    )
    found = scrape(client)
    assert found["gad_broker_up"][0].value == 0 and "gad_jobs" in found
