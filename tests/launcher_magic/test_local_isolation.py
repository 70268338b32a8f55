"""A local job's ports are its own: nothing outside the job reaches its rendezvous or its ranks.

A 2-node job, warm and cold, runs a real `dist.init_parallel_env()` and an all-reduce (its ranks
reach each other), then holds its ports open while this test, outside the job, connects to each
port the job listens on: rank 0's TCP store, every rank's endpoint and, on the cold path, the
supervisor's rendezvous store. Each connection must be refused; on the machine's own loopback
(before jobs got a network of their own) every one was accepted, by any local account.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from launcher_magic.engines.local import isolation

from .support import read_status, requires_paddle, wait_until

pytestmark = [requires_paddle, pytest.mark.paddle]

HOLD_CELL = '''
import json, os, time
import paddle
import paddle.distributed as dist
dist.init_parallel_env()
x = paddle.to_tensor([float(dist.get_rank() + 1)])
dist.all_reduce(x)
ports = {k: os.environ[k] for k in ("PADDLE_MASTER", "PADDLE_TRAINER_ENDPOINTS")}
with open(f"ports-{dist.get_rank()}.json", "w") as f:
    json.dump({"sum": float(x.numpy()[0]), **ports}, f)
time.sleep(600)
'''


def _refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except OSError:
        return True


def _rendezvous_port(job: Path) -> int | None:
    """The cold path's rendezvous store: the `PADDLE_MASTER` its nodes' launchers were given."""
    status = json.loads((job / "status.json").read_text())
    for node in status["nodes"]:
        environ = Path(f"/proc/{node['pid']}/environ").read_bytes().split(b"\0")
        for item in environ:
            if item.startswith(b"PADDLE_MASTER="):
                return int(item.decode().rpartition(":")[2])
    return None


def test_this_machine_gives_jobs_a_network_of_their_own():
    assert isolation.available() is None


@pytest.mark.parametrize("warm", [True, False], ids=["warm", "cold"])
def test_no_port_of_a_running_job_answers_outside_it(shell, jobs_root, warm):
    from launcher_magic.kernel.magics import launcher

    engine = launcher(parent=shell).engine("local")
    engine.warm = warm
    job = shell.run_cell_magic("paddle_launch", "--nodes 2 --name held --detach", HOLD_CELL)
    path = job.handle.dir.path
    try:
        assert wait_until(lambda: all((path / f"ports-{r}.json").exists() for r in (0, 1)),
                          timeout=240), read_status(jobs_root, job.job_id)
        reports = [json.loads((path / f"ports-{r}.json").read_text()) for r in (0, 1)]
        assert [r["sum"] for r in reports] == [3.0, 3.0]  # the ranks reached each other
        ports = {int(reports[0]["PADDLE_MASTER"].rpartition(":")[2])}
        ports |= {int(e.rpartition(":")[2])
                  for e in reports[0]["PADDLE_TRAINER_ENDPOINTS"].split(",")}
        if not warm:
            ports.add(_rendezvous_port(path))
        assert None not in ports and len(ports) >= 3, ports
        assert [port for port in sorted(ports) if not _refused(port)] == []
        assert engine.notes(job.spec) == []  # nothing to warn about here
    finally:
        job.stop()
    assert job.state.value == "Stopped"
