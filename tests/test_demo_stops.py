"""`make demo` stops every process it started: on Ctrl-C (SIGINT to the terminal's
foreground process group), on SIGTERM to its job (`kill %1` of a backgrounded
`make demo &`), and when `make` alone is killed. The real `make demo` runs, with tiny
models put where it caches its trained ones, so that it skips the training."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from uuid import uuid4

import pytest

from tests.conftest import free_port
from tests.processes import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def marked(mark: str) -> list[int]:
    """Live processes whose environment carries the mark (zombies have none)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"GAD_DEMO_MARK={mark}".encode() in environ:
            found.append(int(proc.name))
    return found


def describe(pids: list[int]) -> str:
    lines = []
    for pid in pids:
        try:
            lines.append(f"{pid}: " + Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " "))
        except OSError:
            continue
    return "\n".join(lines)


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


@pytest.mark.parametrize("how", ["ctrl-c", "kill %1", "make killed"])
def test_make_demo_stops_every_process_it_started(
    how, settings, tmp_path, tiny_teacher_dir, tiny_student_dir
):
    models = tmp_path / "demo" / "models"
    shutil.copytree(tiny_teacher_dir, models / "teacher")
    shutil.copytree(tiny_student_dir, models / "student-pretrained")
    (models / "texts.txt").write_text("already built\n")
    mark, port = uuid4().hex, free_port()
    db = settings.DATABASES["default"]
    env = {
        **os.environ,
        "GAD_DEMO_MARK": mark,
        "GAD_DATA_DIR": str(tmp_path / "demo"),
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "GAD_DEMO_PORT": str(port),
        "GAD_DEMO_TEACHER_PORT": str(free_port()),
    }
    log = tmp_path / "demo.log"
    with open(log, "wb") as out:
        # A session of its own, as a terminal's job: its process group is make's pid.
        make = subprocess.Popen(
            ["make", "--no-print-directory", "demo"], cwd=ROOT, env=env, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not (answers(f"http://127.0.0.1:{port}/accounts/login/") and len(marked(mark)) >= 5):
            assert make.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)
        started = marked(mark)
        if how == "ctrl-c":
            os.killpg(make.pid, signal.SIGINT)
        elif how == "kill %1":
            os.killpg(make.pid, signal.SIGTERM)
        else:
            os.kill(make.pid, signal.SIGTERM)
        make.wait(timeout=60)
        deadline = time.monotonic() + 30
        while marked(mark) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = marked(mark)
        assert not left, f"still running after {how}:\n{describe(left)}\nof\n{describe(started)}"
        assert not answers(f"http://127.0.0.1:{port}/accounts/login/")
    finally:
        for pid in marked(mark):
            os.kill(pid, signal.SIGKILL)
