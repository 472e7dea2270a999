"""A checkpoint's files one by one, for downloads that resume (``GET
/api/v1/checkpoints/{id}/files/{path}``): HTTP Range (RFC 9110 §14, 206 and 416), a strong
ETag with ``If-None-Match`` and ``If-Range``, and, where the site sets
``GAD_DOWNLOAD_OFFLOAD``, the bytes handed to the reverse proxy (nginx's
``X-Accel-Redirect``, Apache's and lighttpd's ``X-Sendfile``), which then serves the
ranges itself.

Range headers are parsed by werkzeug (``parse_range_header``, ``Range.range_for_length``)
rather than by hand: its parser follows the RFC's edge cases (suffix ranges, a start past
the end, several ranges). Several ranges are answered with the whole file (200), which the
RFC allows; download tools ask for one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
from werkzeug.http import parse_range_header

from webapp.lib.http import DOWNLOADS

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the checkpoint's directory, with "/"
    size: int
    etag: str


def _etag(path: Path) -> str:
    """Strong: a checkpoint's files are written once, so size and mtime change together
    with any byte (a file rewritten in place gets a new mtime)."""
    stat = path.stat()
    return f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"'


def listing(directory: Path) -> list[FileEntry]:
    """Every regular file under ``directory`` (symlinks followed only inside it)."""
    root = directory.resolve()
    found = []
    for path in sorted(directory.rglob("*")):
        real = inside(root, path)
        if real is not None:
            rel = path.relative_to(directory).as_posix()
            found.append(FileEntry(rel, real.stat().st_size, _etag(real)))
    return found


def inside(root: Path, path: Path) -> Path | None:
    """``path`` resolved, if it is a regular file within ``root`` (already resolved); None
    for anything that leaves it (``..``, an absolute path, a symlink out) or is no file."""
    try:
        real = path.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return None
    return real if real.is_relative_to(root) and real.is_file() else None


def find(directory: Path, rel: str) -> Path | None:
    """The file ``rel`` names under ``directory``, or None (never one outside it)."""
    if not rel or "\0" in rel or rel.startswith("/") or ".." in Path(rel).parts:
        return None
    return inside(directory.resolve(), directory / rel)


def file_response(request: HttpRequest, path: Path, user) -> HttpResponseBase:
    """``path`` answered as RFC 9110 asks: 304 when ``If-None-Match`` holds its ETag,
    206 for one satisfiable range (unless ``If-Range`` names another version), 416 for an
    unsatisfiable one, else 200 with the whole file. Raises ``TooMany`` when the user has
    no download slot free (streamed by Django only)."""
    etag = _etag(path)
    size = path.stat().st_size
    response: HttpResponseBase
    if etag in _tags(request.headers.get("If-None-Match", "")):
        response = HttpResponse(status=304)
        response["ETag"] = etag
        return response
    try:
        span = _range(request, etag, size)
    except Unsatisfiable:
        response = HttpResponse(status=416)
        response["Content-Range"] = f"bytes */{size}"
        response["ETag"] = etag
        return response
    offload = settings.GAD_DOWNLOAD_OFFLOAD
    target = _offload_target(path, offload) if offload else None
    if target is not None:
        response = HttpResponse()  # the proxy sends the bytes, and the range asked for
        response["X-Accel-Redirect" if offload == "x-accel-redirect" else "X-Sendfile"] = target
        del response["Content-Type"]  # the proxy's type map decides
    else:
        start, stop = span if span else (0, size)
        chunks = DOWNLOADS.streaming(user.pk, _read(path, start, stop))
        response = StreamingHttpResponse(chunks, content_type="application/octet-stream")
        response["Content-Length"] = str(stop - start)
        if span:
            response.status_code = 206
            response["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
    response["ETag"] = etag
    response["Accept-Ranges"] = "bytes"
    response["Content-Disposition"] = f"attachment; filename*=UTF-8''{quote(path.name)}"
    return response


def _tags(header: str) -> set[str]:
    return {t.strip().removeprefix("W/") for t in header.split(",") if t.strip()}


class Unsatisfiable(Exception):
    """The one range asked for lies past the file's end (416)."""


def _range(request: HttpRequest, etag: str, size: int) -> tuple[int, int] | None:
    """(start, stop) of the one range to send, or None for the whole file."""
    header = request.headers.get("Range")
    if not header:
        return None
    if_range = request.headers.get("If-Range")
    if if_range is not None and if_range.strip() != etag:  # a date, or another version
        return None
    ranges = parse_range_header(header)
    if ranges is None or len(ranges.ranges) != 1:  # malformed or several: the whole file
        return None
    span = ranges.range_for_length(size)
    if span is None:
        raise Unsatisfiable
    return span


def _read(path: Path, start: int, stop: int) -> Iterator[bytes]:
    with path.open("rb") as f:
        f.seek(start)
        left = stop - start
        while left > 0:
            chunk = f.read(min(CHUNK, left))
            if not chunk:  # the file shrank under us; the client sees a short body
                return
            left -= len(chunk)
            yield chunk


def _offload_target(path: Path, offload: str) -> str | None:
    """What the proxy is told to send; None for a file outside the data volume (the
    internal location maps only GAD_DATA_DIR), which Django then streams itself."""
    if offload == "x-sendfile":
        return str(path)
    data = Path(settings.GAD_DATA_DIR).resolve()
    if not path.is_relative_to(data):
        return None
    rel = path.relative_to(data).as_posix()
    return settings.GAD_DOWNLOAD_OFFLOAD_PREFIX.rstrip("/") + "/" + quote(rel)
