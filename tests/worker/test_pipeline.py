"""Jobs run by real Celery workers (subprocesses) on Redis and PostgreSQL, tiny models."""

from __future__ import annotations

import io
import signal
import tarfile
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model

from tests.webapp.conftest import make_gpu_node
from tests.webapp.factories import make_prompt_set, register_model
from tests.worker.conftest import held_by, wait_for
from webapp.jobs import actions
from webapp.jobs.configs import build_configs
from webapp.jobs.models import Checkpoint, Job, JobAnswer, MetricPoint, Sample
from webapp.promptsets.models import Prompt
from webapp.teams.actions import create_team
from webapp.teams.models import UsageKind

pytestmark = pytest.mark.slow

SMALL = {
    "batch_size": 2,
    "group_size": 2,
    "max_prompt_tokens": 48,
    "max_response_tokens": 6,
    "micro_batch_tokens": 256,
    "save_every": 2,
    "sample_every": 1,
    "warmup": {"epochs": 1, "d_only_steps": 1, "lr": 1e-3},
    "gad": {"epochs": 1, "lr": 1e-3},
    "seqkd": {"epochs": 1, "lr": 1e-3},
    "disc": {"lr": 1e-3},
}


@pytest.fixture
def team(transactional_db):
    owner = get_user_model().objects.create_user("owner", password="x")
    team = create_team("Lab", "lab", owner=owner)
    team.quota.max_concurrent_jobs = 5
    team.quota.save()
    make_gpu_node(gpus=1)  # GPU jobs are launched before their worker starts
    return team


@pytest.fixture
def tiny_student(tiny_student, settings, transactional_db):
    """The tiny student as a team may name it: a registered model (before the workers
    start, so that they see its model root)."""
    return register_model(settings, tiny_student)


def launch(team, student, method="gad", gpus=0, n_prompts=8, test=0, **config):
    prompt_set = make_prompt_set(team, n=n_prompts)
    Prompt.objects.filter(prompt_set=prompt_set).update(teacher_response="the answer is four")
    if test:
        ids = list(prompt_set.prompts.order_by("-index").values_list("pk", flat=True)[:test])
        Prompt.objects.filter(pk__in=ids).update(split="test")
        prompt_set.num_test = test
        prompt_set.save()
    spec, errors = build_configs(team, method, str(student), {**SMALL, **config}, gpus)
    assert spec is not None, errors
    request = actions.LaunchRequest("job", prompt_set, None, spec)
    return actions.launch(team, None, request)[0]


def status(job: Job) -> str:
    job.refresh_from_db()
    return job.status


def test_gad_job_runs_queued_to_succeeded_with_metrics_samples_and_checkpoints(
    workers, team, tiny_student
):
    job = launch(team, tiny_student, test=2)
    workers.start("cpu")
    seen = set()

    def finished():
        seen.add(status(job))
        return job.status in ("succeeded", "failed")

    wait_for(finished, 240, "the job to end", workers.logs)
    assert job.status == "succeeded", job.error + workers.logs()
    assert "training" in seen
    steps = list(MetricPoint.objects.filter(job=job).values_list("step", flat=True))
    assert steps == list(range(1, len(steps) + 1)) and len(steps) == job.total_steps
    assert {"warmup", "gad"} <= set(
        MetricPoint.objects.filter(job=job).values_list("stage", flat=True)
    )
    assert Sample.objects.filter(job=job).exists()
    assert JobAnswer.objects.filter(job=job).count() == 2
    assert job.step == job.total_steps and job.claimed_until is None and job.started_at
    checkpoint = Checkpoint.objects.filter(job=job).order_by("-step").first()
    assert checkpoint.step == job.total_steps and checkpoint.size_bytes > 0
    _assert_downloads_and_loads(job, checkpoint)


def _assert_downloads_and_loads(job, checkpoint, tmp_dir=None):
    from transformers import AutoModelForCausalLM

    from webapp.jobs.archive import TarStream

    data = b"".join(TarStream(checkpoint.path, "ckpt"))
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(tmp, filter="data")
        model = AutoModelForCausalLM.from_pretrained(f"{tmp}/ckpt")
    assert model.num_parameters() > 0


def test_the_teams_retention_drops_older_checkpoints_as_the_job_saves(workers, team, tiny_student):
    """Keep the last 2 (the team's default): the worker drops older ones and their files
    as new ones arrive; a job whose config sets keep_last keeps its own rules."""
    from pathlib import Path

    team.retain_checkpoints = 1  # below keep_last (2): the resume state still stays
    team.save()
    job = launch(team, tiny_student, method="seqkd", save_every=1)
    own = launch(team, tiny_student, method="seqkd", save_every=1, keep_last=1)
    assert job.retain_checkpoints == 1 and own.retain_checkpoints is None
    workers.start("cpu")
    for one in (job, own):
        wait_for(lambda one=one: status(one) in ("succeeded", "failed"), 180, "the job")
        assert one.status == "succeeded", one.error
    kept = list(Checkpoint.objects.filter(job=job).order_by("step"))
    assert [c.step for c in kept] == [job.total_steps - 1, job.total_steps]
    step_dirs = Path(kept[0].path).parent.parent
    assert sorted(p.name for p in step_dirs.iterdir()) == [f"step-{c.step}" for c in kept]
    assert Checkpoint.objects.filter(job=own).count() == own.total_steps


def test_seqkd_job_succeeds(workers, team, tiny_student):
    job = launch(team, tiny_student, method="seqkd")
    workers.start("cpu")
    wait_for(lambda: status(job) in ("succeeded", "failed"), 180, "the job", workers.logs)
    assert job.status == "succeeded", job.error
    assert set(MetricPoint.objects.filter(job=job).values_list("stage", flat=True)) == {"seqkd"}
    kinds = list(job.events.values_list("kind", flat=True))  # GET /api/v1/jobs/{id}/events
    assert kinds[:2] == ["job.created", "job.started"] and kinds[-1] == "job.succeeded"
    assert "job.training" in kinds and "checkpoint.saved" in kinds


def test_cancel_stops_a_running_job_within_seconds_keeping_a_checkpoint(
    workers, team, tiny_student
):
    # Many epochs, so that the cancel always lands while the trainer runs, however fast
    # the machine: the test must not race the end of the job.
    job = launch(team, tiny_student, n_prompts=40, save_every=100, gad={"epochs": 200, "lr": 1e-3})
    workers.start("cpu")
    wait_for(
        lambda: MetricPoint.objects.filter(job=job).count() >= 2, 180, "training", workers.logs
    )
    actions.cancel(job)
    wait_for(lambda: status(job) == "cancelled", 60, "the cancel", workers.logs)
    assert job.step < job.total_steps
    assert Checkpoint.objects.filter(job=job).exists()  # the trainer saved on SIGTERM
    assert job.team.usage_records.filter(kind=UsageKind.GPU_SECONDS).count() == 0  # CPU job


def test_sigkill_of_the_worker_then_a_new_worker_resumes_from_the_checkpoint(
    workers, team, tiny_student
):
    # Several adversarial epochs, so that the kill always lands while the trainer runs,
    # however fast the machine: the test must not race the end of the job.
    job = launch(team, tiny_student, n_prompts=24, gad={"epochs": 6, "lr": 1e-3})
    first = workers.start("cpu", name="first")
    wait_for(lambda: Checkpoint.objects.filter(job=job).exists(), 180, "a checkpoint", workers.logs)
    job.refresh_from_db()
    assert job.status == "training", job.status
    # The job must be this worker's (a stray worker on the queue would make this moot).
    assert held_by(job, first), (job.claimed_by, first.pid)
    first.send_signal(signal.SIGKILL)
    first.wait()
    saved = Checkpoint.objects.filter(job=job).order_by("-step").first().step

    def requeued():
        found = actions.RUN.requeue_lapsed()
        job.refresh_from_db()
        assert job.status in ("collecting", "training", "evaluating", "queued"), job.status
        return found

    # The sweep (celery beat in production) sees the stale heartbeat and re-queues.
    wait_for(
        requeued,
        60,
        "the heartbeat to go stale",
        lambda: (
            f"job {job.status}, claimed until {job.claimed_until} by {job.claimed_by}\n"
            + workers.logs()
        ),
    )
    workers.start("cpu", name="second")
    wait_for(lambda: status(job) in ("succeeded", "failed"), 240, "the resumed job", workers.logs)
    assert job.status == "succeeded", job.error
    assert job.attempts == 2
    steps = list(
        MetricPoint.objects.filter(job=job).order_by("step").values_list("step", flat=True)
    )
    assert steps == list(range(1, job.total_steps + 1))  # none missing, none twice
    assert "resuming from" in (workers.logs() + job.log_tail) or saved > 0


def test_two_jobs_on_the_only_gpu_run_one_after_the_other(workers, team, tiny_student):
    a = launch(team, tiny_student, gpus=1)
    b = launch(team, tiny_student, gpus=1)
    # One node offering one GPU ("0"), two task slots: only the lease keeps them apart.
    workers.start("gpu", gpus="0", concurrency=2)
    wait_for(
        lambda: all(status(j) in ("succeeded", "failed") for j in (a, b)),
        300,
        "both jobs",
        workers.logs,
    )
    assert a.status == b.status == "succeeded", a.error + b.error
    first, second = sorted((a, b), key=lambda j: j.started_at)
    assert first.finished_at <= second.started_at
    charged = team.usage_records.filter(kind=UsageKind.GPU_SECONDS)
    assert set(charged.values_list("job_id", flat=True)) == {a.pk, b.pk}


def test_an_unloadable_student_fails_the_job_with_the_trainers_message(workers, team):
    job = launch(team, "missing-org/no-such-model")  # a hub id, not in the offline cache
    workers.start("cpu")
    wait_for(lambda: status(job) in ("succeeded", "failed"), 120, "the job", workers.logs)
    assert job.status == "failed"
    assert "no-such-model" in job.error
    assert "Traceback" not in job.error


def test_a_job_over_its_gpu_hours_is_paused_not_allowed_to_finish(workers, team, tiny_student):
    """GPU time is charged while the job runs; once the month's GPU-hours are spent the
    trainer stops (after saving) and the job waits, paused, for more quota."""
    team.quota.gpu_hours_per_month = Decimal("0.005")  # 18 GPU-seconds
    team.quota.save()
    job = launch(team, tiny_student, gpus=1, n_prompts=40, gad={"epochs": 200, "lr": 1e-3})
    workers.start("gpu", gpus="0")
    wait_for(
        lambda: status(job) in ("paused", "succeeded", "failed"), 300, "the pause", workers.logs
    )
    assert job.status == "paused", job.error
    assert "GPU-hours for this month are spent" in job.log_tail
    charged = sum(r.amount for r in team.usage_records.filter(kind=UsageKind.GPU_SECONDS))
    assert charged >= 18  # charged while it ran, not only at the end
    assert job.checkpoints.exists()  # it stopped by saving, ready to resume


def test_teacher_answers_are_collected_charged_paused_at_budget_and_resumed(
    workers, team, tiny_student, teacher_server
):
    from webapp.promptsets.models import TeacherAnswer
    from webapp.teachers.actions import create_endpoint

    url, model = teacher_server
    teacher = create_endpoint(
        team, None, name="tiny", base_url=url, model=model, params={"max_tokens": 8}
    )
    prompt_set = make_prompt_set(team, n=8)
    missing = list(prompt_set.prompts.order_by("index").values_list("pk", flat=True)[4:])
    Prompt.objects.filter(pk__in=missing).update(teacher_response=None)
    team.quota.teacher_tokens_per_month = 40  # runs out after a few answers
    team.quota.save()
    spec, _ = build_configs(team, "gad", str(tiny_student), SMALL)
    request = actions.LaunchRequest("job", prompt_set, teacher, spec)
    job = actions.launch(team, None, request)[0]
    workers.start("cpu")

    wait_for(
        lambda: status(job) in ("paused", "failed", "succeeded"),
        120,
        "the budget stop",
        workers.logs,
    )
    assert job.status == "paused", job.error
    assert "token budget" in job.log_tail
    tokens = sum(r.amount for r in team.usage_records.filter(kind=UsageKind.TEACHER_TOKENS))
    assert tokens >= 40
    assert 0 < TeacherAnswer.objects.filter(fingerprint=teacher.fingerprint).count() < 4

    team.quota.teacher_tokens_per_month = 1_000_000
    team.quota.save()
    assert actions.resume_paused() == [job]  # what the sweep does every 30 s
    wait_for(lambda: status(job) in ("failed", "succeeded"), 240, "the resumed job", workers.logs)
    assert job.status == "succeeded", job.error
    answers = TeacherAnswer.objects.filter(fingerprint=teacher.fingerprint)
    assert answers.count() == 4
    # A random tiny teacher never stops within 8 tokens: its answers are flagged "length"
    # and the job trained on the 4 uploaded answers only.
    assert set(answers.values_list("flag", flat=True)) <= {"length", "empty"}
    exported = (workers.tmp_path / "data").glob(f"jobs/{job.pk}/prompts.jsonl")
    assert sum(1 for _ in next(exported).open()) == 4


@pytest.mark.parametrize("guard,ends", [("stop", "failed"), ("pause", "paused")])
def test_health_guard_stops_or_pauses_a_job_when_an_alarm_fires(
    workers, team, tiny_student, guard, ends
):
    # Many epochs, so that the guard always fires before the job ends, however fast the
    # machine.
    job = launch(team, tiny_student, n_prompts=40, save_every=100, gad={"epochs": 100, "lr": 1e-3})
    Job.objects.filter(pk=job.pk).update(guard=guard)
    # Thresholds that any run trips: student answers "longer" than 1% of the teacher's.
    workers.start(
        "cpu", GAD_HEALTH_LEN_RATIO="0.01", GAD_HEALTH_LEN_RATIO_STEPS="1", GAD_GUARD_CHECK_S="1"
    )
    wait_for(
        lambda: status(job) in ("failed", "paused", "succeeded"), 180, "the guard", workers.logs
    )
    assert job.status == ends, job.error + job.log_tail
    message = job.error if ends == "failed" else job.log_tail
    assert "by the health guard" in message and "answers running away" in message
    assert job.guard_paused == (ends == "paused")
    assert Checkpoint.objects.filter(job=job).exists()  # SIGTERM: saved before stopping


def test_a_lora_job_offers_the_merged_model_and_the_adapter(workers, team, tiny_student, client):
    """LoRA jobs export a merged student (what evaluation loads) and the adapter alone;
    both download, from the page and the API. Marking a checkpoint final keeps its
    weights through retention (a KEEP file)."""
    from pathlib import Path

    from webapp.teams.actions import create_api_token

    lora = {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}
    job = launch(team, tiny_student, method="seqkd", lora=lora)
    workers.start("cpu")
    wait_for(lambda: status(job) in ("succeeded", "failed"), 180, "the job", workers.logs)
    assert job.status == "succeeded", job.error
    checkpoint = Checkpoint.objects.filter(job=job).order_by("-step").first()
    _assert_downloads_and_loads(job, checkpoint)  # the merged model, a plain HF model
    owner = team.memberships.get().user
    client.force_login(owner)
    page = client.get(f"/teams/lab/jobs/{job.pk}/").content.decode()
    assert 'data-testid="adapter-download"' in page and "LoRA merged" in page
    response = client.get(f"/teams/lab/checkpoints/{checkpoint.pk}/download/?part=adapter")
    data = b"".join(response.streaming_content)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
    assert any(n.endswith("adapter_config.json") for n in names)
    assert any(n.endswith("adapter_model.safetensors") for n in names)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {create_api_token(owner, 't')[1]}"}
    api = client.get(f"/api/v1/checkpoints/{checkpoint.pk}/download?part=adapter", **auth)
    assert api.status_code == 200
    assert (
        client.get(f"/api/v1/checkpoints/{checkpoint.pk}/download?part=x", **auth).status_code
        == 422
    )
    client.post(f"/teams/lab/checkpoints/{checkpoint.pk}/final/")
    assert (Path(checkpoint.path).parent / "KEEP").exists()


def test_a_job_whose_message_was_lost_in_the_broker_is_sent_again(
    workers, team, tiny_student, settings
):
    """A Redis restart without AOF loses the queued message: the sweep finds the job
    queued and unclaimed past GAD_REQUEUE_AFTER_S with its task in no queue, and sends
    it again; a job whose message is still queued is left alone."""
    import redis
    from django.utils import timezone

    from worker.jobs import sweep

    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    job = launch(team, tiny_student)
    assert broker.llen("cpu") == 1
    settings.GAD_REQUEUE_AFTER_S = 5
    Job.objects.filter(pk=job.pk).update(sent_at=timezone.now() - timezone.timedelta(seconds=60))
    assert sweep()["resent"] == 0  # still in its queue: not lost
    broker.delete("cpu")  # the broker lost it
    assert sweep()["resent"] == 1 and broker.llen("cpu") == 1
    assert sweep()["resent"] == 0  # sent just now
    workers.start("cpu")
    wait_for(lambda: status(job) in ("succeeded", "failed"), 240, "the job", workers.logs)
    assert job.status == "succeeded", job.error


def test_a_job_collects_through_the_batch_api_and_a_new_worker_polls_the_same_batch(
    workers, team, tiny_student
):
    """Issue 24, item 3: a job that chose the Batch API submits one batch, keeps its id
    on the job, shows "teacher batch: k of n done"; its worker SIGKILLed mid-batch, the
    next worker polls the same batch (never a second), stores its answers at the batch
    price and trains. Against the official openai client and a loopback Batch API
    (tests/teacher/batch_server.py)."""
    from tests.teacher.batch_server import BatchModel
    from webapp.jobs import monitor
    from webapp.promptsets.models import TeacherAnswer
    from webapp.teachers.actions import create_endpoint
    from webapp.teams.models import TeacherSpend

    server = BatchModel(per_poll=1)
    try:
        teacher = create_endpoint(
            team,
            None,
            name="gpt5",
            base_url=server.url,
            model=server.model,
            params={"max_tokens": 512},
            dialect={"token_param": "max_completion_tokens", "temperature_mode": "omit"},
            limits={"price_input": "1", "price_output": "8"},
        )
        prompt_set = make_prompt_set(team, n=8)
        missing = list(prompt_set.prompts.order_by("index").values_list("pk", flat=True)[2:])
        Prompt.objects.filter(pk__in=missing).update(teacher_response=None)
        spec, _ = build_configs(team, "gad", str(tiny_student), SMALL)
        request = actions.LaunchRequest("job", prompt_set, teacher, spec, teacher_batch=True)
        job = actions.launch(team, None, request)[0]
        first = workers.start("cpu", name="first", GAD_BATCH_POLL_S="2")

        def mid_batch():
            job.refresh_from_db()
            line = (monitor.job_state(job)["answers"] or {}).get("line", "")
            done = [f"teacher batch: {k} of 6 done" for k in range(1, 6)]
            return job.teacher_batch_id and line in done

        wait_for(mid_batch, 120, "the batch under way", workers.logs)
        batch_id = job.teacher_batch_id
        first.send_signal(signal.SIGKILL)
        first.wait()
        wait_for(lambda: actions.RUN.requeue_lapsed(), 60, "the heartbeat to go stale")
        workers.start("cpu", name="second", GAD_BATCH_POLL_S="0.2")
        wait_for(lambda: status(job) in ("succeeded", "failed"), 240, "the job", workers.logs)
        assert job.status == "succeeded", job.error
        assert list(server.batches) == [batch_id]  # one batch, paid once
        assert server.chat_requests == 0
        assert TeacherAnswer.objects.filter(fingerprint=teacher.fingerprint).count() == 6
        row = TeacherSpend.objects.get(job=job)
        full = (row.prompt_tokens * 1 + row.completion_tokens * 8) / Decimal(1_000_000)
        assert row.cost == (full / 2).quantize(Decimal("0.000001"))  # the batch discount
        assert job.teacher_batch_id == ""
    finally:
        server.close()
