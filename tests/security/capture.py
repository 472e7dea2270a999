"""A loopback HTTP server that answers like an OpenAI-compatible chat API and records
every request's path, headers and body (what a hostile or a moved endpoint would see)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class CaptureServer:
    def __init__(self, reply: bytes | None = None, status: int = 200):
        self.requests: list[dict] = []
        self.reply = reply
        self.status = status
        captured = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server API
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                captured.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body}
                )
                payload = (
                    captured.reply
                    or json.dumps(
                        {
                            "id": "c",
                            "object": "chat.completion",
                            "created": 0,
                            "model": "m",
                            "choices": [
                                {
                                    "index": 0,
                                    "message": {"role": "assistant", "content": "OK"},
                                    "finish_reason": "stop",
                                }
                            ],
                            "usage": {
                                "prompt_tokens": 3,
                                "completion_tokens": 1,
                                "total_tokens": 4,
                            },
                        }
                    ).encode()
                )
                self.send_response(captured.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> CaptureServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def authorizations(self) -> list[str | None]:
        return [
            next((v for k, v in r["headers"].items() if k.lower() == "authorization"), None)
            for r in self.requests
        ]
