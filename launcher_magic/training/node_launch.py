"""What each node of a TrainJob runs (the Paddle runtime's command): its ranks, started at once.

    python -m launcher_magic.training.node_launch <the TrainJob's launcher arguments>

A CPU node (the arguments name no `--devices`) starts its ranks itself, with Paddle imported once
per pod (`forked`): the node process imports Paddle and the training worker while it meets the
other nodes (`node_rendezvous`), then forks each rank from that image with the environment
Paddle's launcher would give it (`core.forking`), as the local engine's warm interpreter does.
Without it a node paid for two interpreters and two imports of Paddle (its launcher's and its
rank's) and for the launcher's own rendezvous before the first rank started. A node with GPUs
runs Paddle's launcher (`launch`), so no CUDA context is ever forked; so does a job run with
`--env WORKBENCH_PADDLE_LAUNCHER=1`, for code that needs what only the launcher does.

Either way, what the runtime (deploy/k8s/trainer/paddle-runtime.yaml) cannot say in its pod
template, since Trainer v2 patches no working directory and a pod's variables cannot choose
between values:
- the node works in the job directory (`PADDLE_WORKBENCH_JOB_DIR`), as the other engines' nodes
  do, so a cell's relative paths land on the user's storage;
- node 0 is the rendezvous master at its own pod address (`POD_IP`): Paddle's launcher starts the
  master only where the master's host is 127.0.0.1 or one of the node's own addresses, so with
  node 0's DNS name (which the other nodes use) no node would start it (and `node_rendezvous`
  listens there);
- a node stopped by a signal (its pod deleted, evicted) ends with 128 + the signal, where
  Paddle's launcher would exit with the bare signal number (15): the runtime's failure policy
  fails the job for exit codes 1-127 (the training code failed) and restarts it for the rest.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from workbench_contract import environment as wbenv

FORWARDED = (signal.SIGTERM, signal.SIGINT)
PADDLE_LAUNCHER = "WORKBENCH_PADDLE_LAUNCHER"  # "1" (a job's --env): Paddle's launcher
RENDEZVOUS_FILE = "rendezvous"  # in node 0's log folder of the attempt: its address
RENDEZVOUS_SECONDS = 600.0  # how long nodes wait for each other (pods pulling an image, say)


class NodeLaunchError(RuntimeError):
    """The pod lacks what the runtime must give it; says which variable."""


@dataclass(frozen=True)
class ForkedNode:
    """A node that forks its ranks: where they log, how many, what they run."""

    log_dir: Path
    nproc_per_node: int
    script: Path


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


def forked_options(env: Mapping[str, str], args: Sequence[str]) -> ForkedNode | None:
    """What this node forks when it may (a CPU node whose arguments are the ones a TrainJob
    gives: `--log_dir DIR --nproc_per_node N SCRIPT`); None for Paddle's launcher."""
    options: dict[str, str] = {}
    rest = list(args)
    while len(rest) > 1 and rest[0] in ("--log_dir", "--nproc_per_node"):
        name, value = rest[0], rest[1]
        options[name], rest = value, rest[2:]
    if (env.get(PADDLE_LAUNCHER) == "1" or len(rest) != 1 or len(options) != 2
            or not options["--nproc_per_node"].isdigit()
            or int(options["--nproc_per_node"]) < 1):
        return None
    return ForkedNode(Path(options["--log_dir"]), int(options["--nproc_per_node"]),
                      Path(rest[0]))


def forked(env: Mapping[str, str], options: ForkedNode) -> int:
    """Run this node's ranks as forks of this process, once Paddle is imported and every node
    has given its ranks' endpoints; the node's exit code."""
    from launcher_magic.core import forking
    from launcher_magic.core.jobdir import JobDir
    from launcher_magic.training import node_rendezvous

    began = time.monotonic()
    job = JobDir(Path(env[wbenv.JOB_DIR]))
    spec = job.read_spec()
    node, nproc = int(env[wbenv.NODE_RANK]), options.nproc_per_node
    attempt = int(env.get(wbenv.ATTEMPT) or 0)
    pod_ip, master = env["POD_IP"], env["PADDLE_MASTER"]
    own = forking.free_endpoints(nproc + (1 if node == 0 else 0), pod_ip)
    published = job.node_log_dir(attempt, 0) / RENDEZVOUS_FILE
    met: dict[str, object] = {}

    def meet() -> None:
        try:
            if node == 0:
                port = int(master.rpartition(":")[2])
                with socket.create_server((pod_ip, port), backlog=64) as listener:
                    node_rendezvous.publish(published, f"{pod_ip}:{port}")
                    met["result"] = node_rendezvous.serve(
                        listener, job=spec.job_id, attempt=str(attempt), nnodes=spec.nodes,
                        own=own[1:], master=own[0], timeout=RENDEZVOUS_SECONDS)
            else:
                met["result"] = node_rendezvous.join(
                    master, job=spec.job_id, attempt=str(attempt), node=node, own=own,
                    timeout=RENDEZVOUS_SECONDS, published=published)
        except (OSError, node_rendezvous.RendezvousError) as exc:
            met["error"] = exc
        met["after"] = time.monotonic() - began

    meeting = threading.Thread(target=meet, daemon=True)
    meeting.start()
    import paddle  # noqa: F401 - imported once here, before the ranks are forked

    import launcher_magic.training.worker  # noqa: F401 - what main.py runs, loaded once too
    imported = time.monotonic() - began
    meeting.join()
    if "error" in met:
        print(f"paddle-workbench node {node}: {met['error']}", file=sys.stderr, flush=True)
        return 1
    endpoints, store = met["result"]  # type: ignore[misc]
    print(f"node {node}: Paddle imported after {imported:.2f}s, the {spec.nodes} nodes met "
          f"after {met['after']:.2f}s", flush=True)
    envs = [{**env, **rank_env} for rank_env in forking.node_environments(
        spec, job, node=node, attempt=attempt, master=store, endpoints=endpoints,
        pod_ip=pod_ip)]
    log_dir = options.log_dir
    log_dir.mkdir(parents=True, exist_ok=True)
    logs = [log_dir / f"workerlog.{local}" for local in range(nproc)]
    return forking.run_ranks(envs, options.script, logs, node=node, nproc=nproc,
                             origin="this pod's node process (Paddle imported once)", echo=True)


def main(args: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if args is None else args
    try:
        cwd, argv, env = launch(os.environ, args)
        os.chdir(cwd)
    except (NodeLaunchError, OSError) as err:
        print(f"paddle-workbench node: {err}", file=sys.stderr)
        return 2
    options = forked_options(env, args)
    if options is not None:
        code = forked(env, options)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # Paddle's interpreter teardown is slow, and nothing is left to do
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
