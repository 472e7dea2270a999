"""The job page in a real browser: charts fill, grow without reloads, overlay another run;
the samples viewer shows model text as text; a length runaway raises its banner live."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# Every metric of GAD.md's "What to log", per stage (absent metrics stay absent).
WARMUP = ["d/loss", "d/acc", "d/teacher_score", "d/student_score", "d/grad_norm", "d/lr"]
WARMUP += ["g/sft_loss", "g/grad_norm", "g/lr", "len/student_mean", "len/student_max"]
WARMUP += ["len/teacher_mean", "len/truncated_frac", "perf/step_s", "perf/rollout_s"]
WARMUP += ["perf/tokens_per_s"]
GAD = [m for m in WARMUP if m != "g/sft_loss"]
GAD += ["g/pg_loss", "g/kl", "g/entropy", "g/clip_frac", "reward/mean", "reward/std"]
NAMED_CHARTS = 13  # every chart of webapp/monitoring/charts.py but "other"

# [{chart id, traces with points, points per trace}] for every chart that has data.
CHARTS_JS = """() => [...document.querySelectorAll('[data-chart]')]
  .filter((c) => !c.hidden && !c.classList.contains('empty'))
  .map((c) => {
    const data = c.querySelector('[data-plot]').data || [];
    return {id: c.dataset.chart, names: data.map((t) => t.name),
            lengths: data.map((t) => t.x.length)};
  })"""


def points(job, stage: str, steps, value=lambda name, step: 0.5 + step / 1000, names=None):
    from webapp.jobs.models import MetricPoint

    names = names or (WARMUP if stage == "warmup" else GAD)
    MetricPoint.objects.bulk_create(
        MetricPoint(
            job=job,
            step=s,
            stage=stage,
            time=float(s),
            values={n: value(n, s) for n in names},
        )
        for s in steps
    )


@pytest.fixture
def acme(settings):
    """A member of team acme, logged in through a session cookie, and a training job."""
    from django.contrib.auth import get_user_model

    from webapp.jobs.models import Job
    from webapp.teams.actions import create_team

    settings.GAD_MONITOR_POLL_S = 0.5  # the default is 5 s; the tests wait for polls
    user = get_user_model().objects.create(username="bob")
    team = create_team("Acme", "acme", owner=user)
    job = Job.objects.create(
        team=team,
        name="gad-run",
        method="gad",
        student="s",
        status="training",
        stage="gad",
        step=20,
        total_steps=100,
        config={"sample_every": 10},
    )
    return user, team, job


def login(page, live_server, user) -> None:
    from django.conf import settings
    from django.test import Client

    client = Client()
    client.force_login(user)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
    page.context.add_cookies(
        [{"name": settings.SESSION_COOKIE_NAME, "value": cookie, "url": live_server.url}]
    )


def test_every_chart_with_data_draws_and_new_points_arrive_without_a_reload(
    live_server, page, acme
):
    user, team, job = acme
    points(job, "warmup", range(1, 11))
    points(job, "gad", range(11, 21))
    login(page, live_server, user)
    page.goto(f"{live_server.url}/teams/acme/jobs/{job.pk}/")
    page.wait_for_function(f"() => ({CHARTS_JS})().length === {NAMED_CHARTS}")
    charts = page.evaluate(CHARTS_JS)
    assert all(c["lengths"] and min(c["lengths"]) > 0 for c in charts), charts
    disc = next(c for c in charts if c["id"] == "disc")
    assert disc["names"] == ["d/loss", "d/acc"] and disc["lengths"] == [20, 20]
    reward = next(c for c in charts if c["id"] == "reward")
    assert reward["lengths"] == [10, 10]  # absent in warmup: not zeros

    page.evaluate("() => { window.__sameDocument = true; }")
    points(job, "gad", range(21, 26))
    type(job).objects.filter(pk=job.pk).update(step=25, eta_seconds=600)
    page.wait_for_function(
        "() => document.querySelector('[data-chart=disc] [data-plot]').data[0].x.length === 25"
    )
    page.wait_for_function(
        "() => document.querySelector('[data-live=step]').textContent.trim() === '25 / 100'"
    )
    assert page.evaluate("() => window.__sameDocument") is True
    assert "about 10 min left" in page.locator("[data-live=eta]").inner_text()
    lengths = {c["id"]: c["lengths"] for c in page.evaluate(CHARTS_JS)}
    assert lengths["kl"] == [15] and lengths["gloss"] == [15, 10]  # g/pg_loss, g/sft_loss


def test_overlaying_a_second_run_adds_its_traces(live_server, page, acme):
    from webapp.jobs.models import Job

    user, team, job = acme
    baseline = Job.objects.create(
        team=team, name="seqkd-baseline", method="seqkd", student="s", status="succeeded"
    )
    points(job, "gad", range(1, 11))
    points(baseline, "seqkd", range(1, 31), names=["g/sft_loss", "len/student_mean"])
    login(page, live_server, user)
    page.goto(f"{live_server.url}/teams/acme/jobs/{job.pk}/")
    trace_count = "() => document.querySelector('[data-chart=length] [data-plot]').data?.length"
    page.wait_for_function(f"() => ({trace_count})() === 3")
    page.select_option("[data-overlay]", str(baseline.pk))
    page.wait_for_function(f"() => ({trace_count})() === 4")
    names = page.evaluate(
        "() => document.querySelector('[data-chart=gloss] [data-plot]').data.map((t) => t.name)"
    )
    assert names == ["gad-run · g/pg_loss", "seqkd-baseline · g/sft_loss"]
    link = page.locator("[data-compare-link]").get_attribute("href")
    assert link.endswith(f"?jobs={job.pk},{baseline.pk}")
    page.goto(live_server.url + link)  # the shareable comparison draws both runs
    page.wait_for_function(f"() => ({trace_count})() === 4")


def test_samples_viewer_shows_the_texts_as_text(live_server, page, acme):
    from webapp.jobs.models import Sample

    user, team, job = acme
    Sample.objects.create(
        job=job,
        step=10,
        stage="gad",
        data={
            "prompt": "Say hello",
            "teacher": "Hello there, friend.",
            "samples": ["<img src=x onerror=alert(1)>hi", "Hello!\n```\nprint('hi')\n```"],
            "scores": [-0.5, 0.75],
            "advantages": [-1.0, 1.0],
            "teacher_score": 1.25,
        },
    )
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    login(page, live_server, user)
    page.goto(f"{live_server.url}/teams/acme/jobs/{job.pk}/samples/")
    answers = page.get_by_test_id("answer")
    assert answers.count() == 4  # the prompt, the teacher, two students
    assert "Hello there, friend." in answers.nth(1).inner_text()
    assert "<img src=x onerror=alert(1)>hi" in answers.nth(2).inner_text()
    assert page.locator("pre code").inner_text() == "print('hi')"
    assert "D 0.750" in answers.nth(3).inner_text()
    assert page.locator(".sv-answer img").count() == 0 and dialogs == []


def test_a_length_runaway_raises_its_banner_while_the_page_is_open(live_server, page, acme):
    user, team, job = acme
    teacher = {"len/teacher_mean": 300.0}
    lengths = ["len/student_mean", "len/student_max", "len/teacher_mean"]
    points(job, "gad", range(1, 41), lambda n, s: teacher.get(n, 310.0), lengths)
    login(page, live_server, user)
    page.goto(f"{live_server.url}/teams/acme/jobs/{job.pk}/")
    page.wait_for_function(
        "() => document.querySelector('[data-chart=length] [data-plot]').data?.length === 3"
    )
    assert page.locator("[data-code=len_runaway]").count() == 0
    # The student's answers take off: 4× the teacher's length for 15 steps.
    points(job, "gad", range(41, 56), lambda n, s: teacher.get(n, 1200.0 + s), lengths)
    banner = page.locator("[data-health] [data-code=len_runaway]")
    banner.wait_for()
    text = banner.inner_text()
    assert "Student answers running away" in text
    assert "len/student_mean 1255 is 4.2× len/teacher_mean 300" in text


def _set_visibility(page, state: str) -> None:
    page.evaluate(
        """(state) => {
            Object.defineProperty(document, 'visibilityState', {value: state, configurable: true});
            document.dispatchEvent(new Event('visibilitychange'));
        }""",
        state,
    )


def test_the_page_polls_only_while_it_is_visible(live_server, page, acme):
    user, team, job = acme
    points(job, "gad", range(1, 6))
    polls = []
    page.on("request", lambda r: "metrics.json" in r.url and polls.append(r.url))
    login(page, live_server, user)
    page.goto(f"{live_server.url}/teams/acme/jobs/{job.pk}/")
    with page.expect_request(lambda r: "metrics.json?after_step=5&" in r.url):
        pass  # after the full request, the page asks only for what is new
    _set_visibility(page, "hidden")
    page.wait_for_timeout(500)  # a poll already on its way may still land
    hidden_at = len(polls)
    page.wait_for_timeout(2000)  # four poll intervals
    assert len(polls) == hidden_at
    with page.expect_request(lambda r: "metrics.json" in r.url):
        _set_visibility(page, "visible")


def test_smoothing_log_scale_and_full_screen(live_server, page, acme):
    user, team, job = acme
    points(job, "gad", range(1, 41), lambda n, s: float(s % 2), names=["d/loss"])
    login(page, live_server, user)
    page.goto(f"{live_server.url}/teams/acme/jobs/{job.pk}/")
    plot = "document.querySelector('[data-chart=disc] [data-plot]')"
    page.wait_for_function(f"() => {plot}.data?.[0].y.length === 40")
    assert page.evaluate(f"() => {plot}.data[0].y.slice(-2)") == [1, 0]
    page.locator("[data-smoothing]").fill("0.9")
    page.wait_for_function(f"() => Math.abs({plot}.data[0].y[39] - 0.5) < 0.2")  # EMA
    chart = page.locator("[data-chart=disc]")
    chart.locator("[data-log]").click()
    page.wait_for_function(f"() => {plot}.layout.yaxis.type === 'log'")
    chart.locator("[data-full]").click()
    assert "full" in chart.get_attribute("class")
    assert chart.bounding_box()["height"] > 600
    page.keyboard.press("Escape")
    assert "full" not in chart.get_attribute("class")
    # Hover values: a unified hover label shows the step's values.
    page.locator("[data-chart=disc] .nsewdrag").hover()
    page.wait_for_selector(
        "[data-chart=disc] .hoverlayer .legend, [data-chart=disc] .hoverlayer text"
    )
