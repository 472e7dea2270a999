"""A big checkpoint download survives the production web server's worker timeout
(docs/security.md, "Denial of service"; docs/deployment.md): gunicorn started with the
project's own config and a 2 s timeout streams an archive to a client that reads it
over several seconds."""

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
        "GAD_WEB_TIMEOUT_S": "2",
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
