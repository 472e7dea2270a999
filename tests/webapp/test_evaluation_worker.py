"""Answer generation end to end: a real `celery worker` process on Redis and PostgreSQL
runs ``gad.generate_answers`` with `python -m trainer generate` on tiny models (and the
teacher through a real `transformers serve`)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from tests.webapp.factories import make_job, make_prompt_set, register_model
from tests.worker.conftest import Workers, wait_for
from webapp.annotation import actions as annotation_actions
from webapp.evaluation import actions
from webapp.evaluation.models import EvalStatus, Evaluation, SystemAnswer, SystemStatus
from webapp.jobs.models import Checkpoint, JobAnswer
from webapp.promptsets.models import Split
from webapp.teams.models import UsageKind

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    from trainer.tiny import build_tiny

    root = tmp_path_factory.mktemp("eval-models")
    before = build_tiny(root / "before", layers=1, hidden=32, heads=4, seed=0)
    after = build_tiny(root / "after", layers=1, hidden=32, heads=4, seed=1)
    return before, after


@pytest.fixture(autouse=True)
def _registered(settings, tiny_models, transactional_db):
    """The student before distillation is a registered model (before the workers start,
    so that they see its model root)."""
    register_model(settings, tiny_models[0], name="before")


@pytest.fixture
def workers(settings, tmp_path, transactional_db):
    import redis

    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    broker.delete("cpu")  # nothing left over from other tests' enqueues
    pool = Workers(settings, tmp_path)
    yield pool
    pool.stop()
    broker.delete("cpu")


def _status(evaluation: Evaluation) -> str:
    evaluation.refresh_from_db()
    return evaluation.status


def _setup(team, before, after, n_prompts=3, reuse_one=False):
    prompt_set = make_prompt_set(team, n=n_prompts + 1, name="eval")
    test = list(prompt_set.prompts.order_by("index")[:n_prompts])
    prompt_set.prompts.filter(pk__in=[p.pk for p in test]).update(split=Split.TEST)
    job = make_job(team, prompt_set, status="succeeded", name="distilled")
    job.student, job.config = "model:before", {"max_response_tokens": 6}
    job.save()
    checkpoint = Checkpoint.objects.create(job=job, step=4, path=str(after))
    if reuse_one:
        # The job's own evaluating stage already answered one test prompt with this
        # (last) checkpoint, greedy, with the same token limit: reused, not regenerated.
        JobAnswer.objects.create(job=job, prompt=test[0], response="kept from the job")
    return prompt_set, job, checkpoint


def _evaluation(personas, prompt_set, name, systems, max_new_tokens, user=None) -> Evaluation:
    """An evaluation of the set's held-out prompts by these systems."""
    return actions.create_evaluation(
        personas.team,
        user,
        name=name,
        prompt_set=prompt_set,
        prompt_choice="test",
        systems=systems,
        max_new_tokens=max_new_tokens,
    )


def test_generation_task_answers_every_prompt_for_every_system(workers, personas, tiny_models):
    before, after = tiny_models
    prompt_set, job, checkpoint = _setup(personas.team, before, after, reuse_one=True)
    evaluation = _evaluation(
        personas,
        prompt_set,
        "e2e",
        [actions.checkpoint_system(checkpoint), actions.base_system(job)],
        6,
        user=personas.member,
    )
    workers.start("cpu")
    wait_for(lambda: _status(evaluation) != EvalStatus.GENERATING, 180, "the answers", workers.logs)
    systems = list(evaluation.systems.all())
    assert evaluation.status == EvalStatus.READY, [s.error for s in systems] + [workers.logs()]
    for system in systems:
        assert system.status == SystemStatus.DONE and system.num_answers == 3
        answers = SystemAnswer.objects.filter(system=system)
        assert answers.count() == 3
        assert {a.finish_reason for a in answers} <= {"stop", "length", ""}
    tuned = next(s for s in systems if s.kind == "checkpoint")
    first = prompt_set.prompts.order_by("index").first()
    assert SystemAnswer.objects.get(system=tuned, prompt=first).response == "kept from the job"
    # The generated prompts file held only the two missing prompts.
    workdir = workers.env["GAD_DATA_DIR"] + f"/evaluations/{evaluation.pk}/system-{tuned.pk}"
    with open(f"{workdir}/prompts.jsonl") as f:
        assert len(f.read().splitlines()) == 2

    # Generating again is a no-op: nothing is missing, nothing runs.
    assert actions.request_generation(evaluation) == 0
    campaign = annotation_actions.create_campaign(
        evaluation,
        None,
        title="Round",
        pairs=[(tuned, next(s for s in systems if s.kind == "base"))],
        annotators=[personas.annotator],
        overlap=1,
    )
    assert campaign.assignments.count() == 3


def test_an_unloadable_model_fails_its_system_with_the_trainers_message(
    workers, personas, tiny_models, tmp_path
):
    before, after = tiny_models
    prompt_set, job, checkpoint = _setup(personas.team, before, after, n_prompts=2)
    evaluation = _evaluation(
        personas,
        prompt_set,
        "broken",
        [actions.base_system(job), actions.model_system("missing-org/no-such-model")],
        4,
    )
    workers.start("cpu")
    wait_for(lambda: _status(evaluation) != EvalStatus.GENERATING, 180, "the end", workers.logs)
    assert evaluation.status == EvalStatus.FAILED
    broken = evaluation.systems.get(kind="path")
    assert broken.status == SystemStatus.FAILED and "no-such-model" in broken.error
    assert "Traceback" not in broken.error
    assert evaluation.systems.get(kind="base").status == SystemStatus.DONE


def test_teacher_answers_come_through_collect_and_are_charged(
    workers, personas, tiny_models, teacher_server
):
    from webapp.teachers.actions import create_endpoint

    url, model = teacher_server
    before, after = tiny_models
    prompt_set, job, _ = _setup(personas.team, before, after, n_prompts=2)
    teacher = create_endpoint(personas.team, None, name="tiny", base_url=url, model=model)
    evaluation = _evaluation(
        personas,
        prompt_set,
        "teacher",
        [actions.teacher_system(teacher), actions.base_system(job)],
        5,
    )
    workers.start("cpu")
    wait_for(lambda: _status(evaluation) != EvalStatus.GENERATING, 180, "the end", workers.logs)
    system = evaluation.systems.get(kind="teacher")
    assert evaluation.status == EvalStatus.READY, system.error + workers.logs()
    assert SystemAnswer.objects.filter(system=system).count() == 2
    tokens = personas.team.usage_records.filter(kind=UsageKind.TEACHER_TOKENS)
    assert sum(r.amount for r in tokens) > 0


def test_a_claimed_evaluation_is_not_generated_twice(personas):
    evaluation = Evaluation.objects.create(team=personas.team, name="x")
    assert actions.claim(evaluation.pk, "w1", 60)
    assert not actions.claim(evaluation.pk, "w2", 60)
    assert actions.renew(evaluation.pk, "w1", 60) and not actions.renew(evaluation.pk, "w2", 60)
    Evaluation.objects.filter(pk=evaluation.pk).update(
        claimed_until=timezone.now() - timedelta(seconds=1)
    )
    assert actions.claim(evaluation.pk, "w2", 60)  # a lapsed claim is taken over
    assert not actions.renew(evaluation.pk, "w1", 60)  # and the old holder learns it
    actions.release(evaluation.pk, "w2")
    assert actions.claim(evaluation.pk, "w3", 60)


def test_the_beat_sweep_requeues_an_evaluation_whose_worker_died(workers, personas, tiny_models):
    """A worker died holding the evaluation (its task gone with it, the claim lapsed,
    a system left "running"): the sweep enqueues generation again and a new worker
    finishes it."""
    from worker.jobs import sweep

    before, after = tiny_models
    prompt_set, job, checkpoint = _setup(personas.team, before, after, n_prompts=2)
    evaluation = _evaluation(
        personas,
        prompt_set,
        "orphaned",
        [actions.checkpoint_system(checkpoint), actions.base_system(job)],
        4,
    )
    import redis
    from django.conf import settings

    redis.Redis.from_url(settings.CELERY_BROKER_URL).delete("cpu")  # the task is lost
    Evaluation.objects.filter(pk=evaluation.pk).update(
        claimed_by="dead:1", claimed_until=timezone.now() - timedelta(seconds=5)
    )
    evaluation.systems.filter(kind="base").update(status=SystemStatus.RUNNING)
    assert sweep()["evaluations"] == 1
    assert sweep()["evaluations"] == 0  # once: the claim is cleared
    workers.start("cpu")
    wait_for(lambda: _status(evaluation) != EvalStatus.GENERATING, 180, "the answers", workers.logs)
    assert evaluation.status == EvalStatus.READY, workers.logs()
    assert SystemAnswer.objects.filter(system__evaluation=evaluation).count() == 4


def test_a_sweep_is_generated_then_judged_by_the_worker_without_a_click(
    workers, personas, tiny_models, tmp_path
):
    """The checkpoints answer through `trainer generate` in a real worker, which then
    starts the sweep's judge by itself; the page proposes a checkpoint."""
    from tests.judge.scripted import REFERENCE, ScriptedJudge, is_verdict, shown_answers
    from trainer.tiny import build_tiny
    from webapp.judging import actions as judging_actions
    from webapp.judging import sweep
    from webapp.judging.models import JudgeRun
    from webapp.teachers.actions import create_endpoint

    def by_length(messages):  # a judge that likes longer answers, within 1..10
        if not is_verdict(messages):
            return REFERENCE
        first, second = (min(10, 1 + len(a.split())) for a in shown_answers(messages))
        return f"{first} {second}\nLonger is better, says this judge."

    before, after = tiny_models
    prompt_set, job, _ = _setup(personas.team, before, after, n_prompts=2)
    middle = build_tiny(tmp_path / "middle", layers=1, hidden=32, heads=4, seed=2)
    Checkpoint.objects.create(job=job, step=2, path=str(middle))
    with ScriptedJudge(by_length) as server:
        judge = create_endpoint(personas.team, None, name="J", base_url=server.url, model="m")
        created = judging_actions.create_sweep(
            job, personas.member, every=1, judge=judge, prompt_set=prompt_set, max_new_tokens=6
        )
        evaluation = created.evaluation
        workers.start("cpu")

        def judged():
            run = evaluation.judge_runs.first()
            return run is not None and run.status in ("succeeded", "failed") and run

        run = wait_for(judged, 240, "the sweep's judge run", workers.logs)
        requests = server.requests
    assert run.status == JudgeRun.Status.SUCCEEDED, run.error + workers.logs()
    # 2 references + 2 orders x 3 systems x 2 prompts, less the verdict prompts that
    # repeat (tiny random models can give the same answer: asked and paid once).
    distinct = run.report["summary"]["verdicts"]
    assert 0 < distinct <= 12 and requests == 2 + distinct
    assert run.tokens_used == requests * 13
    assert run.progress["phase"] == "verdicts" and run.progress["done"] == run.progress["total"]
    found = sweep.points(created, sweep.latest_run(created))
    assert [p.step for p in found] == [0, 2, 4]
    assert all(p.n_scored == 2 and p.mean is not None for p in found)
    proposal = sweep.propose(found, None)
    best = max((p for p in found if p.checkpoint_id), key=lambda p: (p.mean, -p.mean_length))
    assert proposal.point.step == best.step


def test_on_a_gpu_node_generation_waits_for_a_free_gpu_and_leases_it(
    workers, personas, tiny_models
):
    import socket

    from webapp.nodes.models import GpuLease

    before, after = tiny_models
    prompt_set, job, checkpoint = _setup(personas.team, before, after, n_prompts=2)
    # A training job holds the node's only GPU.
    training = make_job(personas.team, prompt_set, status="training", name="busy")
    GpuLease.objects.create(
        node=socket.gethostname(),
        gpu_index=0,
        job=training,
        expires_at=timezone.now() + timedelta(minutes=10),
    )
    evaluation = _evaluation(
        personas,
        prompt_set,
        "on-gpu",
        [actions.checkpoint_system(checkpoint), actions.base_system(job)],
        6,
        user=personas.member,
    )
    workers.start("cpu", gpus="0")  # a GPU node (CUDA_VISIBLE_DEVICES=0 on a CPU is the CPU)
    wait_for(lambda: "needs a GPU" in workers.logs(), 120, "the wait for a GPU", workers.logs)
    assert _status(evaluation) == EvalStatus.GENERATING
    assert not SystemAnswer.objects.filter(system__evaluation=evaluation).exists()
    # Each retry takes a system up and puts it back to waiting when the GPU is still held.
    assert not {s.status for s in evaluation.systems.all()} & {"done", "failed"}

    GpuLease.objects.filter(job=training).delete()  # the job ends
    wait_for(lambda: _status(evaluation) != EvalStatus.GENERATING, 180, "the answers", workers.logs)
    assert evaluation.status == EvalStatus.READY, workers.logs()
    full_log = "".join(p.read_text() for p in workers.tmp_path.glob("worker-*.log"))
    assert full_log.count(f"evaluation {evaluation.pk}: generating on leased GPU 0") == 2
    assert not GpuLease.objects.exists()  # released after each system
    charged = personas.team.usage_records.filter(kind=UsageKind.GPU_SECONDS)
    assert charged.count() == 2 and all(u.amount > 0 and u.job is None for u in charged)
