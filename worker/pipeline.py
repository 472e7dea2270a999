"""One job, start to end: collecting → training → evaluating → succeeded.

Each stage is a function; ``run`` reads top to bottom. State changes go through
``webapp.jobs.actions`` (which refuse them once this worker has lost its claim); a
heartbeat thread (``worker.heartbeat``) keeps the claim alive, renews GPU leases,
counts GPU time and notices a cancel, independently of how long a teacher call or a
training step takes. A job on several nodes runs as a gang (``worker.gang``).
"""

from __future__ import annotations

import json
import logging
import traceback
from pathlib import Path

import yaml
from django.conf import settings

from trainer.batch import BatchProgress, collect_batch
from trainer.config import MAX_RESPONSE_TOKENS
from trainer.metrics import truncate_after
from trainer.teacher import collect
from webapp.claims import node_name, worker_name
from webapp.jobs import actions, references
from webapp.jobs.models import Job, Status
from webapp.jobs.monitor import BATCH_STAGE
from webapp.lib import health
from webapp.nodes import actions as node_actions
from webapp.nodes import presence
from webapp.promptsets.models import Prompt, Split, TeacherAnswer
from webapp.teams.models import SpendPurpose
from worker import hub_cache, trackers
from worker.gang import ONE_NODE, Gang, GangLost, GangRefused, lease_gpus
from worker.heartbeat import Cancelled, Heartbeat, Paused
from worker.ingest import RunIngest
from worker.leases import NoGpu
from worker.paid import Charge, paid_call
from worker.runner import (
    TrainerProcess,
    generate_argv,
    log_tail,
    read_answers,
    trainer_argv,
    trainer_env,
    write_prompts,
)
from worker.sandbox import Sandbox, SandboxUnavailable
from worker.watch import TrainingWatch
from worker.workspace import Workspace, workspace

log = logging.getLogger(__name__)

POLL_S = 2.0


class JobFailed(Exception):
    """Ends the job ``failed`` with this message (shown to members on the job page)."""


class GuardTripped(Exception):
    """The health guard fired: the trainer was stopped (after saving) on its decision."""

    def __init__(self, decision: health.Decision):
        super().__init__(decision.message)
        self.decision = decision


# ----------------------------------------------------------------------------- the job


def run(job_id: int) -> str:
    """Run the job if this worker can claim it; return what happened, for the task log."""
    job = Job.objects.filter(pk=job_id).first()
    if job is None or job.status not in actions.ACTIVE_STATUSES:
        return "ended already"
    # This node counts even before its worker's first report reached the database.
    here_suffices = job.nodes == 1 and len(settings.GAD_WORKER_GPUS) >= job.gpus
    no_node = None if here_suffices else presence.gpu_problem(job.gpus, job.nodes)
    if no_node and job.nodes > 1:
        # The launch found the nodes; some worker is away (restarting, not up yet): wait.
        raise NoGpu(f"job {job.pk}: {no_node.removeprefix('gpus: ')}")
    if no_node:
        # No live node has that many GPUs: waiting would be forever.
        claimed = actions.claim(job_id, worker_name())
        if claimed is not None:
            actions.finish(
                claimed, Status.FAILED, error="This job" + no_node.removeprefix("gpus: this job")
            )
        return "no node has the GPUs"
    held = lease_gpus(job)
    job = actions.claim(job_id, worker_name())
    if job is None:
        node_actions.release(held)
        return "claimed by another worker, or cancelled"
    beat = Heartbeat(job, gpus=len(held))
    beat.start()
    try:
        return _stages(job, held, beat)
    finally:
        beat.stop()
        node_actions.release(held)


def _stages(job: Job, held: list, beat: Heartbeat) -> str:
    """The job's stages, and how it ends; returns what happened."""
    space = workspace(job)
    devices = [lease.gpu_index for lease in held if lease.node == node_name()]
    unexpected = None
    try:
        collect_answers(job, beat)
        export_prompts(job, space)
        train(job, space, devices, beat, Gang.of(held))
        evaluate(job, space, devices, beat)
        status, error, outcome = Status.SUCCEEDED, "", "succeeded"
    except Cancelled:
        status, error, outcome = Status.CANCELLED, "", "cancelled"
    except Paused as paused:
        actions.pause(job, str(paused))
        return "paused"
    except GangLost as lost:
        log.warning("job %s: %s; back to the queue", job.pk, lost)
        if actions.requeue(job, str(lost), settings.GAD_JOB_MAX_ATTEMPTS):
            return "requeued: a node of its gang was lost"
        return "failed: its gang was lost too many times"
    except GuardTripped as tripped:
        if tripped.decision.action == "pause":
            actions.guard_pause(job, tripped.decision.message)
            return "paused by the health guard"
        status, error, outcome = Status.FAILED, str(tripped), "stopped by the health guard"
    except (JobFailed, GangRefused) as failed:
        status, error, outcome = Status.FAILED, str(failed), "failed"
    except Exception as exc:
        status, error, outcome = Status.FAILED, traceback.format_exc(), "crashed"
        unexpected = exc
    actions.finish(job, status, error=error, log_tail=log_tail(space.log))
    if unexpected is not None:
        raise unexpected
    return outcome


# ----------------------------------------------------------------------------- collecting


def collect_answers(job: Job, beat: Heartbeat) -> None:
    """Ask the teacher for the training prompts that have no answer yet."""
    missing = Prompt.objects.filter(
        prompt_set=job.prompt_set, split=Split.TRAIN, teacher_response__isnull=True
    )
    if job.prompt_set is None:
        raise JobFailed("The job's prompt set was deleted; run the job again with another one.")
    if not missing.exists():
        return
    if job.teacher is None:
        raise JobFailed("Some training prompts have no teacher answer and the job has no teacher.")
    actions.advance(job, Status.COLLECTING, stage="collecting")
    messages = list(missing.values_list("messages", flat=True).iterator())

    def progress(summary, orm) -> None:
        beat.check()
        beat.progress = {"step": summary.cached + summary.answered, "total_steps": summary.total}

    if job.teacher_batch:
        collect_batch_answers(job, beat, messages)
    paid = paid_call(
        job.teacher,
        job.team,
        lambda spec, store, budget, on_progress: collect(
            messages, spec, store, on_progress=on_progress, budget=budget
        ),
        job=job,
        on_progress=progress,
        charge=Charge(
            SpendPurpose.COLLECTION,
            f"teacher answers of job {job.name!r}",
            user=job.created_by,
            job=job,
        ),
    )
    if paid.kind == "budget":
        raise Paused("Paused: the team's teacher tokens for this month are spent.")
    if paid.kind == "refused":
        raise JobFailed(paid.error)
    if paid.kind == "failed":
        raise JobFailed(f"Collecting teacher answers stopped: {paid.failure}")
    summary = paid.result
    assert summary is not None  # ran to the end
    log.info("job %s: %s", job.pk, summary.line())
    if summary.stopped == "budget":
        raise Paused(f"Paused: the team's teacher token budget ran out ({summary.line()}).")
    if summary.failed:
        raise JobFailed(
            f"{summary.failed} prompts got no answer after retries ({summary.line()}); "
            "run the job again to ask only for those."
        )


def collect_batch_answers(job: Job, beat: Heartbeat, messages: list) -> None:
    """The job's missing answers through the Batch API first (trainer.batch). The batch's
    id is stored on the job the moment it is submitted, so a worker that restarts polls
    the same batch; the page shows "teacher batch: 1,204 of 5,000 done". What the batch
    does not answer (failed or expired lines) the online collection after it asks."""

    def progress(report, orm) -> None:
        beat.check()
        if isinstance(report, BatchProgress):
            beat.progress = {
                "step": report.done,
                "total_steps": report.total,
                "stage": BATCH_STAGE,
            }

    assert job.teacher is not None
    paid = paid_call(
        job.teacher,
        job.team,
        lambda spec, store, budget, on_progress: collect_batch(
            messages,
            spec,
            store,
            batch_id=job.teacher_batch_id,
            on_submit=lambda batch_id: store.orm.call(actions.set_teacher_batch, job, batch_id),
            on_progress=on_progress,
            poll_s=settings.GAD_BATCH_POLL_S,
        ),
        job=job,
        on_progress=progress,
        charge=Charge(
            SpendPurpose.COLLECTION,
            f"teacher answers of job {job.name!r} (batch)",
            user=job.created_by,
            job=job,
        ),
        batch=True,
    )
    if paid.kind == "failed":
        # No Batch API there (or it refused the batch): the online collection asks all.
        log.warning("job %s: the teacher batch failed (%s); asking online", job.pk, paid.failure)
    if paid.result is not None:
        log.info("job %s: batch: %s", job.pk, paid.result.line())
    actions.set_teacher_batch(job, "")


# ----------------------------------------------------------------------------- training


def export_prompts(job: Job, space: Workspace) -> int:
    """Write the training prompts with their teacher answers; unusable ones are left out."""
    fingerprint = job.teacher.fingerprint if job.teacher else None
    rows = Prompt.objects.filter(prompt_set=job.prompt_set, split=Split.TRAIN).order_by("index")
    written = 0
    tmp = space.prompts.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        for chunk in _chunks(rows.values_list("pk", "messages", "teacher_response", "prompt_hash")):
            collected = _collected(fingerprint, [r[3] for r in chunk if r[2] is None])
            for pk, messages, teacher, key in chunk:
                answer = teacher if teacher is not None else collected.get(key)
                if answer is None:
                    continue  # flagged (empty, cut, refused): never trained on silently
                out.write(
                    json.dumps({"id": str(pk), "messages": messages, "teacher_response": answer})
                    + "\n"
                )
                written += 1
    tmp.replace(space.prompts)
    if written == 0:
        raise JobFailed(
            "No training prompt has a usable teacher answer (all were empty, cut or refused)."
        )
    return written


def _chunks(rows, size: int = 2000):
    chunk = []
    for row in rows.iterator(chunk_size=size):
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _collected(fingerprint: str | None, hashes: list[str]) -> dict[str, str]:
    if not fingerprint or not hashes:
        return {}
    return dict(
        TeacherAnswer.objects.filter(
            fingerprint=fingerprint, prompt_hash__in=hashes, flag="ok"
        ).values_list("prompt_hash", "response")
    )


def write_config(job: Job, space: Workspace) -> None:
    config = {**job.config, "train_file": str(space.prompts), "output_dir": str(space.run_dir)}
    config["resume"] = "auto"
    config["student"] = student_to_load(job)
    space.config.write_text(yaml.safe_dump(config, sort_keys=False))


def student_to_load(job: Job) -> str:
    """What the launch resolved the student to, checked again right before the trainer
    loads it (the security model: the stored reference may have been changed in the
    database since, a checkpoint deleted, a registered model moved). A resumed attempt
    loads what the first one did, or the job fails saying why."""
    try:
        now = references.resolve(job.student, job.team)
    except references.InvalidReference as refused:
        raise JobFailed(str(refused)) from None
    if now != job.student_path:
        raise JobFailed(
            f"The student {job.student!r} now names {now}, not {job.student_path or 'what'} "
            "it named at launch; launch the job again to train from it."
        )
    return now


def job_sandbox(job: Job, space: Workspace, network: bool) -> Sandbox:
    """The job's trainer sees its work directory (read-write) and its student (read-only;
    a hub student is downloaded into the model cache first)."""
    try:
        student = hub_cache.readable(job.student_path)
    except hub_cache.NotFetched as failed:
        raise JobFailed(str(failed)) from None
    return Sandbox(writable=(space.root,), readable=student, network=network)


def job_env(job: Job) -> dict[str, str]:
    """What the trainer's environment says of the job: the Hub offline (the worker
    downloaded the student), and the trackers offline, in the team's own project (the
    worker copies the runs to the team's accounts afterwards: worker.trackers)."""
    project = f"gad-studio-{job.team.slug}"
    env = {"WANDB_PROJECT": project, "MLFLOW_EXPERIMENT_NAME": project}
    return env | {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "MLFLOW_TRACKING_URI": ""}


def _sync_trackers(job: Job, space: Workspace) -> None:
    """The run's offline W&B and MLflow runs, to the team's accounts; never fails the job."""
    try:
        trackers.sync(job.team, space.run_dir)
    except Exception:
        log.exception("job %s: syncing its tracker runs failed", job.pk)


def start_trainer(
    argv, cwd: Path, log_path: Path, env, box: Sandbox, launcher=False
) -> TrainerProcess:
    """The trainer process, in its sandbox; a node that cannot make one fails the job."""
    try:
        return TrainerProcess(argv, cwd, log_path, env, launcher=launcher, sandbox=box)
    except SandboxUnavailable as missing:
        raise JobFailed(f"This node cannot run the trainer: {missing}") from None


def resume_step(run_dir: Path) -> int:
    """The step the trainer resumes from (``resume: auto``): its latest checkpoint that
    retention kept resumable."""
    from trainer.checkpoint import latest_checkpoint

    latest = latest_checkpoint(run_dir)
    return int(latest.name.removeprefix("step-")) if latest is not None else 0


def train(
    job: Job, space: Workspace, devices: list[int], beat: Heartbeat, gang: Gang = ONE_NODE
) -> None:
    write_config(job, space)
    start = resume_step(space.run_dir)
    # Records past the checkpoint this attempt resumes from are replayed by the trainer:
    # drop them from the files and the database first, so nothing counts twice.
    truncate_after(space.run_dir, start)
    actions.forget_after(job, start)
    # Collecting reported teacher answers through step / total_steps: training starts
    # with neither (the trainer reports its own), in stage "starting", also for a job
    # re-queued while it was collecting.
    fields: dict = {"stage": job.stage, "step": start}
    if job.stage in ("", "collecting"):
        fields |= {"stage": "starting", "total_steps": None}
    actions.advance(job, Status.TRAINING, **fields)
    beat.progress = {}
    network = bool(gang.members)
    env = trainer_env(",".join(map(str, devices)), **job_env(job))
    box = job_sandbox(job, space, network)
    rendezvous = gang.start(job, devices) if gang.members else None
    argv = trainer_argv(space.config, len(devices), rendezvous)
    launcher = len(devices) > 1 or rendezvous is not None
    proc = start_trainer(argv, space.root, space.log, env, box, launcher=launcher)
    watch = TrainingWatch(job, proc, RunIngest(job, space.run_dir), beat, gang)
    try:
        with beat.gpu_time():
            ended = proc.watch(watch.tick, POLL_S)
    finally:
        watch.ingest.poll()
        _sync_trackers(job, space)
    watch.report()
    if beat.progress:  # the last of it, which the next beat would have carried
        actions.beat(job, **beat.progress)
    if watch.tripped is not None:
        raise GuardTripped(watch.tripped)
    gang.check_after(job, ended, watch.gang_lost, beat.stopping)
    beat.check()  # cancelled, or the GPU-hours ran out: the trainer stopped after saving
    if ended.bad_input is not None:
        raise JobFailed(ended.bad_input)
    if not ended.ok and gang.members:
        # The collectives failed with every member alive (a network fault, a rank's
        # crash): retried like a lost gang, bounded by GAD_JOB_MAX_ATTEMPTS.
        raise GangLost(f"the trainer exited with status {ended.code} on a {gang.nodes}-node gang")
    if not ended.ok:
        raise JobFailed(ended.failure("The trainer"))


# ----------------------------------------------------------------------------- evaluating


def evaluate(job: Job, space: Workspace, devices: list[int], beat: Heartbeat) -> None:
    """Answer the held-out prompts with the final checkpoint (greedy), if there are some,
    on the job's GPUs."""
    test = Prompt.objects.filter(prompt_set=job.prompt_set, split=Split.TEST).order_by("index")
    if not test.exists():
        return
    actions.advance(job, Status.EVALUATING, stage="evaluating")
    prompts, answers = space.root / "test.jsonl", space.root / "test-answers.jsonl"
    write_prompts(prompts, test.values_list("pk", "messages").iterator())
    max_tokens = job.config.get("max_response_tokens", MAX_RESPONSE_TOKENS)
    argv = generate_argv(space.run_dir / "final", prompts, answers, max_tokens)
    # On the job's own GPUs (none for a CPU job), never on one another job holds.
    env = trainer_env(",".join(map(str, devices)), **job_env(job))
    proc = start_trainer(argv, space.root, space.log, env, job_sandbox(job, space, network=False))
    with beat.gpu_time():
        ended = proc.watch(beat.check, POLL_S)
    if not ended.ok:
        raise JobFailed(f"Generating answers on the test prompts failed:\n{ended.tail}")
    actions.store_test_answers(job, read_answers(answers))
