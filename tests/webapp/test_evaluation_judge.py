"""Judge runs of an evaluation: forecast before launch, the Table-2 layout from scripted
verdicts, a judge refusing the key, tokens charged to the team, persona access; and a
run that cannot judge stops early and says so (issue 17): a judge whose first verdicts
cannot be read fails after them, a run that would spend more than 1.5 times its
forecast pauses to ask and continues with a raised cap, progress counts tokens against
the forecast, and "Done" means some answers were scored."""

from __future__ import annotations

import json
import math

import pytest
from django.urls import reverse
from hypothesis import given

from tests.judge.scripted import QualityJudge, ScriptedJudge, garbage, verbose
from tests.security.test_fuzz import FUZZ, _ok, json_values, nasty_text
from tests.webapp.test_evaluation import make_evaluation, systems_of
from tests.webapp.test_teachers import LOOPBACK, make_endpoint
from webapp import dispatch
from webapp.evaluation.models import SystemAnswer
from webapp.judging import actions as judging_actions
from webapp.judging import runs as judging
from webapp.judging.models import JudgeRun
from webapp.teams import actions as team_actions
from webapp.teams.actions import create_api_token
from worker.evaluation import judge_evaluation

# Each system's answers carry their quality; the judge's own answer is q=5.
QUALITY = {"gad": 7, "seqkd": 5, "base": 3, "teacher": 5}
EXPECTED = {"gad": 100 * 7 / 12, "seqkd": 50.0, "base": 100 * 3 / 8, "teacher": 50.0}


@pytest.fixture(autouse=True)
def _loopback_judges(settings):
    settings.GAD_ALLOWED_TEACHER_HOSTS = list(LOOPBACK)


@pytest.fixture
def enqueued(monkeypatch):
    runs = []

    def send(task, args, queue=None):
        assert task == judging_actions.JUDGE_TASK
        runs.append(args[0])
        return True

    monkeypatch.setattr(dispatch, "send", send)
    return runs


def scored_evaluation(team, n_prompts=4):
    evaluation = make_evaluation(team, n_prompts=n_prompts, teacher=True)
    for key, system in systems_of(evaluation).items():
        for answer in SystemAnswer.objects.filter(system=system):
            answer.response = f"{system.name} says q={QUALITY[key]} about {answer.prompt_id}"
            answer.save(update_fields=["response"])
    return evaluation


def page(client, evaluation, **query):
    url = reverse("evaluation", kwargs={"slug": evaluation.team.slug, "pk": evaluation.pk})
    return client.get(url, query)


def launch(client, evaluation, endpoint):
    url = reverse("evaluation-judge", kwargs={"slug": evaluation.team.slug, "pk": evaluation.pk})
    return client.post(url, {"judge": endpoint.pk})


def test_forecast_is_shown_before_launch(
    login, personas, enqueued, django_capture_on_commit_callbacks
):
    evaluation = scored_evaluation(personas.team)
    judge = make_endpoint(personas.team, name="Judge-J", model="judge-m")
    client = login(personas.member)
    body = page(client, evaluation, judge=judge.pk).content.decode()
    # 4 reference answers + 2 orders x 4 systems x 4 prompts, nothing cached yet.
    assert 'data-testid="judge-forecast"' in body
    assert "36 judge calls" in body
    assert "4 reference answers + 32 verdicts; 0 cached" in body
    assert "tokens" in body
    assert not JudgeRun.objects.exists() and not enqueued
    with django_capture_on_commit_callbacks(execute=True):
        response = launch(client, evaluation, judge)
    assert response.status_code == 302
    run = JudgeRun.objects.get()
    assert run.status == "queued" and run.forecast["calls"] == 36
    assert enqueued == [run.pk]


def test_launch_refuses_another_teams_endpoint_and_unready_evaluations(login, personas, enqueued):
    evaluation = scored_evaluation(personas.team)
    stranger = make_endpoint(personas.other_team, name="theirs")
    client = login(personas.member)
    assert launch(client, evaluation, stranger).status_code == 422
    mine = make_endpoint(personas.team, name="mine")
    evaluation.systems.filter(kind="base").update(status="failed")
    assert launch(client, evaluation, mine).status_code == 422
    assert not JudgeRun.objects.exists() and not enqueued


def test_a_run_produces_the_table_from_scripted_verdicts(
    transactional_db, login, personas, enqueued
):
    evaluation = scored_evaluation(personas.team)
    with ScriptedJudge(QualityJudge()) as server:
        judge = make_endpoint(personas.team, name="Judge-J", base_url=server.url, model="judge-m")
        client = login(personas.member)
        assert launch(client, evaluation, judge).status_code == 302
        run = JudgeRun.objects.get()
        assert judge_evaluation(run.pk) == "succeeded"
        requests = server.requests
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    assert requests == 36
    scores = {s["system"]: s for s in run.report["systems"]}
    for key, system in systems_of(evaluation).items():
        row = scores[system.name]
        assert row["n_scored"] == 4 and row["n_failures"] == 0
        assert row["mean"] == pytest.approx(EXPECTED[key])
        assert row["ci_low"] == pytest.approx(EXPECTED[key])
        assert row["ci_high"] == pytest.approx(EXPECTED[key])
    # 13 tokens per scripted answer, charged to the team.
    assert run.tokens_used == 36 * 13
    assert team_actions.month_usage(personas.team).teacher_tokens == 36 * 13
    diag = {d["system"]: d for d in run.report["diagnostics"]["systems"]}
    teacher = systems_of(evaluation)["teacher"].name
    assert diag[teacher]["ngram_f1"]["1"] == pytest.approx(1.0)
    assert 0 < diag[systems_of(evaluation)["gad"].name]["ngram_f1"]["1"] < 1

    body = page(client, evaluation).content.decode()
    assert 'data-testid="judge-table"' in body
    assert "58.3 <span" in body and "[58.3, 58.3]" in body
    assert "37.5 <span" in body
    assert evaluation.prompt_set.name in body  # the test set's column
    assert 'data-testid="overlap-table"' in body and "F1 n=6" in body
    assert 'id="ngram-chart"' in body and "vendor/plotly.min.js" in body
    assert f'<span data-testid="judge-tokens">{36 * 13}</span>' in body

    # A second run asks nothing: every judge call is cached.
    forecast = judging.forecast_for(evaluation, judge)
    assert forecast.calls == 0 and forecast.cached == 36


def test_a_judge_refusing_the_key_fails_the_run_with_the_message(
    transactional_db, login, personas, enqueued
):
    evaluation = scored_evaluation(personas.team, n_prompts=2)
    with ScriptedJudge(QualityJudge(), schedule=lambda n, h: "401") as server:
        judge = make_endpoint(
            personas.team, name="Judge-J", base_url=server.url, model="m", api_key="sk-leak-me"
        )
        client = login(personas.owner)
        assert launch(client, evaluation, judge).status_code == 302
        run = JudgeRun.objects.get()
        assert judge_evaluation(run.pk) == "failed"
    run.refresh_from_db()
    assert run.status == "failed" and run.report is None
    assert run.error.startswith("The judge failed:") and "401" in run.error
    assert "judge 'm' at" in run.error and "API key of endpoint 'Judge-J'" in run.error
    assert "teacher" not in run.error
    assert "sk-leak-me" not in run.error
    body = page(client, evaluation).content.decode()
    assert 'data-testid="judge-error"' in body and "401" in body
    assert judge_evaluation(run.pk) == "skipped"  # a redelivery of a finished run


@pytest.mark.parametrize(
    "role,status", [("owner", 200), ("member", 200), ("annotator", 403), ("outsider", 404)]
)
def test_persona_access_to_the_judge(login, personas, enqueued, role, status):
    evaluation = scored_evaluation(personas.team, n_prompts=2)
    judge = make_endpoint(personas.team, name="Judge-J")
    client = login(getattr(personas, role))
    assert page(client, evaluation, judge=judge.pk).status_code == status
    expected_post = 302 if status == 200 else status
    assert launch(client, evaluation, judge).status_code == expected_post
    assert JudgeRun.objects.count() == (1 if status == 200 else 0)


def test_a_run_held_by_a_live_worker_is_left_alone_and_a_lost_one_is_requeued(
    transactional_db, personas, enqueued
):
    from datetime import timedelta

    from django.utils import timezone

    from worker.jobs import sweep

    evaluation = scored_evaluation(personas.team, n_prompts=2)
    with ScriptedJudge(QualityJudge()) as server:
        judge = make_endpoint(personas.team, name="Judge-J", base_url=server.url, model="m")
        run = judging_actions.launch(evaluation, judge, None)
        # A live worker holds it: a second delivery of the task asks the judge nothing.
        soon = timezone.now() + timedelta(seconds=60)
        JudgeRun.objects.filter(pk=run.pk).update(
            status="running", claimed_by="other:1:1", claimed_until=soon
        )
        assert judge_evaluation(run.pk) == "skipped" and server.requests == 0
        assert sweep()["judge_runs"] == 0
        # That worker died: its claim lapses, the sweep queues the run again, once.
        JudgeRun.objects.filter(pk=run.pk).update(
            claimed_until=timezone.now() - timedelta(seconds=1)
        )
        assert sweep()["judge_runs"] == 1 and sweep()["judge_runs"] == 0
        assert enqueued[-1] == run.pk
        run.refresh_from_db()
        assert run.status == "queued" and run.claimed_by == ""
        assert judge_evaluation(run.pk) == "succeeded"
    run.refresh_from_db()
    assert run.claimed_until is None and run.report["systems"]
    # A run left "running" with no claim at all (its task predates claims) is requeued.
    stuck = JudgeRun.objects.create(evaluation=evaluation, judge=judge, status="running")
    assert sweep()["judge_runs"] == 1 and enqueued[-1] == stuck.pk


def test_a_run_whose_claim_was_taken_over_stops_asking_the_judge(
    transactional_db, personas, enqueued
):
    from worker.evaluation import LostClaim, run_judge

    class TakenOver:
        def check(self):
            raise LostClaim()

    evaluation = scored_evaluation(personas.team, n_prompts=4)
    with ScriptedJudge(QualityJudge()) as server:
        judge = make_endpoint(personas.team, name="Judge-J", base_url=server.url, model="m")
        run = judging_actions.launch(evaluation, judge, None)
        run = JudgeRun.objects.select_related("evaluation__team", "judge").get(pk=run.pk)
        with pytest.raises(LostClaim):
            run_judge(run, TakenOver())
        asked = server.requests
    assert asked < 36  # stopped at the first progress report, not after all 36 calls


# ----------------------------------------------------------------------------- stops

# Its HTML must reach the page escaped, as text.
GARBAGE = "<b>Both answers are fine</b>, I think. " * 20


def continue_url(run: JudgeRun) -> str:
    evaluation = run.evaluation
    return reverse(
        "judge-run-continue",
        kwargs={"slug": evaluation.team.slug, "pk": evaluation.pk, "run_id": run.pk},
    )


def judged(client, evaluation, server) -> JudgeRun:
    """Launch a run with the scripted judge from the page and run its task."""
    judge = make_endpoint(evaluation.team, name="Judge-J", base_url=server.url, model="judge-m")
    assert launch(client, evaluation, judge).status_code == 302
    run = JudgeRun.objects.get()
    judge_evaluation(run.pk)
    run.refresh_from_db()
    return run


def test_a_judge_whose_replies_cannot_be_read_fails_after_its_first_verdicts(
    transactional_db, login, personas, enqueued
):
    # 4 prompts x 4 systems x 2 orders = 32 verdicts; the probe is the first 8.
    evaluation = scored_evaluation(personas.team)
    client = login(personas.member)
    with ScriptedJudge(garbage(GARBAGE)) as server:
        run = judged(client, evaluation, server)
        requests = server.requests
    assert run.status == "failed"
    assert requests == 4 + 8 + 8  # references, the probe and its retries: then it stopped
    assert run.tokens_used == 20 * 13
    assert team_actions.month_usage(personas.team).teacher_tokens == 20 * 13
    assert "the judge's replies could not be read" in run.error
    assert (
        "8 of its first 8 verdicts" in run.error
        and "the rest of its 32 verdicts were not asked" in run.error
    )
    example = repr(GARBAGE[:300] + "…")
    assert run.error.endswith(f"An example reply: {example}")

    body = page(client, evaluation).content.decode()
    assert '<span class="status failed" data-testid="judge-status">Failed</span>' in body
    assert 'data-testid="judge-error"' in body and "replies could not be read" in body
    assert "&lt;b&gt;Both answers are fine&lt;/b&gt;" in body  # escaped, shown as text
    assert "<b>Both answers" not in body


def test_a_run_that_scores_no_answer_is_a_failure_with_the_reason(
    transactional_db, login, personas, enqueued
):
    # One prompt: 8 verdicts, no more than the probe, so every verdict is asked and
    # retried, and none can be read.
    evaluation = scored_evaluation(personas.team, n_prompts=1)
    client = login(personas.member)
    with ScriptedJudge(garbage("No scores from me.")) as server:
        run = judged(client, evaluation, server)
        assert server.requests == 1 + 8 + 8
    assert run.status == "failed" and run.report is not None
    assert judging.n_scored(run.report) == 0
    assert run.error.startswith("The judge scored none of the 4 answers (4 failed, 0 not judged)")
    assert "the most common reason: unreadable verdict" in run.error
    body = page(client, evaluation).content.decode()
    assert 'data-testid="judge-status">Failed</span>' in body
    assert "The judge scored none of the 4 answers" in body


def test_a_run_with_answers_scored_is_done(transactional_db, login, personas, enqueued):
    evaluation = scored_evaluation(personas.team, n_prompts=2)
    client = login(personas.member)
    with ScriptedJudge(QualityJudge()) as server:
        run = judged(client, evaluation, server)
    assert run.status == "succeeded" and run.error == ""
    assert judging.n_scored(run.report) == 8
    body = page(client, evaluation).content.decode()
    assert 'data-testid="judge-status">Done</span>' in body


def test_a_run_pauses_before_spending_more_than_1_5_times_its_forecast_and_continues(
    transactional_db, login, personas, enqueued, monkeypatch, django_capture_on_commit_callbacks
):
    # The judge pads every reply up to max_tokens: far more than the forecast assumes.
    evaluation = scored_evaluation(personas.team)
    client = login(personas.member)
    recorded = []
    record = judging_actions.record_progress
    monkeypatch.setattr(
        judging_actions,
        "record_progress",
        lambda run_id, state, tokens: recorded.append(tokens) or record(run_id, state, tokens),
    )
    with ScriptedJudge(verbose(QualityJudge()), counted=True) as server:
        run = judged(client, evaluation, server)
        paused_at = server.requests
        forecast = run.forecast["est_tokens"]
        cap = math.ceil(1.5 * forecast)
        assert run.status == "paused", run.error
        assert forecast < run.tokens_used <= cap
        assert paused_at < 36
        assert team_actions.month_usage(personas.team).teacher_tokens == run.tokens_used
        # Progress counted the tokens as they were spent, up to what the run reports.
        assert recorded == sorted(recorded) and recorded[-1] == run.tokens_used
        assert f"token cap of {cap:,} tokens" in run.error
        assert f"the forecast was about {forecast:,} tokens" in run.error
        assert f"{run.tokens_used:,} are spent" in run.error
        assert "continue the run with a higher cap" in run.error
        assert f"/api/v1/evaluations/{evaluation.pk}/judge-runs/{run.pk}/continue" in run.error

        body = page(client, evaluation).content.decode()
        assert 'data-testid="judge-status">Paused at the token cap</span>' in body
        assert f'<span data-testid="judge-tokens">{run.tokens_used:,}</span> spent' in body
        assert f"/ {forecast:,} forecast" in body
        assert f"pauses to ask before passing {cap:,}" in body
        assert 'data-testid="judge-continue"' in body
        assert f'value="{judging.suggested_cap(run)}"' in body

        # Continue with a cap that leaves room: the run asks only what it has not asked.
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post(continue_url(run), {"token_cap": 10**7})
        assert response.status_code == 302
        run.refresh_from_db()
        assert run.status == "queued" and run.token_cap == 10**7 and run.error == ""
        assert enqueued[-1] == run.pk
        spent_before = run.tokens_used
        assert judge_evaluation(run.pk) == "succeeded"
        assert server.requests == 36 and max(server.received.values()) == 1
    run.refresh_from_db()
    assert run.status == "succeeded" and run.error == ""
    assert run.tokens_used > spent_before  # both deliveries, as charged to the team
    assert team_actions.month_usage(personas.team).teacher_tokens == run.tokens_used
    assert judging.n_scored(run.report) == 16


def test_continue_is_only_for_a_paused_run_a_higher_cap_and_the_team(login, personas, enqueued):
    evaluation = scored_evaluation(personas.team, n_prompts=2)
    judge = make_endpoint(personas.team, name="Judge-J")
    run = judging_actions.launch(evaluation, judge, None)
    member = login(personas.member)
    response = member.post(continue_url(run), {"token_cap": 10**6})
    assert response.status_code == 422 and "only a run paused" in response.content.decode()
    JudgeRun.objects.filter(pk=run.pk).update(status="paused", tokens_used=5000)
    cap = judging.token_cap(JudgeRun.objects.get(pk=run.pk))
    response = member.post(continue_url(run), {"token_cap": cap})
    assert response.status_code == 422 and "above the current one" in response.content.decode()
    response = member.post(continue_url(run), {"token_cap": "lots"})
    assert response.status_code == 422 and "token_cap" in response.content.decode()
    assert login(personas.annotator).post(continue_url(run)).status_code == 403
    assert login(personas.outsider).post(continue_url(run)).status_code == 404
    assert JudgeRun.objects.get(pk=run.pk).status == "paused" and not enqueued
    # Blank: twice the cap.
    member = login(personas.member)
    assert member.post(continue_url(run), {"token_cap": ""}).status_code == 302
    run.refresh_from_db()
    assert run.status == "queued" and run.token_cap == max(2 * cap, cap + 10_000)


def test_the_api_continues_a_paused_run(
    login, personas, enqueued, django_capture_on_commit_callbacks
):
    evaluation = scored_evaluation(personas.team, n_prompts=2)
    run = judging_actions.launch(evaluation, make_endpoint(personas.team, name="J"), None)
    JudgeRun.objects.filter(pk=run.pk).update(status="paused", tokens_used=100)
    client = login(personas.member)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {create_api_token(personas.member, 't')[1]}"}
    url = f"/api/v1/evaluations/{evaluation.pk}/judge-runs/{run.pk}/continue"
    listed = client.get(f"/api/v1/evaluations/{evaluation.pk}/judge-runs", **auth).json()
    assert listed[0]["status"] == "paused"
    assert listed[0]["token_cap"] == math.ceil(1.5 * run.forecast["est_tokens"])
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url, {"token_cap": 10**6}, content_type="application/json", **auth)
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "queued" and response.json()["token_cap"] == 10**6
    assert enqueued == [run.pk]
    again = client.post(url, {}, content_type="application/json", **auth)
    assert again.status_code == 422 and "only a run paused" in again.json()["detail"]
    other = f"/api/v1/evaluations/{evaluation.pk}/judge-runs/{10**9}/continue"
    assert client.post(other, {}, content_type="application/json", **auth).status_code == 404


def test_progress_shows_tokens_spent_against_the_forecast(login, personas, enqueued):
    evaluation = scored_evaluation(personas.team, n_prompts=2)
    run = judging_actions.launch(evaluation, make_endpoint(personas.team, name="J"), None)
    forecast = run.forecast["est_tokens"]
    JudgeRun.objects.filter(pk=run.pk).update(
        status="running",
        progress={"phase": "probe", "done": 3, "total": 8},
        tokens_used=1234,
    )
    client = login(personas.member)
    line = f"The judge's first verdicts (can they be read?): 3 / 8 calls; 1,234 / {forecast:,} tokens forecast"
    body = page(client, evaluation).content.decode()
    assert line.replace("'", "&#x27;") in body
    url = reverse("evaluation-status", kwargs={"slug": personas.team.slug, "pk": evaluation.pk})
    (state,) = client.get(url).json()["judge_runs"]
    assert state["progress"] == line and state["tokens"] == 1234


@pytest.fixture
def paused(personas, enqueued) -> JudgeRun:
    evaluation = scored_evaluation(personas.team, n_prompts=1)
    run = judging_actions.launch(evaluation, make_endpoint(personas.team, name="J"), None)
    JudgeRun.objects.filter(pk=run.pk).update(status="paused")
    return run


@FUZZ
@given(token_cap=nasty_text, body=json_values)
def test_continue_never_answers_500(login, personas, paused, token_cap, body):
    client = login(personas.member)
    _ok(client.post(continue_url(paused), {"token_cap": token_cap}))
    JudgeRun.objects.filter(pk=paused.pk).update(status="paused")
    auth = {"HTTP_AUTHORIZATION": f"Bearer {create_api_token(personas.member, 't')[1]}"}
    url = f"/api/v1/evaluations/{paused.evaluation_id}/judge-runs/{paused.pk}/continue"
    payload = json.dumps(body, allow_nan=True)
    _ok(client.post(url, payload, content_type="application/json", **auth))
    JudgeRun.objects.filter(pk=paused.pk).update(status="paused", token_cap=None)
