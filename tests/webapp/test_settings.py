"""Settings come from the environment; production refuses to start half-configured."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

from webapp import env

ROOT = Path(__file__).resolve().parents[2]

PRODUCTION = {
    "DJANGO_SECRET_KEY": "k" * 20 + "Q9x!-vT2" * 6,
    "GAD_FIELD_KEY": Fernet.generate_key().decode(),
    "DJANGO_ALLOWED_HOSTS": "gad.example.com",
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/gad",
    "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
    "GAD_METRICS_TOKEN": "m" * 32,
}


def manage(*args: str, **environ: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "GAD_"))}
    clean.pop("DATABASE_URL", None)
    clean.pop("CELERY_BROKER_URL", None)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, **environ},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "missing", ["DJANGO_SECRET_KEY", "GAD_FIELD_KEY", "DATABASE_URL", "GAD_METRICS_TOKEN"]
)
def test_production_refuses_to_start_without_a_required_variable(missing):
    environ = {k: v for k, v in PRODUCTION.items() if k != missing}
    result = manage("check", **environ)
    assert result.returncode != 0
    assert missing in result.stderr
    assert "Traceback" not in result.stderr


def test_full_production_environment_passes_check_deploy_without_warnings():
    result = manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


@pytest.mark.parametrize(
    "name,value",
    [
        ("DJANGO_DEBUG", "maybe"),
        ("GAD_FIELD_KEY", "not-a-fernet-key"),
        ("GAD_WORKER_GPUS", "0,one"),
        ("GAD_MAX_UPLOAD_MB", "lots"),
        ("DATABASE_URL", "nosuchdb://x"),
        ("GAD_CACHE_URL", "memcached://cache:11211"),
        ("GAD_LOG_FORMAT", "xml"),
    ],
)
def test_malformed_value_is_an_error_naming_the_variable(name, value):
    result = manage("check", **{**PRODUCTION, name: value})
    assert result.returncode != 0
    assert name in result.stderr


def test_secret_can_come_from_a_file(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text(PRODUCTION["DJANGO_SECRET_KEY"] + "\n")
    environ = {k: v for k, v in PRODUCTION.items() if k != "DJANGO_SECRET_KEY"}
    result = manage("check", DJANGO_SECRET_KEY_FILE=str(secret), **environ)
    assert result.returncode == 0, result.stderr


def test_development_needs_no_configuration():
    result = manage("check", DJANGO_DEBUG="1")
    assert result.returncode == 0, result.stderr


def test_typed_readers(monkeypatch):
    monkeypatch.setenv("X_BOOL", "yes")
    monkeypatch.setenv("X_LIST", " a, b ,,c ")
    monkeypatch.setenv("X_GPUS", "0,1,1")
    assert env.boolean("X_BOOL", False) is True
    assert env.boolean("X_UNSET", True) is True
    assert env.str_list("X_LIST", []) == ["a", "b", "c"]
    with pytest.raises(ImproperlyConfigured, match="X_GPUS"):
        env.int_list("X_GPUS", [])
    monkeypatch.setenv("X_INT", "0")
    with pytest.raises(ImproperlyConfigured, match="X_INT=0 must be at least 1"):
        env.integer("X_INT", 5, minimum=1)


def test_json_logs_are_one_object_a_line():
    """GAD_LOG_FORMAT=json: what the web (and the workers, with Celery's root-logger
    hijack off) log is one JSON object a line, exceptions included."""
    import json

    code = (
        "import logging; log = logging.getLogger('gad.test'); log.warning('hello %s', 'json')\n"
        "try:\n    1 / 0\nexcept ZeroDivisionError:\n    log.exception('it broke')"
    )
    result = manage("shell", "-c", code, **PRODUCTION, GAD_LOG_FORMAT="json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    hello = next(x for x in lines if x["message"] == "hello json")
    assert hello["level"] == "WARNING" and hello["logger"] == "gad.test" and "time" in hello
    broke = next(x for x in lines if x["message"] == "it broke")
    assert "ZeroDivisionError" in broke["exception"]
    from django.conf import settings

    assert settings.CELERY_WORKER_HIJACK_ROOT_LOGGER  # plain logs: Celery's own format
