"""Quotas and suspension bind every kind of work (docs/security.md, "Quotas"): a
suspended or spent team cannot start evaluations, judge runs or sweeps; GPU time is
charged while a job runs; concurrent paid runs share the remaining teacher tokens."""

from __future__ import annotations

import threading
from decimal import Decimal

from django.urls import reverse

from tests.security.capture import CaptureServer
from tests.webapp.factories import make_prompt_set
from tests.webapp.test_evaluation import make_evaluation
from trainer.teacher import collect
from webapp.jobs import actions as job_actions
from webapp.teachers import actions as teacher_actions
from webapp.teams import actions as team_actions
from webapp.teams.actions import create_api_token, record_usage
from webapp.teams.models import UsageKind
from worker.heartbeat import Heartbeat, Paused
from worker.paid import paid_call


def _evaluation_form(personas) -> dict:
    return {
        "name": "more work",
        "prompt_set": personas.prompt_set.pk,
        "prompt_choice": "all",
        "model_paths": "org/a\norg/b",
        "max_new_tokens": 8,
    }


def test_a_suspended_team_starts_no_evaluation_judge_run_or_sweep(login, personas):
    evaluation = make_evaluation(personas.team, n_prompts=2)
    judge = teacher_actions.create_endpoint(
        personas.team, None, name="J", base_url="http://127.0.0.1:9/v1", model="m"
    )
    personas.prompt_set.prompts.update(split="test")  # a sweep's test prompts
    team_actions.suspend_team(personas.team, "unpaid invoice")
    client = login(personas.member)
    url = reverse("evaluation-create", kwargs={"slug": personas.team.slug})
    response = client.post(url, _evaluation_form(personas))
    assert (
        response.status_code == 422 and "is suspended: unpaid invoice" in response.content.decode()
    )
    token = create_api_token(personas.member, "t")[1]
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    run = client.post(
        f"/api/v1/evaluations/{evaluation.pk}/judge-runs",
        {"judge": judge.pk},
        content_type="application/json",
        **auth,
    )
    assert run.status_code == 429 and "suspended" in run.json()["detail"]
    sweep = client.post(
        f"/api/v1/jobs/{personas.job.pk}/sweeps",
        {"judge": judge.pk},
        content_type="application/json",
        **auth,
    )
    assert sweep.status_code == 429 and "suspended" in sweep.json()["detail"]
    assert not evaluation.judge_runs.exists()


def test_spent_gpu_hours_refuse_an_evaluation_with_the_figures(login, personas):
    record_usage(personas.team, UsageKind.GPU_SECONDS, 3600 * 1000)
    client = login(personas.member)
    url = reverse("evaluation-create", kwargs={"slug": personas.team.slug})
    response = client.post(url, _evaluation_form(personas))
    assert response.status_code == 422
    assert "GPU-hours are spent: 1000.00 of" in response.content.decode()


def test_gpu_time_is_charged_at_the_beats_and_pauses_the_job_over_quota(personas):
    personas.team.quota.gpu_hours_per_month = Decimal("0.01")  # 36 GPU-seconds
    personas.team.quota.save()
    job = personas.job
    job.status, job.claimed_by, job.gpus = "training", "node:1:1", 2
    job.save()
    now = [1000.0]
    beat = Heartbeat(job, gpus=2, clock=lambda: now[0])  # not started: the test beats
    with beat.gpu_time():
        now[0] += 20  # 40 GPU-seconds: not yet a minute's worth to charge
        beat._beat()
        assert beat.over_quota is None
        now[0] += 20  # 80 GPU-seconds uncharged: charged now, and over the 36 s quota
        beat._beat()
    assert "GPU-hours for this month are spent" in beat.over_quota
    charged = personas.team.usage_records.filter(kind=UsageKind.GPU_SECONDS)
    assert sum(r.amount for r in charged) == 80
    try:
        beat.check()
    except Paused as paused:
        assert job_actions.pause(job, str(paused))
    job.refresh_from_db()
    assert job.status == "paused"
    # Its end later charges only what was not charged yet.
    job.status, job.claimed_by = "training", "node:1:1"
    job.save()
    job_actions.beat(job, gpu_seconds=5)
    assert job_actions.finish(job, "succeeded")
    assert sum(r.amount for r in charged.all()) == 85


def test_concurrent_runs_cannot_overspend_the_remaining_tokens(personas, transactional_db):
    """Two collections start at once with 100 tokens left; each would spend 160."""
    personas.team.quota.teacher_tokens_per_month = 100
    personas.team.quota.save()
    sets = [make_prompt_set(personas.team, n=40, name=f"set{i}") for i in range(2)]
    for i, prompt_set in enumerate(sets):  # different prompts: nothing shared
        for prompt in prompt_set.prompts.all():
            prompt.messages = [{"role": "user", "content": f"set {i} {prompt.messages}"}]
            prompt.save()
    results = []
    with CaptureServer() as server:  # 4 tokens an answer
        endpoint = teacher_actions.create_endpoint(
            personas.team, None, name="T", base_url=server.url, model="m", params={"max_tokens": 4}
        )

        def run(prompt_set):
            prompts = [p.messages for p in prompt_set.prompts.all()]
            results.append(
                paid_call(
                    endpoint,
                    personas.team,
                    lambda spec, store, budget, on_progress: collect(
                        prompts, spec, store, on_progress=on_progress, budget=budget
                    ),
                )
            )

        threads = [threading.Thread(target=run, args=(s,)) for s in sets]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    spent = sum(paid.tokens for paid in results)
    assert len(results) == 2 and spent <= 100
    assert team_actions.month_usage(personas.team).teacher_tokens == spent  # settled
    assert any(paid.result is not None and paid.result.stopped == "budget" for paid in results)


def test_storage_binds_uploads_checkpoints_and_new_work(login, personas):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from webapp.jobs.models import Checkpoint
    from webapp.promptsets.ingest import UploadRejected, ingest

    personas.team.quota.storage_gb = 1
    personas.team.quota.save()
    Checkpoint.objects.filter(pk=personas.checkpoint.pk).update(size_bytes=999_000_000)
    upload = SimpleUploadedFile("more.jsonl", b'{"prompt": "hi"}\n' * 100_000)  # 1.7 MB
    try:
        ingest(personas.team, None, "more", upload)
    except UploadRejected as refused:
        assert refused.status == 413
        assert "storage is full: 1.00 GB used of 1 GB, and this adds 0.00 GB" in str(refused)
    else:
        raise AssertionError("an upload past the storage quota was accepted")
    assert not personas.team.prompt_sets.filter(name="more").exists()
    # A checkpoint that fills the storage: no new work starts until some is freed.
    Checkpoint.objects.filter(pk=personas.checkpoint.pk).update(size_bytes=2_000_000_000)
    assert team_actions.storage_full(personas.team)
    client = login(personas.member)
    url = reverse("evaluation-create", kwargs={"slug": personas.team.slug})
    response = client.post(url, _evaluation_form(personas))
    assert response.status_code == 422 and "storage is full" in response.content.decode()
