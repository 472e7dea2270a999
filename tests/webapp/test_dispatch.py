"""A broker that cannot be reached when a task is sent: the request still succeeds, the
row says it is waiting for the queue, and the sweep sends it once the broker is back.

The broker outage is injected at the one wrapper the web side sends through
(``app.send_task``), raising what kombu raises when Redis refuses the connection.
"""

from __future__ import annotations

import json

import pytest
from kombu.exceptions import OperationalError

from tests.webapp.test_evaluation import make_evaluation
from tests.webapp.test_jobs import launch_data
from tests.webapp.test_teachers import make_endpoint, url
from webapp.celery import app
from webapp.evaluation import actions as evaluation_actions
from webapp.evaluation.models import EvalStatus
from webapp.jobs.actions import RUN_JOB_TASK
from webapp.jobs.models import Job
from webapp.judging import actions as judging_actions
from webapp.judging.models import JudgeRun
from webapp.teachers.models import TeacherEndpoint
from worker.jobs import sweep


class Broker:
    """``app.send_task`` as a broker that is down until ``up`` is set, recording sends."""

    def __init__(self) -> None:
        self.up = False
        self.sent: list[tuple[str, list, str | None]] = []

    def __call__(self, name, args=None, queue=None, **_):
        if not self.up:
            raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        self.sent.append((name, list(args), queue))


@pytest.fixture
def broker(monkeypatch):
    fake = Broker()
    monkeypatch.setattr(app, "send_task", fake)
    return fake


def test_a_launch_while_the_broker_is_down_succeeds_and_the_sweep_sends_it_later(
    client, personas, broker, django_capture_on_commit_callbacks
):
    personas.team.quota.max_concurrent_jobs = 10
    personas.team.quota.save()
    client.force_login(personas.member)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/teams/acme/jobs/new/", launch_data(personas, name="offline"))
    assert response.status_code == 302  # not a 500: the job is saved
    job = Job.objects.get(name="offline")
    assert job.status == "queued" and job.unsent
    page = client.get(f"/teams/acme/jobs/{job.pk}/").content.decode()
    assert "their task queue could not be reached" in page

    assert sweep()["resent"] == 0  # still down: the job stays flagged
    broker.up = True
    assert sweep()["resent"] == 1
    job.refresh_from_db()
    assert not job.unsent and broker.sent == [(RUN_JOB_TASK, [job.pk], "gpu")]
    assert sweep()["resent"] == 0  # sent once
    assert "their task queue" not in client.get(f"/teams/acme/jobs/{job.pk}/").content.decode()


def test_evaluation_and_judge_tasks_are_flagged_then_resent(personas, broker):
    evaluation = make_evaluation(personas.team, n_prompts=2)
    evaluation.status = EvalStatus.GENERATING
    evaluation.save()
    run = JudgeRun.objects.create(evaluation=evaluation, judge_name="j")
    assert not evaluation_actions.enqueue_generation(evaluation.pk)
    assert not judging_actions.enqueue(run.pk)
    evaluation.refresh_from_db()
    run.refresh_from_db()
    assert evaluation.unsent and run.unsent

    broker.up = True
    assert sweep()["resent"] == 2
    assert {(name, args[0]) for name, args, _ in broker.sent} == {
        (evaluation_actions.GENERATE_TASK, evaluation.pk),
        (judging_actions.JUDGE_TASK, run.pk),
    }
    evaluation.refresh_from_db()
    run.refresh_from_db()
    assert not evaluation.unsent and not run.unsent


def test_a_gpu_retry_that_cannot_be_sent_flags_the_job_for_the_sweep(personas, broker):
    from celery.exceptions import Reject

    from webapp.jobs.actions import RUN
    from worker import leases

    class Task:
        def retry(self, countdown):
            # What Celery does when the retry message cannot be published.
            raise Reject("Connection refused", requeue=False)

    job = personas.job
    with pytest.raises(Reject):
        leases.retry_later(Task(), RUN, job.pk)
    job.refresh_from_db()
    assert job.unsent and job.status == "queued"
    broker.up = True
    assert sweep()["resent"] == 1 and broker.sent[0][1] == [job.pk]


def test_a_connection_test_that_cannot_be_queued_says_so_at_once(
    login, personas, broker, django_capture_on_commit_callbacks
):
    endpoint = make_endpoint(personas.team)
    client = login(personas.member)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url("teacher-test", personas.team, endpoint))
    assert response.status_code == 302
    endpoint = TeacherEndpoint.objects.get(pk=endpoint.pk)
    assert endpoint.test_status == "error"
    assert "task queue cannot be reached" in endpoint.test_error


def test_evaluation_and_judge_messages_lost_inside_redis_are_sent_again(personas, settings):
    """A Redis restart without AOF loses queued messages (here: deleted from the real
    broker). The sweep leaves a row alone while its message is still queued, and sends
    it again once the row has waited unclaimed past GAD_REQUEUE_AFTER_S with its task in
    no queue."""
    import redis
    from django.utils import timezone

    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    queues = [settings.GAD_EVAL_QUEUE, judging_actions.JUDGE_QUEUE]
    broker.delete(*queues)
    evaluation = make_evaluation(personas.team, n_prompts=2)
    evaluation.status = EvalStatus.GENERATING
    evaluation.save()
    run = JudgeRun.objects.create(evaluation=evaluation, judge_name="j")
    try:
        assert evaluation_actions.enqueue_generation(evaluation.pk)
        assert judging_actions.enqueue(run.pk)
        settings.GAD_REQUEUE_AFTER_S = 5
        long_ago = timezone.now() - timezone.timedelta(seconds=60)
        type(evaluation).objects.filter(pk=evaluation.pk).update(sent_at=long_ago)
        JudgeRun.objects.filter(pk=run.pk).update(sent_at=long_ago)
        assert sweep()["resent"] == 0  # still in their queues: not lost
        broker.delete(*queues)  # the broker lost them
        assert sweep()["resent"] == 2
        held = [m for q in set(queues) for m in broker.lrange(q, 0, -1)]
        assert {
            (m["headers"]["task"], m["headers"]["argsrepr"]) for m in map(json.loads, held)
        } == {
            (evaluation_actions.GENERATE_TASK, f"[{evaluation.pk}]"),
            (judging_actions.JUDGE_TASK, f"[{run.pk}]"),
        }
        assert sweep()["resent"] == 0  # sent just now
    finally:
        broker.delete(*queues)
