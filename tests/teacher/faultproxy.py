"""A fault-injecting HTTP proxy for teacher tests and benchmarks.

Sits in front of a real OpenAI-compatible server and, per request, either forwards it
or injects a fault: 429 with Retry-After, 500, a stall past the client's timeout, a
dropped connection, or 401/400. It counts requests received and answers delivered per
prompt, so tests can prove that nothing was paid twice. With ``upstream=None`` it
answers by itself (fixed latency, canned text): the benchmark uses that to measure the
collector, not the model.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from trainer.teacher import prompt_hash

# schedule(request_number, prompt_hash) -> "pass" | "429" | "500" | "stall" | "drop" | "401" | "400"
Schedule = Callable[[int, str], str]


class FaultProxy:
    def __init__(
        self,
        upstream: str | None,
        schedule: Schedule = lambda n, h: "pass",
        latency: float = 0.0,
        stall_s: float = 5.0,
        retry_after: float = 0.2,
    ):
        self.upstream = upstream.rstrip("/") if upstream else None
        self.schedule = schedule
        self.latency = latency
        self.stall_s = stall_s
        self.retry_after = retry_after
        self.received: Counter[str] = Counter()
        self.delivered: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.times: list[tuple[float, str, str]] = []  # (time, prompt hash, action)
        self.on_receive: Callable[[int], None] | None = None
        self._lock = threading.Lock()
        self._n = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def requests(self) -> int:
        return self._n

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet test output
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                key = prompt_hash(json.loads(body)["messages"])
                with proxy._lock:
                    proxy._n += 1
                    n = proxy._n
                    proxy.received[key] += 1
                action = proxy.schedule(n, key)
                with proxy._lock:
                    proxy.times.append((time.monotonic(), key, action))
                    if action != "pass":
                        proxy.faults[action] += 1
                if proxy.on_receive:
                    proxy.on_receive(n)
                if action == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if action == "stall":
                    time.sleep(proxy.stall_s)
                    return
                if action in ("429", "500", "401", "400"):
                    self._send(int(action), {"error": {"message": f"injected {action}"}})
                    return
                time.sleep(proxy.latency)
                status, payload = proxy._answer(body)
                if self._send(status, payload) and status == 200:
                    with proxy._lock:
                        proxy.delivered[key] += 1

            def _send(self, status: int, payload: dict) -> bool:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    if status == 429:
                        self.send_header("Retry-After", str(proxy.retry_after))
                    self.end_headers()
                    self.wfile.write(data)
                    self.wfile.flush()
                    return True
                except OSError:  # the client went away: nothing was delivered
                    return False

        return Handler

    def _answer(self, body: bytes) -> tuple[int, dict]:
        if self.upstream is None:
            return 200, {
                "id": "canned",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": json.loads(body)["model"],
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": "a canned answer"},
                    }
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13},
            }
        request = urllib.request.Request(
            self.upstream + "/chat/completions",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())


CANNED = json.dumps(
    {
        "id": "canned",
        "object": "chat.completion",
        "created": 0,
        "model": "bench",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "a canned answer"},
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13},
    }
).encode()


async def _canned_connection(reader, writer, latency: float) -> None:
    """HTTP/1.1 with keep-alive: one coroutine per connection, answers after `latency`."""
    import asyncio

    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            await asyncio.sleep(latency)
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: " + str(len(CANNED)).encode() + b"\r\n\r\n" + CANNED
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def main() -> None:
    """A canned-answer teacher in its own process, for benchmarks: prints its URL.

    asyncio with keep-alive rather than the threaded proxy, so that at 64 requests in
    flight the server costs little and the benchmark measures the collector.
    """
    import argparse
    import asyncio

    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=float, default=0.2)
    args = parser.parse_args()

    async def serve() -> None:
        server = await asyncio.start_server(
            lambda r, w: _canned_connection(r, w, args.latency), "127.0.0.1", 0
        )
        port = server.sockets[0].getsockname()[1]
        print(f"http://127.0.0.1:{port}/v1", flush=True)
        await server.serve_forever()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
