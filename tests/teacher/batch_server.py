"""A loopback stand-in for OpenAI's Batch API beside the reasoning model's chat endpoint
(tests/teacher/reasoning_server.py), as the API reference and the Batch guide describe
it:

- ``POST /v1/files`` (multipart: ``file``, ``purpose=batch``) → a File object
  (``{"id": "file-…", "object": "file", "bytes", "created_at", "filename",
  "purpose"}``); ``GET /v1/files/{id}/content`` → its bytes;
- ``POST /v1/batches`` (``input_file_id``, ``endpoint``, ``completion_window: "24h"``)
  → a Batch object, ``status: "validating"``; ``GET /v1/batches/{id}`` → the batch,
  which answers ``per_poll`` more requests at each look (``in_progress``), then
  ``completed`` with its ``output_file_id`` and ``error_file_id``;
- output lines ``{"id": "batch_req_…", "custom_id", "response": {"status_code": 200,
  "request_id", "body": <chat completion>}, "error": null}``; a request the model
  refuses goes to the error file with its ``status_code`` and error body; with
  ``expire_after`` polls the batch ends ``expired`` and the requests it had not reached
  get ``"error": {"code": "batch_expired", …}``.
"""

from __future__ import annotations

import itertools
import json
import time
from email.parser import BytesParser
from email.policy import HTTP

from tests.teacher.reasoning_server import ReasoningModel

_ids = itertools.count(1)


class BatchModel(ReasoningModel):
    def __init__(self, *args, per_poll: int = 5, expire_after: int | None = None, **kw):
        super().__init__(*args, **kw)
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.per_poll, self.expire_after = per_poll, expire_after
        self.chat_requests = 0  # online ones (not the batch's)

    def handle(self, method, path, headers, raw):
        path = path.split("?")[0]
        if path.endswith("/chat/completions"):
            self.chat_requests += 1
            return super().handle(method, path, headers, raw)
        if method == "POST" and path.endswith("/files"):
            return self._json(200, self._upload(headers, raw))
        if method == "GET" and path.startswith("/v1/files/") and path.endswith("/content"):
            data = self.files.get(path.split("/")[3])
            if data is None:
                return self._json(404, {"error": {"message": "No such File", "code": None}})
            return 200, "application/octet-stream", data, {}
        if method == "POST" and path.endswith("/batches"):
            return self._json(200, self._create(json.loads(raw)))
        if method == "GET" and path.startswith("/v1/batches/"):
            batch = self.batches.get(path.split("/")[3])
            if batch is None:
                return self._json(404, {"error": {"message": "No such batch", "code": None}})
            return self._json(200, self._advance(batch))
        return self._json(404, {"error": {"message": f"no route {method} {path}"}})

    @staticmethod
    def _json(status: int, body: dict):
        return status, "application/json", json.dumps(body).encode(), {}

    def _upload(self, headers, raw: bytes) -> dict:
        message = BytesParser(policy=HTTP).parsebytes(
            b"Content-Type: " + headers["content-type"].encode() + b"\r\n\r\n" + raw
        )
        fields = {
            part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
            for part in message.iter_parts()
        }
        assert fields["purpose"] == b"batch", fields.get("purpose")
        file_id = f"file-{next(_ids)}"
        self.files[file_id] = fields["file"]
        return {
            "id": file_id,
            "object": "file",
            "bytes": len(fields["file"]),
            "created_at": int(time.time()),
            "filename": "teacher.jsonl",
            "purpose": "batch",
            "status": "processed",
        }

    def _create(self, body: dict) -> dict:
        assert body["endpoint"] == "/v1/chat/completions" and body["completion_window"] == "24h"
        lines = [json.loads(x) for x in self.files[body["input_file_id"]].splitlines() if x]
        batch_id = f"batch_{next(_ids)}"
        self.batches[batch_id] = {
            "id": batch_id,
            "object": "batch",
            "endpoint": body["endpoint"],
            "errors": None,
            "input_file_id": body["input_file_id"],
            "completion_window": "24h",
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": int(time.time()),
            "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
            "metadata": None,
            "_lines": lines,
            "_out": [],
            "_err": [],
            "_polls": 0,
        }
        return self._public(self.batches[batch_id])

    def _advance(self, batch: dict) -> dict:
        if batch["status"] in ("completed", "expired"):
            return self._public(batch)
        batch["_polls"] += 1
        batch["status"] = "in_progress"
        done = len(batch["_out"]) + len(batch["_err"])
        for line in batch["_lines"][done : done + self.per_poll]:
            status, body = self.answer(line["body"])
            reply = {
                "id": f"batch_req_{next(_ids)}",
                "custom_id": line["custom_id"],
                "response": {"status_code": status, "request_id": "req_x", "body": body},
                "error": None,
            }
            (batch["_out"] if status == 200 else batch["_err"]).append(reply)
        counts = batch["request_counts"]
        counts["completed"], counts["failed"] = len(batch["_out"]), len(batch["_err"])
        left = batch["_lines"][len(batch["_out"]) + len(batch["_err"]) :]
        expired = self.expire_after is not None and batch["_polls"] >= self.expire_after
        if left and expired:
            for line in left:
                batch["_err"].append(
                    {
                        "id": f"batch_req_{next(_ids)}",
                        "custom_id": line["custom_id"],
                        "response": None,
                        "error": {
                            "code": "batch_expired",
                            "message": "This request could not be executed before the "
                            "completion window expired.",
                        },
                    }
                )
            batch["status"] = "expired"
        elif not left:
            batch["status"] = "completed"
        if batch["status"] in ("completed", "expired"):
            for name, rows in (("output_file_id", batch["_out"]), ("error_file_id", batch["_err"])):
                if rows:
                    file_id = f"file-{next(_ids)}"
                    self.files[file_id] = "".join(json.dumps(r) + "\n" for r in rows).encode()
                    batch[name] = file_id
        return self._public(batch)

    @staticmethod
    def _public(batch: dict) -> dict:
        return {k: v for k, v in batch.items() if not k.startswith("_")}
