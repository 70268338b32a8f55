"""The rendezvous master for local multi-node jobs, ready before any node starts.

When `PADDLE_MASTER` names a local address, every `paddle.distributed.launch` first sleeps a
random 0-2 s and then races the others to host its HTTP key-value master. The local engine hosts
that master itself instead, on a port it owns, and hands nodes a `PADDLE_MASTER` they reach as
peers; with fixed node ranks (`--rank`) nobody waits for a race. In a cluster, worker 0 hosts
the master as Paddle intends.

The protocol is Paddle's launch master: `POST/PUT <key>` stores the body, `GET <prefix>` returns a
JSON object of every key under the prefix (404 when none), `DELETE <key>`, and `/healthy` is "ok".
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    server: RendezvousServer

    def _reply(self, code: int, body: bytes = b"") -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        if body:
            self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        with self.server.lock:
            found = {k: v for k, v in self.server.store.items() if k.startswith(self.path)}
        if found:
            self._reply(200, json.dumps(found).encode())
        else:
            self._reply(404)

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        value = self.rfile.read(length).decode("utf-8", errors="replace")
        with self.server.lock:
            self.server.store[self.path] = value
        self._reply(200)

    do_PUT = do_POST

    def do_DELETE(self) -> None:  # noqa: N802
        with self.server.lock:
            found = self.server.store.pop(self.path, None) is not None
        self._reply(200 if found else 404)

    def log_message(self, *args) -> None:
        pass


class RendezvousServer(ThreadingHTTPServer):
    """Paddle's launch master on `host:port` (port 0: any free port), served from a thread."""

    daemon_threads = True

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        super().__init__((host, port), _Handler)
        self.lock = threading.Lock()
        self.store: dict[str, str] = {"/healthy": "ok"}
        # A short poll interval: stop() waits for the serving loop to notice.
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def endpoint(self) -> str:
        # "localhost", not "127.0.0.1": Paddle treats 127.0.0.1 as "host the master here".
        return f"localhost:{self.port}"

    def start(self) -> RendezvousServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=5)
