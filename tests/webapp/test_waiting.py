"""Work that would wait for nobody says so at once: the pages that enqueue work (a
teacher's connection test, a job, an evaluation) name the queue no live worker reads,
and a job waiting for GPUs names the node and who holds them."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from tests.webapp.conftest import make_gpu_node
from tests.webapp.factories import make_job
from tests.webapp.test_evaluation import make_evaluation
from tests.webapp.test_teachers import make_endpoint, url
from webapp.evaluation.models import EvalStatus
from webapp.nodes import presence
from webapp.nodes.models import GpuLease, WorkerNode


def cpu_worker(name: str = "cpu@node-c") -> WorkerNode:
    worker = make_gpu_node(0, name)
    worker.queues = ["cpu", "node.node-c"]
    worker.save()
    return worker


def test_a_queue_no_live_worker_reads_is_named(db):
    WorkerNode.objects.all().delete()  # conftest's GPU node
    assert "No worker is running on this site" in presence.queue_problem("cpu")
    gpu = make_gpu_node(4)
    problem = presence.queue_problem("cpu")
    assert "No running worker reads the 'cpu' queue (the running ones read gpu)" in problem
    assert "celery -A webapp worker -Q cpu" in problem
    cpu_worker()
    assert presence.queue_problem("cpu") is None
    # A worker that stopped reporting is gone.
    WorkerNode.objects.exclude(pk=gpu.pk).update(last_seen=timezone.now() - timedelta(hours=1))
    assert presence.queue_problem("cpu") is not None


def test_a_job_waiting_for_gpus_names_the_node_and_the_jobs_holding_them(personas):
    WorkerNode.objects.all().delete()
    make_gpu_node(4, "gpu@node-x")
    a = make_job(personas.team, name="A", status="training", gpus=2)
    b = make_job(personas.team, name="B", status="training", gpus=1)
    later = timezone.now() + timedelta(seconds=30)
    for index, holder in enumerate([a, a, b]):
        GpuLease.objects.create(node="node-x", gpu_index=index, job=holder, expires_at=later)
    assert presence.gpu_wait(1) is None  # GPU 3 is free: it starts soon
    assert presence.gpu_wait(2) == (
        f"Waiting for 2 GPUs: 3 of 4 on node node-x are leased by job 'A' (#{a.pk}), "
        f"job 'B' (#{b.pk})."
    )
    GpuLease.objects.create(node="node-x", gpu_index=3, job=b, expires_at=later)
    assert presence.gpu_wait(1) == (
        f"Waiting for 1 GPU: all 4 on node node-x are leased by job 'A' (#{a.pk}), "
        f"job 'B' (#{b.pk})."
    )
    GpuLease.objects.filter(gpu_index=3).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert presence.gpu_wait(1) is None  # an expired lease holds nothing


def test_the_job_page_says_why_a_queued_job_waits(login, personas):
    WorkerNode.objects.all().delete()
    client = login(personas.member)
    job = personas.job  # queued, 1 GPU
    job.gpus = 1
    job.save()
    page = client.get(f"/teams/acme/jobs/{job.pk}/").content.decode()
    assert 'data-testid="waiting"' in page and "No worker is running on this site" in page
    make_gpu_node(1, "gpu@node-x")
    holder = make_job(personas.team, name="Holder", status="training", gpus=1)
    GpuLease.objects.create(
        node="node-x", gpu_index=0, job=holder, expires_at=timezone.now() + timedelta(seconds=30)
    )
    page = client.get(f"/teams/acme/jobs/{job.pk}/").content.decode()
    assert "Waiting for 1 GPU: all 1 on node node-x are leased by job &#x27;Holder&#x27;" in page
    GpuLease.objects.all().delete()
    page = client.get(f"/teams/acme/jobs/{job.pk}/").content.decode()
    assert 'data-testid="waiting"' not in page


def test_a_connection_test_with_no_worker_on_its_queue_says_so_at_once(
    login, personas, django_capture_on_commit_callbacks
):
    endpoint = make_endpoint(personas.team)
    client = login(personas.member)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(url("teacher-test", personas.team, endpoint))
    status = client.get(url("teacher-status", personas.team, endpoint)).json()
    assert status["status"] == "pending"
    # conftest's live GPU worker reads only "gpu".
    waiting = status["waiting"]
    assert "No running worker reads the 'cpu' queue (the running ones read gpu)" in waiting
    page = client.get(url("teacher", personas.team, endpoint)).content.decode()
    assert "No running worker reads the &#x27;cpu&#x27; queue" in page
    cpu_worker()
    assert client.get(url("teacher-status", personas.team, endpoint)).json()["waiting"] is None


def test_an_evaluation_waiting_for_generation_names_the_missing_worker(login, personas, settings):
    evaluation = make_evaluation(personas.team, n_prompts=2)
    evaluation.status = EvalStatus.GENERATING
    evaluation.save()
    client = login(personas.member)
    page = client.get(f"/teams/acme/evaluations/{evaluation.pk}/").content.decode()
    assert f"No running worker reads the &#x27;{settings.GAD_EVAL_QUEUE}&#x27; queue" in page
    cpu_worker()
    page = client.get(f"/teams/acme/evaluations/{evaluation.pk}/").content.decode()
    assert 'data-testid="waiting"' not in page
