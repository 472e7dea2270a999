"""Live monitoring: down-sampling, health rules, the guard, and the monitoring pages."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from tests.webapp.factories import make_job
from webapp.jobs.models import MetricPoint, Sample
from webapp.jobs.monitor import guard_check
from webapp.lib import health
from webapp.lib.downsample import SeriesSummary, downsample
from webapp.lib.health import guard_action
from webapp.lib.samples import Segment, split_fences

T = health.Thresholds()


def series(values, start: int = 1) -> list[list]:
    return [[start + i, v] for i, v in enumerate(values)]


def add_points(job, stage: str, steps, **metrics) -> None:
    """One MetricPoint per step; each metric is a function of the step (None: absent)."""
    rows = []
    for step in steps:
        values = {}
        for name, fn in metrics.items():
            value = fn(step)
            if value is not ...:
                values[name.replace("__", "/")] = value
        rows.append(MetricPoint(job=job, step=step, stage=stage, time=float(step), values=values))
    MetricPoint.objects.bulk_create(rows)


def runaway(job, steps: int = 200) -> None:
    """The off-policy failure of GAD.md: student answers grow from 300 to ~1300 tokens."""
    add_points(
        job,
        "gad",
        range(1, steps + 1),
        len__student_mean=lambda s: 300 + 5 * s,
        len__teacher_mean=lambda s: 300.0,
        d__acc=lambda s: 0.7,
        reward__mean=lambda s: 0.1 * s,
    )


# ----------------------------------------------------------------------------- down-sampling


def test_a_series_within_the_limit_comes_back_unchanged():
    points = series([0.5, None, 2.0, -1.0])
    assert downsample(points, limit=10) == points
    assert downsample([], limit=10) == []


def test_a_long_series_is_bounded_and_keeps_its_first_and_last_points():
    rng = random.Random(0)
    points = series([rng.random() for _ in range(100_000)])
    out = downsample(points, limit=2000)
    assert 500 <= len(out) <= 2000
    assert out[0] == points[0] and out[-1] == points[-1]
    steps = [p[0] for p in out]
    assert steps == sorted(set(steps))
    assert all(points[s - 1] == p for s, p in zip(steps, out, strict=True))  # real points only


def test_down_sampling_keeps_the_extremes():
    rng = random.Random(1)
    values = [rng.uniform(0.4, 0.6) for _ in range(50_000)]
    values[12_345], values[40_001] = 9.0, -7.0  # one spike up, one collapse down
    out = downsample(series(values), limit=300)
    assert [12_346, 9.0] in out and [40_002, -7.0] in out
    assert max(v for _, v in out) == 9.0 and min(v for _, v in out) == -7.0


def test_non_finite_values_stay_gaps_after_down_sampling():
    values = [1.0] * 10_000
    values[5000] = None
    out = downsample(series(values), limit=100)
    assert [5001, None] in out
    assert len(out) <= 100


@hsettings(max_examples=60, deadline=None)
@given(
    st.lists(st.one_of(st.none(), st.floats(-1e6, 1e6)), min_size=1, max_size=600),
    st.lists(st.integers(1, 90), min_size=1, max_size=20),
    st.integers(1, 5),
    st.integers(5, 60),
)
def test_a_summary_fed_in_chunks_equals_down_sampling_at_once(values, cuts, gap, limit):
    points = [[1 + gap * i, v] for i, v in enumerate(values)]
    summary, i, k = SeriesSummary(limit=limit), 0, 0
    while i < len(points):
        n = cuts[k % len(cuts)]
        summary.extend(points[i : i + n])
        i, k = i + n, k + 1
    out = summary.points()
    assert out == downsample(points, limit)
    assert len(out) <= limit and out[0] == points[0] and out[-1] == points[-1]
    by_step = {p[0]: p for p in points}
    assert all(by_step[p[0]] == p for p in out)  # real points, each once, in step order
    assert [p[0] for p in out] == sorted({p[0] for p in out})
    finite = [v for _, v in points if v is not None]
    if finite:
        kept = [v for _, v in out if v is not None]
        assert min(kept) == min(finite) and max(kept) == max(finite)
    assert any(v is None for _, v in out) == any(v is None for _, v in points)


# ----------------------------------------------------------------------------- health rules


def test_a_discriminator_that_wins_outright_for_k_steps_raises_an_alarm():
    alarm = health.discriminator_too_strong(series([0.8] * 10 + [0.99] * 60), T)
    assert alarm.code == "d_too_strong" and alarm.numbers["steps"] == 60
    assert "0.99" in alarm.detail and "11–70" in alarm.detail
    assert health.discriminator_too_strong(series([0.99] * 49), T) is None
    assert health.discriminator_too_strong(series([0.99] * 60 + [0.7]), T) is None
    assert health.discriminator_too_strong(series([0.99] * 30 + [None] + [0.99] * 30), T) is None


def test_a_discriminator_at_chance_while_the_student_moves_is_not_learning():
    d_acc = series([0.5 + (0.03 if i % 2 else -0.03) for i in range(120)])
    moving_kl = series([0.01] * 120)
    flat_len = series([300.0] * 120)
    alarm = health.discriminator_not_learning(d_acc, moving_kl, flat_len, T)
    assert alarm.code == "d_not_learning" and "mean g/kl 0.01" in alarm.detail
    still_kl = series([0.0] * 120)
    assert health.discriminator_not_learning(d_acc, still_kl, flat_len, T) is None
    growing_len = series([300.0 + i for i in range(120)])
    assert health.discriminator_not_learning(d_acc, still_kl, growing_len, T) is not None
    learning = series([0.8] * 120)
    assert health.discriminator_not_learning(learning, moving_kl, flat_len, T) is None


def test_student_length_far_above_the_teacher_is_a_runaway():
    student = series([400.0] * 20 + [700.0] * 12)
    teacher = series([300.0] * 32)
    alarm = health.length_runaway(student, teacher, T)
    assert alarm.code == "len_runaway" and alarm.severity == "error"
    assert alarm.numbers["ratio"]["steps"] == 12
    assert "700 is 2.3× len/teacher_mean 300" in alarm.detail
    assert health.length_runaway(series([700.0] * 9), series([300.0] * 9), T) is None


def test_student_length_growing_fast_is_a_runaway_even_without_teacher_lengths():
    growing = series([300.0 + 5 * i for i in range(150)])
    alarm = health.length_runaway(growing, [], T)
    assert alarm.numbers["growth"]["growth_pct"] > 50 and "grew +" in alarm.detail
    assert health.length_runaway(series([300.0 + 0.5 * i for i in range(150)]), [], T) is None
    # Too short a history for "over 100 steps": no verdict.
    assert health.length_runaway(series([300.0 + 20 * i for i in range(50)]), [], T) is None


def test_null_rewards_or_losses_raise_the_not_finite_alarm():
    alarm = health.not_finite(
        {"reward/mean": series([0.1, None, None, 0.2]), "d/loss": series([0.6, None])}
    )
    assert alarm.code == "not_finite"
    assert alarm.numbers == {
        "reward/mean": {"count": 2, "first": 2, "last": 3},
        "d/loss": {"count": 1, "first": 2, "last": 2},
    }
    assert "reward/mean at 2 steps (2–3)" in alarm.detail
    assert (
        health.not_finite({"reward/mean": series([0.1, 0.2]), "perf/step_s": [[1, None]]}) is None
    )


def test_discriminator_rules_ignore_the_warmup_stage():
    d_acc = series([1.0] * 200)
    stages = [[1, "warmup"], [180, "gad"]]
    assert health.evaluate({"d/acc": d_acc}, stages) == []
    stages = [[1, "warmup"], [100, "gad"]]
    assert [a.code for a in health.evaluate({"d/acc": d_acc}, stages)] == ["d_too_strong"]


def test_thresholds_come_from_settings_and_bad_values_are_loud(settings):
    settings.GAD_HEALTH_LEN_RATIO = "3.5"
    settings.GAD_HEALTH_D_ACC_HIGH_STEPS = 7
    t = health.Thresholds.from_settings(settings)
    assert t.len_ratio == 3.5 and t.d_acc_high_steps == 7 and t.window == 150
    settings.GAD_HEALTH_LEN_GROWTH_STEPS = 400
    assert health.Thresholds.from_settings(settings).points_needed == 401
    settings.GAD_HEALTH_WINDOW = "many"
    with pytest.raises(ValueError, match="GAD_HEALTH_WINDOW"):
        health.Thresholds.from_settings(settings)
    settings.GAD_HEALTH_WINDOW = 0
    with pytest.raises(ValueError, match="GAD_HEALTH_WINDOW must be at least 1"):
        health.Thresholds.from_settings(settings)


# ----------------------------------------------------------------------------- the guard


def test_guard_acts_only_when_set_and_an_alarm_fires():
    alarm = health.not_finite({"d/loss": [[3, None]]})
    assert guard_action(None, [alarm]) is None
    assert guard_action("off", [alarm]) is None
    assert guard_action("pause", []) is None
    assert guard_action("pause", [alarm]) == "pause"
    assert guard_action("stop", [alarm]) == "stop"
    with pytest.raises(ValueError, match="guard must be one of"):
        guard_action("explode", [alarm])


def test_guard_check_reads_the_job_and_says_why_in_one_message(personas):
    runaway(personas.job)
    assert guard_check(personas.job, "off") is None
    decision = guard_check(personas.job, "stop")
    assert decision.action == "stop"
    assert decision.message.startswith("Stopped by the health guard at step 200.")
    assert "Student answers running away" in decision.message


# ----------------------------------------------------------------------------- metrics.json


def metrics_url(job, slug="acme") -> str:
    return f"/teams/{slug}/jobs/{job.pk}/metrics.json"


def test_page_and_api_serve_the_same_series_full_and_incremental(client, personas, auth):
    job = personas.job
    add_points(job, "warmup", range(1, 4), d__loss=lambda s: s / 10, g__sft_loss=lambda s: 2.0)
    add_points(job, "gad", range(4, 7), d__loss=lambda s: s / 10, reward__mean=lambda s: None)
    client.force_login(personas.member)
    for query in ("", "?after_step=2"):
        page = client.get(metrics_url(job) + query).json()
        api = client.get(f"/api/v1/jobs/{job.pk}/metrics{query}", **auth).json()
        assert {k: page[k] for k in ("series", "stages", "last_step")} == api
    full = client.get(metrics_url(job)).json()
    assert full["series"]["d/loss"] == [[s, s / 10] for s in range(1, 7)]
    assert full["series"]["g/sft_loss"] == [[1, 2.0], [2, 2.0], [3, 2.0]]  # absent later
    assert full["series"]["reward/mean"] == [[4, None], [5, None], [6, None]]  # gaps, not 0
    assert full["stages"] == [[1, "warmup"], [4, "gad"]] and full["last_step"] == 6
    assert full["job"]["status"] == "queued" and full["job"]["step"] == 0
    assert [a["code"] for a in full["health"]] == ["not_finite"]
    again = client.get(metrics_url(job) + "?after_step=6").json()
    assert again["series"] == {} and again["last_step"] == 6


@pytest.fixture
def auth(personas):
    from webapp.teams.actions import create_api_token

    _, token = create_api_token(personas.member, "t")
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def test_the_full_request_is_down_sampled_and_the_incremental_one_is_raw(client, personas):
    job = personas.job
    add_points(job, "gad", range(1, 5001), d__loss=lambda s: math.sin(s / 50))
    client.force_login(personas.member)
    full = client.get(metrics_url(job)).json()["series"]["d/loss"]
    assert len(full) <= 2000 and full[0] == [1, math.sin(1 / 50)] and full[-1][0] == 5000
    newest = client.get(metrics_url(job) + "?after_step=4900").json()["series"]["d/loss"]
    assert [s for s, _ in newest] == list(range(4901, 5001))


def test_a_resumed_run_replaces_the_cached_summary(client, personas):
    job = personas.job
    add_points(job, "gad", range(1, 11), d__loss=lambda s: 1.0)
    client.force_login(personas.member)
    assert client.get(metrics_url(job)).json()["series"]["d/loss"][-1] == [10, 1.0]
    # The worker resumes from step 5: later rows are deleted, then rewritten.
    MetricPoint.objects.filter(job=job, step__gt=5).delete()
    add_points(job, "gad", range(6, 9), d__loss=lambda s: 2.0)
    body = client.get(metrics_url(job)).json()
    assert body["series"]["d/loss"][-3:] == [[6, 2.0], [7, 2.0], [8, 2.0]]
    assert body["last_step"] == 8


def test_metrics_json_refuses_a_bad_after_step(client, personas):
    client.force_login(personas.member)
    assert client.get(metrics_url(personas.job) + "?after_step=x").status_code == 400
    huge = client.get(metrics_url(personas.job) + f"?after_step={10**30}")
    assert huge.status_code == 200 and huge.json()["series"] == {}


def test_outsider_gets_404_on_another_teams_metrics_json(client, personas):
    other_job = make_job(personas.other_team, name="theirs")
    client.force_login(personas.member)
    assert client.get(metrics_url(other_job)).status_code == 404
    assert client.get(metrics_url(other_job, "other")).status_code == 404


# ----------------------------------------------------------------------------- pages


def test_job_page_and_job_list_show_the_runaway_banner_with_its_numbers(client, personas):
    job = personas.job
    job.status, job.step = "training", 200
    job.save()
    runaway(job)
    client.force_login(personas.member)
    page = client.get(f"/teams/acme/jobs/{job.pk}/").content.decode()
    assert 'data-code="len_runaway"' in page and "Student answers running away" in page
    assert "1300 is 4.3× len/teacher_mean 300" in page
    assert 'data-chart="length"' in page and "vendor/plotly.min.js" in page
    listing = client.get("/teams/acme/jobs/").content.decode()
    assert 'data-code="len_runaway"' in listing
    dashboard = client.get("/teams/acme/").content.decode()
    assert 'data-code="len_runaway"' in dashboard


def test_dashboard_lists_running_jobs_with_progress(client, personas):
    job = personas.job
    job.status, job.step, job.total_steps, job.eta_seconds = "training", 30, 120, 600
    job.save()
    client.force_login(personas.member)
    body = client.get("/teams/acme/").content.decode()
    assert "Running and queued" in body and "30 / 120" in body and "about 10 min left" in body
    assert 'style="width: 25%"' in body
    assert f"/teams/acme/jobs/{job.pk}/" in body


def test_compare_shows_the_pair_by_default_and_404s_on_foreign_ids(client, personas):
    gad = personas.job
    seqkd = make_job(personas.team, name="baseline", method="seqkd", pair=gad)
    gad.pair = seqkd
    gad.save()
    other = make_job(personas.other_team, name="secret-run")
    client.force_login(personas.member)
    body = client.get(f"/teams/acme/compare/?jobs={gad.pk}").content.decode()
    assert "baseline" in body and f"jobs={gad.pk},{seqkd.pk}" in body
    assert client.get(f"/teams/acme/compare/?jobs={gad.pk},{other.pk}").status_code == 404
    for bad in ("1;drop", "²", "9" * 40):
        assert client.get(f"/teams/acme/compare/?jobs={bad}").status_code == 404
    picked = client.get(f"/teams/acme/compare/?job={gad.pk}&job={seqkd.pk}")
    assert picked["Location"] == f"/teams/acme/compare/?jobs={gad.pk},{seqkd.pk}"
    # The outsider, in their own team's URL space, with acme's job id: 404 as well.
    client.force_login(personas.outsider)
    response = client.get(f"/teams/other/compare/?jobs={gad.pk}")
    assert response.status_code == 404 and "secret-run" not in response.content.decode()


def test_samples_viewer_shows_each_answer_with_scores_escaped(client, personas):
    job = personas.job
    data = {
        "id": "p7",
        "prompt": "<|user|>Write a loop",
        "teacher": "Here:\n```python\nfor i in range(3):\n    print(i)\n```\nDone.",
        "samples": ["<script>alert(1)</script>", "x " * 500],
        "scores": [0.25, -1.5],
        "rewards": [0.25, -1.5],
        "advantages": [1.0, -1.0],
        "teacher_score": 2.5,
        "sample_lengths": [9, 1000],
        "terminated": [True, False],
    }
    Sample.objects.create(job=job, step=50, stage="gad", data=data)
    Sample.objects.create(job=job, step=100, stage="gad", data={"prompt": "p", "student": ["s"]})
    client.force_login(personas.member)
    body = client.get(f"/teams/acme/jobs/{job.pk}/samples/?step=50").content.decode()
    assert "<script>alert(1)</script>" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert '<pre><code data-lang="python">for i in range(3):\n    print(i)</code></pre>' in body
    assert "D 2.500" in body and "D -1.500" in body and "A -1.00" in body
    assert "1000 tok" in body and ">cut<" in body and "<details>" in body  # long text folds
    latest = client.get(f"/teams/acme/jobs/{job.pk}/samples/").content.decode()
    assert 'value="100" selected' in latest  # a record of another shape still renders
    for bad in ("7", "x", "²"):
        assert client.get(f"/teams/acme/jobs/{job.pk}/samples/?step={bad}").status_code == 404


def test_markdown_fences_split_into_prose_and_code():
    parts = split_fences("intro\n```js\nlet a = '<b>';\n```\nafter\n~~~\nopen to the end")
    assert [(p.kind, p.text, p.lang) for p in parts] == [
        ("text", "intro", ""),
        ("code", "let a = '<b>';", "js"),
        ("text", "after", ""),
        ("code", "open to the end", ""),
    ]
    assert split_fences("plain") == [Segment("text", "plain")] and split_fences("\n") == []


def test_ingestion_keeps_the_shared_summary_current_so_the_first_request_reads_no_rows(
    client, personas, settings, tmp_path, django_assert_max_num_queries
):
    """With a Redis cache (GAD_CACHE_URL) the worker's ingestion and the web share the
    down-sampled summary: the page's first full request reads no metric rows."""
    import json

    import redis
    from django.core.cache import caches

    from worker.ingest import RunIngest

    location = settings.CELERY_BROKER_URL.rsplit("/", 1)[0] + "/9"
    redis.Redis.from_url(location).flushdb()
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": location}
    }
    job = personas.job
    with open(tmp_path / "metrics.jsonl", "w") as f:
        for step in range(1, 301):
            f.write(json.dumps({"step": step, "stage": "gad", "time": step, "d/loss": 1 / step}))
            f.write("\n")
    assert RunIngest(job, tmp_path).poll() == 300
    cached = caches["default"].get(f"gad:monitor:summary:v1:{job.pk}:2000")
    assert cached.through_step == 300
    client.force_login(personas.member)
    reads = []

    def spy(execute, sql, params, many, context):
        reads.append((sql, params))
        return execute(sql, params, many, context)

    from django.db import connection

    with connection.execute_wrapper(spy):
        body = client.get(metrics_url(job)).json()
    assert body["last_step"] == 300 and body["series"]["d/loss"][-1] == [300, 1 / 300]
    # Every read of the metric rows is bounded: the summary's check of the row at step
    # 300, the rows after 300 (none), the health rules' last 150. None reads all 300.
    metric_reads = [(sql, params) for sql, params in reads if '"jobs_metricpoint"' in sql]
    assert metric_reads
    for sql, params in metric_reads:
        assert "LIMIT" in sql or 300 in params, sql
    redis.Redis.from_url(location).flushdb()


def test_a_cache_outage_does_not_stop_the_ingestion(personas, tmp_path, monkeypatch):
    import json

    from webapp.jobs import series
    from worker.ingest import RunIngest

    def down(job):
        raise ConnectionError("redis is down")

    monkeypatch.setattr(series, "job_summary", down)
    (tmp_path / "metrics.jsonl").write_text(
        json.dumps({"step": 1, "stage": "gad", "time": 1.0, "d/loss": 0.5}) + "\n"
    )
    assert RunIngest(personas.job, tmp_path).poll() == 1
    assert MetricPoint.objects.filter(job=personas.job).count() == 1
