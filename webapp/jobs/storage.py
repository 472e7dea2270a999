"""Deleting checkpoints and jobs, files included, so a team at its storage quota can free
space (issue 27; the quota message points here).

- A checkpoint may go unless it is its job's final one, a running job may still resume
  from it (its last ``keep_last`` checkpoints hold the resume state), or work in progress
  reads it (an evaluation generating from it: apps register such checks in ``IN_USE``).
- A job may go once it has ended; its whole work dir goes with it.
- Retention: a team may set a default (``Team.retain_checkpoints``) that its jobs take at
  launch, unless their config sets ``keep_last`` or ``keep_weights``. After each new
  checkpoint the worker drops the job's older ones past the last N, never its final or
  marked ones (a KEEP file: the KL reference, or one a user chose), never its last
  ``keep_last`` (the resume state), never one in use.

Files follow rows, whoever deletes them: ``post_delete`` handlers remove a checkpoint's
step directory and a job's work dir once the transaction commits (the API, the pages,
Django's admin and cascades from a team alike). They remove only directories the site laid
out itself under ``GAD_DATA_DIR/jobs/<job id>/``, never a path a row merely names.
``storage_used`` sums the rows, so it drops at once.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver

from trainer import config as trainer_config
from webapp.jobs.actions import event
from webapp.jobs.archive import job_dir
from webapp.jobs.models import ACTIVE_STATUSES, KEEP_FILE, Checkpoint, Job

STEP_DIR = re.compile(r"step-\d+")

# Other apps' checks that a checkpoint is in use: each returns why, or None.
IN_USE: list[Callable[[Checkpoint], str | None]] = []


def checkpoint_problem(checkpoint: Checkpoint) -> str | None:
    """Why ``checkpoint`` cannot be deleted now (None: it can)."""
    job = checkpoint.job
    if job.final_checkpoint_id == checkpoint.pk:
        return (
            f"Step {checkpoint.step} is the job's final model; mark another checkpoint "
            "final first, or delete the whole job."
        )
    if job.status in ACTIVE_STATUSES:
        keep = _keep_last(job)
        recent = job.checkpoints.order_by("-step").values_list("pk", flat=True)[:keep]
        if checkpoint.pk in set(recent):
            return (
                f"The job is {job.get_status_display().lower()} and may resume from step "
                f"{checkpoint.step} (one of its last {keep}); delete it once the job ends."
            )
    return _in_use(checkpoint)


def _in_use(checkpoint: Checkpoint) -> str | None:
    """What other apps say still reads the checkpoint (IN_USE), or None."""
    return next((reason for check in IN_USE if (reason := check(checkpoint))), None)


def _keep_last(job: Job) -> int:
    """The checkpoints the job may resume from (its config's keep_last)."""
    return int(job.config.get("keep_last") or trainer_config.TrainConfig().keep_last)


def job_problem(job: Job) -> str | None:
    """Why ``job`` cannot be deleted now (None: it can)."""
    if job.status in ACTIVE_STATUSES:
        return (
            f"The job is {job.get_status_display().lower()}; cancel it first, and delete it "
            "once it has stopped."
        )
    return next(filter(None, map(_in_use, job.checkpoints.all())), None)


class StillNeeded(Exception):
    """Deleting it now would break something (the message says what)."""


def delete_checkpoint(checkpoint: Checkpoint) -> None:
    with transaction.atomic():
        locked = Job.objects.select_for_update().get(pk=checkpoint.job_id)  # vs. mark final
        checkpoint.job = locked
        reason = checkpoint_problem(checkpoint)
        if reason:
            raise StillNeeded(reason)
        checkpoint.delete()
        event(locked.pk, "checkpoint.deleted", f"Deleted step {checkpoint.step} and its files.",
              step=checkpoint.step)  # fmt: skip


def delete_job(job: Job) -> None:
    with transaction.atomic():
        locked = Job.objects.select_for_update().get(pk=job.pk)
        reason = job_problem(locked)
        if reason:
            raise StillNeeded(reason)
        locked.delete()


def apply_retention(job: Job) -> list[Checkpoint]:
    """Delete the checkpoints ``job.retain_checkpoints`` does not keep; returns them."""
    if job.retain_checkpoints is None:
        return []
    keep = max(job.retain_checkpoints, _keep_last(job))
    older = list(job.checkpoints.order_by("-step"))[keep:]
    dropped = []
    for checkpoint in older:
        if (Path(checkpoint.path).parent / KEEP_FILE).exists():  # marked
            continue
        try:
            delete_checkpoint(checkpoint)
        except StillNeeded:
            continue  # the final one, or in use: kept, and looked at again next time
        dropped.append(checkpoint)
    return dropped


# ----------------------------------------------------------------------------- files


def _ours(path: Path, job_id: int) -> bool:
    """Whether ``path`` lies in the job's own work dir on the data volume."""
    root = (Path(settings.GAD_DATA_DIR) / "jobs" / str(job_id)).resolve()
    try:
        return path.resolve().is_relative_to(root) and path.resolve() != root
    except OSError:
        return False


def _remove_later(path: Path) -> None:
    transaction.on_commit(lambda: shutil.rmtree(path, ignore_errors=True))


@receiver(post_delete, sender=Checkpoint, dispatch_uid="checkpoint-files")
def _checkpoint_deleted(sender, instance: Checkpoint, **kwargs) -> None:
    step_dir = Path(instance.path).parent  # OUT/checkpoints/step-N/student
    if STEP_DIR.fullmatch(step_dir.name) and _ours(step_dir, instance.job_id):
        _remove_later(step_dir)


@receiver(post_delete, sender=Job, dispatch_uid="job-files")
def _job_deleted(sender, instance: Job, **kwargs) -> None:
    directory = job_dir(instance)
    if directory.resolve().parent == (Path(settings.GAD_DATA_DIR) / "jobs").resolve():
        _remove_later(directory)
