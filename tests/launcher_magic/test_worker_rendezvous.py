"""A rank other than 0 waits for rank 0's store, and stops waiting once rank 0 has ended."""

from __future__ import annotations

import socket
import threading

from launcher_magic.core.jobdir import JobDir
from launcher_magic.core.status import RankState
from launcher_magic.training import worker


def _closed_endpoint() -> str:
    with socket.socket() as s:  # a port nobody listens on once this socket is closed
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def test_the_wait_ends_when_rank_0_ends_without_opening_its_store(tmp_path):
    job = JobDir(tmp_path)
    endpoint = _closed_endpoint()
    asked = []

    def gone() -> bool:
        asked.append(1)
        if len(asked) == 3:  # rank 0 records its end while rank 1 is waiting
            worker._record(job, 0, 0, 0, RankState.SUCCEEDED, exit_code=0)
        return worker._rank0_ended(job, 0)

    worker._record(job, 0, 0, 0, RankState.RUNNING)
    assert worker.wait_for_store(endpoint, timeout=600, gone=gone) is False
    assert len(asked) == 3  # it stopped at the first look after rank 0's end
    assert not worker._rank0_ended(job, 1)  # another attempt's rank 0 has not ended


def test_the_wait_succeeds_once_the_store_listens(tmp_path):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    endpoint = f"127.0.0.1:{server.getsockname()[1]}"
    opened = threading.Timer(0.2, server.listen)
    opened.start()
    try:
        assert worker.wait_for_store(endpoint, timeout=600,
                                     gone=lambda: worker._rank0_ended(JobDir(tmp_path), 0))
    finally:
        opened.cancel()
        server.close()
