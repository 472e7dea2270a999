"""Suite-wide hooks and fixtures: a real OpenAI-compatible teacher (`transformers serve`
on a tiny model built here). Web fixtures live in tests/webapp/conftest.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_report_header(config):
    try:
        from django.conf import settings

        settings.DATABASES  # noqa: B018 - raises when Django is not configured
    except Exception:
        return []

    db = settings.DATABASES["default"]
    broker = settings.CELERY_BROKER_URL
    return [
        f"database: {db['ENGINE'].rsplit('.', 1)[-1]} {db.get('HOST') or db['NAME']}",
        f"broker: {broker}",
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory) -> Path:
    from trainer.tiny import build_tiny

    out = tmp_path_factory.mktemp("teacher") / "tiny"
    build_tiny(out, None, 2, 64, 4, 512, 0)
    return out


@pytest.fixture(scope="session")
def teacher_server(tiny_teacher_dir, tmp_path_factory):
    """Base URL (…/v1) and model name of a running `transformers serve`."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    serve = Path(sys.executable).with_name("transformers")
    with open(log, "w") as log_file:
        proc = subprocess.Popen(
            [
                str(serve),
                "serve",
                str(tiny_teacher_dir),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--device",
                "cpu",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"transformers serve did not start:\n{log.read_text()}"
                    ) from None
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1", str(tiny_teacher_dir)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def prompts_file(tmp_path) -> Path:
    path = tmp_path / "prompts.jsonl"
    lines = [
        f'{{"id": "p{i}", "prompt": "Question number {i}: say something."}}' for i in range(12)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def fake_hub():
    from tests.fakehub import FakeHub

    hub = FakeHub()
    yield hub
    hub.close()


@pytest.fixture(autouse=True)
def _the_hub_is_the_fake_one(fake_hub, settings, monkeypatch):
    """No test reaches the real Hugging Face Hub: the site's lookups go to a loopback
    one (tests/fakehub.py), with huggingface_hub's offline switch (the test
    environment's HF_HUB_OFFLINE=1) off for them."""
    from huggingface_hub import constants

    fake_hub.models.clear()
    fake_hub.asked.clear()
    settings.GAD_HUB_ENDPOINT = fake_hub.url
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    yield


@pytest.fixture(autouse=True)
def _free_web_slots():
    """A test's client leaves streamed downloads unread (a server would close them):
    their slots are given back after each test."""
    yield
    from webapp.lib.http import DOWNLOADS, UPLOAD_WAITS

    DOWNLOADS.clear()
    UPLOAD_WAITS.clear()


def pytest_collection_modifyitems(config, items):
    # Playwright's sync API keeps an event loop running in this thread for the rest of
    # the session, after which asyncio.run() (the teacher client) refuses to start:
    # browser tests go last.
    items.sort(key=lambda item: "tests/e2e/" in item.nodeid)


@pytest.fixture(scope="session")
def tiny_student_dir(tmp_path_factory) -> Path:
    from trainer.tiny import build_tiny

    return build_tiny(tmp_path_factory.mktemp("student") / "tiny", layers=2, hidden=32, heads=4)


# The broker's state a test must not inherit: the queues, and the messages workers took
# and never acknowledged (a SIGKILLed worker's job stays there for the visibility
# timeout, a week). The database's ids start again in every run, so a leftover message
# of an earlier run names a job of this one, and the sweep's lost-message check
# (webapp.dispatch) would take it for that job's message.
BROKER_KEYS = ("cpu", "gpu", "celery", "unacked", "unacked_index")


def clear_broker(settings) -> None:
    import redis

    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    # gad:gang:*: a gang's failed members by job id and attempt, which a later test's
    # fresh database gives out again
    broker.delete(*BROKER_KEYS, *broker.keys("node.*"), *broker.keys("gad:gang:*"))


@pytest.fixture
def site_of(settings, tmp_path, transactional_db):
    from tests.processes import Site

    clear_broker(settings)
    settings.GAD_DATA_DIR = tmp_path / "data"
    sites = []

    def make(source: str):
        sites.append(Site(source, settings, tmp_path))
        return sites[-1]

    yield make
    for site in sites:
        site.stop()
    clear_broker(settings)


@pytest.fixture
def redis_url(settings) -> str:
    """The broker's Redis (where the site keeps shared rate limits too)."""
    url = settings.CELERY_BROKER_URL
    if not url.startswith("redis://"):
        pytest.skip("needs CELERY_BROKER_URL=redis://... (make test sets it)")
    return url
