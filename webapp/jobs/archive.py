"""Stream a directory as a tar, never holding more than one chunk; a job's run directory
on the data volume and what the trainer left there for the job page.

``tarfile`` writes a whole member before returning, which for a 30 GB safetensors
shard means 30 GB in memory; so we use ``tarfile`` only for the 512-byte headers and
stream each file's bytes ourselves. Weights do not compress, so no gzip: the CPU stays
free and the exact Content-Length is known before the first byte. TensorBoard's event
files do compress (several times over), so they go out gzipped, without a length.
"""

from __future__ import annotations

import json
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from webapp.lib.http import DOWNLOADS

BLOCK = 512
CHUNK = 1024 * 1024


@dataclass
class _Member:
    header: bytes
    path: Path | None  # None for directories
    size: int


def _members(root: Path, prefix: str) -> list[_Member]:
    members = []
    for path in sorted([root, *root.rglob("*")]):
        rel = Path(prefix) / path.relative_to(root)
        stat = path.stat()  # follows symlinks: the archive holds real files
        info = tarfile.TarInfo(rel.as_posix())
        info.mtime = int(stat.st_mtime)
        info.mode = stat.st_mode & 0o755
        if path.is_dir():
            info.type = tarfile.DIRTYPE
            members.append(_Member(info.tobuf(tarfile.PAX_FORMAT), None, 0))
        elif path.is_file():
            info.size = stat.st_size
            members.append(_Member(info.tobuf(tarfile.PAX_FORMAT), path, stat.st_size))
    return members


def _padding(size: int) -> int:
    return -size % BLOCK


class TarStream:
    """``len()`` is the archive's exact size; iterating yields its bytes."""

    def __init__(self, root: Path, prefix: str):
        self.members = _members(Path(root), prefix)

    def __len__(self) -> int:
        body = sum(len(m.header) + m.size + _padding(m.size) for m in self.members)
        return body + 2 * BLOCK  # the end-of-archive marker

    def __iter__(self) -> Iterator[bytes]:
        for member in self.members:
            yield member.header
            if member.path is None:
                continue
            sent = 0
            with open(member.path, "rb") as f:
                while sent < member.size:
                    chunk = f.read(min(CHUNK, member.size - sent))
                    if not chunk:  # the file shrank under us: keep the archive well-formed
                        chunk = b"\0" * min(CHUNK, member.size - sent)
                    sent += len(chunk)
                    yield chunk
            yield b"\0" * _padding(member.size)
        yield b"\0" * (2 * BLOCK)


def gzipped(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """The chunks as one gzip stream (``wbits`` 31: gzip header and trailer)."""
    packer = zlib.compressobj(6, zlib.DEFLATED, 31)
    for chunk in chunks:
        packed = packer.compress(chunk)
        if packed:
            yield packed
    yield packer.flush()


def tar_response(directory: Path, name: str, user, gzip: bool = False):
    """A streamed download of ``directory`` as ``name.tar`` (``name.tar.gz``), its members
    under ``name/``. It holds one of ``user``'s download slots while it streams (a long
    download holds a web thread): raises ``TooMany`` when none is free."""
    from django.http import StreamingHttpResponse

    stream = TarStream(directory, name)
    if gzip:
        chunks = DOWNLOADS.streaming(user.pk, gzipped(iter(stream)))
        response = StreamingHttpResponse(chunks, content_type="application/gzip")
        response["Content-Disposition"] = f'attachment; filename="{name}.tar.gz"'
        return response
    chunks = DOWNLOADS.streaming(user.pk, iter(stream))
    response = StreamingHttpResponse(chunks, content_type="application/x-tar")
    response["Content-Length"] = str(len(stream))
    response["Content-Disposition"] = f'attachment; filename="{name}.tar"'
    return response


ADAPTER_DIR = "student-adapter"  # next to a LoRA job's merged student (trainer.checkpoint)


def adapter_dir(checkpoint) -> Path | None:
    """A LoRA checkpoint's adapter directory (peft format), if it has one."""
    directory = Path(checkpoint.path).parent / ADAPTER_DIR
    return directory if (directory / "adapter_config.json").is_file() else None


def checkpoint_response(checkpoint, user, part: str = "model"):
    """The streamed download of a checkpoint's HF directory (``part`` "adapter": a LoRA
    job's adapter alone), recorded; None if it is gone."""
    from webapp.jobs.actions import record_download

    directory = Path(checkpoint.path) if part != "adapter" else adapter_dir(checkpoint)
    if directory is None or not directory.is_dir():
        return None
    suffix = "-adapter" if part == "adapter" else ""
    name = f"job{checkpoint.job_id}-step-{checkpoint.step}{suffix}"
    response = tar_response(directory, name, user)
    record_download(checkpoint, user)
    return response


# ----------------------------------------------------------------------------- the run

# What the trainer writes in its output_dir (trainer.trackers; the web does not import it).
TENSORBOARD_DIR = "tensorboard"
TRACKERS_FILE = "trackers.json"
SYNC_FILE = "trackers-sync.json"  # worker.trackers.RESULT_FILE


def job_dir(job) -> Path:
    """The job's work dir on the shared GAD_DATA_DIR (worker.pipeline.workspace)."""
    from django.conf import settings

    return Path(settings.GAD_DATA_DIR) / "jobs" / str(job.pk)


def run_dir(job) -> Path:
    """The job's trainer output_dir: ``run/`` of its work dir."""
    return job_dir(job) / "run"


def tensorboard_dir(job) -> Path | None:
    """The job's TensorBoard log directory (``report_to: [tensorboard]``), if it has one."""
    directory = run_dir(job) / TENSORBOARD_DIR
    return directory if directory.is_dir() else None


def tensorboard_response(job, user):
    """The streamed ``.tar.gz`` of the job's TensorBoard logs; None if it wrote none."""
    directory = tensorboard_dir(job)
    if directory is None:
        return None
    return tar_response(directory, f"job{job.pk}-tensorboard", user, gzip=True)


def tracker_runs(job) -> dict[str, dict[str, Any]]:
    """The MLflow and W&B runs the trainer reported to (its ``trackers.json``), each with
    ``run_id`` and ``url`` (None where there is no page: a file store, W&B offline)."""
    try:
        written = json.loads((run_dir(job) / TRACKERS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # none written yet, or not on this volume
    try:  # what the worker's copy to the team's accounts did (worker.trackers)
        synced = json.loads((run_dir(job) / SYNC_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        synced = {}
    runs = {}
    for name in ("mlflow", "wandb"):
        entry = written.get(name) if isinstance(written, dict) else None
        if not isinstance(entry, dict) or not isinstance(entry.get("run_id"), str):
            continue
        url = entry.get("url")
        web = isinstance(url, str) and url.startswith(("https://", "http://"))
        runs[name] = {**entry, "url": url if web else None}  # only web links become hrefs
        if isinstance(synced, dict) and isinstance(synced.get(name), str):
            runs[name]["synced"] = synced[name]
    return runs
