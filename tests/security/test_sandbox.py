"""The trainer's sandbox (docs/security.md, "The trainer's sandbox"; worker/sandbox.py).

Each test attacks the way the review did: code in the job (a model's remote code, a
pickle) reads the worker's /proc environ, other teams' files and the site's Hub token,
writes into the data directory, and, from outside, connects to torchrun's rendezvous
store, which listens on every interface without authentication. Before the sandbox each
of these worked. CI runs as root, so the namespaces are also made as a user with no
privilege (nobody), as the images' uid 1000 makes them."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from worker import sandbox
from worker.runner import TrainerProcess, children, payload, trainer_argv, trainer_env
from worker.sandbox import Sandbox

if not shutil.which("bwrap") and not os.environ.get("CI"):
    pytest.skip("bubblewrap is not installed (apt-get install bubblewrap)", allow_module_level=True)


@pytest.fixture
def site(settings, tmp_path, monkeypatch):
    """A data directory with this job's work directory and another team's files, a
    model root, and the site's Hub token in its place."""
    from huggingface_hub import constants

    data = tmp_path / "data"
    mine = data / "jobs" / "1"
    theirs = data / "jobs" / "2" / "run"
    mine.mkdir(parents=True)
    theirs.mkdir(parents=True)
    (theirs / "secret.txt").write_text("team B's answers")
    models = tmp_path / "models"
    (models / "granted").mkdir(parents=True)
    (models / "granted" / "config.json").write_text("{}")
    (models / "other").mkdir()
    (models / "other" / "config.json").write_text("{}")
    token = tmp_path / "hf" / "token"
    token.parent.mkdir()
    token.write_text("hf_site_token")
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(token))
    settings.GAD_DATA_DIR = data
    settings.GAD_MODEL_ROOTS = [str(models)]
    settings.GAD_SANDBOX = "bwrap"
    return {"mine": mine, "theirs": theirs, "models": models, "token": token}


def run_inside(box: Sandbox, code: str, cwd: Path) -> dict:
    """Run ``code`` (Python that prints one JSON line) the way the worker runs a trainer."""
    env = trainer_env("")
    proc = TrainerProcess([sys.executable, "-c", code], cwd, cwd / "log", env, sandbox=box)
    ended = proc.watch(lambda: None, 0.05)
    assert ended.ok, ended.tail
    return json.loads(ended.tail.splitlines()[-1])


PROBE = """
import json, os
from pathlib import Path
def read(p):
    try:
        return Path(p).read_text()
    except OSError as e:
        return type(e).__name__
def write(p):
    try:
        Path(p).write_text("x"); return "written"
    except OSError as e:
        return type(e).__name__
print(json.dumps({
    "worker_environ": read("/proc/%(worker)d/environ"),
    "pids": len([p for p in os.listdir("/proc") if p.isdigit()]),
    "theirs": read("%(theirs)s/secret.txt"),
    "other_model": read("%(models)s/other/config.json"),
    "granted_model": read("%(models)s/granted/config.json"),
    "token": read("%(token)s"),
    "write_mine": write("%(mine)s/out.txt"),
    "write_data": write("%(data)s/planted.txt"),
    "write_model": write("%(models)s/granted/config.json"),
    "interfaces": sorted(l.split(":")[0].strip() for l in read("/proc/net/dev").splitlines()[2:]),
}))
"""


def test_the_trainer_sees_only_its_own_files_and_no_secret(site, tmp_path):
    code = PROBE % {
        "worker": os.getpid(),
        "theirs": site["theirs"],
        "models": site["models"],
        "token": site["token"],
        "mine": site["mine"],
        "data": tmp_path / "data",
    }
    box = Sandbox(writable=(site["mine"],), readable=(site["models"] / "granted",))
    seen = run_inside(box, code, site["mine"])
    # The worker's environment (GAD_FIELD_KEY, DATABASE_URL): not even its pid exists.
    assert seen["worker_environ"] == "FileNotFoundError"
    assert seen["pids"] <= 3  # bubblewrap's init, the process, maybe a helper
    assert seen["theirs"] == "FileNotFoundError"  # another team's run
    assert seen["other_model"] == "FileNotFoundError"  # a model it was not given
    assert seen["granted_model"] == "{}"
    assert seen["token"] == "FileNotFoundError"  # the site's Hub token
    opts = box.options()  # its folder is hidden wherever it is, the model cache bound back
    assert ["--tmpfs", str(site["token"].parent)] in [opts[i : i + 2] for i in range(len(opts))]
    assert seen["write_mine"] == "written" and (site["mine"] / "out.txt").exists()
    # Into the data directory: at most into the sandbox's empty scratch in its place.
    assert not (tmp_path / "data" / "planted.txt").exists()
    assert seen["write_model"] in ("OSError", "PermissionError")
    assert seen["interfaces"] == ["lo"]
    # Without the sandbox, the same probe reads all of it: the test can fail.
    assert Path(f"/proc/{os.getpid()}/environ").exists()


def test_the_worker_is_not_dumpable_so_its_own_user_cannot_read_its_environ():
    """PR_SET_DUMPABLE=0, set when a Celery worker starts (worker.tasks): its /proc
    files become root's, so a process of the worker's own unprivileged user (the
    images' uid 1000) can no longer read its environ. Shown with nobody on both sides."""
    from celery.signals import worker_init

    from worker import tasks

    assert any(r() is tasks._protect for _, r in worker_init.receivers)
    ours = "from worker.sandbox import protect_worker; import ctypes; protect_worker(); "
    ours += "print(ctypes.CDLL('libc.so.6').prctl(3, 0, 0, 0, 0))"  # PR_GET_DUMPABLE
    done = subprocess.run([sys.executable, "-c", ours], capture_output=True, text=True)
    assert done.stdout.strip() == "0", done.stderr
    # What it buys, with the same call, in a process of an unprivileged user.
    code = (
        "import ctypes, time; libc = ctypes.CDLL('libc.so.6'); PROTECT"
        "print(libc.prctl(3, 0, 0, 0, 0), flush=True); time.sleep(30)"
    )
    as_nobody = {}
    if os.getuid() == 0:
        as_nobody = {"preexec_fn": lambda: os.setresuid(65534, 65534, 65534)}
    python = "/usr/bin/python3" if os.getuid() == 0 else sys.executable
    for protect, readable in ((False, True), (True, False)):
        body = code.replace("PROTECT", "libc.prctl(4, 0, 0, 0, 0); " if protect else "")
        worker = subprocess.Popen(
            [python, "-c", body],
            stdout=subprocess.PIPE,
            text=True,
            env={"SECRET_OF_THE_SITE": "s3cret", "PATH": "/usr/bin:/bin"},
            **as_nobody,
        )
        try:
            assert worker.stdout.readline().strip() == ("0" if protect else "1")
            reader = ["cat", f"/proc/{worker.pid}/environ"]
            seen = subprocess.run(reader, capture_output=True, **as_nobody)
            assert (b"s3cret" in seen.stdout) is readable
        finally:
            worker.kill()
            worker.wait()


@pytest.mark.skipif(os.getuid() != 0, reason="switches to nobody: needs root")
def test_the_namespaces_are_made_by_a_user_with_no_privilege(settings, monkeypatch):
    """What the images' uid 1000 needs: user namespaces, with no capability."""
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="gad-sandbox-"))  # pytest's own is root's only
    try:
        mine, theirs = root / "data" / "jobs" / "1", root / "data" / "jobs" / "2"
        for path in (mine, theirs):
            path.mkdir(parents=True)
        (theirs / "secret.txt").write_text("team B's answers")
        for path in (root, root / "data", mine.parent, mine):
            path.chmod(0o777)
        settings.GAD_DATA_DIR, settings.GAD_MODEL_ROOTS = root / "data", []
        settings.GAD_SANDBOX = "bwrap"
        monkeypatch.setattr(sandbox, "_runtime", lambda: [])  # /bin/sh needs no venv
        monkeypatch.setattr(sandbox, "_token_files", lambda: [])
        monkeypatch.setenv("HOME", str(root / "home"))
        script = (
            f"cat /proc/{os.getpid()}/environ >/dev/null 2>&1 && echo environ; "
            f"cat {theirs}/secret.txt 2>/dev/null; tail -n +3 /proc/net/dev | cut -d: -f1; "
            f"echo ok > {mine}/by-nobody; ls /proc | grep -c '^[0-9]'"
        )
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        argv += Sandbox(writable=(mine,), gpus=False).wrap(["/bin/sh", "-c", script])
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.split()
        assert "environ" not in lines and "team" not in done.stdout
        assert lines[:1] == ["lo"] and int(lines[-1]) <= 4, done.stdout  # init, sh, ls, grep
        assert (mine / "by-nobody").read_text() == "ok\n"
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def no_namespaces(tmp_path, monkeypatch):
    """A node whose bubblewrap cannot make namespaces: what Debian's bwrap prints under
    Docker's default seccomp profile, as a non-root user."""
    fake = tmp_path / "bin" / "bwrap"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\necho 'bwrap: No permissions to creating new namespace, likely because "
        "the kernel does not allow non-privileged user namespaces.' >&2\nexit 1\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    sandbox._works.cache_clear()
    yield
    sandbox._works.cache_clear()


def test_a_site_that_asks_for_the_sandbox_fails_the_job_where_it_cannot(site, no_namespaces):
    with pytest.raises(sandbox.SandboxUnavailable) as refused:
        Sandbox(writable=(site["mine"],)).wrap(["true"])
    assert "non-privileged user namespaces" in str(refused.value)
    assert "docs/deployment.md" in str(refused.value)


def test_development_runs_without_it_where_it_cannot(site, settings, no_namespaces):
    settings.GAD_SANDBOX = "auto"
    assert Sandbox(writable=(site["mine"],)).wrap(["true"]) == ["true"]


# ----------------------------------------------------------------- the rendezvous store


def listening(netns_of: int | None = None) -> set[tuple[str, int]]:
    """Listening TCP sockets (address, port) of a network namespace: this process's, or
    that of the process ``netns_of``."""
    base = f"/proc/{netns_of}/net" if netns_of else "/proc/net"
    found = set()
    for name in ("tcp", "tcp6"):
        try:
            rows = Path(base, name).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            if state == "0A":  # LISTEN
                addr, port = local.rsplit(":", 1)
                found.add((addr, int(port, 16)))
    return found


def test_a_two_process_jobs_store_listens_only_inside_its_namespace(site, tmp_path):
    """A 2-process job started as the worker starts it (torchrun --standalone): its
    rendezvous store and gloo listen inside the sandbox's network namespace, and none of
    its ports accepts a connection from outside; a cancel still saves."""
    from tests.trainer.conftest import write_prompts
    from tests.trainer.test_recipes import make_cfg
    from trainer.config import save_config
    from trainer.tiny import build_tiny

    model = build_tiny(tmp_path / "models" / "tiny", layers=2, hidden=32, heads=4)
    mine = site["mine"]
    prompts = write_prompts(mine / "prompts.jsonl", n=8)
    cfg = make_cfg(mine, model, prompts, batch_size=4, gad__epochs=500, save_every=1000)
    save_config(cfg, mine / "config.yaml")
    before = listening()
    env = trainer_env("") | {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    box = Sandbox(writable=(mine,), readable=(model,))
    argv = trainer_argv(mine / "config.yaml", gpus=2)
    proc = TrainerProcess(argv, mine, mine / "log", env, launcher=True, sandbox=box)
    metrics = mine / "run" / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        assert proc.poll() is None, (mine / "log").read_text()[-3000:]
        assert time.monotonic() < deadline, "no training steps"
        time.sleep(0.3)
    ranks = children(sandbox_payload := payload(proc.pid))
    assert len(ranks) == 2, sandbox_payload
    inside = listening(netns_of=sandbox_payload)
    assert inside, "the job's store listens somewhere"
    # Outside: no new listening socket, and no port of the job's accepts a connection.
    assert listening() - before == set()
    for _, port in inside:
        with socket.socket() as probe:
            probe.settimeout(2)
            assert probe.connect_ex(("127.0.0.1", port)) != 0, port
    proc.terminate()
    while proc.poll() is None:
        assert not proc.kill_if_overdue(120), "the ranks did not stop"
        time.sleep(0.3)
    assert proc.poll() == 0, (mine / "log").read_text()[-3000:]
    last = [json.loads(line) for line in metrics.read_text().splitlines()][-1]
    assert last["event"] == "stopped"


def test_a_gpu_worker_binds_the_nvidia_device_files_into_the_sandbox(site, monkeypatch):
    """What a GPU needs inside: NVIDIA's device nodes (and MIG's, RDMA's), found on the
    node; none on a CPU worker."""
    devices = {
        "/dev/nvidia*": ["/dev/nvidia0", "/dev/nvidia1", "/dev/nvidiactl", "/dev/nvidia-uvm"],
        "/dev/nvidia-caps": ["/dev/nvidia-caps"],
        "/dev/infiniband": ["/dev/infiniband"],
    }
    monkeypatch.setattr(sandbox.glob, "glob", lambda pattern: devices.get(pattern, []))
    opts = Sandbox(writable=(site["mine"],), gpus=True).options()
    bound = [opts[i + 1] for i, o in enumerate(opts) if o == "--dev-bind-try"]
    assert bound == [*sorted(devices["/dev/nvidia*"]), "/dev/nvidia-caps", "/dev/infiniband"]
    # After the sandbox's own /dev, or they would be hidden by it.
    assert opts.index("--dev") < opts.index("--dev-bind-try")
    assert "--dev-bind-try" not in Sandbox(writable=(site["mine"],), gpus=False).options()
