"""Stream a directory as an uncompressed tar, never holding more than one chunk.

``tarfile`` writes a whole member before returning, which for a 30 GB safetensors
shard means 30 GB in memory; so we use ``tarfile`` only for the 512-byte headers and
stream each file's bytes ourselves. Weights do not compress, so no gzip: the CPU stays
free and the exact Content-Length is known before the first byte.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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


ADAPTER_DIR = "student-adapter"  # next to a LoRA job's merged student (trainer.checkpoint)


def adapter_dir(checkpoint) -> Path | None:
    """A LoRA checkpoint's adapter directory (peft format), if it has one."""
    directory = Path(checkpoint.path).parent / ADAPTER_DIR
    return directory if (directory / "adapter_config.json").is_file() else None


def checkpoint_response(checkpoint, user, part: str = "model"):
    """The streamed download of a checkpoint's HF directory (``part`` "adapter": a LoRA
    job's adapter alone), recorded; None if it is gone."""
    from django.http import StreamingHttpResponse

    from webapp.jobs.actions import record_download

    directory = Path(checkpoint.path) if part != "adapter" else adapter_dir(checkpoint)
    if directory is None or not directory.is_dir():
        return None
    suffix = "-adapter" if part == "adapter" else ""
    prefix = f"job{checkpoint.job_id}-step-{checkpoint.step}{suffix}"
    stream = TarStream(directory, prefix)
    record_download(checkpoint, user)
    response = StreamingHttpResponse(iter(stream), content_type="application/x-tar")
    response["Content-Length"] = str(len(stream))
    response["Content-Disposition"] = f'attachment; filename="{prefix}.tar"'
    return response
