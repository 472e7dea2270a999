"""report_to on the job page and in the API: the TensorBoard logs as a .tar.gz download
(members only), links to the MLflow / W&B runs the trainer wrote in ``trackers.json``."""

from __future__ import annotations

import io
import tarfile

import pytest

from trainer.trackers import write_where
from webapp.teams.actions import create_api_token
from worker.workspace import workspace

EVENTS = "events.out.tfevents.1700000000.node-a.1.0"
EVENT_BYTES = b"\x18\x00\x00\x00\x00\x00\x00\x00brain.Event:2" * 50


def with_tensorboard(job):
    """The job's run directory, where the worker runs the trainer, with TensorBoard logs."""
    logs = workspace(job).run_dir / "tensorboard"
    logs.mkdir(parents=True, exist_ok=True)
    (logs / EVENTS).write_bytes(EVENT_BYTES)
    return job


class Reported:
    """A tracker sink as far as ``trackers.json`` goes (trainer.trackers.write_where)."""

    def __init__(self, where):
        self._where = where

    def where(self):
        return self._where


def report(job, **where) -> None:
    write_where(workspace(job).run_dir, {name: Reported(w) for name, w in where.items()})


@pytest.fixture
def member(client, personas):
    client.force_login(personas.member)
    return client


def api(client, user, url):
    token = create_api_token(user, "t")[1]
    return client.get(url, HTTP_AUTHORIZATION=f"Bearer {token}")


def test_member_sees_the_link_and_gets_a_tar_gz_with_the_event_file(member, personas):
    job = with_tensorboard(personas.job)
    body = member.get(f"/teams/acme/jobs/{job.pk}/").content.decode()
    url = f"/teams/acme/jobs/{job.pk}/tensorboard.tar.gz"
    assert f'href="{url}"' in body and "TensorBoard logs (.tar.gz)" in body

    response = member.get(url)
    assert response.status_code == 200 and response["Content-Type"] == "application/gzip"
    assert response["Content-Disposition"] == (
        f'attachment; filename="job{job.pk}-tensorboard.tar.gz"'
    )
    with tarfile.open(fileobj=io.BytesIO(b"".join(response.streaming_content)), mode="r:gz") as tar:
        names = tar.getnames()
        events = tar.extractfile(f"job{job.pk}-tensorboard/{EVENTS}").read()
    assert names == [f"job{job.pk}-tensorboard", f"job{job.pk}-tensorboard/{EVENTS}"]
    assert events == EVENT_BYTES


def test_outsider_gets_404_on_the_tensorboard_download(client, personas):
    job = with_tensorboard(personas.job)
    client.force_login(personas.outsider)
    assert client.get(f"/teams/acme/jobs/{job.pk}/tensorboard.tar.gz").status_code == 404
    assert client.get(f"/teams/other/jobs/{job.pk}/tensorboard.tar.gz").status_code == 404
    assert api(client, personas.outsider, f"/api/v1/jobs/{job.pk}/tensorboard").status_code == 404


def test_annotator_gets_403_on_the_tensorboard_download(client, personas):
    job = with_tensorboard(personas.job)
    client.force_login(personas.annotator)
    assert client.get(f"/teams/acme/jobs/{job.pk}/tensorboard.tar.gz").status_code == 403


def test_without_tensorboard_logs_no_link_and_the_download_is_404(member, personas):
    job = personas.job
    workspace(job).run_dir.mkdir(parents=True)  # a run that reported nowhere else
    body = member.get(f"/teams/acme/jobs/{job.pk}/").content.decode()
    assert "tensorboard.tar.gz" not in body and 'data-testid="trackers"' not in body
    response = member.get(f"/teams/acme/jobs/{job.pk}/tensorboard.tar.gz")
    assert response.status_code == 404
    response = api(member, personas.member, f"/api/v1/jobs/{job.pk}/tensorboard")
    assert response.status_code == 404 and "report_to" in response.json()["detail"]


def test_the_runs_the_trainer_reported_to_are_linked(member, personas):
    job = personas.job
    report(
        job,
        mlflow={
            "tracking_uri": "https://mlflow.example.com",
            "experiment_id": "3",
            "run_id": "abc123",
            "url": "https://mlflow.example.com/#/experiments/3/runs/abc123",
        },
        wandb={"project": "gad-studio", "run_id": "k2x9", "url": None, "offline": True},
    )
    body = member.get(f"/teams/acme/jobs/{job.pk}/").content.decode()
    assert 'href="https://mlflow.example.com/#/experiments/3/runs/abc123"' in body
    assert "W&amp;B run <code>k2x9</code> (offline" in body
    assert "tensorboard.tar.gz" not in body  # no logs, no link


def test_a_file_store_run_is_named_and_a_non_web_url_is_never_a_link(member, personas):
    job = personas.job
    report(
        job,
        mlflow={"tracking_uri": "file:///data/run/mlruns", "run_id": "r1", "url": None},
        wandb={"project": "p", "run_id": "w1", "url": "javascript:alert(1)", "offline": False},
    )
    body = member.get(f"/teams/acme/jobs/{job.pk}/").content.decode()
    assert "MLflow run <code>r1</code> in <code>file:///data/run/mlruns</code>" in body
    assert "javascript:" not in body and "W&amp;B run <code>w1</code>" in body


@pytest.mark.parametrize("written", [b"", b"{not json", b"[1, 2]", b'{"mlflow": "r1"}', b"\xff"])
def test_a_torn_or_odd_trackers_file_shows_no_runs(member, personas, written):
    job = with_tensorboard(personas.job)
    (workspace(job).run_dir / "trackers.json").write_bytes(written)
    response = member.get(f"/teams/acme/jobs/{job.pk}/")
    assert response.status_code == 200
    body = response.content.decode()
    assert 'data-testid="mlflow-run"' not in body and "TensorBoard logs" in body


def test_the_api_job_detail_says_where_the_metrics_went(client, personas):
    job = with_tensorboard(personas.job)
    run = {"tracking_uri": "http://mlflow:5000", "experiment_id": "1", "run_id": "abc"}
    report(job, tensorboard="tensorboard", mlflow={**run, "url": "http://mlflow:5000/#/x"})
    trackers = api(client, personas.member, f"/api/v1/jobs/{job.pk}").json()["trackers"]
    assert trackers == {
        "tensorboard": f"/api/v1/jobs/{job.pk}/tensorboard",
        "mlflow": {**run, "url": "http://mlflow:5000/#/x"},
    }
    download = api(client, personas.member, trackers["tensorboard"])
    with tarfile.open(fileobj=io.BytesIO(b"".join(download.streaming_content)), mode="r:gz") as tar:
        assert f"job{job.pk}-tensorboard/{EVENTS}" in tar.getnames()
    (listed,) = api(client, personas.member, "/api/v1/jobs").json()
    assert "trackers" not in listed  # the list reads no files


def test_the_api_job_detail_of_a_run_that_reported_nowhere(client, personas):
    trackers = api(client, personas.member, f"/api/v1/jobs/{personas.job.pk}").json()["trackers"]
    assert trackers == {"tensorboard": None}
