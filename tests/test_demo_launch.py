"""`make demo`'s last step (``manage.py demo_launch --evaluate``): once the GAD job and
its SeqKD pair have ended, an evaluation of the held-out prompts (teacher, student
before distillation, GAD, SeqKD) and an annotation campaign for the demo user, through
the product's own actions."""

from __future__ import annotations

import re
import threading
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from tests.webapp.factories import make_job, make_prompt_set, register_model
from webapp.annotation.models import Campaign
from webapp.demo.management.commands.demo_launch import DEMO_STUDENT
from webapp.evaluation.models import EvalStatus, Evaluation
from webapp.jobs.models import Checkpoint, Job
from webapp.promptsets.models import Split
from webapp.teachers import actions as teacher_actions
from webapp.teams.models import Team


def _demo_pair(team, status: str, teacher=None, error: str = "") -> tuple[Job, Job]:
    """A GAD job and its SeqKD pair as `demo_launch` leaves them: 2 of 5 prompts held out."""
    prompt_set = make_prompt_set(team, n=5, name="demo")
    test = prompt_set.prompts.order_by("index").values_list("pk", flat=True)[:2]
    prompt_set.prompts.filter(pk__in=list(test)).update(split=Split.TEST)
    fields = {"teacher": teacher, "status": status, "error": error}
    gad = make_job(team, prompt_set, name="demo (gad)", method="gad", **fields)
    seqkd = make_job(team, prompt_set, name="demo (seqkd)", method="seqkd", pair=gad, **fields)
    gad.pair, gad.student, gad.config = seqkd, f"model:{DEMO_STUDENT}", {"max_response_tokens": 6}
    gad.save()
    return gad, seqkd


def test_launching_needs_the_teacher_the_student_and_the_prompts(db):
    call_command("demo_setup")
    with pytest.raises(CommandError, match="--teacher-url, --teacher-model, --student, --prompts"):
        call_command("demo_launch")


def test_evaluate_names_the_job_that_failed_and_creates_nothing(db):
    call_command("demo_setup")
    team = Team.objects.get(slug="demo")
    gad, _ = _demo_pair(team, "succeeded")
    Job.objects.filter(pk=gad.pk).update(status="failed", error="CUDA out of memory")
    with pytest.raises(CommandError, match=r"demo \(gad\).*failed: CUDA out of memory"):
        call_command("demo_launch", evaluate=True, timeout=5)
    assert not Evaluation.objects.exists()


@pytest.mark.slow  # a Celery worker started as demo.sh starts it, generating with tiny models
def test_evaluate_waits_for_the_pair_then_compares_four_systems_for_the_demo_user(
    site_of, teacher_server, tiny_student_dir, settings
):
    register_model(settings, tiny_student_dir, name=DEMO_STUDENT)  # before the worker starts
    call_command("demo_setup")
    team = Team.objects.get(slug="demo")
    url, model = teacher_server
    teacher = teacher_actions.create_endpoint(team, None, name="tiny", base_url=url, model=model)
    gad, seqkd = _demo_pair(team, "training", teacher)
    for job in (gad, seqkd):
        Checkpoint.objects.create(job=job, step=4, path=str(tiny_student_dir))
    site = site_of("demo")
    site.start("worker")

    def finish_training() -> None:
        Job.objects.filter(pk__in=[gad.pk, seqkd.pk]).update(status="succeeded")
        connection.close()

    threading.Timer(3.0, finish_training).start()  # the command is polling by then
    out = StringIO()
    call_command("demo_launch", evaluate=True, timeout=240, site="http://x", stdout=out)

    evaluation = Evaluation.objects.get(team=team)
    systems = list(evaluation.systems.all())
    assert evaluation.status == EvalStatus.READY, [s.error for s in systems] + [site.logs()]
    assert sorted(s.kind for s in systems) == ["base", "checkpoint", "checkpoint", "teacher"]
    assert evaluation.num_prompts == 2 and evaluation.max_new_tokens == 6
    assert evaluation.temperature is None  # greedy, the paper's evaluation
    campaign = Campaign.objects.get(evaluation=evaluation)
    pairs = {(p.system_a.kind, p.system_b.method or p.system_b.kind) for p in campaign.pairs.all()}
    assert pairs == {("checkpoint", "base"), ("checkpoint", "seqkd")}
    assert {a.annotator.username for a in campaign.assignments.all()} == {"demo"}
    assert campaign.assignments.count() == 2 * 2
    printed = out.getvalue()
    # One line a system: its non-empty answers and scores (random-init models answer
    # nothing or anything: only the lines are checked).
    assert "non-empty" in printed and len(re.findall(r" [0-2]/2 ", printed)) == 4, printed
    assert f"http://x/teams/demo/evaluations/{evaluation.pk}/" in printed
    assert f"http://x/teams/demo/annotate/{campaign.pk}/" in printed
