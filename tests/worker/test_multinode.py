"""Jobs across nodes, on one machine: Celery workers that act as nodes (distinct
GAD_NODE_NAME, one CPU "GPU" each, gloo). The leading worker leases a GPU on every node
all or nothing, starts its torchrun as node 0 and sends each member node its part on
that node's own queue; the ranks train as one FSDP2 job."""

from __future__ import annotations

import signal

import pytest

from tests.worker.conftest import held_by, wait_for
from tests.worker.test_pipeline import launch, status, team, tiny_student  # noqa: F401
from webapp.jobs.models import Checkpoint, Job, MetricPoint
from webapp.nodes.models import GpuLease, WorkerNode

pytestmark = pytest.mark.slow

CPU = {"device": "cpu", "batch_size": 2, "save_every": 2}
COMPARED = ("d/loss", "d/acc", "g/sft_loss", "g/pg_loss", "g/kl", "reward/std",
            "len/student_mean", "len/teacher_mean", "g/grad_norm", "d/grad_norm")  # fmt: skip


def series(job: Job) -> list[dict]:
    points = MetricPoint.objects.filter(job=job).order_by("step")
    return [{"step": p.step, **p.values} for p in points]


def launch_on(team, student, nodes: int, gpus: int, **config) -> Job:  # noqa: F811
    # The launch checks that live nodes could run it; the workers start afterwards.
    WorkerNode.objects.all().delete()
    for n in range(nodes):
        WorkerNode.objects.create(name=f"fake@n{n}", node=f"n{n}", queues=["gpu"],
                                  gpus=list(range(gpus)), started_at=_now(), last_seen=_now())  # fmt: skip
    job = launch(team, student, gpus=gpus, nodes=nodes, **CPU, **config)
    WorkerNode.objects.filter(name__startswith="fake@").delete()
    return job


def _now():
    from django.utils import timezone

    return timezone.now()


def test_a_two_node_job_trains_what_one_node_with_two_gpus_does(workers, team, tiny_student):  # noqa: F811
    one = launch_on(team, tiny_student, nodes=1, gpus=2)
    workers.start("gpu", gpus="0,1", name="single", GAD_NODE_NAME="single")
    wait_for(lambda: status(one) in ("succeeded", "failed"), 300, "the one-node job", workers.logs)
    assert one.status == "succeeded", one.error + workers.logs()
    workers.stop()
    two = launch_on(team, tiny_student, nodes=2, gpus=1)
    workers.start("gpu", gpus="0", name="a", GAD_NODE_NAME="node-a", GAD_NODE_ADDR="127.0.0.1")
    workers.start("gpu", gpus="0", name="b", GAD_NODE_NAME="node-b", GAD_NODE_ADDR="127.0.0.1")
    wait_for(lambda: status(two) in ("succeeded", "failed"), 300, "the two-node job", workers.logs)
    assert two.status == "succeeded", two.error + workers.logs()
    assert not GpuLease.objects.exists()  # the whole gang's leases were given back
    a, b = series(one), series(two)
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, one.total_steps + 1))
    for r1, r2 in zip(a, b, strict=True):
        for key in COMPARED:
            if key in r1:
                assert r2[key] == pytest.approx(r1[key], rel=1e-4, abs=1e-6), (r1["step"], key)
    # A member node ran its part (it reports after the leader, when its torchrun ends).
    wait_for(lambda: "node 1 of job" in workers.logs(), 60, "the member's report", workers.logs)


def test_a_lost_node_sends_the_job_back_to_resume_on_other_nodes_with_no_step_twice(
    workers,
    team,  # noqa: F811
    tiny_student,  # noqa: F811
):
    job = launch_on(
        team, tiny_student, nodes=2, gpus=1, n_prompts=24, gad={"epochs": 6, "lr": 1e-3}
    )
    a = workers.start("gpu", gpus="0", name="a", GAD_NODE_NAME="node-a", GAD_NODE_ADDR="127.0.0.1")
    b = workers.start("gpu", gpus="0", name="b", GAD_NODE_NAME="node-b", GAD_NODE_ADDR="127.0.0.1")
    wait_for(lambda: Checkpoint.objects.filter(job=job).exists(), 240, "a checkpoint", workers.logs)
    job.refresh_from_db()
    assert job.status == "training", job.status
    leader = a if held_by(job, a) else b
    member, lost = (b, "node-b") if leader is a else (a, "node-a")
    member.send_signal(signal.SIGKILL)  # the node dies: its worker and its ranks
    member.wait()
    wait_for(lambda: status(job) == "queued" or job.attempts > 1, 120, "the job back in the queue",
             workers.logs)  # fmt: skip
    assert job.status != "queued" or f"node(s) {lost} of the job" in job.log_tail
    workers.start("gpu", gpus="0", name="c", GAD_NODE_NAME="node-c", GAD_NODE_ADDR="127.0.0.1")
    wait_for(lambda: status(job) in ("succeeded", "failed"), 400, "the resumed job", workers.logs)
    assert job.status == "succeeded", job.error + workers.logs()
    assert job.attempts >= 2
    steps = list(
        MetricPoint.objects.filter(job=job).order_by("step").values_list("step", flat=True)
    )
    assert steps == list(range(1, job.total_steps + 1))  # none missing, none twice
    assert "resuming from" in (workers.logs() + job.log_tail + _logs(job))


def _logs(job: Job) -> str:
    from django.conf import settings

    root = settings.GAD_DATA_DIR / "jobs" / str(job.pk)
    return "".join(p.read_text(errors="replace") for p in root.glob("train*.log"))
