"""The heartbeat's GPU clock: what a job is charged for the GPUs it holds."""

from __future__ import annotations

from django.contrib.auth import get_user_model

from tests.webapp.factories import make_job
from webapp.jobs import actions
from webapp.teams.actions import create_team
from webapp.teams.models import UsageKind
from worker.heartbeat import Heartbeat


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_gpu_time_counts_only_inside_the_block_and_a_job_shorter_than_a_beat_pays(db):
    owner = get_user_model().objects.create_user("owner", password="x")
    team = create_team("Lab", "lab", owner=owner)
    job = make_job(team, status="training", claimed_by="node:1:1", gpus=2)
    clock = Clock()
    beat = Heartbeat(job, gpus=2, clock=clock)  # not started: the test plays the beats

    clock.now += 5  # collecting teacher answers: the GPUs are not counted
    assert beat._take_gpu_seconds() == 0
    with beat.gpu_time():
        clock.now += 1.5
        actions.beat(job, gpu_seconds=beat._take_gpu_seconds())  # a beat in the middle
        clock.now += 0.25  # the trainer ends before the next beat
    clock.now += 7  # after the block: not counted
    assert beat._take_gpu_seconds() == 0

    assert actions.finish(job, "succeeded")
    job.refresh_from_db()
    assert job.gpu_seconds == 2 * 1.75
    [usage] = team.usage_records.filter(kind=UsageKind.GPU_SECONDS)
    assert usage.amount == 3.5 and usage.job == job
