"""The hub as `workbench up` runs it: a child that cannot outlive it, watched while it serves.

- The hub runs in a session of its own (Ctrl-C reaches `workbench up` only, which stops the hub
  in order) with `PR_SET_PDEATHSIG`: when `workbench up` dies, however it dies (SIGKILL, the OOM
  killer, a crashed terminal multiplexer), the kernel sends the hub SIGTERM, and the hub stops
  its proxy, services and users' servers as on any stop. Chosen over a lifeline pipe, which the
  hub would need code to watch, and over a cgroup of its own, which the users' servers leave
  (each gets a cgroup of its profile's limits) and which nothing is left alive to empty.
- It carries `instance.MARKER` in its environment (and so does what it starts but users'
  servers), so what it leaves when it is killed itself is found by the state folder.
- Its standard streams (its log, the proxy's, the services') go through a pipe into a
  size-bounded log (`bounded_log`).
- `RestartBudget`: a hub that dies after it served, or is killed, is started again, a few times
  per window; one that keeps dying stops the workbench.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from hub_config.bounded_log import BoundedLog, pump
from hub_config.instance import MARKER

PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded here: the child only calls it
# How long each stop signal gets before the next, harder one (the hub stops servers first).
STOP_TIMEOUTS = ((signal.SIGINT, 60), (signal.SIGTERM, 15), (signal.SIGKILL, 5))


def _dies_with(parent: int) -> Callable[[], None]:
    """For the hub's child side of the fork: be sent SIGTERM when `parent` ends, and end at once
    if it already has (between the fork and this call)."""
    def arrange() -> None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return arrange


class HubProcess:
    """One run of the hub: `argv` in `state` with `env` (marked with the state folder), its
    output into `log`."""

    def __init__(self, argv: Sequence[str], env: dict[str, str], state: Path, log: BoundedLog):
        self.argv, self.state, self.log = list(argv), state, log
        self.env = {**env, MARKER: str(state)}
        self.process: subprocess.Popen | None = None
        self.started_at = 0.0

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.argv, cwd=self.state, env=self.env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_dies_with(os.getpid()))
        self.started_at = time.monotonic()
        pump(self.process.stdout, self.log)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def wait(self, timeout: float) -> int | None:
        """The hub's exit status once it has exited (within `timeout`), else None."""
        assert self.process is not None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> int:
        """SIGINT (the hub stops servers, services and proxy), then harder signals."""
        process = self.process
        assert process is not None
        for sig, timeout in STOP_TIMEOUTS:
            if process.poll() is not None:
                break
            try:
                os.killpg(process.pid, sig) if sig == signal.SIGKILL else process.send_signal(sig)
            except ProcessLookupError:
                break
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                continue
        return process.wait()


def answers(url: str) -> bool:
    """Whether the hub at `url` answers its API."""
    try:
        with urllib.request.urlopen(f"{url}/hub/api/", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def how_it_ended(code: int) -> str:
    """An exit status in words: "killed by SIGKILL", "exit status 1"."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


class RestartBudget:
    """At most `restarts` restarts within any `window` seconds."""

    def __init__(self, restarts: int = 3, window: float = 600.0,
                 clock: Callable[[], float] = time.monotonic):
        self.restarts, self.window, self.clock = restarts, window, clock
        self._times: list[float] = []

    def take(self) -> int | None:
        """The number of this restart within the window, or None when the budget is spent."""
        now = self.clock()
        self._times = [t for t in self._times if now - t < self.window]
        if len(self._times) >= self.restarts:
            return None
        self._times.append(now)
        return len(self._times)
