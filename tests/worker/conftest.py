"""Real workers for pipeline tests: `celery worker` subprocesses on Redis and PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import clear_broker

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny_student(tmp_path_factory) -> Path:
    from trainer.tiny import build_tiny

    return build_tiny(tmp_path_factory.mktemp("student") / "tiny", layers=2, hidden=32, heads=4)


@pytest.fixture(autouse=True)
def _data_dir(settings, tmp_path):
    settings.GAD_DATA_DIR = tmp_path / "data"


@pytest.fixture
def purge_queues(settings):
    clear_broker(settings)
    yield
    clear_broker(settings)


class Workers:
    """Start `celery worker` processes that see this test's database and data dir."""

    def __init__(self, settings, tmp_path: Path):
        db = settings.DATABASES["default"]
        self.env = {
            **os.environ,
            "DJANGO_DEBUG": "1",
            "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "GAD_DATA_DIR": str(settings.GAD_DATA_DIR),
            "GAD_HEARTBEAT_STALE_S": "10",
            "GAD_GPU_RETRY_S": "2",
            "HF_HUB_OFFLINE": "1",
        }
        self.settings = settings
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen] = []

    def start(
        self, queues: str = "cpu", gpus: str = "", concurrency: int = 1, name: str = "w", **env
    ):
        # Read when the worker starts: a test registers its models after making the pool.
        self.env["GAD_MODEL_ROOTS"] = ",".join(map(str, self.settings.GAD_MODEL_ROOTS))
        log = open(self.tmp_path / f"worker-{name}-{len(self.procs)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "webapp",
                "worker",
                "-Q",
                queues,
                "--pool",
                "threads" if concurrency > 1 else "solo",
                "--concurrency",
                str(concurrency),
                "--loglevel",
                "INFO",
                "-n",
                f"{name}{len(self.procs)}@%h",
                "--without-mingle",
                "--without-gossip",
                "--without-heartbeat",
            ],
            cwd=ROOT,
            env={**self.env, "GAD_WORKER_GPUS": gpus, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        return proc

    def logs(self) -> str:
        return "\n".join(
            p.read_text(errors="replace")[-4000:] for p in self.tmp_path.glob("worker-*.log")
        )

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture
def workers(settings, tmp_path, transactional_db, purge_queues):
    pool = Workers(settings, tmp_path)
    yield pool
    pool.stop()


def wait_for(predicate, timeout: float, what: str, logs=lambda: ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{logs()}")


def held_by(job, proc) -> bool:
    """The job's claim is held by (a thread of) the worker process ``proc``
    (webapp.claims.worker_name: node:pid:thread)."""
    return job.claimed_by.split(":")[1:2] == [str(proc.pid)]
