"""`LogTail` (engines/cluster/informer.py): one follow stream per rank shown, no line twice.

The streams here are scripted: the test control plane's KWOK nodes serve no container logs, so
what the tail does with a stream that breaks, a container that restarts (a new stream from the
top of the log) and a job that ends is tried with streams that do exactly that.
"""

from __future__ import annotations

import threading

from launcher_magic.engines.cluster.informer import LogTail
from tests.launcher_magic.support import wait_until


def _stamp(n: int) -> str:
    return f"2026-12-03T10:00:{n // 100:02d}.{n % 100:06d}000Z"


class _Stream:
    """A follow stream that sends `lines` (timestamped), then ends or breaks."""

    def __init__(self, lines: list[int], breaks: bool = False):
        self.lines, self.breaks = lines, breaks
        self.released = False

    def stream(self, amt=None, decode_content=True):
        for n in self.lines:
            # Split lines across chunks, as a network does.
            text = f"{_stamp(n)} line {n}\n".encode()
            yield text[:7]
            yield text[7:]
        if self.breaks:
            raise ConnectionResetError("the stream broke")

    def release_conn(self):
        self.released = True

    def shutdown(self):
        pass


def test_a_tail_keeps_the_last_lines_once_across_reopened_streams():
    # First stream: lines 0-59, then it breaks; the container restarts and the next stream
    # starts from the top of what the kubelet holds (0-119); then the job ends.
    streams = [_Stream(list(range(60)), breaks=True), _Stream(list(range(120)))]
    opened, done = [], threading.Event()

    def open_stream(lines: int):
        if not streams:
            done.set()
            raise RuntimeError("no more streams")
        opened.append(lines)
        return streams.pop(0)

    tail = LogTail("log of a rank", open_stream, keep=50, finished=done.is_set,
                   first_backoff=0.01, max_backoff=0.02)
    assert wait_until(lambda: not tail.alive, timeout=30)
    assert tail.lines(200) == [f"line {n}" for n in range(70, 120)]  # the last `keep`, once each
    assert tail.lines(3) == ["line 117", "line 118", "line 119"]
    assert opened == [50, 50]  # each stream asks for no more than it keeps
    assert tail.opened == 2


def test_a_tail_nobody_reads_stops_trying():
    attempts = []

    def open_stream(lines: int):
        attempts.append(lines)
        raise RuntimeError("not started yet")

    tail = LogTail("log of a rank", open_stream, idle_seconds=0.2, first_backoff=0.01,
                   max_backoff=0.05)
    assert wait_until(lambda: not tail.alive, timeout=30)
    assert tail.idle
    tried = len(attempts)
    assert tried >= 1
    assert tail.lines(5) == []
    assert len(attempts) == tried  # asking again does not start it again: the engine makes a new one
