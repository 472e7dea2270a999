"""Prompt file imports: a staged upload checked and imported by a worker, which holds it
by a claim while it reads (renewed from a thread of its own, so that a file that takes
long to check is not handed to a second worker; a worker that dies lets it lapse and
the sweep queues the import again)."""

from __future__ import annotations

from functools import partial

from webapp.celery import app
from webapp.claims import worker_name
from webapp.promptsets import ingest
from worker.claims import Renewal

LEASE_S = 60.0


@app.task(name=ingest.IMPORT_TASK, acks_late=True, soft_time_limit=3600, time_limit=3700)
def import_prompts(upload_id: int) -> str:
    name = worker_name()
    row = ingest.claim_import(upload_id, name, LEASE_S)
    if row is None:
        return "taken or ended already"
    lease = Renewal(
        partial(ingest.renew_import, upload_id, name, LEASE_S), LEASE_S / 4, f"import-{upload_id}"
    )
    lease.start()
    try:
        return ingest.import_staged(row, name)
    finally:
        lease.stop()
