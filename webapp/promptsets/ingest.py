"""Turn an uploaded prompt file into a PromptSet, or reject it saving nothing.

The web process streams the upload to a staging file under GAD_DATA_DIR and records an
``Upload`` (``stage``); a worker validates it with the trainer's own parser (one source
of truth for what a prompt file is), reporting progress, and inserts it in batches in
one transaction (``import_staged``). On any problem no prompt set remains, the problems
are kept with their line numbers for the page, and the staging file is deleted on every
path. Parsing never runs in a web request: a large or hostile file costs a worker, not
the site.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from trainer import dedup
from trainer.data import PromptRecord
from trainer.teacher import prompt_hash
from webapp import claims, dispatch
from webapp.promptsets.models import Prompt, PromptSet, Upload, UploadStatus
from webapp.promptsets.stats import LengthStats
from webapp.teams import actions as team_actions

log = logging.getLogger(__name__)

SUFFIXES = {".jsonl", ".json", ".csv", ".parquet"}
BATCH = 1000


@dataclass
class UploadRejected(Exception):
    """Why an upload was refused; ``status`` is the HTTP status to answer with."""

    message: str
    problems: list[str] = field(default_factory=list)
    status: int = 422

    def __str__(self) -> str:
        if not self.problems:
            return self.message
        return self.message + " " + "; ".join(self.problems)


def max_upload_bytes() -> int:
    return settings.GAD_MAX_UPLOAD_MB * 1024 * 1024


def too_large(name: str, size: int) -> UploadRejected:
    return UploadRejected(
        f"{name}: {size / 1024 / 1024:.1f} MB is over the {settings.GAD_MAX_UPLOAD_MB} MB "
        "upload limit (GAD_MAX_UPLOAD_MB); split the file or ask an administrator to raise it.",
        status=413,
    )


IMPORT_TASK = "gad.import_prompts"
IMPORT_QUEUE = "imports"  # CPU workers consume it, GPU workers do not


def _write(team, upload: UploadedFile) -> tuple[str, Path]:
    """Check the name, type and size; stream the file to a staging path under
    GAD_DATA_DIR. (filename, path); raises UploadRejected, leaving no file."""
    filename = Path(upload.name or "upload").name
    suffix = Path(filename).suffix.lower()
    if suffix not in SUFFIXES:
        raise UploadRejected(
            f"{filename}: unsupported file type {suffix or '(none)'}; upload .jsonl, .csv or .parquet."
        )
    if upload.size is not None and upload.size > max_upload_bytes():
        raise too_large(filename, upload.size)
    full = team_actions.storage_full(team, adding=upload.size or 0)
    if full:
        raise UploadRejected(f"{filename} was not imported: {full}", status=413)
    staging = Path(settings.GAD_DATA_DIR) / "uploads" / f"{uuid.uuid4().hex}{suffix}"
    staging.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(staging, "wb") as out:
            for chunk in upload.chunks():
                out.write(chunk)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    return filename, staging


def _check_and_insert(
    team,
    user,
    name: str,
    filename: str,
    staging: Path,
    on_progress=None,
    drop_duplicates: bool = False,
) -> PromptSet:
    """Check the staged file with the trainer's parser, in a child process held to
    ``GAD_IMPORT_MEMORY_MB``, and insert what it read; or raise UploadRejected naming the
    problems (nothing saved). The storage quota is charged what the rows hold, not the
    file's size."""
    normalized = staging.with_name(staging.name + ".records.jsonl")
    try:
        report = _check(filename, staging, normalized, on_progress)
        if report["problems"]:
            problems = list(report["problems"])
            if report["more_problems"]:
                problems.append(f"and {report['more_problems']} more problems")
            raise UploadRejected(f"{filename} was not imported, nothing was saved:", problems)
        full = team_actions.storage_full(team, adding=report["stored_bytes"])
        if full:
            raise UploadRejected(f"{filename} was not imported: {full}", status=413)
        return _insert(
            team, user, name or filename, filename, normalized, report["stored_bytes"],
            drop_duplicates,
        )  # fmt: skip
    finally:
        normalized.unlink(missing_ok=True)


def _limit_memory() -> None:
    """In the checker, before exec: its address space is bounded, so that a file that
    expands without bound (a compressed bomb the checks did not foresee) fails it, not
    the worker."""
    limit = settings.GAD_IMPORT_MEMORY_MB * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _check(filename: str, staging: Path, out: Path, on_progress=None) -> dict:
    """``python -m trainer check-prompts`` on the staged file: its report (records,
    problems, stored bytes) and its records, normalized, in ``out``."""
    argv = [sys.executable, "-m", "trainer", "check-prompts", "--prompts", str(staging)]
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "PYTHONPATH", "HOME")}
    proc = subprocess.Popen(
        [*argv, "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=env | {"PYTHONUNBUFFERED": "1"},
        preexec_fn=_limit_memory,
    )
    report = None
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            message = json.loads(line)
            if "records" in message and on_progress is not None:
                on_progress(message["records"])
            report = message.get("report", report)
        errors = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        code = proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if report is not None and code in (0, 2):
        return report
    if "MemoryError" in errors or code < 0:
        raise UploadRejected(
            f"{filename} was not imported, nothing was saved: reading it needs more than "
            f"the {settings.GAD_IMPORT_MEMORY_MB} MB an import may use (GAD_IMPORT_MEMORY_MB); "
            "split the file, or make its texts shorter."
        )
    log.error("checking upload %s failed (status %s): %s", filename, code, errors[-2000:])
    raise RuntimeError(f"the prompt file checker exited with status {code}")


def ingest(team, user, name: str, upload: UploadedFile, drop_duplicates: bool = False) -> PromptSet:
    """Import a file at once, in this process: for management commands (the demo) and
    scripts on the server. Pages and the API stage the file for a worker (``stage``)."""
    filename, staging = _write(team, upload)
    try:
        return _check_and_insert(
            team, user, name, filename, staging, drop_duplicates=drop_duplicates
        )
    finally:
        staging.unlink(missing_ok=True)


def stage(team, user, name: str, upload: UploadedFile, drop_duplicates: bool = False) -> Upload:
    """Store the upload and queue its import by a worker (after commit). Refuses at once
    (UploadRejected) what needs no parsing to refuse: the type, the size, the storage."""
    filename, staging = _write(team, upload)
    try:
        with transaction.atomic():
            row = Upload.objects.create(
                team=team,
                created_by=user,
                name=(name or filename)[:200],
                filename=filename[:255],
                staging_path=str(staging),
                size_bytes=staging.stat().st_size,
                drop_duplicates=drop_duplicates,
            )
            IMPORT.enqueue_on_commit(row.pk)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    return row


def claim_import(upload_id: int, worker: str, lease_s: float) -> Upload | None:
    """Take a waiting import, or one whose worker died while reading it (its claim
    lapsed), for ``lease_s`` seconds; None when another worker holds it or it ended."""
    waiting = Upload.objects.filter(status__in=[UploadStatus.QUEUED, UploadStatus.READING])
    if not claims.take(waiting, upload_id, worker, lease_s, status=UploadStatus.READING):
        return None
    return Upload.objects.select_related("team", "created_by").get(pk=upload_id)


def renew_import(upload_id: int, worker: str, lease_s: float) -> bool:
    return claims.renew(Upload.objects.all(), upload_id, worker, lease_s)


def import_staged(row: Upload, worker: str) -> str:
    """The worker's half, once it holds ``row`` (``claim_import``): check and import the
    staged upload, recording the progress and the outcome on its row; the staged file
    is removed whatever happens."""
    staging = Path(row.staging_path)

    def progress(records: int) -> None:
        claims.holding(Upload.objects.all(), row.pk, worker).update(records_read=records)

    outcome = {"status": UploadStatus.FAILED, "finished_at": timezone.now()}
    try:
        if not staging.exists():
            outcome["error"] = f"{row.filename}: the stored file is gone; upload it again."
        else:
            prompt_set = _check_and_insert(
                row.team, row.created_by, row.name, row.filename, staging, progress,
                row.drop_duplicates,
            )  # fmt: skip
            outcome |= {
                "status": UploadStatus.DONE,
                "prompt_set": prompt_set,
                "records_read": prompt_set.num_prompts,
            }
    except UploadRejected as rejected:
        outcome |= {"error": rejected.message, "problems": rejected.problems}
    except Exception:
        log.exception("upload %s: import failed", row.pk)
        outcome["error"] = f"{row.filename}: the import failed inside the worker; try again."
    finally:
        staging.unlink(missing_ok=True)
        claims.release(Upload.objects.all(), row.pk, worker, **outcome)
    return str(outcome["status"])


@transaction.atomic
def _insert(
    team,
    user,
    name: str,
    filename: str,
    records: Path,
    stored_bytes: int,
    drop_duplicates: bool = False,
) -> PromptSet:
    """Insert the checked records (``records``: normalized JSON lines) in one transaction,
    each with its normalised hash and its group of exact and near duplicates
    (``trainer.dedup``); with ``drop_duplicates``, a prompt whose normalised text repeats
    an earlier one is left out."""
    prompt_set = PromptSet.objects.create(
        team=team, name=name, created_by=user, source_name=filename, size_bytes=stored_bytes
    )
    prompt_lengths, answer_lengths = LengthStats(), LengthStats()
    seen: set[str] = set()
    seen_normalised: set[str] = set()
    texts: list[str] = []
    duplicates = with_teacher = count = dropped = 0
    batch: list[Prompt] = []
    for record in _read_records(records):
        key = prompt_hash(record.messages)
        duplicates += key in seen
        seen.add(key)
        text = "\n\n".join(f"{m['role']}: {m['content']}" for m in record.messages)
        normalised = dedup.norm_hash(text)
        if drop_duplicates and normalised in seen_normalised:
            dropped += 1
            continue
        seen_normalised.add(normalised)
        index = count
        texts.append(text)
        prompt_lengths.add(sum(len(m["content"]) for m in record.messages))
        if record.teacher_response is not None:
            with_teacher += 1
            answer_lengths.add(len(record.teacher_response))
        batch.append(
            Prompt(
                prompt_set=prompt_set,
                index=index,
                line=record.line,
                external_id=record.id or "",
                messages=record.messages,
                text=text,
                prompt_hash=key,
                norm_hash=normalised,
                dup_group=index,
                teacher_response=record.teacher_response,
            )
        )
        count += 1
        if len(batch) >= BATCH:
            Prompt.objects.bulk_create(batch)
            batch.clear()
    Prompt.objects.bulk_create(batch)
    for group in dedup.clusters(texts):
        if len(group) > 1:  # exact or near duplicates of its first prompt
            prompt_set.prompts.filter(index__in=group[1:]).update(dup_group=group[0])
    prompt_set.num_prompts = count
    prompt_set.num_dropped = dropped
    prompt_set.num_with_teacher = with_teacher
    prompt_set.num_duplicates = duplicates
    prompt_set.stats = {
        "prompt_chars": prompt_lengths.summary(),
        "answer_chars": answer_lengths.summary(),
    }
    prompt_set.save()
    return prompt_set


def _read_records(path: Path) -> Iterator[PromptRecord]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield PromptRecord(**json.loads(line))


DIED = (
    "{filename}: the worker importing it stopped before it finished (it may have run out "
    "of memory on this file); nothing was saved. Check the file (python -m trainer "
    "check-prompts --prompts FILE --out checked.jsonl), then upload it again."
)


def fail_lost_imports(lapsed: QuerySet[Upload]) -> list[int]:
    """Imports whose worker died while reading (their claim lapsed): failed with the
    reason, their staged file removed. Not read again: the file may be what killed the
    worker, and would kill the next one."""
    failed = []
    for row in lapsed:
        ended = {"status": UploadStatus.FAILED, "finished_at": timezone.now()}
        if lapsed.filter(pk=row.pk).update(
            claimed_by="", claimed_until=None, error=DIED.format(filename=row.filename), **ended
        ):
            Path(row.staging_path).unlink(missing_ok=True)
            failed.append(row.pk)
    return failed


# An import's kind of work (webapp.dispatch): waiting uploads are queued for a CPU
# worker (the imports queue, which GPU workers do not read); one being read needs a live
# worker, and fails (fail_lost_imports) when its worker dies.
IMPORT = dispatch.register(
    dispatch.Kind(
        name="imports",
        model=Upload,
        task=IMPORT_TASK,
        queue=IMPORT_QUEUE,
        waiting=Q(status=UploadStatus.QUEUED),
        working=Q(status=UploadStatus.READING),
        on_lapsed=fail_lost_imports,
    )
)
