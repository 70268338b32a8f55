"""A TCP proxy in front of the API server that can cut every connection, for watch tests.

``CutProxy(host, port)`` listens on 127.0.0.1 and passes bytes both ways (TLS goes through
untouched, so clients keep checking the server's certificate for 127.0.0.1). ``cut()`` closes
every open connection at once, as a load balancer or a dropped network does; ``down()`` does that
and refuses new connections until ``up()``. ``kubeconfig(path, out)`` writes a copy of a
kubeconfig that points at the proxy. ``close()`` stops it (the fixture that makes one does).
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import yaml


class CutProxy:
    def __init__(self, host: str, port: int):
        self.target = (host, port)
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._refusing = False
        self._closed = False
        self.connections = 0  # connections accepted and passed on
        self.cut_connections = 0  # connections closed by cut()
        threading.Thread(target=self._accept, daemon=True, name="cut-proxy").start()

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def kubeconfig(self, source: Path, out: Path) -> Path:
        """A copy of kubeconfig `source` whose clusters point at this proxy."""
        config = yaml.safe_load(Path(source).read_text())
        for cluster in config.get("clusters") or []:
            cluster["cluster"]["server"] = self.server
        out.write_text(yaml.safe_dump(config))
        return out

    def cut(self) -> int:
        """Close every open connection; returns how many there were."""
        with self._lock:
            sockets, self._open = self._open, set()
        for sock in sockets:
            _close(sock)
        cut = len(sockets) // 2
        self.cut_connections += cut
        return cut

    def down(self) -> int:
        """Cut everything and refuse new connections until `up()`."""
        self._refusing = True
        return self.cut()

    def up(self) -> None:
        self._refusing = False

    def close(self) -> None:
        self._closed = True
        _close(self._listener)
        self.cut()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._refusing:
                _close(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=10)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._open.update((client, upstream))
            self.connections += 1
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(source)
                self._open.discard(sink)
            _close(source)
            _close(sink)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass
