"""Hostile uploads against a real worker (docs/security.md, "Denial of service"): the
review's ~500-byte Parquet file that expanded to 4.9 GB in the importer, a JSON line of
millions of empty objects, and a small file that imports as far more than its size."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.worker.conftest import wait_for
from webapp.promptsets.models import PromptSet, Upload
from webapp.teams.actions import create_api_token, create_team

pytestmark = pytest.mark.slow


def parquet(values: list[str]) -> bytes:
    """A Parquet file whose text column is dictionary-encoded: one long value stored
    once, referenced by every row."""
    out = io.BytesIO()
    table = pa.table({"prompt": pa.array(values).dictionary_encode()})
    pq.write_table(table, out, compression="zstd", use_dictionary=True)
    return out.getvalue()


@pytest.fixture
def uploader(client, transactional_db, settings):
    owner = get_user_model().objects.create_user("owner", password="x")
    team = create_team("Lab", "lab", owner=owner)
    token = create_api_token(owner, "t")[1]
    settings.GAD_UPLOAD_WAIT_S = 0  # the test follows the import itself

    def upload(name: str, content: bytes):
        response = client.post(
            "/api/v1/prompt-sets",
            {"team": "lab", "file": SimpleUploadedFile(name, content)},
            HTTP_AUTHORIZATION=f"Bearer {token}",
        )
        assert response.status_code in (201, 202, 413, 422), response.content
        return Upload.objects.order_by("-pk").first()

    upload.team = team
    return upload


def peak_rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def ended(upload: Upload) -> bool:
    upload.refresh_from_db()
    return upload.ended


def test_a_parquet_dictionary_bomb_is_refused_and_the_worker_stays_small(workers, uploader):
    """2 MB stored once, on 1,024 rows: 2 GB once expanded (the review's file took the
    importer to 4.9 GB). It is refused from its dictionary, before anything expands."""
    bomb = parquet(["x" * (2 * 2**20)] * 1024)
    assert len(bomb) < 2000
    worker = workers.start("imports")
    upload = uploader("bomb.parquet", bomb)
    wait_for(lambda: ended(upload), 120, "the import", workers.logs)
    assert upload.status == "failed", upload.error
    assert "a text is longer than 1,000,000 characters" in " ".join(upload.problems)
    assert peak_rss_mb(worker.pid) < 1500, workers.logs()
    assert not PromptSet.objects.exists()


def test_a_json_line_of_millions_of_empty_objects_is_refused(workers, uploader):
    line = "[" + ",".join(["{}"] * 3_000_000) + "]\n"  # 9 MB: 558 MB once parsed
    worker = workers.start("imports")
    upload = uploader("nest.jsonl", line.encode())
    wait_for(lambda: ended(upload), 120, "the import", workers.logs)
    assert upload.status == "failed"
    assert "more than 100,000 JSON objects and lists on one line" in upload.problems[0]
    assert peak_rss_mb(worker.pid) < 1500, workers.logs()


def test_a_small_file_is_charged_what_it_imports_not_its_size(workers, uploader):
    """A few hundred bytes of Parquet hold 1,024 prompts of 20 KB: the prompt set is
    charged what its rows hold, and a team whose storage cannot take that is refused."""
    small = parquet(["y" * 20_000] * 1024)
    workers.start("imports")
    upload = uploader("small.parquet", small)
    wait_for(lambda: ended(upload), 180, "the import", workers.logs)
    assert upload.status == "done", upload.error
    prompt_set = upload.prompt_set
    assert prompt_set.num_prompts == 1024
    assert prompt_set.size_bytes >= 2 * 1024 * 20_000 > 1000 * len(small)
    # The team's quota now has room for less than that again: the same file is refused.
    quota = uploader.team.quota
    quota.storage_gb = 1
    quota.save()
    PromptSet.objects.filter(pk=prompt_set.pk).update(size_bytes=10**9 - 10**6)
    again = uploader("again.parquet", small)
    wait_for(lambda: ended(again), 180, "the second import", workers.logs)
    assert again.status == "failed" and "storage is full" in again.error
    assert PromptSet.objects.count() == 1


def test_a_json_record_list_runs_within_the_checkers_memory(workers, uploader):
    """An ordinary file imports as it did: the checker's memory limit is not in the way."""
    rows = "".join(json.dumps({"prompt": f"question {i} " * 50}) + "\n" for i in range(20_000))
    workers.start("imports")
    upload = uploader("many.jsonl", rows.encode())
    wait_for(lambda: ended(upload), 180, "the import", workers.logs)
    assert upload.status == "done", upload.error
    assert upload.prompt_set.num_prompts == 20_000
