"""A log file that cannot fill the disk: rotated by size, a fixed number of old files kept.

`workbench up` reads the hub's output (the hub's log, and what the proxy and the hub's services
print, since they write to the hub's standard streams) from a pipe and writes it here
(`pump`): `jupyterhub.log` grows to `max_bytes`, then becomes `jupyterhub.log.1` (the older ones
shift to `.2` ... `.<backups>`, the oldest is dropped), and a new one starts. A lab server that
runs for months keeps at most (backups + 1) x max_bytes of hub log.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import BinaryIO

MAX_BYTES = 10 * 1024 * 1024
BACKUPS = 5


class BoundedLog:
    """Append-only writes to `path`, rotated at `max_bytes` (files created 0600)."""

    def __init__(self, path: Path, max_bytes: int = MAX_BYTES, backups: int = BACKUPS):
        self.path, self.max_bytes, self.backups = path, max_bytes, backups
        self._lock = threading.Lock()
        self._file: BinaryIO | None = None

    def write(self, data: bytes) -> None:
        with self._lock:
            if self._file is None:
                self._file = self._open()
            if self._file.tell() and self._file.tell() + len(data) > self.max_bytes:
                self._rotate()
            self._file.write(data)
            self._file.flush()

    def _open(self) -> BinaryIO:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        handle = os.fdopen(fd, "ab")
        handle.seek(0, os.SEEK_END)
        return handle

    def _rotate(self) -> None:
        assert self._file is not None
        self._file.close()
        for n in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{n + 1}"))
        if self.backups:
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink()
        self._file = self._open()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def tail(self, lines: int) -> list[str]:
        """The last `lines` lines of the current file."""
        try:
            return self.path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return []


def pump(stream: BinaryIO, log: BoundedLog) -> threading.Thread:
    """Copy `stream` (a pipe) into `log`, line by line, until it ends; in a daemon thread."""
    def copy() -> None:
        for line in iter(stream.readline, b""):
            log.write(line)
        stream.close()

    thread = threading.Thread(target=copy, name=f"log: {log.path.name}", daemon=True)
    thread.start()
    return thread
