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


def training_on_two_nodes(workers, team, student):  # noqa: F811
    """A two-node job that has saved a checkpoint: (job, its member's worker, its node)."""
    job = launch_on(team, student, nodes=2, gpus=1, n_prompts=24, gad={"epochs": 6, "lr": 1e-3})
    a = workers.start("gpu", gpus="0", name="a", GAD_NODE_NAME="node-a", GAD_NODE_ADDR="127.0.0.1")
    b = workers.start("gpu", gpus="0", name="b", GAD_NODE_NAME="node-b", GAD_NODE_ADDR="127.0.0.1")
    wait_for(lambda: Checkpoint.objects.filter(job=job).exists(), 240, "a checkpoint", workers.logs)
    job.refresh_from_db()
    assert job.status == "training", job.status
    return (job, b, "node-b") if held_by(job, a) else (job, a, "node-a")


def resumed_with_no_step_twice(workers, job: Job) -> None:
    wait_for(lambda: status(job) in ("succeeded", "failed"), 400, "the resumed job", workers.logs)
    assert job.status == "succeeded", job.error + workers.logs()
    assert job.attempts >= 2
    steps = list(
        MetricPoint.objects.filter(job=job).order_by("step").values_list("step", flat=True)
    )
    assert steps == list(range(1, job.total_steps + 1))  # none missing, none twice


def test_a_lost_node_sends_the_job_back_to_resume_on_other_nodes_with_no_step_twice(
    workers,
    team,  # noqa: F811
    tiny_student,  # noqa: F811
):
    job, member, lost = training_on_two_nodes(workers, team, tiny_student)
    member.send_signal(signal.SIGKILL)  # the node dies: its worker and its ranks
    member.wait()
    wait_for(lambda: status(job) == "queued" or job.attempts > 1, 120, "the job back in the queue",
             workers.logs)  # fmt: skip
    assert job.status != "queued" or f"node(s) {lost} of the job" in job.log_tail
    workers.start("gpu", gpus="0", name="c", GAD_NODE_NAME="node-c", GAD_NODE_ADDR="127.0.0.1")
    resumed_with_no_step_twice(workers, job)
    assert "resuming from" in (workers.logs() + job.log_tail + _logs(job))


def _logs(job: Job) -> str:
    from django.conf import settings

    root = settings.GAD_DATA_DIR / "jobs" / str(job.pk)
    return "".join(p.read_text(errors="replace") for p in root.glob("train*.log"))


def test_the_leader_stops_its_ranks_when_a_members_part_fails_and_not_when_it_ends_well(
    settings,
    purge_queues,
    team,  # noqa: F811
    tiny_student,  # noqa: F811
    tmp_path,
):
    """A member whose rank crashes gives its leases back (its worker lives), so nothing
    lapses; on NCCL the leader's ranks then wait in a collective for the process group's
    timeout (``timeout=timedelta(seconds=7200)`` in trainer/distributed.py). A process that
    never exits stands in for those ranks here: gloo would fail them at once and hide the
    wait."""
    import os
    import sys
    from datetime import timedelta

    from django.utils import timezone

    from webapp.nodes import presence
    from worker.gang import Gang, GangLost
    from worker.heartbeat import Heartbeat
    from worker.ingest import RunIngest
    from worker.runner import TrainerProcess
    from worker.watch import TrainingWatch

    job = launch_on(team, tiny_student, nodes=2, gpus=1)
    Job.objects.filter(pk=job.pk).update(status="training", attempts=3, claimed_by="lead")
    job.refresh_from_db()
    lease = GpuLease.objects.create(
        job=job, node="node-b", gpu_index=0, expires_at=timezone.now() + timedelta(seconds=30)
    )
    stuck = TrainerProcess(
        [sys.executable, "-c", "import time; time.sleep(600)"], tmp_path, tmp_path / "log",
        dict(os.environ), launcher=True,
    )  # fmt: skip
    gang = Gang(("node-b",))
    watch = TrainingWatch(job, stuck, RunIngest(job, tmp_path / "run"), Heartbeat(job, 1), gang)
    try:
        watch.tick()
        assert stuck.poll() is None and watch.gang_lost == ""
        settings.GAD_NODE_NAME = "node-b"  # what the member's worker records
        presence.member_failed(job.pk, 2, "torchrun exited with status 1")  # an older attempt
        lease.delete()  # and a part that ended well gives its leases back, saying nothing
        watch.tick()
        assert stuck.poll() is None and watch.gang_lost == ""
        presence.member_failed(job.pk, 3, "torchrun exited with status 1 (log: n1.log)")
        watch.tick()
        ended = stuck.watch(lambda: None, 0.2)  # killed: it returns at once
        assert not ended.ok
        assert watch.gang_lost == (
            "node node-b's part of the job failed: torchrun exited with status 1 (log: n1.log)"
        )
        with pytest.raises(GangLost, match="node node-b's part of the job failed"):
            gang.check_after(job, ended, watch.gang_lost, stopping=False)
    finally:
        stuck.kill()


def test_a_members_crashed_rank_sends_the_job_back_at_once_and_it_resumes(
    workers,
    team,  # noqa: F811
    tiny_student,  # noqa: F811
):
    """The member node's worker lives; one of its ranks dies (a CUDA error, an OOM)."""
    import time

    import psutil

    job, member, node = training_on_two_nodes(workers, team, tiny_student)
    ranks = [
        p
        for p in psutil.Process(member.pid).children(recursive=True)
        if p.name().startswith("python")
        and "trainer" in p.cmdline()
        and "torch.distributed.run" not in p.cmdline()
    ]
    assert ranks, "the member's rank"
    crashed = time.monotonic()
    ranks[0].kill()
    wait_for(lambda: status(job) == "queued" or job.attempts > 1, 60, "the job back in the queue",
             workers.logs)  # fmt: skip
    assert time.monotonic() - crashed < 60
    assert member.poll() is None  # the member's worker lives on
    back = Job.objects.get(pk=job.pk)
    assert f"node {node}'s part of the job failed: torchrun exited with status" in (
        back.log_tail + back.error + workers.logs()
    )
    resumed_with_no_step_twice(workers, job)
