"""A job's offline tracker runs, copied to its team's own accounts.

The trainer writes W&B and MLflow runs offline inside its sandbox (no network, no key:
``worker.pipeline.job_env``). After it ends, the worker, which has both, copies them
with the team's credentials (``TrackerAccount``, encrypted like teacher keys), never the
site's: W&B with ``wandb sync``, MLflow with ``python -m trainer sync-mlflow``. Each
runs as a child process whose environment holds only that team's key, so two teams'
jobs on one threaded worker never share one. A failed sync never fails the job: its
runs stay in the run directory, and the job page says what happened
(``OUT/trackers-sync.json``).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

from webapp.lib import crypto
from webapp.teachers import ssrf
from webapp.teachers.models import TrackerAccount
from worker.runner import trainer_env

log = logging.getLogger(__name__)

SYNC_TIMEOUT_S = 1800
RESULT_FILE = "trackers-sync.json"


def sync(team, run_dir: Path) -> dict[str, str]:
    """Copy the run directory's offline runs to the team's accounts; what happened, per
    tracker ("" for nothing to do), also written to ``OUT/trackers-sync.json``."""
    account = TrackerAccount.objects.filter(team=team).first()
    done: dict[str, str] = {}
    offline = sorted((run_dir / "wandb").glob("offline-run-*"))
    if offline:
        done["wandb"] = _refused_or(_wandb, account, offline)
    if (run_dir / "mlruns").is_dir():
        done["mlflow"] = _refused_or(_mlflow, account, run_dir / "mlruns")
    if done:
        (run_dir / RESULT_FILE).write_text(json.dumps(done, indent=1))
    return done


def _refused_or(copy, account, what) -> str:
    try:
        return copy(account, what)
    except (ssrf.UnsafeURL, crypto.KeyUnreadable) as refused:
        return f"not synced: {refused}"


def _wandb(account: TrackerAccount | None, runs: list[Path]) -> str:
    if account is None or not account.wandb_api_key_encrypted:
        return "kept offline: the team has no W&B key (Teachers → Experiment trackers)"
    env = {"WANDB_API_KEY": crypto.decrypt(account.wandb_api_key_encrypted, "the trackers page")}
    if account.wandb_base_url:
        env["WANDB_BASE_URL"] = ssrf.check_base_url(account.wandb_base_url, "wandb_base_url")
    argv = [sys.executable, "-m", "wandb", "sync", "--project", account.project]
    if account.wandb_entity:
        argv += ["--entity", account.wandb_entity]
    return _run([*argv, *map(str, runs)], env, f"synced to W&B project {account.project}")


def _mlflow(account: TrackerAccount | None, store: Path) -> str:
    if account is None or not account.mlflow_tracking_uri:
        return "kept in the run directory (mlruns): the team has no MLflow server"
    env = {
        "MLFLOW_TRACKING_URI": ssrf.check_base_url(
            account.mlflow_tracking_uri, "mlflow_tracking_uri"
        )
    }
    if account.mlflow_token_encrypted:
        env["MLFLOW_TRACKING_TOKEN"] = crypto.decrypt(
            account.mlflow_token_encrypted, "the trackers page"
        )
    argv = [sys.executable, "-m", "trainer", "sync-mlflow", "--store", str(store)]
    argv += ["--experiment", account.project]
    return _run(argv, env, f"synced to MLflow experiment {account.project}")


def _run(argv: list[str], secrets: dict[str, str], ok: str) -> str:
    """The sync command with the team's secrets in its environment (and none of the
    site's); its failure, masked, as the result."""
    try:
        done = subprocess.run(
            argv,
            env=trainer_env("") | secrets,
            capture_output=True,
            text=True,
            timeout=SYNC_TIMEOUT_S,
            cwd=Path(argv[-1]).parent if Path(argv[-1]).exists() else None,
        )
    except (OSError, subprocess.TimeoutExpired) as failed:
        return f"sync failed: {type(failed).__name__}"
    if done.returncode == 0:
        return ok
    last = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
    message = last[0]
    for secret in secrets.values():
        message = message.replace(secret, "••••")
    log.warning("tracker sync failed (%s): %s", argv[2:4], message)
    return f"sync failed: {message[:300]}"
