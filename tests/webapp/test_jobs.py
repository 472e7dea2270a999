"""Launching, watching, cancelling jobs; checkpoints; the jobs API."""

from __future__ import annotations

import io
import json
import tarfile
import threading

import pytest
import redis
from django.db import connection

from tests.webapp.factories import make_checkpoint, make_job, make_prompt_set
from webapp.jobs import actions
from webapp.jobs.forms import field_name
from webapp.jobs.models import Download, Job, MetricPoint, Sample
from webapp.teams import actions as team_actions
from webapp.teams.actions import create_api_token


@pytest.fixture
def member(client, personas):
    client.force_login(personas.member)
    return client


@pytest.fixture
def auth(personas):
    return {"HTTP_AUTHORIZATION": f"Bearer {create_api_token(personas.member, 't')[1]}"}


@pytest.fixture
def roomy_quota(personas):
    quota = personas.team.quota
    quota.max_concurrent_jobs = 10
    quota.save()


def launch_data(personas, **extra) -> dict:
    data = {
        "name": "distil",
        "method": "gad",
        "prompt_set": personas.prompt_set.pk,
        "student": "Qwen/Qwen2.5-0.5B-Instruct",
        "gpus": 1,
    }
    return {**data, **extra}


def test_launch_form_shows_every_trainer_setting_with_its_default(member):
    body = member.get("/teams/acme/jobs/new/").content.decode()
    for key, default in [
        ("group_size", "8"),
        ("gad.kl_coef", "0.001"),
        ("disc.loss", "bradley_terry"),
    ]:
        assert f'name="{field_name(key)}"' in body
        assert default in body
    assert "Student samples N per prompt" in body  # the help text from trainer.config


def test_launch_creates_a_queued_job_and_enqueues_it_after_commit(
    member, personas, roomy_quota, django_capture_on_commit_callbacks, settings
):
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    broker.delete("gpu")
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = member.post(
            "/teams/acme/jobs/new/", launch_data(personas, **{field_name("group_size"): 4})
        )
    job = Job.objects.exclude(pk=personas.job.pk).get()
    assert response.status_code == 302 and response["Location"] == f"/teams/acme/jobs/{job.pk}/"
    assert job.status == "queued" and job.method == "gad"
    assert job.config["group_size"] == 4 and job.config["gad"]["kl_coef"] == 0.001
    assert job.config["lora"] is None
    assert len(callbacks) == 1
    message = json.loads(broker.lpop("gpu"))
    assert message["headers"]["task"] == "gad.run_job"
    assert message["headers"]["argsrepr"] == f"[{job.pk}]"


def test_pair_launch_creates_two_linked_jobs(member, personas, roomy_quota):
    member.post("/teams/acme/jobs/new/", launch_data(personas, method="pair"))
    gad, seqkd = Job.objects.exclude(pk=personas.job.pk).order_by("method")
    assert (gad.method, seqkd.method) == ("gad", "seqkd")
    assert gad.pair == seqkd and seqkd.pair == gad
    assert (
        gad.prompt_set == seqkd.prompt_set
        and gad.config["batch_size"] == seqkd.config["batch_size"]
    )


def test_invalid_setting_is_named_next_to_its_field(member, personas, roomy_quota):
    response = member.post(
        "/teams/acme/jobs/new/", launch_data(personas, **{field_name("group_size"): 1})
    )
    assert response.status_code == 422
    body = response.content.decode()
    assert '<span class="field-error">group_size: must be &gt;= 2 (got 1)</span>' in body
    assert Job.objects.count() == 1


def test_teacher_is_required_when_answers_are_missing(member, personas, roomy_quota):
    bare = make_prompt_set(personas.team, n=4, with_teacher=False, name="bare")
    response = member.post("/teams/acme/jobs/new/", launch_data(personas, prompt_set=bare.pk))
    assert response.status_code == 422
    assert "4 of 4 training prompts have no teacher answer" in response.content.decode()


def test_quota_refusal_gives_the_reason_and_numbers(member, personas):
    response = member.post("/teams/acme/jobs/new/", launch_data(personas, method="pair"))
    assert response.status_code == 409
    assert "1 of 2 concurrent jobs" in response.content.decode()
    team_actions.suspend_team(personas.team, "overdue invoice")
    response = member.post("/teams/acme/jobs/new/", launch_data(personas))
    assert "suspended: overdue invoice" in response.content.decode()


def test_run_again_with_changes_prefills_the_form(member, personas, roomy_quota):
    member.post("/teams/acme/jobs/new/", launch_data(personas, **{field_name("gad.lr"): 3e-6}))
    job = Job.objects.exclude(pk=personas.job.pk).get()
    body = member.get(f"/teams/acme/jobs/new/?from={job.pk}").content.decode()
    assert 'value="distil (again)"' in body
    assert 'value="3e-06"' in body


def test_cancel_queued_job_ends_it_and_running_job_is_asked_to_stop(member, personas):
    member.post(f"/teams/acme/jobs/{personas.job.pk}/cancel/")
    personas.job.refresh_from_db()
    assert personas.job.status == "cancelled" and personas.job.finished_at

    running = make_job(personas.team, personas.prompt_set, status="training")
    member.post(f"/teams/acme/jobs/{running.pk}/cancel/")
    running.refresh_from_db()
    assert running.status == "training" and running.cancel_requested


def test_cancelling_a_paused_job_charges_the_gpu_time_it_already_used(member, personas):
    paused = make_job(personas.team, personas.prompt_set, status="paused", gpu_seconds=120.5)
    member.post(f"/teams/acme/jobs/{paused.pk}/cancel/")
    paused.refresh_from_db()
    assert paused.status == "cancelled"
    [usage] = personas.team.usage_records.filter(kind="gpu_seconds")
    assert usage.amount == 120.5 and usage.job == paused


@pytest.mark.parametrize(
    "status",
    [
        "queued",
        "collecting",
        "training",
        "evaluating",
        "succeeded",
        "failed",
        "cancelled",
        "paused",
    ],
)
def test_job_page_renders_every_state(member, personas, status):
    job = make_job(personas.team, personas.prompt_set, status=status, error="Traceback: boom")
    body = member.get(f"/teams/acme/jobs/{job.pk}/").content.decode()
    assert f'data-testid="job-status">{job.get_status_display()}' in body
    assert ("Traceback: boom" in body) == (status == "failed")
    assert ("Cancel job" in body) == (
        status in {"queued", "collecting", "training", "evaluating", "paused"}
    )


def test_job_list_filters(member, personas):
    make_job(personas.team, personas.prompt_set, status="failed", name="broken", method="seqkd")
    body = member.get("/teams/acme/jobs/?status=failed").content.decode()
    assert "broken" in body and ">job<" not in body
    assert "No job matches" in member.get("/teams/acme/jobs/?status=paused").content.decode()


def test_checkpoint_downloads_as_a_tar_of_the_hf_directory(member, personas):
    response = member.get(f"/teams/acme/checkpoints/{personas.checkpoint.pk}/download/")
    data = b"".join(response.streaming_content)
    assert int(response["Content-Length"]) == len(data)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
        weights = tar.extractfile(f"job{personas.job.pk}-step-50/model.safetensors").read()
    assert f"job{personas.job.pk}-step-50/config.json" in names
    assert weights == b"\x01" * 1000
    assert Download.objects.get().user == personas.member


def test_a_person_streams_only_a_few_downloads_at_once(member, client, personas, auth):
    """A download holds a web thread while it streams: past the person's slots, 429 with
    the reason (page and API); a slot comes back when a stream ends or is closed."""
    url = f"/teams/acme/checkpoints/{personas.checkpoint.pk}/download/"
    api = f"/api/v1/checkpoints/{personas.checkpoint.pk}/download"
    first, _second = member.get(url), member.get(url)  # streaming, not yet read
    refused = member.get(url)
    assert refused.status_code == 429 and "2 downloads running" in refused.content.decode()
    from_api = client.get(api, **auth)
    assert from_api.status_code == 429 and from_api.json()["error"] == "rate_limited"
    b"".join(first.streaming_content)  # read to the end: its slot is free again
    assert member.get(url).status_code == 200


def test_a_download_slot_comes_back_when_the_client_goes_away():
    from webapp.lib.http import Slots, TooMany

    slots = Slots("downloads", lambda: (1, 10))
    stream = slots.streaming("alice", iter([b"a", b"b", b"c"]))
    assert next(stream) == b"a"
    with pytest.raises(TooMany, match="1 downloads running"):
        slots.streaming("alice", iter([b"x"]))
    stream.close()  # what Django does when the client disconnects mid-stream
    assert b"".join(slots.streaming("alice", iter([b"x"]))) == b"x"
    with slots.held("bob") as waiting:
        assert waiting
        with slots.held("bob") as again:
            assert not again  # one per person: the second runs without a slot


def test_mark_final(member, personas):
    member.post(f"/teams/acme/checkpoints/{personas.checkpoint.pk}/final/")
    personas.job.refresh_from_db()
    assert personas.job.final_checkpoint == personas.checkpoint


def test_outsider_cannot_download_a_checkpoint_by_api(client, personas):
    token = create_api_token(personas.outsider, "t")[1]
    url = f"/api/v1/checkpoints/{personas.checkpoint.pk}/download"
    assert client.get(url, HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 404
    assert not Download.objects.exists()


# ----------------------------------------------------------------------------- API


def test_a_multi_gpu_job_needs_a_batch_that_splits_over_its_gpus(
    member, client, personas, auth, roomy_quota
):
    data = launch_data(personas, gpus=4, **{field_name("batch_size"): 6})
    response = member.post("/teams/acme/jobs/new/", data)
    assert response.status_code == 422
    assert "batch_size: 6 prompts do not split over 4 processes" in response.content.decode()
    payload = {
        "team": "acme",
        "name": "api",
        "method": "gad",
        "prompt_set": personas.prompt_set.pk,
        "student": "org/s",
        "gpus": 2,
        "config": {"batch_size": 3},
    }
    response = client.post("/api/v1/jobs", payload, content_type="application/json", **auth)
    assert response.status_code == 422
    assert "batch_size: 3 prompts do not split over 2" in response.json()["detail"]
    assert not Job.objects.exclude(pk=personas.job.pk).exists()
    data = launch_data(personas, gpus=4, **{field_name("batch_size"): 8})
    assert member.post("/teams/acme/jobs/new/", data).status_code == 302


def test_a_two_node_job_whose_batch_does_not_split_over_every_node_is_refused_at_launch(
    member, client, personas, auth, roomy_quota
):
    """The shape is one thing, checked once: 8 GPUs on each of 2 nodes are 16 processes,
    and a batch of 24 does not split over them, on the form and the API alike (before,
    only the 8 GPUs of one node were checked, and the job failed after its GPUs were
    leased)."""
    from tests.webapp.conftest import make_gpu_node

    make_gpu_node(name="gpu-worker@node-b")  # beside the site's node-a
    payload = {
        "team": "acme",
        "name": "api",
        "method": "gad",
        "prompt_set": personas.prompt_set.pk,
        "student": "org/s",
        "gpus": 8,
        "config": {"nodes": 2, "batch_size": 24},
    }
    response = client.post("/api/v1/jobs", payload, content_type="application/json", **auth)
    assert response.status_code == 422
    assert "batch_size: 24 prompts do not split over 16 processes" in response.json()["detail"]
    data = launch_data(personas, gpus=8, **{field_name("nodes"): 2, field_name("batch_size"): 24})
    page = member.post("/teams/acme/jobs/new/", data)
    assert page.status_code == 422 and "do not split over 16 processes" in page.content.decode()
    assert not Job.objects.exclude(pk=personas.job.pk).exists()
    # The shape is the job's, stored once: the row and its config say the same.
    payload["config"]["batch_size"] = 32
    response = client.post("/api/v1/jobs", payload, content_type="application/json", **auth)
    assert response.status_code == 201, response.json()
    job = Job.objects.get(pk=response.json()["id"])
    assert (job.nodes, job.gpus) == (2, 8)
    assert (job.config["nodes"], job.config["gpus_per_node"]) == (2, 8)
    shown = client.get(f"/api/v1/jobs/{job.pk}", **auth).json()
    assert (shown["nodes"], shown["gpus"]) == (2, 8)


def test_gpus_per_node_comes_from_the_gpus_field_not_the_config(client, personas, auth):
    payload = {
        "team": "acme",
        "name": "x",
        "method": "gad",
        "prompt_set": personas.prompt_set.pk,
        "student": "org/s",
        "gpus": 0,
        "config": {"gpus_per_node": 4},
    }
    response = client.post("/api/v1/jobs", payload, content_type="application/json", **auth)
    assert response.status_code == 422
    assert "gpus_per_node: is set by the job's gpus field" in response.json()["detail"]
    payload["config"] = {"nodes": 2}
    response = client.post("/api/v1/jobs", payload, content_type="application/json", **auth)
    assert response.status_code == 422
    assert "nodes: a job on the CPU runs on one node" in response.json()["detail"]


def test_a_bad_student_does_not_hide_the_other_problems(
    member, client, personas, auth, roomy_quota
):
    payload = {
        "team": "acme",
        "name": "x",
        "method": "gad",
        "prompt_set": personas.prompt_set.pk,
        "student": "/etc/passwd",
        "config": {"group_size": 1, "output_dir": "/tmp"},
    }
    response = client.post("/api/v1/jobs", payload, content_type="application/json", **auth)
    detail = response.json()["detail"]
    assert response.status_code == 422
    assert "'/etc/passwd' is not a model you can use" in detail
    assert "group_size" in detail and "output_dir: is set by GAD Studio" in detail
    data = launch_data(personas, student="/etc/passwd", **{field_name("group_size"): 1})
    body = member.post("/teams/acme/jobs/new/", data).content.decode()
    assert "is not a model you can use" in body and "group_size" in body


def test_the_student_is_resolved_once_at_launch_and_checked_again_by_the_worker(
    client, personas, auth, roomy_quota
):
    """The launch stores what the student named (the checkpoint's directory); the worker
    loads that, after checking the reference still names it."""
    from worker.pipeline import JobFailed, student_to_load

    ref = f"checkpoint:{personas.checkpoint.pk}"
    payload = {
        "team": "acme",
        "name": "again",
        "method": "seqkd",
        "prompt_set": personas.prompt_set.pk,
        "student": ref,
    }
    response = client.post("/api/v1/jobs", payload, content_type="application/json", **auth)
    assert response.status_code == 201, response.json()
    job = Job.objects.get(pk=response.json()["id"])
    assert job.student == ref and job.student_path == personas.checkpoint.path
    assert student_to_load(job) == personas.checkpoint.path
    personas.checkpoint.delete()  # the checkpoint goes while the job waits in the queue
    with pytest.raises(JobFailed, match="is not a model you can use"):
        student_to_load(job)


def test_api_launch_and_read(client, personas, auth, roomy_quota):
    payload = {
        "team": "acme",
        "name": "api",
        "method": "pair",
        "prompt_set": personas.prompt_set.pk,
        "student": "org/s",
        "config": {"group_size": 4, "gad": {"kl_coef": 0.01}},
    }
    response = client.post("/api/v1/jobs", payload, content_type="application/json", **auth)
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "queued" and body["pair"]
    job = client.get(f"/api/v1/jobs/{body['id']}", **auth).json()
    assert job["config"]["gad"]["kl_coef"] == 0.01 and job["step"] == 0 and job["error"] == ""
    listed = client.get("/api/v1/jobs?team=acme&status=queued", **auth).json()
    assert {j["id"] for j in listed} == {body["id"], body["pair"], personas.job.pk}


@pytest.mark.parametrize(
    "config,message",
    [
        ({"group_size": 1}, "group_size"),
        ({"no_such_key": 1}, "no_such_key"),
        ({"gad": {"lr": "fast"}}, "gad.lr"),
        ({"output_dir": "/etc"}, "output_dir: is set by GAD Studio"),
    ],
)
def test_api_invalid_config_is_422_naming_the_key(
    client, personas, auth, roomy_quota, config, message
):
    payload = {
        "team": "acme",
        "name": "x",
        "method": "gad",
        "prompt_set": personas.prompt_set.pk,
        "student": "org/s",
        "config": config,
    }
    response = client.post("/api/v1/jobs", payload, content_type="application/json", **auth)
    assert response.status_code == 422
    assert (
        response.json()["error"] == "validation_error"
        or response.json()["error"] == "unprocessable"
    )
    assert message in response.json()["detail"]


def test_api_prompt_set_of_another_team_is_refused(client, personas, auth, roomy_quota):
    theirs = make_prompt_set(personas.other_team)
    payload = {
        "team": "acme",
        "name": "x",
        "method": "gad",
        "prompt_set": theirs.pk,
        "student": "org/s",
    }
    response = client.post("/api/v1/jobs", payload, content_type="application/json", **auth)
    assert response.status_code == 422 and "prompt_set" in response.json()["detail"]


def test_api_quota_refusal_is_429(client, personas, auth):
    payload = {
        "team": "acme",
        "name": "x",
        "method": "pair",
        "prompt_set": personas.prompt_set.pk,
        "student": "org/s",
    }
    response = client.post("/api/v1/jobs", payload, content_type="application/json", **auth)
    assert response.status_code == 429 and response.json()["error"] == "quota_exceeded"


def test_api_metrics_since_a_step_and_samples(client, personas, auth):
    job = personas.job
    for step in range(1, 5):
        stage = "warmup" if step < 3 else "gad"
        MetricPoint.objects.create(job=job, step=step, stage=stage, values={"d/loss": step / 10})
    Sample.objects.create(job=job, step=2, stage="warmup", data={"prompt": "p", "student": ["s"]})
    body = client.get(f"/api/v1/jobs/{job.pk}/metrics?after_step=2", **auth).json()
    assert body == {
        "series": {"d/loss": [[3, 0.3], [4, 0.4]]},
        "stages": [[3, "gad"]],
        "last_step": 4,
    }
    full = client.get(f"/api/v1/jobs/{job.pk}/metrics", **auth).json()
    assert full["stages"] == [[1, "warmup"], [3, "gad"]]
    samples = client.get(f"/api/v1/jobs/{job.pk}/samples", **auth).json()
    assert samples == [{"step": 2, "stage": "warmup", "prompt": "p", "student": ["s"]}]


def test_api_cancel_and_checkpoints(client, personas, auth):
    ckpts = client.get(f"/api/v1/jobs/{personas.job.pk}/checkpoints", **auth).json()
    assert [c["step"] for c in ckpts] == [50] and ckpts[0]["final"] is False
    final = client.post(f"/api/v1/checkpoints/{personas.checkpoint.pk}/final", **auth).json()
    assert final["final"] is True
    assert (
        client.post(f"/api/v1/jobs/{personas.job.pk}/cancel", **auth).json()["status"]
        == "cancelled"
    )
    again = client.post(f"/api/v1/jobs/{personas.job.pk}/cancel", **auth)
    assert again.status_code == 409 and again.json()["error"] == "conflict"


def test_api_outsider_gets_404_on_every_job_endpoint(client, personas):
    auth = {"HTTP_AUTHORIZATION": f"Bearer {create_api_token(personas.outsider, 't')[1]}"}
    job, ckpt = personas.job.pk, personas.checkpoint.pk
    for method, url in [
        ("get", f"/api/v1/jobs/{job}"),
        ("post", f"/api/v1/jobs/{job}/cancel"),
        ("get", f"/api/v1/jobs/{job}/metrics"),
        ("get", f"/api/v1/jobs/{job}/samples"),
        ("get", f"/api/v1/jobs/{job}/checkpoints"),
        ("get", f"/api/v1/checkpoints/{ckpt}/download"),
        ("post", f"/api/v1/checkpoints/{ckpt}/final"),
    ]:
        assert getattr(client, method)(url, **auth).status_code == 404, url
    assert client.get("/api/v1/jobs", **auth).json() == []


# ----------------------------------------------------------------------------- concurrency, memory


@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_launches_against_a_quota_of_three_create_exactly_three(
    personas, django_capture_on_commit_callbacks
):
    from django.test import Client

    Job.objects.all().delete()
    quota = personas.team.quota
    quota.max_concurrent_jobs = 3
    quota.save()
    token = create_api_token(personas.member, "t")[1]
    payload = json.dumps(
        {
            "team": "acme",
            "name": "race",
            "method": "gad",
            "prompt_set": personas.prompt_set.pk,
            "student": "org/s",
        }
    )
    barrier = threading.Barrier(20)
    statuses: list[int] = []

    def launch():
        try:
            barrier.wait()
            response = Client().post(
                "/api/v1/jobs",
                payload,
                content_type="application/json",
                HTTP_AUTHORIZATION=f"Bearer {token}",
            )
            statuses.append(response.status_code)
        finally:
            connection.close()  # each thread had its own PostgreSQL connection

    threads = [threading.Thread(target=launch) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [201] * 3 + [429] * 17
    assert Job.objects.filter(team=personas.team).count() == 3


def _rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.slow
def test_two_gigabyte_checkpoint_streams_with_flat_memory(member, personas, tmp_path):
    directory = tmp_path / "big" / "student"
    checkpoint = make_checkpoint(personas.job, directory, step=100)
    with open(directory / "model.safetensors", "wb") as f:
        f.truncate(2 * 1024**3)  # sparse: costs no disk
    response = member.get(f"/teams/acme/checkpoints/{checkpoint.pk}/download/")
    baseline = _rss_bytes()
    peak = total = 0
    for chunk in response.streaming_content:
        total += len(chunk)
        peak = max(peak, _rss_bytes())
    assert total == int(response["Content-Length"]) > 2 * 1024**3
    assert peak - baseline < 64 * 1024**2, f"RSS grew by {(peak - baseline) / 1024**2:.0f} MB"


def test_launch_with_a_guard_and_resume_a_guard_paused_job(member, personas, roomy_quota):
    member.post("/teams/acme/jobs/new/", launch_data(personas, guard="pause"))
    job = Job.objects.exclude(pk=personas.job.pk).get()
    assert job.guard == "pause"
    job.status, job.claimed_by = "training", "w:1:1"
    job.save()
    assert actions.guard_pause(job, "Paused by the health guard at step 7. Length runaway")
    assert actions.resume_paused() == []  # quota has nothing to do with it: a person decides
    body = member.get(f"/teams/acme/jobs/{job.pk}/").content.decode()
    assert "Paused by the health guard at step 7" in body
    member.post(f"/teams/acme/jobs/{job.pk}/resume/")
    job.refresh_from_db()
    assert job.status == "queued" and not job.guard_paused


def test_abandoning_a_teams_active_jobs_cancels_them_and_charges_their_gpu_time(personas):
    training = make_job(personas.team, personas.prompt_set, status="training", gpu_seconds=30.0)
    done = make_job(personas.team, personas.prompt_set, status="succeeded", gpu_seconds=99.0)
    assert actions.abandon_active(personas.team, "the demo restarted") == 2  # + the queued one
    training.refresh_from_db()
    done.refresh_from_db()
    assert training.status == "cancelled" and training.error == "the demo restarted"
    assert done.status == "succeeded"
    [usage] = personas.team.usage_records.filter(kind="gpu_seconds")
    assert usage.amount == 30.0 and usage.job == training


def test_a_job_that_cannot_fit_in_gpu_memory_is_refused_with_the_change_that_would(
    member, client, personas, auth, roomy_quota
):
    """The memory planner (trainer.plan) at launch: a full 14B fine-tune on one 80 GB GPU
    is refused, naming the per-GPU peak and what would fit; the API says the same."""
    data = launch_data(personas, student="Qwen/Qwen2.5-14B-Instruct", gpus=1)
    response = member.post("/teams/acme/jobs/new/", data)
    assert response.status_code == 422
    body = response.content.decode()
    assert "gad does not fit in GPU memory:" in body and "GB per GPU of 80 GB" in body
    assert "run on 2 node(s) of 8 GPUs" in body
    payload = {"team": "acme", "name": "api", "method": "seqkd", "gpus": 1,
               "prompt_set": personas.prompt_set.pk, "student": "Qwen/Qwen2.5-14B-Instruct"}  # fmt: skip
    response = client.post("/api/v1/jobs", payload, content_type="application/json", **auth)
    assert (
        response.status_code == 422
        and "seqkd does not fit in GPU memory" in response.json()["detail"]
    )
    assert not Job.objects.exclude(pk=personas.job.pk).exists()


def test_the_job_page_and_the_api_show_the_memory_plan(member, client, personas, auth, roomy_quota):
    assert member.post("/teams/acme/jobs/new/", launch_data(personas, gpus=2)).status_code == 302
    job = Job.objects.exclude(pk=personas.job.pk).get()
    body = member.get(f"/teams/acme/jobs/{job.pk}/").content.decode()
    assert 'data-testid="memory-plan"' in body and "G weights, gradients, AdamW" in body
    assert 'data-testid="storage-used"' in body
    plan = client.get(f"/api/v1/jobs/{job.pk}", **auth).json()["plan"]
    assert plan["fits"] and plan["gpus_per_node"] == 2 and plan["peak_gb"] > 0
    cpu = launch_data(personas, name="cpu", gpus=0)
    assert member.post("/teams/acme/jobs/new/", cpu).status_code == 302
    cpu_job = Job.objects.get(name="cpu")
    assert client.get(f"/api/v1/jobs/{cpu_job.pk}", **auth).json()["plan"] is None
