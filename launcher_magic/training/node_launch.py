"""What each node of a TrainJob runs (the Paddle runtime's command): Paddle's launcher, set up.

    python -m launcher_magic.training.node_launch <the TrainJob's launcher arguments>

The runtime (deploy/k8s/trainer/paddle-runtime.yaml) cannot say it in its pod template, since
Trainer v2 patches no working directory and a pod's variables cannot choose between values:
- the node works in the job directory (`PADDLE_WORKBENCH_JOB_DIR`), as the other engines' nodes
  do, so a cell's relative paths land on the user's storage;
- node 0 is the rendezvous master at its own pod address (`POD_IP`): Paddle's launcher starts the
  master only where the master's host is 127.0.0.1 or one of the node's own addresses, so with
  node 0's DNS name (which the other nodes use) no node would start it;
- a node stopped by a signal (its pod deleted, evicted) ends with 128 + the signal, where
  Paddle's launcher would exit with the bare signal number (15): the runtime's failure policy
  fails the job for exit codes 1-127 (the training code failed) and restarts it for the rest.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence

from workbench_contract import environment as wbenv

FORWARDED = (signal.SIGTERM, signal.SIGINT)


class NodeLaunchError(RuntimeError):
    """The pod lacks what the runtime must give it; says which variable."""


def launch(env: Mapping[str, str], args: Sequence[str], python: str = sys.executable
           ) -> tuple[str, list[str], dict[str, str]]:
    """(working directory, argv, environment) of Paddle's launcher for this node. The launcher
    lets PADDLE_MASTER in its environment override --master, so both name the same master."""
    for name in ("PADDLE_MASTER", "PADDLE_NNODES", wbenv.NODE_RANK, wbenv.JOB_DIR):
        if not env.get(name):
            raise NodeLaunchError(f"{name} is not set: the Paddle runtime and the TrainJob set it")
    master, rank = env["PADDLE_MASTER"], env[wbenv.NODE_RANK]
    if rank == "0":
        pod_ip = env.get("POD_IP", "")
        if not pod_ip:
            raise NodeLaunchError("POD_IP is not set: the Paddle runtime sets it from status.podIP")
        master = f"{pod_ip}:{master.rpartition(':')[2]}"
    argv = [python, "-m", "paddle.distributed.launch", "--master", master,
            "--nnodes", env["PADDLE_NNODES"], "--rank", rank,
            # The whole job restarts (the runtime's failure policy); Paddle's own per-node
            # restarts would hide a failure from it.
            "--max_restart", "0", *args]
    return env[wbenv.JOB_DIR], argv, {**env, "PADDLE_MASTER": master}


def exit_code(returncode: int, signalled: int | None) -> int:
    """The node's exit code: 128 + the signal that stopped it, else the launcher's own."""
    if signalled is not None:
        return 128 + signalled
    return 128 - returncode if returncode < 0 else returncode


def main(args: Sequence[str] | None = None) -> int:
    try:
        cwd, argv, env = launch(os.environ, sys.argv[1:] if args is None else args)
        os.chdir(cwd)
    except (NodeLaunchError, OSError) as err:
        print(f"paddle-workbench node: {err}", file=sys.stderr)
        return 2
    child = subprocess.Popen(argv, env=env)
    signalled: list[int] = []

    def forward(signum, _frame):
        signalled.append(signum)
        child.send_signal(signum)

    for signum in FORWARDED:
        signal.signal(signum, forward)
    returncode = child.wait()
    return exit_code(returncode, signalled[0] if signalled else None)


if __name__ == "__main__":
    sys.exit(main())
