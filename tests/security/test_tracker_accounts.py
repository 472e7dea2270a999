"""Tracker runs stay inside the team (docs/security.md, "Experiment trackers").

Every team used to log to one MLflow experiment and one W&B project, ``gad-studio``,
with the site's keys, which the trainer held. Now each team has its own project
(``gad-studio-<slug>``), its own accounts (keys encrypted and write-only), the trainer
writes offline with no key, and the worker copies the runs with the team's key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.urls import reverse

from webapp.teachers.models import TrackerAccount
from worker import trackers

KEY = "wandb-team-key-0123456789abcdefXYZ9"
TOKEN = "mlflow-team-token-abcdefQRS7"


@pytest.fixture
def page(login, personas, settings):
    # Production's list: nothing private (development's allows the loopback teacher).
    settings.GAD_ALLOWED_TEACHER_HOSTS = ["mlflow.example.com"]
    return login(personas.member), reverse("trackers", kwargs={"slug": personas.team.slug})


def test_a_team_stores_its_own_keys_encrypted_and_never_sees_them_again(page, personas):
    client, url = page
    response = client.post(
        url,
        {
            "wandb_entity": "acme-ml",
            "wandb_api_key": KEY,
            "mlflow_tracking_uri": "https://mlflow.example.com",
            "mlflow_token": TOKEN,
        },
    )
    assert response.status_code == 302
    account = TrackerAccount.objects.get(team=personas.team)
    assert (
        KEY not in account.wandb_api_key_encrypted and TOKEN not in account.mlflow_token_encrypted
    )
    shown = client.get(url).content.decode()
    assert KEY not in shown and TOKEN not in shown
    assert "••••XYZ9" in shown and "••••QRS7" in shown
    assert "gad-studio-acme" in shown  # the team's own project
    # Blank keeps the stored key; "remove" removes it.
    client.post(url, {"wandb_entity": "acme-ml", "mlflow_tracking_uri": ""})
    account.refresh_from_db()
    assert account.wandb_api_key_encrypted and account.mlflow_token_encrypted
    client.post(url, {"remove_wandb_key": "on"})
    account.refresh_from_db()
    assert not account.wandb_api_key_encrypted


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("mlflow_tracking_uri", "http://127.0.0.1:5000", "private address"),
        ("mlflow_tracking_uri", "file:///etc", "not allowed"),
        ("wandb_base_url", "http://169.254.169.254/latest", "private address"),
        ("wandb_entity", "acme ml; rm -rf", "W&amp;B team or user name"),
        ("wandb_api_key", "two words", "spaces"),
    ],
)
def test_a_hostile_member_cannot_point_the_worker_inside_the_site(page, field, value, message):
    client, url = page
    response = client.post(url, {field: value})
    assert response.status_code == 422 and message in response.content.decode()
    assert not TrackerAccount.objects.exists() or not getattr(
        TrackerAccount.objects.first(), field, ""
    )


def test_other_teams_and_annotators_cannot_reach_the_page(login, personas):
    url = reverse("trackers", kwargs={"slug": personas.team.slug})
    assert login(personas.outsider).get(url).status_code == 404
    assert login(personas.annotator).get(url).status_code == 403


def test_the_worker_copies_runs_with_the_teams_key_and_the_trainer_never_has_it(
    personas, tmp_path, monkeypatch
):
    from worker.pipeline import job_env
    from worker.runner import trainer_env

    monkeypatch.setenv("WANDB_API_KEY", "the-site-s-key")  # the site's: reaches neither
    monkeypatch.setenv("HF_TOKEN", "hf_site")
    TrackerAccount.objects.create(team=personas.team)  # no key yet
    run_dir = tmp_path / "run"
    (run_dir / "wandb" / "offline-run-20261207_120000-abc").mkdir(parents=True)
    assert trackers.sync(personas.team, run_dir) == {
        "wandb": "kept offline: the team has no W&B key (Teachers → Experiment trackers)"
    }
    from webapp.teachers.actions import save_trackers

    save_trackers(personas.team, wandb_api_key=KEY, wandb_entity="acme-ml")
    seen = {}

    def run(argv, secrets, ok):  # the one wrapper: W&B's servers cannot be reached here
        seen.update(argv=argv, env=trainer_env("") | secrets)
        return ok

    monkeypatch.setattr(trackers, "_run", run)
    done = trackers.sync(personas.team, run_dir)
    assert done == {"wandb": "synced to W&B project gad-studio-acme"}
    assert seen["argv"][1:4] == ["-m", "wandb", "sync"]
    assert seen["argv"][4:8] == ["--project", "gad-studio-acme", "--entity", "acme-ml"]
    assert seen["env"]["WANDB_API_KEY"] == KEY and "HF_TOKEN" not in seen["env"]
    assert json.loads((run_dir / "trackers-sync.json").read_text()) == done
    # The trainer: offline, the team's project, no key of anyone's.
    env = trainer_env("") | job_env(personas.job)
    assert env["WANDB_MODE"] == "offline" and env["WANDB_PROJECT"] == "gad-studio-acme"
    assert env["MLFLOW_EXPERIMENT_NAME"] == "gad-studio-acme"
    assert not {"WANDB_API_KEY", "HF_TOKEN"} & set(env) and KEY not in env.values()


def test_wandb_sync_takes_the_flags_the_worker_gives_it():
    """The contract of the real CLI (wandb 0.x, ``wandb/cli/cli.py`` ``sync``)."""
    pytest.importorskip("wandb")
    done = subprocess.run(
        [sys.executable, "-m", "wandb", "sync", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0 and "--project" in done.stdout and "--entity" in done.stdout


def test_an_offline_mlflow_run_is_copied_whole_and_once(tmp_path, monkeypatch):
    """`python -m trainer sync-mlflow`, as the worker runs it, from a sandboxed run's file
    store (written by the trainer's own MLflow sink) to another tracking store."""
    pytest.importorskip("mlflow")
    from trainer.trackers import MLflowSink

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "gad-studio-acme")
    out = tmp_path / "run"
    sink = MLflowSink(out, "job-7", {"lr": 0.001, "method": "gad"})
    for step in (1, 2, 3):
        sink.metrics({"step": step, "loss/d": 1.0 / step, "reward/mean": 0.1 * step})
    sink.close()
    target = tmp_path / "server"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": target.as_uri(),
        "MLFLOW_ALLOW_FILE_STORE": "true",
    }
    argv = [sys.executable, "-m", "trainer", "sync-mlflow", "--store", str(out / "mlruns")]
    argv += ["--experiment", "gad-studio-acme"]
    root = Path(__file__).resolve().parents[2]
    first = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=root)
    assert first.returncode == 0, first.stderr[-2000:]
    again = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=root)
    assert again.stdout == first.stdout  # the finished run is not copied twice

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=target.as_uri())
    experiment = client.get_experiment_by_name("gad-studio-acme")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "job-7" and run.info.status == "FINISHED"
    assert run.data.params == {"lr": "0.001", "method": "gad"}
    history = client.get_metric_history(run.info.run_id, "loss.d")
    assert [(m.step, round(m.value, 4)) for m in history] == [(1, 1.0), (2, 0.5), (3, 0.3333)]


def test_rotating_the_field_key_reencrypts_the_tracker_keys(personas, settings):
    import io

    from cryptography.fernet import Fernet
    from django.core.management import call_command

    from webapp.lib import crypto
    from webapp.teachers.actions import save_trackers

    save_trackers(personas.team, wandb_api_key=KEY, mlflow_token=TOKEN)
    old, new = settings.GAD_FIELD_KEY, Fernet.generate_key().decode()
    settings.GAD_FIELD_KEY, settings.GAD_FIELD_KEY_PREVIOUS = new, [old]
    out = io.StringIO()
    call_command("rotate_field_key", stdout=out)
    assert "re-encrypted 2 API key(s)" in out.getvalue()
    settings.GAD_FIELD_KEY_PREVIOUS = []  # the old key removed: both still decrypt
    account = TrackerAccount.objects.get(team=personas.team)
    assert crypto.decrypt(account.wandb_api_key_encrypted) == KEY
    assert crypto.decrypt(account.mlflow_token_encrypted) == TOKEN
