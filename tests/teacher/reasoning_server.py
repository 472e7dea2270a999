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
  reasoning_tokens`` counts it.
"""

from __future__ import annotations

import json
import threading
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


class ReasoningModel:
    def __init__(self, model: str = "gpt-5-mini"):
        self.model = model
        self.bodies: list[dict] = []
        self.statuses: Counter[int] = Counter()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                status, answer = server.answer(body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, body: dict) -> tuple[int, dict]:
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
