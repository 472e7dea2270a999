"""The production web server under slow requests (docs/security.md, "Denial of
service"; docs/deployment.md): gunicorn started with the project's own config, one
process of two threads and a 2 s timeout, streams an archive to a client that reads it
over several seconds, and uploads waiting for their import leave a thread for others."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from tests.conftest import free_port
from tests.webapp.factories import make_checkpoint, make_job
from webapp.teams.actions import create_api_token, create_team

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture
def gunicorn(settings, tmp_path, transactional_db):
    db = settings.DATABASES["default"]
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_DEBUG": "1",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "GAD_DATA_DIR": str(settings.GAD_DATA_DIR),
        "GAD_WEB_BIND": f"127.0.0.1:{port}",
        "GAD_WEB_WORKERS": "1",
        "GAD_WEB_THREADS": "2",
        "GAD_WEB_TIMEOUT_S": "2",
        "GAD_UPLOAD_WAIT_S": "30",
    }
    log = open(tmp_path / "gunicorn.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "python:webapp.gunicorn",
            "webapp.wsgi:application",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/healthz", timeout=1)
            break
        except Exception:
            time.sleep(0.3)
    yield url
    proc.terminate()
    proc.wait(20)


def test_a_slow_client_gets_the_whole_archive_past_the_worker_timeout(gunicorn, settings, tmp_path):
    owner = get_user_model().objects.create_user("owner", password="x")
    team = create_team("Lab", "lab", owner=owner)
    job = make_job(team, status="succeeded")
    checkpoint = make_checkpoint(job, Path(settings.GAD_DATA_DIR) / "jobs" / str(job.pk) / "final")
    blob = os.urandom(24 * 1024 * 1024)  # random: no compression shortens the stream
    (Path(checkpoint.path) / "model.safetensors").write_bytes(blob)
    token = create_api_token(owner, "t")[1]
    request = urllib.request.Request(
        f"{gunicorn}/api/v1/checkpoints/{checkpoint.pk}/download",
        headers={"Authorization": f"Bearer {token}"},
    )
    started, got = time.monotonic(), io.BytesIO()
    with urllib.request.urlopen(request, timeout=30) as response:
        while chunk := response.read(256 * 1024):
            got.write(chunk)
            time.sleep(0.05)  # about 5 MB/s: several times the worker timeout in all
    assert time.monotonic() - started > 4  # the stream outlived the 2 s timeout
    got.seek(0)
    with tarfile.open(fileobj=got) as archive:
        member = next(m for m in archive.getmembers() if m.name.endswith("model.safetensors"))
        assert archive.extractfile(member).read() == blob


def test_uploads_waiting_for_their_import_leave_the_site_answering(gunicorn, settings):
    """The review's case: two uploads on a web process of two threads, no worker to
    import them, made /healthz wait 29 s. Only a few uploads may wait (one per person,
    a quarter of the threads in all): the second answers 202 at once, and /healthz
    answers while the first waits."""
    import threading

    owner = get_user_model().objects.create_user("owner", password="x")
    create_team("Lab", "lab", owner=owner)
    token = create_api_token(owner, "t")[1]

    def upload(name: str) -> int:
        boundary = "gadboundary"
        body = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="team"\r\n\r\nlab\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
            '{"prompt": "hello"}\n\r\n'
            f"--{boundary}--\r\n"
        ).encode()
        request = urllib.request.Request(
            f"{gunicorn}/api/v1/prompt-sets",
            data=body,
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": f"multipart/form-data; boundary={boundary}",
            },
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status

    statuses: list[int] = []
    first = threading.Thread(target=lambda: statuses.append(upload("a.jsonl")))
    first.start()
    time.sleep(1.0)  # the first upload is waiting for an import no worker will do
    started = time.monotonic()
    assert upload("b.jsonl") == 202  # no slot left to wait in: the status URL at once
    with urllib.request.urlopen(f"{gunicorn}/healthz", timeout=20) as response:
        assert response.status == 200
    assert time.monotonic() - started < 10  # neither waited for the first upload's 30 s
    first.join(60)
    assert statuses == [202]
