"""Hardening (docs/security.md): the trainer child process gets none of the site's
secrets, and a killed run's half-written checkpoint is removed when the next starts."""

from __future__ import annotations

import subprocess
import sys

from trainer import checkpoint as ckpt_io
from worker.runner import TrainerProcess, trainer_env

SECRETS = {
    "GAD_FIELD_KEY": "fernet-secret",
    "DATABASE_URL": "postgres://u:pw@db/gad",
    "DJANGO_SECRET_KEY": "django-secret",
    "CELERY_BROKER_URL": "redis://:pw@redis:6379/0",
    "GAD_CACHE_URL": "redis://:pw@redis:6379/1",
}


def test_the_trainer_process_sees_no_site_secret(monkeypatch, tmp_path):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HF_HOME", "/models/hf")
    env = trainer_env("0,1")
    assert not set(SECRETS) & set(env)
    assert env["HF_HOME"] == "/models/hf" and env["CUDA_VISIBLE_DEVICES"] == "0,1"
    # The very process the worker starts: it prints its environment.
    code = "import json, os; print(json.dumps(sorted(os.environ)))"
    proc = TrainerProcess([sys.executable, "-c", code], tmp_path, tmp_path / "log", env)
    assert proc.watch(lambda: None, 0.05).ok
    seen = (tmp_path / "log").read_text()
    assert "PATH" in seen and not any(f'"{name}"' in seen for name in SECRETS)
    assert subprocess.run([sys.executable, "-c", "0"], env=env).returncode == 0


def test_a_partial_checkpoint_left_by_a_killed_run_is_removed(tmp_path):
    root = ckpt_io.checkpoints_dir(tmp_path)
    (root / ".tmp-step-40-1234" / "student").mkdir(parents=True)
    (root / ".tmp-step-40-1234" / "student" / "model.safetensors").write_bytes(b"x" * 1024)
    (root / "step-20").mkdir()
    removed = ckpt_io.remove_partial(tmp_path)
    assert [p.name for p in removed] == [".tmp-step-40-1234"]
    assert sorted(p.name for p in root.iterdir()) == ["step-20"]
