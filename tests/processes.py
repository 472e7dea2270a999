"""The site's process commands, read from where operators and users read them:
``docker/compose.yaml`` (its services), ``scripts/demo.sh`` (``make demo``) and
``docs/deployment.md`` (the block under "Processes"). Tests start these commands, never
a variant of their own; only the executables (this virtual environment's) and the data
directory (the test's) are mapped.

Roles: ``migrate``, ``web``, ``worker`` (consumes ``cpu``), ``gpu-worker`` (also ``gpu``),
``beat``.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker" / "compose.yaml"
DEMO = ROOT / "scripts" / "demo.sh"
DOCS = ROOT / "docs" / "deployment.md"
COMPOSE_DATA_DIR = "/data"  # GAD_DATA_DIR inside the containers
# The tests' sweep period and heartbeat staleness (production: 30 s and 45 s).
SWEEP_S = 4
STALE_S = 15


def queues_of(argv: list[str]) -> set[str]:
    return set(argv[argv.index("-Q") + 1].split(",")) if "-Q" in argv else set()


def role_of(argv: list[str]) -> str | None:
    text = " ".join(argv)
    if "manage.py migrate" in text:
        return "migrate"
    if Path(argv[0]).name == "gunicorn" or "manage.py runserver" in text:
        return "web"
    if "-A webapp worker" in text:
        return "gpu-worker" if "gpu" in queues_of(argv) else "worker"
    if "-A webapp beat" in text:
        return "beat"
    return None


def _by_role(commands: list[list[str]], where: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for argv in commands:
        role = role_of(argv)
        if role is not None:
            assert role not in found, f"{where}: two {role} commands: {found[role]}, {argv}"
            found[role] = argv
    return found


def from_compose() -> dict[str, list[str]]:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    names = {
        "migrate": "migrate",
        "web": "web",
        "worker": "worker-cpu",
        "gpu-worker": "worker-gpu",
        "beat": "beat",
    }
    found = {}
    for role, service in names.items():
        command = services[service]["command"]
        found[role] = shlex.split(command) if isinstance(command, str) else list(command)
    return found


def _shell_lines(text: str) -> list[str]:
    """Lines of shell, continuation backslashes joined."""
    return re.sub(r"\\\n\s*", " ", text).splitlines()


def _command(line: str) -> list[str]:
    """The argv of a shell line, without its redirections and trailing ``&``."""
    argv = []
    for token in shlex.split(line, comments=True):
        if token.startswith((">", "2>", "&")) or token in ("|", "&&", ";"):
            break
        argv.append(token)
    return argv


def from_demo() -> dict[str, list[str]]:
    lines = [line.strip() for line in _shell_lines(DEMO.read_text())]
    starts = ("$PY manage.py", ".venv/bin/celery", ".venv/bin/gunicorn")
    return _by_role([_command(line) for line in lines if line.startswith(starts)], str(DEMO))


def from_docs() -> dict[str, list[str]]:
    text = DOCS.read_text()
    start = text.index("**Processes.**")
    block = re.search(r"```sh\n(.*?)```", text[start:], re.S)
    assert block, f"{DOCS}: no ```sh block after **Processes.**"
    lines = [line.strip() for line in _shell_lines(block.group(1))]
    commands = [_command(line) for line in lines if line and not line.startswith("#")]
    return _by_role(commands, str(DOCS))


SOURCES: dict[str, Callable[[], dict[str, list[str]]]] = {
    "compose": from_compose,
    "demo": from_demo,
    "docs": from_docs,
}


def runnable(argv: list[str], variables: dict[str, str], data_dir: Path) -> list[str]:
    """``argv`` as this machine runs it: this environment's executables, the shell
    variables the scripts define, and the container's data directory mapped."""

    def expand(arg: str) -> str:
        arg = re.sub(r"\$\{?(\w+)\}?", lambda m: variables.get(m.group(1), m.group(0)), arg)
        if arg == COMPOSE_DATA_DIR or arg.startswith(COMPOSE_DATA_DIR + "/"):
            arg = str(data_dir) + arg[len(COMPOSE_DATA_DIR) :]
        return arg

    out = [expand(a) for a in argv]
    name = Path(out[0]).name
    if name.startswith("python"):
        out[0] = sys.executable
    elif name in ("celery", "gunicorn"):
        out[0] = str(Path(sys.executable).with_name(name))
    return out


class Site:
    """The processes of one source (compose, demo or docs), as their commands say."""

    def __init__(self, source: str, settings, tmp_path: Path):
        self.commands = SOURCES[source]()
        self.commands.setdefault("worker", self.commands.get("gpu-worker", []))
        self.tmp_path = tmp_path
        from tests.conftest import free_port

        self.port = free_port()
        db = settings.DATABASES["default"]
        data_dir = Path(settings.GAD_DATA_DIR)
        data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir
        self.env = {
            **os.environ,
            "DJANGO_DEBUG": "1",
            "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "GAD_DATA_DIR": str(data_dir),
            "GAD_MODEL_ROOTS": ",".join(map(str, settings.GAD_MODEL_ROOTS)),
            "GAD_WEB_BIND": f"127.0.0.1:{self.port}",  # webapp.gunicorn reads it
            "GAD_SWEEP_S": str(SWEEP_S),
            "GAD_HEARTBEAT_STALE_S": str(STALE_S),
            "GAD_WORKER_GPUS": "",
            "HF_HUB_OFFLINE": "1",
        }
        self.env.pop("GAD_CACHE_URL", None)
        # What scripts/demo.sh defines before its commands.
        self.variables = {
            "PY": sys.executable,
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "GAD_DATA_DIR": str(data_dir),
        }
        self.procs: dict[str, subprocess.Popen] = {}

    def argv(self, role: str) -> list[str]:
        return runnable(self.commands[role], self.variables, self.data_dir)

    def run(self, role: str) -> None:
        done = subprocess.run(
            self.argv(role), cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, f"{self.argv(role)}:\n{done.stdout}\n{done.stderr}"

    def start(self, role: str, name: str | None = None) -> subprocess.Popen:
        name = name or role
        log = open(self.tmp_path / f"{name}.log", "wb")  # noqa: SIM115 (the process writes it)
        # A session of its own: killing it kills what a container's death would.
        self.procs[name] = proc = subprocess.Popen(
            self.argv(role), cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        return proc

    def log(self, name: str) -> str:
        path = self.tmp_path / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n{self.log(n)[-3000:]}" for n in self.procs)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
