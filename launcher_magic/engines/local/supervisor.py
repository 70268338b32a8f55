"""The local engine's per-job supervisor: `python -m launcher_magic.engines.local.supervisor <job dir>`.

One supervisor process runs each local job, in its own session and its own network namespace
(`isolation`: no other account reaches the job's ports), apart from the kernel. It hosts
the rendezvous master, starts one process group per node, watches them, writes `status.json`,
relaunches the whole job after a failure while `--max-restarts` allows, enforces `--timeout`, and
stops every node on SIGTERM/SIGINT or when the kernel that started it is gone. Whatever happens,
it leaves no process of the job behind.

Cold (`python -m launcher_magic.engines.local.supervisor`), each node is a process group led by
`paddle.distributed.launch`. Warm (`--warm`: this supervisor was forked by the kernel's warm
interpreter, see `warm`), each node is a forked process group with its ranks forked into it, Paddle
already imported, and no rendezvous master is needed: the supervisor hands out the endpoints.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

from launcher_magic.core.commands import node_command
from launcher_magic.core.forking import LOOPBACK, free_endpoints, start_node
from launcher_magic.core.jobdir import JobDir, tail_lines
from launcher_magic.core.processes import (
    StopTimeouts,
    become_subreaper,
    pid_alive,
    reap_children,
    start_group,
    stop_groups,
)
from launcher_magic.core.status import JobState, JobStatus, NodeStatus, RankState, RankStatus
from launcher_magic.engines.local.isolation import enter_private_network
from launcher_magic.engines.local.rendezvous import RendezvousServer

POLL_SECONDS = 0.1


class _StopRequested(Exception):
    """The job must end now: `state` is how it ends (Stopped when asked, Failed past its limit)."""

    def __init__(self, reason: str, state: JobState = JobState.STOPPED):
        super().__init__(reason)
        self.reason = reason
        self.state = state


class Supervisor:
    """Runs one job to a terminal state. See the module docstring."""

    def __init__(
        self,
        job: JobDir,
        *,
        owner_pid: int | None = None,
        devices: list[list[int]] | None = None,
        timeouts: StopTimeouts | None = None,
        python: str = sys.executable,
        warm: bool = False,
    ):
        self.job = job
        self.spec = job.read_spec()
        self.owner_pid = owner_pid
        self.devices = devices or [[] for _ in range(self.spec.nodes)]
        self.timeouts = timeouts or StopTimeouts()
        self.python = python
        self.warm = warm
        self.stop_reason: str | None = None
        self.status = JobStatus(job_id=self.spec.job_id, supervisor_pid=os.getpid())
        self._parent = os.getppid()

    # -- status -------------------------------------------------------------------------------

    def _write(self, status: JobStatus) -> None:
        if status != self.status:
            self.status = status
            self.job.write_status(status)

    def _rank_statuses(self, attempt: int) -> tuple[RankStatus, ...]:
        records = self.job.read_rank_records(attempt)
        nproc = self.spec.resources.nproc_per_node
        ranks = []
        for rank in range(self.spec.world_size):
            record = records.get(rank, {})
            ranks.append(
                RankStatus(
                    rank=rank,
                    node=rank // nproc,
                    state=RankState(record.get("state", RankState.PENDING)),
                    exit_code=record.get("exit_code"),
                    error=record.get("error"),
                    finished_at=record.get("time") if "exit_code" in record else None,
                )
            )
        return tuple(ranks)

    def _ranks_done(self, attempt: int) -> bool:
        """Every rank recorded success and its process has exited.

        Paddle's launcher notices finished workers only on its next watch tick and then tears
        itself down; once every rank has ended there is nothing left for it to do, so the job is
        done and the launchers are stopped rather than waited for.
        """
        records = self.job.read_rank_records(attempt)
        return len(records) == self.spec.world_size and all(
            r.get("state") == RankState.SUCCEEDED.value and not pid_alive(r.get("pid"))
            for r in records.values()
        )

    def _failed_rank(self, ranks: tuple[RankStatus, ...], node: int) -> int | None:
        """The rank that failed first: one that recorded a failure, else one that never ended."""
        failed = [r for r in ranks if r.state == RankState.FAILED]
        if failed:
            # Peers of a failed rank often fail too, a moment later: blame the first.
            return min(failed, key=lambda r: (r.finished_at or float("inf"), r.rank)).rank
        on_node = [r for r in ranks if r.node == node and not r.state.is_terminal()]
        return on_node[0].rank if on_node else None

    def _blame_unrecorded(self, attempt: int, node: int, code: int) -> tuple[RankStatus, ...]:
        """Ranks of the failed `node` that ended without recording how (their launcher failed
        before starting them, or they were killed) become Failed, with the last line of their log
        (else of the node's launcher log) as the error, so the panel can say what happened."""
        ranks = []
        for rank in self.status.ranks:
            if rank.node == node and not rank.state.is_terminal():
                log = self.job.rank_log(attempt, rank.rank, self.spec.resources.nproc_per_node)
                last = tail_lines(log, 1) or tail_lines(self.job.launch_log(attempt, node), 1)
                error = (f"ended before reporting: {last[0].strip()}" if last
                         else "ended before reporting, with no output")
                rank = replace(rank, state=RankState.FAILED, exit_code=code, error=error)
            ranks.append(rank)
        return tuple(ranks)

    # -- signals and the owner ----------------------------------------------------------------

    def _on_signal(self, signum, _frame) -> None:
        self.stop_reason = f"stopped by request (signal {signal.Signals(signum).name})"

    def _check_stop(self, deadline: float | None) -> None:
        if self.stop_reason:
            raise _StopRequested(self.stop_reason)
        if self.owner_pid and (not pid_alive(self.owner_pid) or os.getppid() != self._parent):
            raise _StopRequested("stopped: the notebook kernel that started the job has gone")
        if deadline is not None and time.time() > deadline:
            raise _StopRequested(f"ran past its time limit of {self.spec.timeout_seconds} s",
                                 JobState.FAILED)

    # -- one attempt --------------------------------------------------------------------------

    def _run_attempt(self, attempt: int, deadline: float | None) -> tuple[int, int] | None:
        """Run every node once. Returns None on success, or (node, exit code) of a failure."""
        rendezvous = None if self.warm else RendezvousServer().start()
        leaders: list = []
        succeeded = False
        try:
            self._start_nodes(attempt, rendezvous, leaders)
            nodes = tuple(NodeStatus(node=n, state=RankState.RUNNING, pid=p.pid)
                          for n, p in enumerate(leaders))
            self._write(self.status.moved_to(
                JobState.RUNNING, f"running attempt {attempt + 1}", nodes=nodes,
                started_at=self.status.started_at or time.time(),
            ))
            failure = self._watch_nodes(attempt, leaders, deadline)
            succeeded = failure is None
            return failure
        finally:
            self._end_attempt(attempt, leaders, succeeded)
            if rendezvous is not None:
                rendezvous.stop()

    def _start_nodes(self, attempt: int, rendezvous: RendezvousServer | None,
                     leaders: list) -> None:
        """Start each node's leader process (forked from the warm image, or a cold launcher)
        into `leaders` as it starts, so that a failure half-way stops those already running."""
        if self.warm:
            # Rank 0's TCP store, then one endpoint per rank, as Paddle's launcher assigns.
            master, *endpoints = free_endpoints(self.spec.world_size + 1)
        for node in range(self.spec.nodes):
            if self.warm:
                leaders.append(start_node(self.spec, self.job, node=node, attempt=attempt,
                                          master=master, endpoints=endpoints))
                continue
            argv, env = node_command(
                self.spec, self.job, node=node, attempt=attempt,
                master=rendezvous.endpoint, python=self.python, devices=self.devices[node],
            )
            # Every node is on this machine: Paddle's launcher is told so, rather than to look
            # up the host's name, whose address the job's own network does not have.
            leaders.append(start_group(argv, {**os.environ, **env, "POD_IP": LOOPBACK},
                                       self.job.path, self.job.launch_log(attempt, node)))

    def _watch_nodes(self, attempt: int, leaders: list,
                     deadline: float | None) -> tuple[int, int] | None:
        """Follow the nodes until all have succeeded (None) or one failed ((node, exit code)).
        Raises _StopRequested when asked to stop, the kernel has gone or time ran out."""
        while True:
            try:
                self._check_stop(deadline)
            except _StopRequested as stop:
                self._write(self.status.moved_to(JobState.STOPPING, stop.reason))
                raise
            codes = [p.poll() for p in leaders]
            nodes = tuple(
                replace(n, state=_node_state(code), exit_code=code)
                for n, code in zip(self.status.nodes, codes, strict=True)
            )
            self._write(replace(self.status, nodes=nodes, ranks=self._rank_statuses(attempt)))
            failed = [(n, c) for n, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                return failed[0]
            if all(code == 0 for code in codes) or self._ranks_done(attempt):
                return None
            time.sleep(POLL_SECONDS)

    def _end_attempt(self, attempt: int, leaders: list, succeeded: bool) -> None:
        """Stop whatever of the attempt still runs and record how each node ended."""
        # After success every rank has ended and the launchers have nothing left to finish:
        # no need to give them time to wind down.
        timeouts = StopTimeouts(0, 0, self.timeouts.kill) if succeeded else self.timeouts
        stop_groups([p.pid for p in leaders], timeouts, leaders)
        for leader in leaders:
            leader.poll()
        reap_children()
        if leaders:
            codes = [0 if succeeded else p.returncode for p in leaders]
            nodes = tuple(
                replace(n, state=_node_state(code, stopped=True), exit_code=code)
                for n, code in zip(self.status.nodes, codes, strict=True)
            )
            self.status = replace(self.status, nodes=nodes, ranks=self._rank_statuses(attempt))

    # -- the job ------------------------------------------------------------------------------

    def run(self) -> int:
        """Run the job to a terminal state; the exit code is 0 only for Succeeded."""
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        become_subreaper()
        self.job.write_status(self.status)
        deadline = (
            time.time() + self.spec.timeout_seconds if self.spec.timeout_seconds else None
        )
        attempt = 0
        try:
            while True:
                failure = self._run_attempt(attempt, deadline)
                if failure is None:
                    self._write(self.status.moved_to(JobState.SUCCEEDED, "all ranks finished"))
                    return 0
                node, code = failure
                self.status = replace(self.status,
                                      ranks=self._blame_unrecorded(attempt, node, code))
                failed_rank = self._failed_rank(self.status.ranks, node)
                what = f"rank {failed_rank}" if failed_rank is not None else f"node {node}"
                if attempt < self.spec.max_restarts:
                    attempt += 1
                    self._write(self.status.moved_to(
                        JobState.RESTARTING,
                        f"{what} failed (exit code {code}); restart {attempt} of "
                        f"{self.spec.max_restarts}",
                        restarts=attempt, failed_rank=failed_rank,
                    ))
                    continue
                self._write(self.status.moved_to(
                    JobState.FAILED, f"{what} failed (exit code {code})", failed_rank=failed_rank,
                ))
                return 1
        except _StopRequested as stop:
            self._write(self.status.moved_to(stop.state, stop.reason))
            return 1
        except BaseException as exc:  # never leave a job looking alive
            self._write(self.status.moved_to(JobState.FAILED, f"supervisor error: {exc!r}"))
            raise


def _node_state(code: int | None, stopped: bool = False) -> RankState:
    if code is None:
        return RankState.RUNNING
    if code == 0:
        return RankState.SUCCEEDED
    return RankState.STOPPED if stopped and code < 0 else RankState.FAILED


def main(argv: list[str] | None = None) -> int:
    # First, while this process has one thread: the job's own network (see `isolation`).
    shared = enter_private_network()
    if shared:
        print(f"supervisor: the job runs on the machine's loopback: {shared}", file=sys.stderr,
              flush=True)
    parser = argparse.ArgumentParser(prog="python -m launcher_magic.engines.local.supervisor")
    parser.add_argument("job_dir", type=Path)
    parser.add_argument("--owner-pid", type=int, default=None)
    parser.add_argument("--devices", default="", help="per node, ';'-separated lists: 0,1;2,3")
    parser.add_argument("--interrupt-timeout", type=float, default=5.0)
    parser.add_argument("--terminate-timeout", type=float, default=5.0)
    parser.add_argument("--warm", action="store_true",
                        help="fork the nodes and ranks (run from the warm interpreter)")
    args = parser.parse_args(argv)
    devices = [
        [int(d) for d in part.split(",") if d] for part in args.devices.split(";")
    ] if args.devices else None
    supervisor = Supervisor(
        JobDir(args.job_dir),
        owner_pid=args.owner_pid,
        devices=devices,
        timeouts=StopTimeouts(args.interrupt_timeout, args.terminate_timeout),
        warm=args.warm,
    )
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
