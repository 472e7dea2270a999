"""Checkpoint sweeps and several test sets: which checkpoints, the proposal under a
length bound, the automatic judge, the page and the one-click final model; the judge's
Table 2 with one column per test set; the evaluation page's live judge progress."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.judge.scripted import QualityJudge, ScriptedJudge
from tests.webapp.factories import make_job, make_prompt_set
from tests.webapp.test_teachers import LOOPBACK, make_endpoint
from webapp import dispatch
from webapp.evaluation import actions, results
from webapp.evaluation.models import EvalStatus, SystemAnswer, SystemKind, SystemStatus
from webapp.jobs.models import Checkpoint
from webapp.judging import actions as judging_actions
from webapp.judging import runs as judging
from webapp.judging import sweep
from webapp.judging.models import JudgeRun, Sweep
from webapp.lib.errors import ActionError
from webapp.promptsets.models import Split
from worker.evaluation import judge_evaluation


@pytest.fixture(autouse=True)
def _loopback_judges(settings):
    settings.GAD_ALLOWED_TEACHER_HOSTS = list(LOOPBACK)


@pytest.fixture
def enqueued(monkeypatch):
    """Nothing reaches a broker: generation and judge tasks are recorded instead."""
    sent = []
    names = {actions.GENERATE_TASK: "generate", judging_actions.JUDGE_TASK: "judge"}

    def send(task, args, queue=None):
        sent.append((names[task], args[0]))
        return True

    monkeypatch.setattr(dispatch, "send", send)
    return sent


def job_with_checkpoints(team, steps=(10, 20, 30, 40, 50, 60, 70), n_test=4):
    prompt_set = make_prompt_set(team, n=n_test + 2, name="train")
    ids = list(prompt_set.prompts.order_by("index").values_list("pk", flat=True)[:n_test])
    prompt_set.prompts.filter(pk__in=ids).update(split=Split.TEST)
    job = make_job(team, prompt_set, status="succeeded", name="Aurora")
    for step in steps:
        Checkpoint.objects.create(job=job, step=step, path=f"/runs/aurora/step-{step}")
    return job


def points_of(found):
    return [(p.step, p.mean, p.mean_length) for p in found]


def test_every_kth_checkpoint_and_always_the_last(personas):
    job = job_with_checkpoints(personas.team)
    steps = lambda k: [c.step for c in sweep.checkpoints_to_sweep(job, k)]  # noqa: E731
    assert steps(1) == [10, 20, 30, 40, 50, 60, 70]
    assert steps(3) == [30, 60, 70]
    assert steps(7) == [70]
    assert steps(100) == [70]


def test_create_sweep_refuses_clearly(personas, enqueued):
    judge = make_endpoint(personas.team, name="J")
    empty = make_job(personas.team, make_prompt_set(personas.team), name="Empty")
    with pytest.raises(ActionError, match="no checkpoint yet"):
        judging_actions.create_sweep(empty, None, every=1, judge=judge, prompt_set=empty.prompt_set)
    many = job_with_checkpoints(personas.team, steps=range(10, 140, 10))  # 13 checkpoints
    with pytest.raises(ActionError, match="at most 11. Sweep every 2 or more"):
        judging_actions.create_sweep(many, None, every=1, judge=judge, prompt_set=many.prompt_set)
    theirs = make_endpoint(personas.other_team, name="Theirs")
    with pytest.raises(ActionError, match="team's teacher endpoints"):
        judging_actions.create_sweep(many, None, every=2, judge=theirs, prompt_set=many.prompt_set)
    no_test = make_prompt_set(personas.team, name="no-test")
    with pytest.raises(ActionError, match="no prompts in its held-out test split"):
        judging_actions.create_sweep(many, None, every=2, judge=judge, prompt_set=no_test)
    assert not Sweep.objects.exists() and not enqueued


def point(step, mean, length, checkpoint_id=None):
    return sweep.Point(step, f"step {step}", checkpoint_id or step, mean, mean, mean, length, 4)


def test_proposal_is_the_best_score_within_the_length_bound():
    found = [
        sweep.Point(0, "before", None, 30.0, 30.0, 30.0, 20.0, 4),  # never proposed
        point(10, 40.0, 30.0),
        point(20, 48.0, 60.0),
        point(30, 55.0, 140.0),  # best score, but its answers are too long
        point(40, 48.0, 50.0),  # ties with step 20 on score, shorter: preferred
    ]
    assert sweep.propose(found, 100.0).point.step == 40
    assert "Step 40 has the best judge score among those under 100 words" in (
        sweep.propose(found, 100.0).message
    )
    assert sweep.propose(found, None).point.step == 30
    none = sweep.propose(found, 25.0)
    assert none.point is None
    assert "No checkpoint keeps its answers under 25 words" in none.message
    assert "the shortest is step 10 (30.0 words)" in none.message
    assert sweep.propose([], 10.0).point is None


def answer_sweep(evaluation, quality_and_words):
    """Stand in for the generation task: every system answers every prompt with the
    quality tag and the number of words given for its step (0: before distillation)."""
    for system in evaluation.systems.select_related("checkpoint"):
        step = system.checkpoint.step if system.kind == SystemKind.CHECKPOINT else 0
        q, words = quality_and_words[step]
        text = " ".join([f"q={q}"] + ["word"] * (words - 1))
        SystemAnswer.objects.bulk_create(
            SystemAnswer(system=system, prompt=p, response=text) for p in evaluation.prompts.all()
        )
        system.status, system.num_answers = SystemStatus.DONE, evaluation.num_prompts
        system.save(update_fields=["status", "num_answers"])
    evaluation.status = EvalStatus.READY
    evaluation.save(update_fields=["status"])


def test_sweep_end_to_end_from_the_form_to_the_final_model(
    transactional_db, login, personas, enqueued
):
    job = job_with_checkpoints(personas.team, steps=(10, 20, 30, 40))
    client = login(personas.member)
    url = reverse("job-sweep", kwargs={"slug": personas.team.slug, "pk": job.pk})
    body = client.get(url).content.decode()
    assert 'data-testid="sweep-no-judge"' in body  # no endpoint yet: says what to do
    with ScriptedJudge(QualityJudge()) as server:
        judge = make_endpoint(personas.team, name="Judge-J", base_url=server.url, model="m")
        body = client.get(url).content.decode()
        assert 'data-testid="sweep-form"' in body and 'data-testid="sweep-forecast"' in body
        assert f'<option value="{judge.pk}" selected>' in body  # the only endpoint
        # "Update the steps and the cost" (GET): the plan for those values, nothing saved.
        plan = client.get(url, {"every": 3, "prompt_set": job.prompt_set.pk,
                                "prompt_choice": "test", "limit": 2, "judge": judge.pk})  # fmt: skip
        assert plan.status_code == 200 and not Sweep.objects.exists()
        text = plan.content.decode()
        assert "this sweep takes steps 30, 40" in text
        assert "about <strong>14 judge calls</strong>" in text  # 2 + 2 x 2 prompts x 3 systems
        response = client.post(
            url,
            {
                "every": 2,
                "prompt_set": job.prompt_set.pk,
                "prompt_choice": "test",
                "limit": 3,
                "judge": judge.pk,
                "length_bound": 10,
            },
        )
        assert response.status_code == 302, response.content.decode()
        created = Sweep.objects.get()
        evaluation = created.evaluation
        assert response["Location"].endswith(f"/evaluations/{evaluation.pk}/")
        assert (created.every, created.length_bound, evaluation.num_prompts) == (2, 10.0, 3)
        assert evaluation.auto_judge == judge
        kinds = sorted(
            (s.kind, s.checkpoint.step if s.checkpoint else 0) for s in evaluation.systems.all()
        )
        assert kinds == [("base", 0), ("checkpoint", 20), ("checkpoint", 40)]

        # Nothing is judged before every system has its answers.
        assert judging_actions.launch_auto(evaluation.pk) is None
        # Step 40 scores best but writes 30 words; step 20 scores well in 8.
        answer_sweep(evaluation, {0: (3, 5), 20: (6, 8), 40: (8, 30)})
        assert judging.live(evaluation)  # the page keeps polling until the judge starts
        run = judging_actions.launch_auto(evaluation.pk)
        assert run is not None and ("judge", run.pk) in enqueued
        assert judging_actions.launch_auto(evaluation.pk) is None  # once per evaluation
        assert judge_evaluation(run.pk) == "succeeded"

    page = reverse("evaluation", kwargs={"slug": personas.team.slug, "pk": evaluation.pk})
    body = client.get(page).content.decode()
    assert 'data-testid="sweep-table"' in body and 'id="sweep-chart"' in body
    assert "js/sweep.js" in body
    found = points_of(sweep.points(created, sweep.latest_run(created)))
    assert found == [
        (0, pytest.approx(100 * 3 / 8), 5.0),
        (20, pytest.approx(100 * 6 / 11), 8.0),
        (40, pytest.approx(100 * 8 / 13), 30.0),
    ]
    assert "Step 20 has the best judge score among those under 10 words" in body
    # Another bound, tried without judging again.
    body = client.get(page, {"bound": "50"}).content.decode()
    assert "Step 40 has the best judge score among those under 50 words" in body
    body = client.get(page, {"bound": "-3"}).content.decode()
    assert "The length bound must be a positive number." in body

    # One click: step 20 becomes the job's final model, back on the sweep.
    twenty = Checkpoint.objects.get(job=job, step=20)
    final_url = reverse("checkpoint-final", kwargs={"slug": personas.team.slug, "pk": twenty.pk})
    response = client.post(final_url, {"next": page + "#sweep"})
    assert response.status_code == 302 and response["Location"] == page + "#sweep"
    job.refresh_from_db()
    assert job.final_checkpoint == twenty
    body = client.get(page).content.decode()
    assert "It is already the job's final model." in body
    # An outside `next` is ignored: back to the job page.
    response = client.post(final_url, {"next": "https://evil.example/"})
    assert response["Location"] == reverse("job", kwargs={"slug": personas.team.slug, "pk": job.pk})


def test_an_unusable_auto_judge_leaves_a_failed_run_that_says_why(personas, enqueued, settings):
    job = job_with_checkpoints(personas.team, steps=(10,))
    judge = make_endpoint(personas.team, name="Far", base_url="http://10.0.0.7/v1")
    created = judging_actions.create_sweep(
        job, None, every=1, judge=judge, prompt_set=job.prompt_set
    )
    answer_sweep(created.evaluation, {0: (3, 5), 10: (6, 8)})
    settings.GAD_ALLOWED_TEACHER_HOSTS = []
    run = judging_actions.launch_auto(created.evaluation.pk)
    assert run.status == JudgeRun.Status.FAILED and "cannot be used" in run.error
    assert not [task for task in enqueued if task[0] == "judge"]


def test_judge_table_has_one_column_per_test_set(transactional_db, login, personas, enqueued):
    team = personas.team
    job = job_with_checkpoints(team, steps=(10,), n_test=2)
    other = make_prompt_set(team, n=3, name="ood-math")  # no split: all its prompts
    judge_endpoint = make_endpoint(team, name="Judge-J")
    evaluation = actions.create_evaluation(
        team,
        None,
        name="two sets",
        prompt_set=job.prompt_set,
        prompt_choice="test",
        systems=[actions.base_system(job), actions.checkpoint_system(job.checkpoints.get())],
        other_sets=[other],
        auto_judge=judge_endpoint,
    )
    assert evaluation.num_prompts == 5
    group_of, sizes = results.test_sets(evaluation)
    assert sizes == {"train": 2, "ood-math": 3}
    # Out of distribution, the distilled checkpoint answers better (q=9 vs q=5).
    for system in evaluation.systems.all():
        for prompt in evaluation.prompts.all():
            q = 9 if system.kind == SystemKind.CHECKPOINT and prompt.prompt_set == other else 5
            SystemAnswer.objects.create(system=system, prompt=prompt, response=f"q={q} text")
        system.status, system.num_answers = SystemStatus.DONE, 5
        system.save()
    evaluation.status = EvalStatus.READY
    evaluation.save()
    with ScriptedJudge(QualityJudge()) as server:
        judge_endpoint.base_url = server.url
        judge_endpoint.save()
        run = judging_actions.launch_auto(evaluation.pk)
        assert judge_evaluation(run.pk) == "succeeded"
    run.refresh_from_db()
    columns = {t["name"]: {s["system"]: s for s in t["systems"]} for t in run.report["test_sets"]}
    tuned = evaluation.systems.get(kind="checkpoint").name
    assert columns["train"][tuned]["mean"] == pytest.approx(50.0)
    assert columns["ood-math"][tuned]["mean"] == pytest.approx(100 * 9 / 14)
    assert columns["ood-math"][tuned]["n_scored"] == 3
    table = judging.table(run)
    assert [c["name"] for c in table["columns"]] == ["train", "ood-math"]
    client = login(personas.member)
    page = reverse("evaluation", kwargs={"slug": team.slug, "pk": evaluation.pk})
    body = client.get(page).content.decode()
    assert body.count('data-testid="test-set-column"') == 2
    assert "64.3 <span" in body  # 100·9/14 in the ood-math column
    assert 'data-testid="test-sets"' in body and "ood-math (3)" in body


def test_status_json_reports_judge_progress_while_running(login, personas, enqueued):
    job = job_with_checkpoints(personas.team, steps=(10,))
    judge = make_endpoint(personas.team, name="J")
    created = judging_actions.create_sweep(
        job, None, every=1, judge=judge, prompt_set=job.prompt_set
    )
    evaluation = created.evaluation
    answer_sweep(evaluation, {0: (3, 5), 10: (6, 8)})
    run = JudgeRun.objects.create(
        evaluation=evaluation,
        judge=judge,
        judge_name="J",
        status=JudgeRun.Status.RUNNING,
        progress={"phase": "verdicts", "done": 3, "total": 16},
    )
    client = login(personas.member)
    url = reverse("evaluation-status", kwargs={"slug": personas.team.slug, "pk": evaluation.pk})
    data = client.get(url).json()
    assert data["live"] is True
    assert data["judge_runs"] == [
        {
            "id": run.pk,
            "status": "running",
            "status_label": "Judging",
            "progress": "Verdicts: 3 / 16 calls",
            "done": 3,
            "total": 16,
            "tokens": 0,
        }
    ]
    page = reverse("evaluation", kwargs={"slug": personas.team.slug, "pk": evaluation.pk})
    body = client.get(page).content.decode()
    assert 'data-live="1"' in body and "Verdicts: 3 / 16 calls" in body
    assert 'data-testid="sweep-waiting"' in body
    run.status = JudgeRun.Status.FAILED
    run.save()
    assert client.get(url).json()["live"] is False
    assert 'data-live="1"' not in client.get(page).content.decode()


@pytest.fixture
def auth(personas):
    from webapp.teams.actions import create_api_token

    _, token = create_api_token(personas.member, "t")
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def test_a_script_sweeps_a_job_reads_the_proposal_and_marks_it_final_over_the_api(
    transactional_db, client, personas, auth, enqueued
):
    job = job_with_checkpoints(personas.team, steps=(10, 20))
    with ScriptedJudge(QualityJudge()) as server:
        judge = make_endpoint(personas.team, name="J", base_url=server.url, model="m")
        url = f"/api/v1/jobs/{job.pk}/sweeps"
        post = lambda url, body: client.post(  # noqa: E731
            url, body, content_type="application/json", **auth
        )
        response = post(url, {"every": 1, "judge": judge.pk, "length_bound": 0})
        assert response.status_code == 422 and "length_bound" in response.json()["detail"]
        response = post(url, {"every": 1, "judge": 10**9})
        assert response.status_code == 422 and "judge: no teacher endpoint" in response.text
        response = post(url, {"every": 1, "judge": judge.pk, "length_bound": 10, "limit": 2})
        assert response.status_code == 201, response.text
        ids = response.json()
        evaluation = Sweep.objects.get(pk=ids["id"]).evaluation
        state = client.get(f"/api/v1/sweeps/{ids['id']}", **auth).json()
        assert state["judged"] is False and state["proposal"]["step"] is None
        assert state["status"] == "generating"
        answer_sweep(evaluation, {0: (3, 5), 10: (6, 8), 20: (8, 30)})
        run = judging_actions.launch_auto(evaluation.pk)
        assert judge_evaluation(run.pk) == "succeeded"

    detail = client.get(f"/api/v1/evaluations/{ids['evaluation']}", **auth).json()
    assert detail["sweep"] == ids["id"] and detail["test_sets"] == {"train": 2}
    assert sorted(s["step"] or 0 for s in detail["systems"]) == [0, 10, 20]
    runs = client.get(f"/api/v1/evaluations/{ids['evaluation']}/judge-runs", **auth).json()
    assert runs[0]["status"] == "succeeded" and runs[0]["table"]["columns"][0]["name"] == "train"
    state = client.get(f"/api/v1/sweeps/{ids['id']}", **auth).json()
    assert [p["step"] for p in state["points"]] == [0, 10, 20]
    assert state["proposal"]["step"] == 10 and state["length_bound"] == 10
    wider = client.get(f"/api/v1/sweeps/{ids['id']}?bound=100", **auth).json()
    assert wider["proposal"]["step"] == 20
    final = post(f"/api/v1/checkpoints/{state['proposal']['checkpoint']}/final", {})
    assert final.status_code == 200 and final.json()["step"] == 10
    # Another team's member, or an annotator, cannot read it.
    from webapp.teams.actions import create_api_token

    for user, status in ((personas.outsider, 404), (personas.annotator, 403)):
        _, token = create_api_token(user, "x")
        other = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
        assert client.get(f"/api/v1/sweeps/{ids['id']}", **other).status_code == status
        evaluation_url = f"/api/v1/evaluations/{ids['evaluation']}"
        assert client.get(evaluation_url, **other).status_code == status
    _, token = create_api_token(personas.outsider, "y")
    listed = client.get("/api/v1/evaluations", HTTP_AUTHORIZATION=f"Bearer {token}").json()
    assert listed == []
