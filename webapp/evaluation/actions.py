"""Every change to evaluations, their systems and the systems' answers goes through here.

The web process enqueues the generation task by name after commit (it never imports
worker code); the worker reports back through the functions of the second section,
each a conditional UPDATE so that a stale or duplicate task cannot overwrite newer state.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Count, Q

from trainer import config as trainer_config
from webapp import claims, dispatch
from webapp.evaluation import panels
from webapp.evaluation.models import (
    EvalStatus,
    Evaluation,
    PromptChoice,
    System,
    SystemAnswer,
    SystemKind,
    SystemStatus,
)
from webapp.jobs import references, storage
from webapp.jobs.models import Checkpoint, Job
from webapp.lib.errors import ActionError
from webapp.lib.text import scrub
from webapp.promptsets.models import Prompt, PromptSet, Split
from webapp.teachers.models import TeacherEndpoint
from webapp.teams import actions as team_actions
from webapp.teams.models import Team

MAX_NEW_TOKENS = 32768
# A job's students answer within its max_response_tokens (config key); the trainer's
# default (the paper's) where a job's config lacks it, and for an evaluation of no job.
TOKENS_KEY = "max_response_tokens"
DEFAULT_NEW_TOKENS = trainer_config.MAX_RESPONSE_TOKENS


def response_tokens(value: object) -> int:
    """A job's max_response_tokens as an evaluation's max new tokens."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return DEFAULT_NEW_TOKENS
    return min(value, MAX_NEW_TOKENS)


GENERATE_TASK = "gad.generate_answers"
MAX_SYSTEMS = 12


# ----------------------------------------------------------------------------- evaluations


@dataclass(frozen=True)
class SystemSpec:
    kind: str
    name: str
    path: str = ""
    method: str = ""
    teacher: TeacherEndpoint | None = None
    job: Job | None = None
    checkpoint: Checkpoint | None = None

    @property
    def identity(self) -> tuple:
        """Two specs with the same identity would generate the same answers."""
        if self.kind == SystemKind.TEACHER:
            return ("teacher", self.teacher.pk if self.teacher else None)
        return ("model", self.path)


def teacher_system(endpoint: TeacherEndpoint) -> SystemSpec:
    return SystemSpec(
        SystemKind.TEACHER, f"Teacher {endpoint.name} ({endpoint.model})", teacher=endpoint
    )


def checkpoint_system(checkpoint: Checkpoint) -> SystemSpec:
    job = checkpoint.job
    return SystemSpec(
        SystemKind.CHECKPOINT,
        f"{job.name} · {job.get_method_display()} step {checkpoint.step}",
        path=f"checkpoint:{checkpoint.pk}",
        method=job.method,
        job=job,
        checkpoint=checkpoint,
    )


def base_system(job: Job) -> SystemSpec:
    return SystemSpec(
        SystemKind.BASE, f"Before distillation: {job.student}", path=job.student, job=job
    )


def model_system(ref: str) -> SystemSpec:
    """A model named by a reference (``webapp.jobs.references``): a hub id or a
    registered model."""
    return SystemSpec(SystemKind.PATH, f"Model {ref}", path=ref)


def final_checkpoint(job: Job) -> Checkpoint | None:
    """The checkpoint marked final, else the last one saved."""
    if job.final_checkpoint_id:
        return job.final_checkpoint
    return job.checkpoints.order_by("-step").first()


def evaluation_prompts(prompt_set: PromptSet, choice: str, limit: int | None = None) -> list[int]:
    rows = Prompt.objects.filter(prompt_set=prompt_set).order_by("index")
    if choice == PromptChoice.TEST:
        rows = rows.filter(split=Split.TEST)
    ids = list(rows.values_list("pk", flat=True))
    return ids[:limit] if limit else ids


def other_set_prompts(prompt_set: PromptSet, limit: int | None = None) -> list[int]:
    """A further test set's prompts: its held-out split when it has one, else all."""
    held_out = evaluation_prompts(prompt_set, PromptChoice.TEST, limit)
    return held_out or evaluation_prompts(prompt_set, PromptChoice.ALL, limit)


def create_evaluation(
    team: Team,
    user: User | None,
    *,
    name: str,
    prompt_set: PromptSet,
    prompt_choice: str,
    systems: Sequence[SystemSpec],
    max_new_tokens: int = DEFAULT_NEW_TOKENS,
    temperature: float | None = None,
    limit: int | None = None,
    other_sets: Sequence[PromptSet] = (),
    auto_judge: TeacherEndpoint | None = None,
) -> Evaluation:
    """Save the evaluation and its systems; the worker generates the answers after commit.

    ``other_sets`` adds further test sets (the columns of the judge's table), each with
    ``limit`` prompts at most; ``auto_judge`` judges the answers as soon as they are all
    there (``webapp.judging.actions.launch_auto``).
    """
    unique: dict[tuple, SystemSpec] = {}
    for spec in systems:
        unique.setdefault(spec.identity, spec)
    if len(unique) < 2:
        raise ActionError("Choose at least two different systems to compare.")
    if len(unique) > MAX_SYSTEMS:
        raise ActionError(f"An evaluation compares at most {MAX_SYSTEMS} systems.")
    for spec in unique.values():
        if spec.kind != SystemKind.TEACHER:
            try:
                references.check(spec.path, team, "models")
                found = references.hub_model(spec.path, team, "models")
            except (references.InvalidReference, references.HubRefused) as refused:
                raise ActionError(str(refused)) from None
            # A hub model downloads into the model cache like a job's student.
            full = found and references.hub_storage_problem(team, found)
            if full:
                raise ActionError(f"models: {full}")
    prompt_ids = evaluation_prompts(prompt_set, prompt_choice, limit)
    if not prompt_ids:
        where = "held-out test split" if prompt_choice == PromptChoice.TEST else "set"
        raise ActionError(
            f"Prompt set {prompt_set.name!r} has no prompts in its {where}; hold some out "
            "on the prompt set's page, or upload a test set and use all its prompts."
        )
    for other in other_sets:
        if other.pk == prompt_set.pk:
            continue
        more = other_set_prompts(other, limit)
        if not more:
            raise ActionError(f"Test set {other.name!r} has no prompts; upload some first.")
        prompt_ids += more
    if auto_judge is not None and auto_judge.team_id != team.pk:
        raise ActionError("Choose one of the team's teacher endpoints as the judge.")
    with transaction.atomic():
        team_actions.lock_quota(team)
        team_actions.check_may_spend(team)  # generation uses GPUs, the teacher tokens
        evaluation = Evaluation.objects.create(
            team=team,
            name=name,
            created_by=user,
            prompt_set=prompt_set,
            prompt_choice=prompt_choice,
            num_prompts=len(prompt_ids),
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            auto_judge=auto_judge,
        )
        through = Evaluation.prompts.through
        through.objects.bulk_create(
            [through(evaluation=evaluation, prompt_id=pk) for pk in prompt_ids], batch_size=5000
        )
        System.objects.bulk_create(
            System(
                evaluation=evaluation,
                name=spec.name[:300],
                kind=spec.kind,
                method=spec.method,
                teacher=spec.teacher,
                job=spec.job,
                checkpoint=spec.checkpoint,
                path=spec.path,
                position=position,
            )
            for position, spec in enumerate(unique.values())
        )
        GENERATE.enqueue_on_commit(evaluation.pk)
    return evaluation


def delete_evaluation(evaluation: Evaluation) -> None:
    """Delete an evaluation with its answers, campaigns, votes, judge runs and sweep, and
    its generation work dir. Refused while a worker is writing to it (generating its
    answers, or a panel's work: a judge run)."""
    with transaction.atomic():
        locked = Evaluation.objects.select_for_update().get(pk=evaluation.pk)
        if locked.status == EvalStatus.GENERATING:
            raise ActionError(
                "The answers are still being generated; delete the evaluation once they "
                "are done (or failed)."
            )
        busy = panels.busy(locked)
        if busy:
            raise ActionError(busy)
        locked.delete()
        transaction.on_commit(partial(_remove_work_dir, evaluation.pk))


def _remove_work_dir(evaluation_id: int) -> None:
    shutil.rmtree(Path(settings.GAD_DATA_DIR) / "evaluations" / str(evaluation_id), True)


def enqueue_generation(evaluation_id: int) -> bool:
    """Send the generation task; False (and the evaluation flagged unsent) if the broker
    is down."""
    return GENERATE.enqueue(evaluation_id)


def request_generation(evaluation: Evaluation) -> int:
    """Try the failed systems again; returns how many will be generated."""
    with transaction.atomic():
        again = System.objects.filter(evaluation=evaluation, status=SystemStatus.FAILED).update(
            status=SystemStatus.PENDING, error="", progress=0
        )
        waiting = System.objects.filter(
            evaluation=evaluation, status__in=[SystemStatus.PENDING, SystemStatus.RUNNING]
        ).count()
        if waiting:
            Evaluation.objects.filter(pk=evaluation.pk).update(status=EvalStatus.GENERATING)
            GENERATE.enqueue_on_commit(evaluation.pk)
    return again


# ----------------------------------------------------------------------------- worker side


def claim(evaluation_id: int, worker: str, lease_s: float) -> bool:
    """Take the evaluation's generation for ``lease_s`` seconds unless someone holds it."""
    return claims.take(Evaluation.objects.all(), evaluation_id, worker, lease_s)


def renew(evaluation_id: int, worker: str, lease_s: float) -> bool:
    """False when the claim was lost (it lapsed and another worker took it)."""
    return claims.renew(Evaluation.objects.all(), evaluation_id, worker, lease_s)


def release(evaluation_id: int, worker: str) -> None:
    claims.release(Evaluation.objects.all(), evaluation_id, worker)


def systems_to_generate(evaluation_id: int) -> list[System]:
    return list(
        System.objects.filter(
            evaluation_id=evaluation_id,
            status__in=[SystemStatus.PENDING, SystemStatus.RUNNING],
        ).select_related("teacher", "job", "checkpoint", "evaluation__team")
    )


def missing_prompts(system: System) -> list[Prompt]:
    have = SystemAnswer.objects.filter(system=system).values("prompt_id")
    return list(
        system.evaluation.prompts.exclude(pk__in=have)
        .order_by("index")
        .only("pk", "messages", "prompt_hash", "index")
    )


def start_system(system: System) -> bool:
    return bool(
        System.objects.filter(
            pk=system.pk, status__in=[SystemStatus.PENDING, SystemStatus.RUNNING]
        ).update(status=SystemStatus.RUNNING, progress=0, error="")
    )


def wait_for_gpu(system: System) -> None:
    """No GPU is free for the system's generation now: it goes back to waiting."""
    System.objects.filter(pk=system.pk, status=SystemStatus.RUNNING).update(
        status=SystemStatus.PENDING, progress=0
    )


def set_progress(system_id: int, progress: int) -> None:
    System.objects.filter(pk=system_id, status=SystemStatus.RUNNING).update(progress=progress)


def store_answers(system: System, answers: Iterable[tuple[int, str, str]]) -> int:
    """Upsert (prompt id, response, finish reason) rows; returns the system's answer count."""
    rows = [
        SystemAnswer(
            system=system, prompt_id=pk, response=scrub(response), finish_reason=reason[:20]
        )
        for pk, response, reason in answers
    ]
    SystemAnswer.objects.bulk_create(
        rows,
        batch_size=1000,
        update_conflicts=True,
        unique_fields=["system", "prompt"],
        update_fields=["response", "finish_reason"],
    )
    count = SystemAnswer.objects.filter(system=system).count()
    System.objects.filter(pk=system.pk).update(num_answers=count)
    return count


def finish_system(system: System, error: str = "") -> System:
    """Done when every prompt has an answer; failed (with the reason) otherwise."""
    total = Evaluation.objects.values_list("num_prompts", flat=True).get(pk=system.evaluation_id)
    count = SystemAnswer.objects.filter(system=system).count()
    if not error and count < total:
        error = f"{total - count} of {total} prompts got no answer."
    status = SystemStatus.FAILED if error else SystemStatus.DONE
    System.objects.filter(pk=system.pk).update(
        status=status, error=error, num_answers=count, progress=0
    )
    refresh_status(system.evaluation_id)
    system.refresh_from_db()
    return system


def refresh_status(evaluation_id: int) -> str:
    counts = dict(
        System.objects.filter(evaluation_id=evaluation_id)
        .values_list("status")
        .annotate(n=Count("id"))
        .values_list("status", "n")
    )
    if counts.get(SystemStatus.PENDING) or counts.get(SystemStatus.RUNNING):
        status = EvalStatus.GENERATING
    elif counts.get(SystemStatus.FAILED):
        status = EvalStatus.FAILED
    else:
        status = EvalStatus.READY
    Evaluation.objects.filter(pk=evaluation_id).update(status=status)
    return status


def _generating_from(checkpoint: Checkpoint) -> str | None:
    """A checkpoint an evaluation (or a checkpoint sweep) still generates answers from
    must keep its files (webapp.jobs.storage)."""
    system = (
        System.objects.filter(
            checkpoint=checkpoint,
            status__in=[SystemStatus.PENDING, SystemStatus.RUNNING],
            evaluation__status=EvalStatus.GENERATING,
        )
        .select_related("evaluation")
        .first()
    )
    if system is None:
        return None
    return (
        f"Evaluation '{system.evaluation.name}' is generating answers from step "
        f"{checkpoint.step}; delete it once the evaluation is ready."
    )


storage.IN_USE.append(_generating_from)

# The generation's kind of work (webapp.dispatch): its task, on GAD_EVAL_QUEUE (a model's
# generation leases a GPU from the jobs' pool on a GPU node: worker/evaluation.py). An
# evaluation generating with no holder waits for a worker; once claimed it needs a live
# one, and resumes where its answers stop when handed on.
GENERATE = dispatch.register(
    dispatch.Kind(
        name="evaluations",
        model=Evaluation,
        task=GENERATE_TASK,
        queue=lambda evaluation: settings.GAD_EVAL_QUEUE,
        waiting=Q(status=EvalStatus.GENERATING),
        working=Q(status=EvalStatus.GENERATING) & ~Q(claimed_by=""),
    )
)
