"""The site's process commands, read from where operators and users read them:
``docker/compose.yaml`` (its services), ``scripts/demo.sh`` (``make demo``) and
``docs/deployment.md`` (the block under "Processes"). Tests start these commands, never
a variant of their own; only the executables (this virtual environment's) and the data
directory (the test's) are mapped.

Roles: ``migrate``, ``web``, ``worker`` (consumes ``cpu``), ``gpu-worker`` (also ``gpu``),
``beat``.
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker" / "compose.yaml"
DEMO = ROOT / "scripts" / "demo.sh"
DOCS = ROOT / "docs" / "deployment.md"
COMPOSE_DATA_DIR = "/data"  # GAD_DATA_DIR inside the containers


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
