"""Uploads are parsed by a worker, never in the web request (docs/security.md, "Denial
of service"): the request stores the file and answers at once; the worker reports its
progress and the outcome; the staged file is removed on every path."""

from __future__ import annotations

import json
from pathlib import Path

from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from webapp.promptsets.models import PromptSet, Upload
from worker.imports import import_prompts


def _post(client, name: str, content: bytes):
    url = reverse("prompt-sets", kwargs={"slug": "acme"})
    return client.post(url, {"name": "", "file": SimpleUploadedFile(name, content)})


def _staged(settings) -> list[Path]:
    root = Path(settings.GAD_DATA_DIR) / "uploads"
    return list(root.iterdir()) if root.exists() else []


def test_the_request_stores_the_file_and_the_worker_parses_it(login, personas, settings):
    client = login(personas.member)
    lines = b"".join(json.dumps({"prompt": f"q{i}"}).encode() + b"\n" for i in range(12_000))
    response = _post(client, "big.jsonl", lines + b"{broken\n")
    upload = Upload.objects.get()
    # No worker yet: the request parsed nothing, the file waits for one.
    assert response.status_code == 302 and upload.status == "queued" and upload.records_read == 0
    assert len(_staged(settings)) == 1
    page = client.get(response["Location"])
    assert page.status_code == 200 and "Waiting for a worker" in page.content.decode()
    # The worker's task: progress as it reads, then the problem with its line number.
    assert import_prompts(upload.pk) == "failed"
    upload.refresh_from_db()
    assert upload.records_read >= 10_000  # reported while reading (every 5,000 records)
    assert upload.problems == [
        "line 12001: not JSON (Expecting property name enclosed in double quotes)"
    ]
    assert not _staged(settings) and not PromptSet.objects.filter(name="big.jsonl").exists()
    status = client.get(
        reverse("prompt-set-upload-status", kwargs={"slug": "acme", "pk": upload.pk})
    )
    assert status.json()["problems"] == upload.problems and status.json()["ended"]
    page = client.get(response["Location"])
    assert page.status_code == 422 and "line 12001" in page.content.decode()


def test_a_good_file_becomes_a_prompt_set_and_its_staged_copy_is_removed(login, personas, settings):
    client = login(personas.member)
    response = _post(client, "good.jsonl", b'{"prompt": "hello"}\n')
    upload = Upload.objects.get()
    assert import_prompts(upload.pk) == "done"
    assert import_prompts(upload.pk) == "taken or ended already"  # a redelivery does nothing
    upload.refresh_from_db()
    assert upload.prompt_set.num_prompts == 1 and not _staged(settings)
    assert client.get(response["Location"])["Location"] == reverse(
        "prompt-set", kwargs={"slug": "acme", "pk": upload.prompt_set_id}
    )


def test_a_refused_type_and_a_lost_staged_file_leave_nothing(login, personas, settings):
    client = login(personas.member)
    assert _post(client, "notes.txt", b"hello").status_code == 422
    assert not Upload.objects.exists() and not _staged(settings)
    _post(client, "good.jsonl", b'{"prompt": "hello"}\n')
    upload = Upload.objects.get()
    Path(upload.staging_path).unlink()
    assert import_prompts(upload.pk) == "failed"
    upload.refresh_from_db()
    assert "the stored file is gone" in upload.error


def test_an_import_whose_worker_died_while_reading_fails_and_its_file_is_removed(
    login, personas, settings, monkeypatch, django_capture_on_commit_callbacks
):
    """A worker killed mid-read (out of memory on a hostile file, say) leaves the upload
    'reading' with its staged file: once its claim lapses the sweep ends it failed, with
    the reason, and removes the file (reading it again could kill the next worker). A
    redelivery while the claim is live does nothing."""
    from datetime import timedelta

    from django.utils import timezone

    from webapp import dispatch
    from webapp.promptsets.ingest import IMPORT_TASK, claim_import
    from worker.jobs import sweep

    client = login(personas.member)
    _post(client, "good.jsonl", b'{"prompt": "hello"}\n')
    upload = Upload.objects.get()
    assert claim_import(upload.pk, "node-a:1:1", 60) is not None  # the worker that dies
    assert import_prompts(upload.pk) == "taken or ended already"
    sent = []
    monkeypatch.setattr(dispatch, "send", lambda task, args, queue=None: sent.append(task) or True)
    sweep()
    assert Upload.objects.get().status == "reading" and _staged(settings)  # alive
    Upload.objects.update(claimed_until=timezone.now() - timedelta(seconds=1))
    with django_capture_on_commit_callbacks(execute=True):
        assert sweep()["imports"] == 1
    upload.refresh_from_db()
    assert upload.status == "failed" and "stopped before it finished" in upload.error
    assert not _staged(settings) and IMPORT_TASK not in sent
    assert import_prompts(upload.pk) == "taken or ended already"


def test_an_upload_waits_for_its_import_only_while_a_slot_is_free(client, personas, settings):
    """The API's upload holds a web thread while it waits: past the person's slots it
    answers 202 with the status URL at once instead of waiting."""
    import time

    from webapp.lib.http import UPLOAD_WAITS
    from webapp.teams.actions import create_api_token

    settings.GAD_UPLOAD_WAIT_S = 60  # no worker imports it: a waiting request would wait
    token = create_api_token(personas.member, "t")[1]
    give_back = UPLOAD_WAITS.take(personas.member.pk)  # another of her uploads waits
    try:
        started = time.monotonic()
        upload = SimpleUploadedFile("good.jsonl", b'{"prompt": "hello"}\n')
        response = client.post(
            "/api/v1/prompt-sets",
            {"team": "acme", "file": upload},
            HTTP_AUTHORIZATION=f"Bearer {token}",
        )
        assert response.status_code == 202 and response.json()["status"] == "queued"
        assert time.monotonic() - started < 30
    finally:
        give_back()
