"""A loopback Hugging Face Hub: the part of its HTTP API that ``huggingface_hub`` (2.4)
calls to look a model up and to download a file, so that the site's one door to the Hub
(``webapp.jobs.hub``) is tested against what the real Hub answers.

Read from huggingface_hub 2.4.0:
- ``HfApi.model_info(repo, files_metadata=True)``: ``GET /api/models/{repo}?blobs=true``
  (``hf_api.py``, model_info, ~3145-3217); the client reads ``id``, ``sha`` and
  ``siblings[].rfilename`` / ``.size`` (``ModelInfo``, ~913-1010).
- ``snapshot_download``: ``GET /api/models/{repo}/revision/{rev}``, then
  ``list_repo_tree``: ``GET /api/models/{repo}/tree/{sha}?recursive=true`` (a JSON list of
  ``{"type", "path", "size", "oid"}``, paged by a ``Link`` header; ``hf_api.py``
  ``_list_repo_tree_pages`` and ``RepoFile``), then each file as below.
- ``hf_hub_download``: ``HEAD`` then ``GET /{repo}/resolve/{revision}/{file}``; the HEAD
  must carry ``X-Repo-Commit``, an ``ETag`` and ``Content-Length``
  (``file_download.py``, get_hf_file_metadata).
- Errors by ``X-Error-Code`` (``utils/_http.py``, hf_raise_for_status ~826-999):
  ``RepoNotFound`` -> RepositoryNotFoundError, ``GatedRepo`` -> GatedRepoError,
  ``EntryNotFound`` -> EntryNotFoundError. The real Hub answers an unknown or private
  repository 401 with ``RepoNotFound``.
- ``/api/agent-harnesses`` (utils/_detect_agent.py) is asked once a day; 404 is fine.

Any ``org/name`` exists, as a 1 GB model with the config.json of Qwen2.5-0.5B's shape
(every causal LM repository on the Hub has one), unless ``models`` says otherwise (its
files and their sizes; a file's bytes, when given, are served).
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

SHA = "0123456789abcdef0123456789abcdef01234567"
GB = 10**9
QWEN_0_5B = "Qwen/Qwen2.5-0.5B-Instruct"


def config_of(repo: str) -> bytes:
    """A causal LM's config.json: the repository's own shape where trainer.plan knows it by
    heart (Qwen2.5, Llama 3.1), else Qwen2.5-0.5B's."""
    from trainer.plan import KNOWN

    shape = KNOWN.get(repo, KNOWN[QWEN_0_5B])
    return json.dumps({"model_type": "qwen2", **shape, "torch_dtype": "bfloat16"}).encode()


class FakeHub:
    def __init__(self) -> None:
        # repo -> {filename: size or bytes}; a repo mapped to "missing" or "gated" is so.
        self.models: dict[str, dict[str, int | bytes] | str] = {}
        self.asked: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                hub.route(self, head=False)

            def do_HEAD(self) -> None:
                hub.route(self, head=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def files(self, repo: str) -> dict[str, int | bytes] | str:
        default: dict[str, int | bytes] = {
            "config.json": config_of(repo), "model.safetensors": GB,
            "tokenizer.json": 2_000_000,
        }  # fmt: skip
        return self.models.get(repo, default)

    def route(self, request: BaseHTTPRequestHandler, head: bool) -> None:
        path = unquote(urlsplit(request.path).path).strip("/")
        parts = path.split("/")
        if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "tree":
            # list_repo_tree (snapshot_download): one page, no Link header.
            files = self.files("/".join(parts[2:4]))
            if isinstance(files, str):
                return _error(request, 401, "RepoNotFound", "Repository not found", head)
            tree = [
                {"type": "file", "path": name, "size": v if isinstance(v, int) else len(v),
                 "oid": hashlib.sha1(name.encode()).hexdigest()}
                for name, v in files.items()
            ]  # fmt: skip
            return _send(request, 200, json.dumps(tree).encode(), "application/json", head)
        if parts[:2] == ["api", "models"] and len(parts) in (4, 6):
            repo = "/".join(parts[2:4])
            self.asked.append(repo)
            files = self.files(repo)
            if files == "missing":
                return _error(request, 401, "RepoNotFound", "Repository not found", head)
            siblings = [] if isinstance(files, str) else files.items()
            info = {
                "id": repo,
                "sha": SHA,
                "gated": "auto" if files == "gated" else False,
                "siblings": [
                    {"rfilename": name, "size": v if isinstance(v, int) else len(v)}
                    for name, v in siblings
                ],
            }
            return _send(request, 200, json.dumps(info).encode(), "application/json", head)
        if len(parts) >= 5 and parts[2] == "resolve":
            repo, filename = "/".join(parts[:2]), "/".join(parts[4:])
            files = self.files(repo)
            if files == "gated":
                return _error(request, 401, "GatedRepo", "Access to model is restricted", head)
            if files == "missing":
                return _error(request, 401, "RepoNotFound", "Repository not found", head)
            data = files.get(filename) if isinstance(files, dict) else None
            if not isinstance(data, bytes):
                return _error(request, 404, "EntryNotFound", "Entry not found", head)
            etag = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
            extra = {"ETag": f'"{etag}"', "X-Repo-Commit": SHA}
            return _send(request, 200, data, "application/octet-stream", head, extra)
        return _send(request, 404, b"not found", "text/plain", head)


def _send(request, status: int, body: bytes, kind: str, head: bool, extra=None) -> None:
    request.send_response(status)
    for name, value in {"Content-Type": kind, **(extra or {})}.items():
        request.send_header(name, value)
    request.send_header("Content-Length", str(len(body)))
    request.end_headers()
    if not head:
        request.wfile.write(body)


def _error(request, status: int, code: str, message: str, head: bool) -> None:
    body = json.dumps({"error": message}).encode()
    extra = {"X-Error-Code": code, "X-Error-Message": message}
    _send(request, status, body, "application/json", head, extra)
