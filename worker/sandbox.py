"""The trainer's sandbox: what a training, generation or evaluation process may see.

A job's trainer runs code that is not the site's: a model's ``trust_remote_code``, a
pickle in a checkpoint, whatever a member put in a config the libraries interpret. So it
runs under bubblewrap (Debian's ``bubblewrap``; the same tool Flatpak uses), in
namespaces of its own (docs/security.md, "The trainer's sandbox"):

- **mount**: the system read-only; ``/tmp`` and ``$HOME`` empty (a site's tokens live in
  dotfiles there); the data directory and every model root hidden, then only what the
  process needs bound back: its own work directory read-write, its model and other
  inputs read-only; Hugging Face's token file replaced by an empty one;
- **pid**: its own ``/proc``, so no ``/proc/<worker pid>/environ`` with the site's secrets
  (the worker also sets itself non-dumpable: ``protect_worker``);
- **network** (single-node runs): loopback only, so torchrun's rendezvous store, which
  listens on every interface without authentication, is reachable from nothing outside
  the job. A multi-node job keeps the node's network (its ranks must meet) and relies on
  the firewall of docs/deployment.md;
- **ipc**: its own; with no network, its own host name too, on its loopback.

GPU nodes bind the NVIDIA device files (``/dev/nvidia*``, ``/dev/nvidia-caps``,
``/dev/infiniband`` for RDMA) into the sandbox's ``/dev``.

``GAD_SANDBOX``: ``bwrap`` (production's default: a job fails, saying why, on a node
where bubblewrap cannot make its namespaces), ``auto`` (development's: bubblewrap where
it works, else none, with a warning) or ``off``.
"""

from __future__ import annotations

import ctypes
import glob
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from django.conf import settings

log = logging.getLogger(__name__)

PR_SET_DUMPABLE = 4
PROJECT = Path(__file__).resolve().parents[1]
# Device files a GPU process needs (NVIDIA's driver, MIG's capabilities, RDMA for NCCL).
GPU_DEVICES = ("/dev/nvidia*", "/dev/nvidia-caps", "/dev/infiniband", "/dev/dri")


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or cannot make its namespaces on this node."""


@dataclass(frozen=True)
class Sandbox:
    """What one trainer process may touch: ``writable`` (its work directory), ``readable``
    (its model, the inputs outside that directory), and whether it keeps the node's
    network (a multi-node job's ranks must reach each other)."""

    writable: tuple[Path, ...]
    readable: tuple[Path, ...] = ()
    network: bool = False
    gpus: bool = field(default_factory=lambda: bool(settings.GAD_WORKER_GPUS))

    def wrap(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the sandbox (unchanged where the sandbox is off)."""
        if not enabled():
            return argv
        return [_bwrap(), *self.options(), "--", *argv]

    def options(self) -> list[str]:
        opts = ["--die-with-parent", "--unshare-pid", "--unshare-ipc", "--unshare-cgroup-try"]
        opts += ["--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev"]
        if not self.network:
            # Loopback only (bubblewrap brings it up). torchrun's ranks meet at the
            # machine's name, which the node's /etc/hosts may give an address of an
            # interface left outside (a container's): the name is the sandbox's own.
            opts += ["--unshare-net", "--unshare-uts", "--hostname", HOSTNAME]
            opts += ["--ro-bind", str(_hosts_file()), "/etc/hosts"]
        if self.gpus:
            for pattern in GPU_DEVICES:
                for device in sorted(glob.glob(pattern)):
                    opts += ["--dev-bind-try", device, device]
        home = Path(os.environ.get("HOME") or "/root")
        first = [Path("/tmp"), home]  # empty: scratch and dotfiles (tokens) out of sight
        for masked in _existing(first):
            opts += ["--tmpfs", str(masked)]
        # The interpreter, its packages and the project, where they lie under those.
        for path in _existing(_runtime()):
            if _under_any(path, first):
                opts += ["--ro-bind", str(path), str(path)]
        # Every team's data and models, hidden; then this process's own bound back.
        second = [Path(settings.GAD_DATA_DIR), *map(Path, settings.GAD_MODEL_ROOTS)]
        second.append(Path("/run/secrets"))  # Docker's and compose's secrets
        for masked in _existing(second):
            if not _under_any(masked, first):
                opts += ["--tmpfs", str(masked)]
        # The site's Hub token: the directory holding it hidden, the model cache back.
        for folder in _existing(token.parent for token in _token_files()):
            if folder not in (Path("/"), home):
                opts += ["--tmpfs", str(folder)]
        hub = _hub_cache()
        if hub is not None:
            opts += ["--ro-bind", str(hub), str(hub)]
        for path in _existing(self.readable):
            opts += ["--ro-bind", str(path), str(path)]
        for path in self.writable:
            path.mkdir(parents=True, exist_ok=True)
            opts += ["--bind", str(path), str(path)]
        return opts


HOSTNAME = "gad-trainer"


def _hosts_file() -> Path:
    """The sandbox's /etc/hosts: its name and localhost on the loopback."""
    path = Path(settings.GAD_DATA_DIR) / ".sandbox" / "hosts"
    text = f"127.0.0.1\tlocalhost {HOSTNAME}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}")
        tmp.write_text(text)
        tmp.replace(path)
    return path


def _existing(paths: Iterable[Path]) -> list[Path]:
    seen: list[Path] = []
    for path in paths:
        try:
            real = Path(path).resolve()
        except OSError:
            continue
        if real.exists() and real not in seen and real != Path("/"):
            seen.append(real)
    return seen


def _under_any(path: Path, roots: Iterable[Path]) -> bool:
    return any(path == root or root in path.parents for root in _existing(roots))


def _runtime() -> list[Path]:
    """What the trainer's interpreter loads: the venv, the base Python, the project."""
    found = [Path(sys.prefix), Path(sys.base_prefix), PROJECT]
    found += [Path(p) for p in sys.path if p and Path(p).is_dir()]
    return found


def _hub_cache() -> Path | None:
    from huggingface_hub import constants

    path = Path(constants.HF_HUB_CACHE)
    return path if path.exists() else None


def _token_files() -> list[Path]:
    from huggingface_hub import constants

    return [Path(constants.HF_TOKEN_PATH), Path(constants.HF_STORED_TOKENS_PATH)]


def _bwrap() -> str:
    found = shutil.which("bwrap")
    if found is None:
        raise SandboxUnavailable(
            "bubblewrap (bwrap) is not installed on this node; install Debian's "
            '`bubblewrap` package (docs/deployment.md, "The trainer\'s sandbox").'
        )
    return found


@cache
def _works() -> str:
    """ "" when bubblewrap makes its namespaces here; otherwise why not."""
    try:
        probe = [_bwrap(), "--unshare-all", "--ro-bind", "/", "/", "--proc", "/proc"]
        done = subprocess.run(
            [*probe, "--dev", "/dev", "true"], capture_output=True, text=True, timeout=30
        )
    except SandboxUnavailable as missing:
        return str(missing)
    except (OSError, subprocess.TimeoutExpired) as failed:
        return f"bubblewrap did not start ({failed})"
    if done.returncode != 0:
        return (
            f"bubblewrap cannot make its namespaces on this node ({done.stderr.strip()}); "
            'grant the worker what docs/deployment.md, "The trainer\'s sandbox", lists '
            "(unprivileged user namespaces, or the container's seccomp and AppArmor "
            "profiles)."
        )
    return ""


def enabled() -> bool:
    """Whether trainer processes run sandboxed here; raises SandboxUnavailable where the
    site asks for the sandbox (``bwrap``) and this node cannot make it."""
    mode = settings.GAD_SANDBOX
    if mode == "off":
        return False
    problem = _works()
    if problem and mode == "bwrap":
        raise SandboxUnavailable(f"the trainer's sandbox: {problem}")
    if problem:
        log.warning("running the trainer without a sandbox (GAD_SANDBOX=auto): %s", problem)
    return not problem


def protect_worker() -> None:
    """Make the worker non-dumpable: a process of the same user can then neither read its
    ``/proc/<pid>/environ`` (the site's secrets) nor attach a debugger to it."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    except OSError:
        pass  # not Linux
