"""Run a trainer command as a child process the worker can watch, stop and outlive.

The child gets its own process group (``start_new_session``), so a signal reaches every
process it started (torchrun's ranks, tokenizer threads' helpers) and a Ctrl-C of the
worker's terminal does not reach it. Output goes to a log file in the job's work dir;
the last lines are kept for the job page.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from worker.sandbox import Sandbox

LOG_TAIL_LINES = 200
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: be killed if the worker dies (SIGKILL, node lost).

    Otherwise an orphaned trainer would keep writing into the run directory while the
    job's next attempt, on another worker, resumes from the same checkpoint.
    """
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass  # not Linux: the sweep still waits for the heartbeat to go stale


@dataclass(frozen=True)
class Exit:
    """How a trainer child process ended.

    ``bad_input`` is the trainer's own one-paragraph message when it stopped on bad input
    (exit status 2; under torchrun, which exits 1 when a rank exits 2, a rank's
    ``error:`` line); None otherwise. ``tail`` is the end of its log."""

    code: int
    bad_input: str | None
    tail: str

    @property
    def ok(self) -> bool:
        return self.code == 0

    def failure(self, what: str, lines: int = LOG_TAIL_LINES) -> str:
        """The message for a failed run: the trainer's own for bad input, else the status
        and the log's last ``lines``."""
        if self.bad_input is not None:
            return self.bad_input
        last = "\n".join(self.tail.splitlines()[-lines:])
        return f"{what} exited with status {self.code}. Its last lines:\n{last}"


class TrainerProcess:
    def __init__(
        self,
        argv: list[str],
        cwd: Path,
        log_path: Path,
        env: dict[str, str],
        launcher: bool = False,
        sandbox: Sandbox | None = None,
    ):
        """``launcher``: argv is torchrun, whose ranks (not torchrun itself) get SIGTERM.
        ``sandbox``: what the process may see (``worker.sandbox``); raises
        SandboxUnavailable where the site asks for one that this node cannot make."""
        self.log_path = log_path
        self.launcher = launcher
        if sandbox is not None:
            argv = sandbox.wrap(argv)
            self.sandboxed = argv[0].endswith("bwrap")
        else:
            self.sandboxed = False
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in wait()/kill paths
        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self.terminated_at: float | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        code = self.proc.poll()
        if code is not None:
            self._log.close()
        return code

    def watch(self, tick: Callable[[], None], poll_s: float) -> Exit:
        """Wait for the child to exit and say how it ended, calling ``tick()`` between
        polls while it runs. ``tick`` raises to stop waiting (a cancel, a lost claim).

        Whatever ends the wait early (that, a database error, the task's time limit),
        the child is killed first: it must not outlive the claim and the GPUs that its
        caller is about to give back.
        """
        try:
            while (code := self.poll()) is None:
                tick()
                time.sleep(poll_s)
        except BaseException:
            if self.poll() is None:
                self.kill()
            raise
        return self.exit(code)

    def exit(self, code: int) -> Exit:
        lines = log_tail(self.log_path, 50).splitlines()
        errors = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
        stopped_on_input = code == 2 or (code == 1 and self.launcher and bool(errors))
        bad_input = None
        if stopped_on_input:
            bad_input = errors[-1] if errors else "\n".join(lines[-10:])
        return Exit(code, bad_input, log_tail(self.log_path))

    def terminate(self) -> None:
        """Ask the trainer to stop: it finishes the step, saves a checkpoint, exits 0.

        Under torchrun only the ranks are asked (they run in sessions of their own, its
        children): torchrun answers a SIGTERM by killing its ranks 30 s later, which
        could cut a large model's last save; left alone, it exits 0 once they have
        stopped. The grace period's SIGKILL still ends everything (ranks die with
        torchrun: trainer.distributed sets their parent-death signal).
        """
        if self.terminated_at is not None:
            return
        self.terminated_at = time.monotonic()
        # In a sandbox, bubblewrap's processes are not asked: a signal ends them, and
        # their namespace's processes with them, unsaved.
        top = payload(self.proc.pid) if self.sandboxed else self.proc.pid
        ranks = children(top) if self.launcher else set()
        if not ranks and not self.sandboxed:
            self._signal(signal.SIGTERM)
        elif not ranks:
            ranks = {top}
        for pid in ranks:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def kill_if_overdue(self, grace_s: float) -> bool:
        if self.terminated_at is not None and time.monotonic() - self.terminated_at > grace_s:
            self._signal(signal.SIGKILL)
            return True
        return False

    def kill(self) -> None:
        self._signal(signal.SIGKILL)
        self.proc.wait()
        self._log.close()

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass  # already gone

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return log_tail(self.log_path, lines)


# What the trainer may inherit from the worker's environment: the system's, Python's,
# the ML libraries' and the accelerators' settings. Never the site's secrets
# (GAD_FIELD_KEY, DATABASE_URL, DJANGO_SECRET_KEY, the broker's URL): a model's code
# (trust_remote_code, a pickle in a checkpoint) runs in that process.
INHERITED = (
    "PATH",
    "HOME",
    "USER",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TMPDIR",
    "TEMP",
    "TMP",
    "VIRTUAL_ENV",
    "LD_LIBRARY_PATH",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "GAD_DIST_TIMEOUT_S",  # the trainer's own setting (trainer/distributed.py)
)
INHERITED_PREFIXES = (
    "LC_",
    "PYTHON",
    "HF_",
    "HUGGINGFACE_",
    "TRANSFORMERS_",
    "TOKENIZERS_",
    "TORCH",
    "CUDA_",
    "NCCL_",
    "NVIDIA_",
    "OMP_",
    "MKL_",
    "OPENBLAS_",
    "KMP_",
    "GLOO_",
    "MASTER_",
    "VLLM_",
    "WANDB_",
    "MLFLOW_",
)
# ... but none of the site's credentials for the Hub or the trackers among those: the
# worker downloads models, and trackers write offline (docs/security.md).
SECRET_WORDS = ("TOKEN", "KEY", "PASSWORD", "SECRET", "CREDENTIAL", "USERNAME")


def trainer_env(devices: str, **extra: str) -> dict[str, str]:
    """The environment of a trainer child process: what ``INHERITED`` allows of the
    worker's, ``CUDA_VISIBLE_DEVICES`` set to ``devices`` ("" for the CPU), and
    ``extra``."""
    env = {
        name: value
        for name, value in os.environ.items()
        if (name in INHERITED or name.startswith(INHERITED_PREFIXES))
        and not any(word in name for word in SECRET_WORDS)
    }
    env |= {"PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    return env | {"CUDA_VISIBLE_DEVICES": devices} | extra


def children(pid: int) -> set[int]:
    """The pids of a process's children (from /proc; empty where there is none)."""
    found = set()
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # pid (comm) state ppid ...: comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            found.add(int(entry.name))
    return found


def payload(pid: int) -> int:
    """The process the sandbox runs (the trainer or torchrun), below bubblewrap's own
    processes; ``pid`` itself when it is not bubblewrap."""
    for _ in range(3):  # bwrap, then its init in the new pid namespace
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            return pid
        below = sorted(children(pid))
        if name != "bwrap" or not below:
            return pid
        pid = below[0]
    return pid


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    if not path.exists():
        return ""
    with open(path, "rb") as f:
        # Read at most the last 256 KB: a 30 h run's log can be large.
        f.seek(max(0, path.stat().st_size - 256 * 1024))
        kept = deque(f.read().decode("utf-8", errors="replace").splitlines(), maxlen=lines)
    return "\n".join(kept)


@dataclass(frozen=True)
class Rendezvous:
    """Where the torchruns of a multi-node job meet: node 0 (the leading worker's) hosts
    the store at ``addr:port``; ``node_rank`` is this node's place."""

    nodes: int
    node_rank: int
    addr: str
    port: int


def trainer_argv(config_path: Path, gpus: int, rendezvous: Rendezvous | None = None) -> list[str]:
    """`python -m trainer run` for the job's config; with k > 1 GPUs, k processes under
    torchrun (trainer.distributed, FSDP2), one per leased GPU; on several nodes, one
    torchrun per node, all meeting at ``rendezvous``.

    torchrun rather than `accelerate launch`: the same elastic launcher underneath, with
    no accelerate config file to write per job; ``--standalone`` picks a free rendezvous
    port, so jobs sharing a node do not collide. Across nodes the rendezvous is static
    (``--node-rank``): rank 0, which writes the metrics and logs the progress, is then
    always on the leading worker's node.
    """
    run = ["-m", "trainer", "run", "--config", str(config_path)]
    if rendezvous is not None:
        r = rendezvous
        launch = ["-m", "torch.distributed.run", "--nnodes", str(r.nodes),
                  "--node-rank", str(r.node_rank), "--nproc-per-node", str(gpus),
                  "--master-addr", r.addr, "--master-port", str(r.port)]  # fmt: skip
        return [sys.executable, *launch, *run]
    if gpus <= 1:
        return [sys.executable, *run]
    launch = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(gpus)]
    return [sys.executable, *launch, *run]


def write_prompts(path: Path, rows) -> None:
    """A prompt file for `trainer generate`: ``rows`` of (prompt id, messages)."""
    with open(path, "w", encoding="utf-8") as f:
        for pk, messages in rows:
            f.write(json.dumps({"id": str(pk), "messages": messages}) + "\n")


def generate_argv(
    model: str | Path,
    prompts: Path,
    out: Path,
    max_new_tokens: int,
    temperature: float | None = None,
) -> list[str]:
    """`python -m trainer generate`: greedy unless a temperature is given."""
    decoding = ["--greedy"] if temperature is None else ["--temperature", str(temperature)]
    return [
        sys.executable, "-m", "trainer", "generate", "--model", str(model),
        "--prompts", str(prompts), "--out", str(out),
        "--max-new-tokens", str(max_new_tokens), *decoding,
    ]  # fmt: skip


def read_answers(path: Path) -> list[tuple[int, str, str]]:
    """(prompt id, answer, finish reason) from a `trainer generate` output file."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return [(int(r["id"]), r.get("response") or "", r.get("finish_reason") or "") for r in rows]
