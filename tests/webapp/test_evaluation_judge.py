"""Judge runs of an evaluation: forecast before launch, the Table-2 layout from scripted
verdicts, a judge refusing the key, tokens charged to the team, persona access."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.judge.scripted import QualityJudge, ScriptedJudge
from tests.webapp.test_evaluation import make_evaluation, systems_of
from tests.webapp.test_teachers import LOOPBACK, make_endpoint
from webapp.evaluation.models import SystemAnswer
from webapp.judging import actions as judging_actions
from webapp.judging import runs as judging
from webapp.judging.models import JudgeRun
from webapp.teams import actions as team_actions
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
    monkeypatch.setattr(judging_actions, "enqueue", runs.append)
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
