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


def test_curl_resumes_an_interrupted_file_download(gunicorn, settings, tmp_path):
    """A download tool as users run it: curl stops part way (--max-time against a slow
    rate), then ``curl -C -`` asks for the rest with a Range header and the file is whole."""
    owner = get_user_model().objects.create_user("owner", password="x")
    team = create_team("Lab", "lab", owner=owner)
    job = make_job(team, status="succeeded")
    checkpoint = make_checkpoint(job, Path(settings.GAD_DATA_DIR) / "jobs" / str(job.pk) / "final")
    blob = os.urandom(8 * 1024 * 1024)
    (Path(checkpoint.path) / "model.safetensors").write_bytes(blob)
    token = create_api_token(owner, "t")[1]
    url = f"{gunicorn}/api/v1/checkpoints/{checkpoint.pk}/files/model.safetensors"
    out = tmp_path / "model.safetensors"
    curl = ["curl", "-sS", "-H", f"Authorization: Bearer {token}", "-o", str(out)]
    cut = subprocess.run([*curl, "--limit-rate", "100K", "--max-time", "2", url])
    assert cut.returncode == 28  # curl's "operation timed out": stopped part way
    assert 0 < out.stat().st_size < len(blob)
    resumed = subprocess.run([*curl, "-C", "-", "-w", "%{http_code}", url], capture_output=True)
    assert resumed.returncode == 0 and resumed.stdout == b"206"
    assert out.read_bytes() == blob


def test_the_job_pages_download_snippet_fetches_the_checkpoint(
    gunicorn, settings, tmp_path, client
):
    """The snippet the job page shows, run by bash as a user would paste it, against the
    production server: every file arrives whole, in its sub-directory."""
    import html
    import re

    owner = get_user_model().objects.create_user("owner", password="x")
    team = create_team("Lab", "lab", owner=owner)
    job = make_job(team, status="succeeded")
    checkpoint = make_checkpoint(job, Path(settings.GAD_DATA_DIR) / "jobs" / str(job.pk) / "final")
    (Path(checkpoint.path) / "sub").mkdir()
    (Path(checkpoint.path) / "sub" / "tokenizer.json").write_text('{"v": 1}')
    client.force_login(owner)
    page = client.get(f"/teams/lab/jobs/{job.pk}/", HTTP_HOST=gunicorn.removeprefix("http://"))
    snippet = re.search(r'data-testid="use-checkpoint".*?<pre class="log">(.*?)</pre>',
                        page.content.decode(), re.S)  # fmt: skip
    assert snippet is not None
    download = html.unescape(snippet.group(1)).split("# serve it")[0]
    env = {**os.environ, "GAD_TOKEN": create_api_token(owner, "t")[1]}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", download], cwd=tmp_path, env=env,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    got = tmp_path / f"job{job.pk}-step-{checkpoint.step}"
    for name in ("config.json", "model.safetensors", "sub/tokenizer.json"):
        assert (got / name).read_bytes() == (Path(checkpoint.path) / name).read_bytes()


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
