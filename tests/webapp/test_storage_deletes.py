"""Deleting checkpoints and jobs (issue 27, item 3): files go with the rows, whoever
deletes them (API, page, Django admin), and storage usage drops at once; what is still
needed (a final model, a running job's resume point, what an evaluation generates from)
is refused with the reason; roles and teams are checked as everywhere else."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings

from tests.webapp.factories import make_checkpoint, make_job
from webapp.evaluation.models import EvalStatus, Evaluation, System, SystemKind, SystemStatus
from webapp.jobs.models import Checkpoint, Job
from webapp.teams.actions import create_api_token, storage_used


def bearer(user) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {create_api_token(user, 't')[1]}"}


def run_checkpoint(job: Job, step: int) -> Checkpoint:
    """A checkpoint where the worker puts one: DATA/jobs/<id>/run/checkpoints/step-N/student,
    with the resume state beside the exported student."""
    step_dir = Path(settings.GAD_DATA_DIR) / "jobs" / str(job.pk) / "run" / "checkpoints"
    step_dir = step_dir / f"step-{step}"
    (step_dir / "state" / "optim").mkdir(parents=True)
    (step_dir / "state" / "optim" / "shard").write_bytes(b"\0" * 100)
    return make_checkpoint(job, step_dir / "student", step=step)


@pytest.fixture
def ended(personas) -> tuple[Job, list[Checkpoint]]:
    job = make_job(personas.team, personas.prompt_set, status="succeeded", name="ended")
    checkpoints = [run_checkpoint(job, step) for step in (50, 100, 150)]
    Job.objects.filter(pk=job.pk).update(final_checkpoint=checkpoints[-1])
    job.refresh_from_db()
    return job, checkpoints


def test_a_member_deletes_a_checkpoint_its_files_go_and_usage_drops(
    client, personas, ended, django_capture_on_commit_callbacks
):
    job, (first, *_rest) = ended
    before = storage_used(personas.team)
    with django_capture_on_commit_callbacks(execute=True):
        got = client.delete(f"/api/v1/checkpoints/{first.pk}", **bearer(personas.member))
    assert got.status_code == 204
    assert not Path(first.path).parent.exists()  # the whole step-50 directory
    assert Path(ended[1][1].path).is_dir()  # the others stay
    assert storage_used(personas.team) == before - first.size_bytes
    assert not Checkpoint.objects.filter(pk=first.pk).exists()
    again = client.delete(f"/api/v1/checkpoints/{first.pk}", **bearer(personas.member))
    assert again.status_code == 404


def test_the_final_checkpoint_stays(client, personas, ended):
    job, checkpoints = ended
    got = client.delete(f"/api/v1/checkpoints/{checkpoints[-1].pk}", **bearer(personas.member))
    assert got.status_code == 409 and got.json()["error"] == "still_needed"
    assert "final model" in got.json()["detail"]
    assert Path(checkpoints[-1].path).is_dir()


def test_a_running_job_keeps_the_checkpoints_it_may_resume_from(client, personas):
    job = make_job(personas.team, personas.prompt_set, status="training", name="running")
    checkpoints = [run_checkpoint(job, step) for step in (50, 100, 150)]  # keep_last: 2
    refused = client.delete(f"/api/v1/checkpoints/{checkpoints[1].pk}", **bearer(personas.member))
    assert refused.status_code == 409 and "may resume from step 100" in refused.json()["detail"]
    old = client.delete(f"/api/v1/checkpoints/{checkpoints[0].pk}", **bearer(personas.member))
    assert old.status_code == 204
    job_gone = client.delete(f"/api/v1/jobs/{job.pk}", **bearer(personas.owner))
    assert job_gone.status_code == 409 and "cancel it first" in job_gone.json()["detail"]


def test_a_checkpoint_an_evaluation_generates_from_stays(client, personas, ended):
    job, checkpoints = ended
    evaluation = Evaluation.objects.create(
        team=personas.team, name="Held-out", status=EvalStatus.GENERATING
    )
    System.objects.create(
        evaluation=evaluation, name="gad", kind=SystemKind.CHECKPOINT, job=job,
        checkpoint=checkpoints[0], path=checkpoints[0].path, status=SystemStatus.PENDING,
    )  # fmt: skip
    got = client.delete(f"/api/v1/checkpoints/{checkpoints[0].pk}", **bearer(personas.member))
    assert got.status_code == 409 and "Evaluation 'Held-out' is generating" in got.json()["detail"]
    assert client.delete(f"/api/v1/jobs/{job.pk}", **bearer(personas.owner)).status_code == 409
    Evaluation.objects.filter(pk=evaluation.pk).update(status=EvalStatus.READY)
    got = client.delete(f"/api/v1/checkpoints/{checkpoints[0].pk}", **bearer(personas.member))
    assert got.status_code == 204


def test_an_owner_deletes_an_ended_job_with_its_run_directory(
    client, personas, ended, django_capture_on_commit_callbacks
):
    job, checkpoints = ended
    work_dir = Path(settings.GAD_DATA_DIR) / "jobs" / str(job.pk)
    assert client.delete(f"/api/v1/jobs/{job.pk}", **bearer(personas.member)).status_code == 403
    with django_capture_on_commit_callbacks(execute=True):
        got = client.delete(f"/api/v1/jobs/{job.pk}", **bearer(personas.owner))
    assert got.status_code == 204
    assert not work_dir.exists() and not Job.objects.filter(pk=job.pk).exists()
    assert not Checkpoint.objects.filter(job_id=job.pk).exists()


def test_roles_and_teams(client, personas, ended):
    job, checkpoints = ended
    url = f"/api/v1/checkpoints/{checkpoints[0].pk}"
    assert client.delete(url, **bearer(personas.annotator)).status_code == 403
    assert client.delete(url, **bearer(personas.outsider)).status_code == 404
    assert client.delete(f"/api/v1/jobs/{job.pk}", **bearer(personas.outsider)).status_code == 404
    assert Path(checkpoints[0].path).is_dir() and Job.objects.filter(pk=job.pk).exists()


def test_files_outside_the_jobs_own_directory_are_never_removed(
    client, personas, django_capture_on_commit_callbacks, tmp_path
):
    """A row that names a path elsewhere (an imported or hand-made checkpoint) loses the
    row only: the site removes nothing it did not lay out itself."""
    job = make_job(personas.team, personas.prompt_set, status="succeeded")
    elsewhere = make_checkpoint(job, tmp_path / "shared" / "step-5" / "student", step=5)
    make_checkpoint(job, tmp_path / "shared" / "step-9" / "student", step=9)
    with django_capture_on_commit_callbacks(execute=True):
        assert client.delete(f"/api/v1/checkpoints/{elsewhere.pk}", **bearer(personas.member)).status_code == 204  # fmt: skip
        assert client.delete(f"/api/v1/jobs/{job.pk}", **bearer(personas.owner)).status_code == 204  # fmt: skip
    assert Path(elsewhere.path).is_dir()


def test_pages_delete_with_a_message_and_offer_only_what_may_go(
    client, personas, ended, django_capture_on_commit_callbacks
):
    job, checkpoints = ended
    client.force_login(personas.member)
    page = client.get(f"/teams/acme/jobs/{job.pk}/").content.decode()
    assert page.count('data-testid="checkpoint-delete"') == 2  # not the final one
    assert 'data-testid="job-delete"' not in page  # members do not delete jobs
    with django_capture_on_commit_callbacks(execute=True):
        got = client.post(f"/teams/acme/checkpoints/{checkpoints[0].pk}/delete/", follow=True)
    assert "Deleted step 50" in got.content.decode()
    assert not Path(checkpoints[0].path).exists()
    refused = client.post(f"/teams/acme/checkpoints/{checkpoints[-1].pk}/delete/", follow=True)
    assert "final model" in refused.content.decode()
    client.force_login(personas.owner)
    assert 'data-testid="job-delete"' in client.get(f"/teams/acme/jobs/{job.pk}/").content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        got = client.post(f"/teams/acme/jobs/{job.pk}/delete/", follow=True)
    assert "Deleted job ended and its files" in got.content.decode()
    assert not (Path(settings.GAD_DATA_DIR) / "jobs" / str(job.pk)).exists()


def test_an_admin_delete_removes_the_files_too(
    client, personas, ended, django_capture_on_commit_callbacks
):
    from django.contrib.auth import get_user_model

    job, _ = ended
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(admin)
    with django_capture_on_commit_callbacks(execute=True):
        got = client.post(f"/admin/jobs/job/{job.pk}/delete/", {"post": "yes"})
    assert got.status_code == 302
    assert not (Path(settings.GAD_DATA_DIR) / "jobs" / str(job.pk)).exists()


def test_the_storage_page_lists_what_may_go_largest_first(
    client, personas, ended, django_capture_on_commit_callbacks
):
    from django.template.defaultfilters import filesizeformat

    from webapp.teams.actions import storage_full

    job, checkpoints = ended
    Checkpoint.objects.filter(pk=checkpoints[1].pk).update(size_bytes=5_000_000)
    personas.team.quota.storage_gb = 0
    personas.team.quota.save()
    assert "/teams/acme/storage/" in storage_full(personas.team)
    client.force_login(personas.member)
    page = client.get("/teams/acme/storage/").content.decode()
    rows = page.split('data-testid="storage-row"')[1:]
    assert ">100<" in rows[0]  # step 100, the largest, first
    freeable = filesizeformat(5_000_000 + checkpoints[0].size_bytes)  # not the final one
    assert "final model" in page and f"frees {freeable}" in page
    with django_capture_on_commit_callbacks(execute=True):
        got = client.post(
            f"/teams/acme/checkpoints/{checkpoints[1].pk}/delete/", {"next": "/teams/acme/storage/"}
        )
    assert got.status_code == 302 and got["Location"] == "/teams/acme/storage/"
    assert not Path(checkpoints[1].path).exists()
    client.force_login(personas.outsider)
    assert client.get("/teams/acme/storage/").status_code == 404


def test_retention_keeps_the_last_n_and_the_final_and_marked_ones(
    personas, django_capture_on_commit_callbacks
):
    from webapp.jobs.storage import apply_retention

    job = make_job(personas.team, personas.prompt_set, status="training", name="kept")
    checkpoints = [run_checkpoint(job, step) for step in (10, 20, 30, 40, 50, 60)]
    (Path(checkpoints[1].path).parent / "KEEP").write_text("the KL reference\n")
    Job.objects.filter(pk=job.pk).update(final_checkpoint=checkpoints[2], retain_checkpoints=3)
    job.refresh_from_db()
    with django_capture_on_commit_callbacks(execute=True):
        dropped = apply_retention(job)
    assert sorted(c.step for c in dropped) == [10]  # 20 marked, 30 final, 40-60 the last 3
    assert not Path(checkpoints[0].path).parent.exists()
    left = sorted(job.checkpoints.values_list("step", flat=True))
    assert left == [20, 30, 40, 50, 60]
    Job.objects.filter(pk=job.pk).update(retain_checkpoints=None)
    job.refresh_from_db()
    assert apply_retention(job) == []  # no retention: keep all


def test_the_owner_sets_the_teams_retention_on_the_storage_page(client, personas):
    client.force_login(personas.member)
    page = client.get("/teams/acme/storage/").content.decode()
    assert 'name="retain_checkpoints"' not in page  # owners decide
    assert client.post("/teams/acme/storage/", {"retain_checkpoints": "3"}).status_code == 403
    client.force_login(personas.owner)
    got = client.post("/teams/acme/storage/", {"retain_checkpoints": "3"}, follow=True)
    assert "keep the last 3 checkpoints" in got.content.decode()
    personas.team.refresh_from_db()
    assert personas.team.retain_checkpoints == 3
    bad = client.post("/teams/acme/storage/", {"retain_checkpoints": "-1"})
    assert bad.status_code == 422 and "retain_checkpoints" in bad.content.decode()
    client.post("/teams/acme/storage/", {"retain_checkpoints": ""})
    personas.team.refresh_from_db()
    assert personas.team.retain_checkpoints is None


def test_the_download_audit_outlives_a_deleted_checkpoint(client, personas, ended):
    from webapp.jobs.actions import record_download
    from webapp.jobs.models import Download

    job, checkpoints = ended
    record_download(checkpoints[0], personas.member)
    got = client.delete(f"/api/v1/checkpoints/{checkpoints[0].pk}", **bearer(personas.member))
    assert got.status_code == 204
    audit = Download.objects.get()
    assert audit.checkpoint is None and audit.user == personas.member
    assert audit.label == f"acme: ended (job {job.pk}) step 50" and "step 50" in str(audit)
