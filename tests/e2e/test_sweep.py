"""A member watches a checkpoint sweep's judge run progress live, reads the chart and
the proposal, and makes the proposed checkpoint the job's final model, in a browser."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from playwright.sync_api import expect

from tests.e2e.test_annotation import PASSWORD, login

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_live_judge_progress_then_the_chart_and_one_click_final(live_server, page, settings):
    from django.contrib.auth import get_user_model
    from django.db import connection

    from tests.judge.scripted import QualityJudge, ScriptedJudge
    from tests.webapp.test_evaluation_sweep import answer_sweep, job_with_checkpoints
    from tests.webapp.test_teachers import LOOPBACK, make_endpoint
    from webapp.judging import actions as judging_actions
    from webapp.judging.models import JudgeRun
    from webapp.teams.actions import create_team
    from worker.evaluation import judge_evaluation

    settings.GAD_ALLOWED_TEACHER_HOSTS = list(LOOPBACK)
    owner = get_user_model().objects.create_user("alice", password=PASSWORD)
    team = create_team("Acme", "acme", owner=owner)
    job = job_with_checkpoints(team, steps=(10, 20))
    with ScriptedJudge(QualityJudge()) as server:
        judge = make_endpoint(team, name="Judge-J", base_url=server.url, model="m")
        created = judging_actions.create_sweep(
            job, owner, every=1, judge=judge, prompt_set=job.prompt_set, length_bound=10
        )
        evaluation = created.evaluation
        answer_sweep(evaluation, {0: (3, 5), 10: (6, 8), 20: (8, 30)})
        # A run the page sees as running; its progress moves while the page is open.
        run = JudgeRun.objects.create(
            evaluation=evaluation,
            judge=judge,
            judge_name=judge.name,
            status=JudgeRun.Status.RUNNING,
            progress={"phase": "references", "done": 1, "total": 4},
        )
        path = f"/teams/acme/evaluations/{evaluation.pk}/"
        login(page, live_server.url, "alice", path)
        progress = page.get_by_test_id("judge-progress")
        expect(progress).to_contain_text("The judge's own answers: 1 / 4 calls")
        expect(page.get_by_test_id("sweep-waiting")).to_be_visible()
        JudgeRun.objects.filter(pk=run.pk).update(
            progress={"phase": "verdicts", "done": 5, "total": 24}
        )
        expect(progress).to_contain_text("Verdicts: 5 / 24 calls", timeout=10_000)
        # The worker finishes the run (on a thread of its own: Playwright's event loop
        # runs on this one); the page reloads by itself and shows the results.
        with ThreadPoolExecutor(1) as pool:
            assert pool.submit(judge_evaluation, run.pk).result() == "succeeded"
            pool.submit(lambda: connection.close()).result()  # that thread's own

    proposal = page.get_by_test_id("sweep-proposal")
    expect(proposal).to_contain_text("Step 10 has the best judge score", timeout=30_000)
    expect(page.locator("#sweep-chart .main-svg").first).to_be_visible()
    expect(page.locator("#sweep-chart .scatterlayer .trace")).to_have_count(3)  # + proposed
    page.get_by_test_id("sweep-mark-final").click()
    expect(page.get_by_test_id("sweep-proposal")).to_contain_text("already the job's final model")
    assert page.url.endswith(f"{path}#sweep")
    job.refresh_from_db()
    assert job.final_checkpoint.step == 10
    # Another bound: the proposal moves without judging again.
    page.get_by_test_id("sweep-bound").fill("50")
    page.get_by_role("button", name="Propose again").click()
    expect(proposal).to_contain_text("Step 20 has the best judge score among those under 50")
