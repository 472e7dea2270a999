"""Turn an uploaded prompt file into a PromptSet, or reject it saving nothing.

The upload is streamed to a file under GAD_DATA_DIR, validated by the trainer's own
parser (one source of truth for what a prompt file is), then inserted in batches in
one transaction. On any problem the file is deleted and no row remains.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction

from trainer.data import iter_records, validate_prompt_file
from trainer.teacher import prompt_hash
from webapp.promptsets.models import Prompt, PromptSet
from webapp.promptsets.stats import LengthStats
from webapp.teams import actions as team_actions

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


def ingest(team, user, name: str, upload: UploadedFile) -> PromptSet:
    filename = Path(upload.name or "upload").name
    suffix = Path(filename).suffix.lower()
    if suffix not in SUFFIXES:
        raise UploadRejected(
            f"{filename}: unsupported file type {suffix or '(none)'}; upload .jsonl, .csv or .parquet."
        )
    if upload.size is not None and upload.size > max_upload_bytes():
        raise too_large(filename, upload.size)
    staging = Path(settings.GAD_DATA_DIR) / "uploads" / f"{uuid.uuid4().hex}{suffix}"
    staging.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(staging, "wb") as out:
            for chunk in upload.chunks():
                out.write(chunk)
        report = validate_prompt_file(staging)
        if not report.ok:
            problems = [str(p) for p in report.problems]
            if report.more_problems:
                problems.append(f"and {report.more_problems} more problems")
            raise UploadRejected(f"{filename} was not imported, nothing was saved:", problems)
        full = team_actions.storage_full(team, adding=staging.stat().st_size)
        if full:
            raise UploadRejected(f"{filename} was not imported: {full}", status=413)
        return _insert(team, user, name or filename, filename, staging)
    finally:
        staging.unlink(missing_ok=True)


@transaction.atomic
def _insert(team, user, name: str, filename: str, path: Path) -> PromptSet:
    prompt_set = PromptSet.objects.create(
        team=team, name=name, created_by=user, source_name=filename, size_bytes=path.stat().st_size
    )
    prompt_lengths, answer_lengths = LengthStats(), LengthStats()
    seen: set[str] = set()
    duplicates = with_teacher = count = 0
    batch: list[Prompt] = []
    for index, record in enumerate(iter_records(path)):
        key = prompt_hash(record.messages)
        duplicates += key in seen
        seen.add(key)
        text = "\n\n".join(f"{m['role']}: {m['content']}" for m in record.messages)
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
                teacher_response=record.teacher_response,
            )
        )
        count += 1
        if len(batch) >= BATCH:
            Prompt.objects.bulk_create(batch)
            batch.clear()
    Prompt.objects.bulk_create(batch)
    prompt_set.num_prompts = count
    prompt_set.num_with_teacher = with_teacher
    prompt_set.num_duplicates = duplicates
    prompt_set.stats = {
        "prompt_chars": prompt_lengths.summary(),
        "answer_chars": answer_lengths.summary(),
    }
    prompt_set.save()
    return prompt_set
