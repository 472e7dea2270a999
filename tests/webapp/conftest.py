"""Personas per team (healthchecks' alice/bob/charlie pattern)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest


@dataclass
class Personas:
    team: object
    other_team: object
    owner: object
    member: object
    annotator: object
    outsider: object
    prompt_set: object = None
    job: object = None
    checkpoint: object = None
    password: str = "correct horse battery staple"


@pytest.fixture(autouse=True)
def _data_dir(settings, tmp_path):
    settings.GAD_DATA_DIR = tmp_path / "data"


@pytest.fixture(autouse=True)
def gpu_node(db):
    """A live GPU worker node with 8 GPUs, as on a site that has one (launches of GPU
    jobs are refused when no live node could run them)."""
    return make_gpu_node()


def make_gpu_node(gpus: int = 8, name: str = "gpu-worker@node-a"):
    from django.utils import timezone

    from webapp.nodes.models import WorkerNode

    now = timezone.now()
    return WorkerNode.objects.create(
        name=name,
        node=name.split("@")[-1],
        queues=["gpu"],
        gpus=list(range(gpus)),
        started_at=now,
        last_seen=now,
    )


@pytest.fixture(autouse=True)
def _fresh_cache():
    """The cache counts failed API tokens per address: each test starts from zero."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture
def personas(db, tmp_path) -> Personas:
    """Team "acme": alice owner, bob member, carol annotator; dave runs team "other".

    Acme owns a prompt set, a queued job on it, and a checkpoint of that job.
    """
    from django.contrib.auth import get_user_model

    from tests.webapp.factories import make_checkpoint, make_job, make_prompt_set
    from webapp.teams.actions import create_team, set_membership
    from webapp.teams.models import Role

    User = get_user_model()
    password = Personas.password

    def user(name: str):
        return User.objects.create_user(name, f"{name}@example.com", password)

    alice, bob, carol, dave = user("alice"), user("bob"), user("carol"), user("dave")
    team = create_team("Acme", "acme", owner=alice)
    set_membership(team, bob, Role.MEMBER)
    set_membership(team, carol, Role.ANNOTATOR)
    other = create_team("Other", "other", owner=dave)
    prompt_set = make_prompt_set(team)
    job = make_job(team, prompt_set)
    checkpoint = make_checkpoint(job, tmp_path / "ckpt" / "student")
    return Personas(team, other, alice, bob, carol, dave, prompt_set, job, checkpoint)


@pytest.fixture
def login(client):
    def as_user(user):
        client.force_login(user)
        return client

    return as_user


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # PBKDF2's deliberate slowness costs ~0.6 s per user; tests need none of it.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def celery_worker(transactional_db):
    """A real Celery worker (in this process, solo pool) on the configured broker.

    Needs ``transactional_db``: the worker thread has its own database connection and
    must see committed rows; ``transaction.on_commit`` hooks then fire for real.
    """
    from celery.contrib.testing.worker import start_worker

    from webapp.celery import app

    with start_worker(
        app, pool="solo", perform_ping_check=False, shutdown_timeout=10, queues="celery,cpu,imports"
    ) as worker:
        yield worker


@pytest.fixture
def importer(celery_worker):
    """A worker that imports uploaded prompt files (they are never parsed in a request)."""
    return celery_worker


def follow_upload(client, response, timeout: float = 60.0):
    """After an upload's POST: wait for the worker's import, then load the page the
    person is sent to (the prompt set when imported, the problems when not)."""
    import time

    from webapp.promptsets.models import Upload

    if response.status_code != 302 or "/uploads/" not in response["Location"]:
        return response
    pk = int(response["Location"].rstrip("/").rsplit("/", 1)[1])
    deadline = time.monotonic() + timeout
    while not Upload.objects.get(pk=pk).ended:
        assert time.monotonic() < deadline, "the upload was not imported in time"
        time.sleep(0.1)
    return client.get(response["Location"])
