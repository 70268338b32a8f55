"""How the nodes of a TrainJob find each other when no Paddle launcher runs in their pods.

Node 0 listens on its pod address at the runtime's master port (PADDLE_MASTER's port, which the
runtime declares), and writes that address into the job directory, which every node mounts
(`publish`). Every other node tries, every `RETRY_SECONDS`, the address it finds there and
PADDLE_MASTER's host, node 0's name in the JobSet's headless Service. The name alone would do,
but late: a node that asks before node 0 has an address gets "no such name", and the cluster's
DNS cache keeps that answer for seconds (CoreDNS's `cache` holds a denial for up to its TTL);
the job directory has the address as soon as node 0 is up.

Each node sends one JSON line, `{"job", "attempt", "node", "endpoints"}` (its ranks' endpoints);
once all have come, node 0 answers each with one JSON line, `{"endpoints": [every rank's, in
rank order], "master": rank 0's TCP store}`. A line of another job or attempt, or from a node
that is already in, is answered with `{"error": ...}` and does not count.

This is what Paddle's launcher does before it starts its workers (its HTTP master), in one
round trip per node, while the node's interpreter imports Paddle.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Sequence
from pathlib import Path

RETRY_SECONDS = 0.05
LINE_LIMIT = 1 << 16


class RendezvousError(RuntimeError):
    """The nodes did not meet: says who was missing or what was wrong."""


def _line(conn: socket.socket, deadline: float) -> dict:
    conn.settimeout(max(0.1, deadline - time.monotonic()))
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(4096)
        if not chunk or len(data) > LINE_LIMIT:
            raise OSError("the connection ended before a whole line")
        data += chunk
    return json.loads(data)


def _send(conn: socket.socket, message: dict) -> None:
    conn.sendall(json.dumps(message).encode() + b"\n")


def serve(listener: socket.socket, *, job: str, attempt: str, nnodes: int,
          own: Sequence[str], master: str, timeout: float) -> tuple[list[str], str]:
    """Node 0: collect the other nodes' endpoints on `listener` (bound and listening), answer
    them, and return (every rank's endpoints, the TCP store `master`)."""
    deadline = time.monotonic() + timeout
    joined: dict[int, tuple[socket.socket, list[str]]] = {}
    try:
        while len(joined) < nnodes - 1:
            listener.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                if time.monotonic() >= deadline:
                    missing = sorted(set(range(1, nnodes)) - set(joined))
                    raise RendezvousError(f"nodes {missing} did not join within "
                                          f"{timeout:.0f}s") from None
                continue
            try:
                hello = _line(conn, deadline)
                node = hello.get("node")
                problem = ("another job or attempt" if (hello.get("job"), hello.get("attempt"))
                           != (job, attempt) else
                           "no such node" if not isinstance(node, int) or not 0 < node < nnodes
                           else "that node has joined already" if node in joined else "")
            except (OSError, ValueError, AttributeError):
                conn.close()
                continue
            if problem:
                _send(conn, {"error": problem})
                conn.close()
                continue
            joined[node] = (conn, [str(e) for e in hello.get("endpoints") or []])
        endpoints = list(own) + [e for node in sorted(joined) for e in joined[node][1]]
        for conn, _ in joined.values():
            _send(conn, {"endpoints": endpoints, "master": master})
        return endpoints, master
    finally:
        for conn, _ in joined.values():
            conn.close()


def publish(path: Path, address: str) -> None:
    """Node 0: write its address (host:port) where the other nodes look first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(address + "\n")
    partial.replace(path)


def _published(path: Path | None) -> list[str]:
    try:
        address = path.read_text().strip() if path else ""
    except OSError:
        return []
    return [address] if address.rpartition(":")[2].isdigit() else []


def join(master: str, *, job: str, attempt: str, node: int, own: Sequence[str],
         timeout: float, published: Path | None = None) -> tuple[list[str], str]:
    """Node 1 and up: send `own` endpoints to node 0, at the address it `published` or at
    `master` (host:port), trying again while neither answers; returns (every rank's endpoints,
    the TCP store's endpoint)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        for address in [*_published(published), master]:
            host, _, port = address.rpartition(":")
            try:
                with socket.create_connection((host, int(port)), timeout=2) as conn:
                    _send(conn, {"job": job, "attempt": attempt, "node": node,
                                 "endpoints": list(own)})
                    answer = _line(conn, deadline)
            except (OSError, ValueError) as exc:
                last = f"{address}: {exc}"
                continue
            if "error" in answer:
                raise RendezvousError(f"node 0 at {address} refused node {node}: "
                                      f"{answer['error']}")
            return [str(e) for e in answer["endpoints"]], str(answer["master"])
        time.sleep(RETRY_SECONDS)
    raise RendezvousError(f"node 0 at {master} did not answer within {timeout:.0f}s ({last})")
