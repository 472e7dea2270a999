"""A loopback stand-in for one of OpenAI's reasoning models (GPT-5, the o-series), as
their chat-completions endpoint answers what the product sends.

What it does, and where it is read:
- ``max_tokens`` is refused: "max_tokens ... is not compatible with o-series models",
  use ``max_completion_tokens`` (OpenAI API reference, Chat Completions, create,
  ``max_tokens``), with the 400 body the issue quotes from the API:
  ``{"error": {"message": "Unsupported parameter: 'max_tokens' is not supported with this
  model. Use 'max_completion_tokens' instead.", "type": "invalid_request_error",
  "param": "max_tokens", "code": "unsupported_parameter"}}``;
- any ``temperature`` but 1 is refused with ``"param": "temperature", "code":
  "unsupported_value"`` ("Only the default (1) value is supported");
- hidden reasoning is paid out of ``max_completion_tokens`` first (OpenAI's reasoning
  guide, "Allocating space for reasoning"): with too small a budget the answer is empty
  and ``finish_reason`` is ``length``; ``usage.completion_tokens_details.
  reasoning_tokens`` counts it;
- with ``limit``, a request-rate limit of ``limit`` requests per ``window`` seconds,
  every request counted (refused ones too). Every answer carries OpenAI's headers
  ("Rate limits" guide, "Rate limits in headers"): ``x-ratelimit-limit-requests``,
  ``x-ratelimit-remaining-requests``, ``x-ratelimit-reset-requests`` (a duration such as
  "1.5s"); ``headers=False`` leaves them out, as many other servers do. Past the limit:
  429 with OpenAI's body (``"code": "rate_limit_exceeded"``, ``"type": "requests"``) and,
  with ``retry_after``, a ``retry-after`` header in seconds.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REASONING_TOKENS = 64  # what each answer spends thinking before it writes


def _refusal(param: str, code: str, message: str) -> dict:
    return {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": param,
            "code": code,
        }
    }


class _Server(ThreadingHTTPServer):
    # socketserver's listen backlog is 5: a burst of connections past it waits a whole
    # SYN retransmission (1 s) to connect, which no provider's front end makes anyone do.
    request_queue_size = 128


class ReasoningModel:
    def __init__(
        self,
        model: str = "gpt-5-mini",
        *,
        limit: int | None = None,
        window: float = 60.0,
        headers: bool = True,
        retry_after: bool = True,
        latency: float = 0.0,
    ):
        self.model = model
        self.bodies: list[dict] = []
        self.statuses: Counter[int] = Counter()
        self.times: list[float] = []  # when each request arrived (time.monotonic)
        self.limit, self.window, self.latency = limit, window, latency
        self.send_headers, self.send_retry_after = headers, retry_after
        self._window_start, self._window_count = 0.0, 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                self._reply()

            def do_GET(self) -> None:
                self._reply()

            def _reply(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, ctype, data, extra = server.handle(
                    self.command, self.path, self.headers, raw
                )
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def handle(
        self, method: str, path: str, headers, raw: bytes
    ) -> tuple[int, str, bytes, dict[str, str]]:
        """(status, content type, body, headers) of one request: chat completions here."""
        body = json.loads(raw or b"{}")
        limited = self.rate_limit()
        if limited is not None:
            status, answer, extra = limited
        else:
            status, answer = self.answer(body)
            extra = self.rate_headers()
        return status, "application/json", json.dumps(answer).encode(), extra

    def rate_limit(self) -> tuple[int, dict, dict[str, str]] | None:
        """None if this request is within the limit (it is counted), else the 429."""
        with self._lock:
            now = time.monotonic()
            self.times.append(now)
            if self.limit is None:
                return None
            if now - self._window_start >= self.window:
                self._window_start, self._window_count = now, 0
            self._window_count += 1
            if self._window_count <= self.limit:
                return None
            self.statuses[429] += 1
            wait = self._window_start + self.window - now
        headers = self.rate_headers()
        if self.send_retry_after:
            headers["retry-after"] = str(max(1, math.ceil(wait)))
        message = (
            f"Rate limit reached for {self.model} in organization org-test on requests per "
            f"min (RPM): Limit {self.limit}, Used {self.limit}, Requested 1. Please try "
            f"again in {wait:.3f}s."
        )
        body = {"error": {"message": message, "type": "requests", "param": None}}
        body["error"]["code"] = "rate_limit_exceeded"
        return 429, body, headers

    def rate_headers(self) -> dict[str, str]:
        if self.limit is None or not self.send_headers:
            return {}
        with self._lock:
            remaining = max(0, self.limit - self._window_count)
            reset = max(0.0, self._window_start + self.window - time.monotonic())
        return {
            "x-ratelimit-limit-requests": str(self.limit),
            "x-ratelimit-remaining-requests": str(remaining),
            "x-ratelimit-reset-requests": f"{reset:.3f}s",
        }

    def answer(self, body: dict) -> tuple[int, dict]:
        if self.latency:
            time.sleep(self.latency)
        with self._lock:
            self.bodies.append(body)
        status, answer = self._answer(body)
        with self._lock:
            self.statuses[status] += 1
        return status, answer

    def _answer(self, body: dict) -> tuple[int, dict]:
        if "max_tokens" in body:
            return 400, _refusal(
                "max_tokens",
                "unsupported_parameter",
                "Unsupported parameter: 'max_tokens' is not supported with this model. "
                "Use 'max_completion_tokens' instead.",
            )
        if "temperature" in body and body["temperature"] != 1:
            return 400, _refusal(
                "temperature",
                "unsupported_value",
                f"Unsupported value: 'temperature' does not support {body['temperature']} "
                "with this model. Only the default (1) value is supported.",
            )
        budget = int(body.get("max_completion_tokens") or 100_000)
        question = str(body["messages"][-1]["content"])
        text, spent, finish = f"An answer to: {question}", REASONING_TOKENS, "stop"
        if budget <= REASONING_TOKENS:  # the reasoning took the whole budget
            text, spent, finish = "", budget, "length"
        written = len(text.split())
        return 200, {
            "id": "chatcmpl-x",
            "object": "chat.completion",
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": finish,
                }
            ],
            "usage": {
                "prompt_tokens": 12,
                "completion_tokens": spent + written,
                "total_tokens": 12 + spent + written,
                "completion_tokens_details": {"reasoning_tokens": spent},
            },
        }
