"""A job asking for more GPUs than any live node has is refused at launch, or fails at
once on a worker, with the reason, instead of waiting forever (docs/security.md)."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from tests.webapp.conftest import make_gpu_node
from tests.webapp.test_jobs import launch_data
from webapp.jobs.models import Job
from webapp.nodes.models import WorkerNode
from webapp.teams.actions import create_api_token


def _launch(client, personas, gpus: int):
    token = create_api_token(personas.member, "t")[1]
    return client.post(
        "/api/v1/jobs",
        {"team": "acme", **launch_data(personas, gpus=gpus)},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )


def test_more_gpus_than_the_largest_node_is_refused_with_the_figures(client, personas):
    response = _launch(client, personas, gpus=16)
    assert response.status_code == 422
    assert response.json()["detail"] == (
        "gpus: this job needs 16 GPUs and the largest live node has 8; ask for at most 8, or "
        "start a worker on a node with more"
    )
    assert _launch(client, personas, gpus=8).status_code == 201


def test_a_site_without_a_live_gpu_worker_takes_cpu_jobs_only(client, login, personas):
    WorkerNode.objects.update(last_seen=timezone.now() - timedelta(hours=1))  # it died
    make_gpu_node(gpus=0, name="cpu-worker@node-b")
    response = _launch(client, personas, gpus=1)
    assert response.status_code == 422 and "no GPU worker is running" in response.json()["detail"]
    assert _launch(client, personas, gpus=0).status_code == 201
    # The launch form starts at what the site can run.
    page = login(personas.member).get("/teams/acme/jobs/new/").content.decode()
    assert 'name="gpus" value="0"' in page


def test_a_queued_job_no_node_can_run_fails_at_once_on_the_worker(personas):
    from worker import pipeline

    job = personas.job
    Job.objects.filter(pk=job.pk).update(gpus=12)
    assert pipeline.run(job.pk) == "no node has the GPUs"
    job.refresh_from_db()
    assert job.status == "failed" and "needs 12 GPUs and the largest live node has 8" in job.error
