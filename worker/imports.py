"""Prompt file imports: a staged upload checked and imported by a worker."""

from __future__ import annotations

from webapp.celery import app
from webapp.promptsets.ingest import IMPORT_TASK, import_staged


@app.task(name=IMPORT_TASK, acks_late=True, soft_time_limit=3600, time_limit=3700)
def import_prompts(upload_id: int) -> str:
    return import_staged(upload_id)
