"""What any local account can find of another account's kernel, and what it can try on it.

Imported inside the kernels of the attack table (`test_local_accounts_attacks.py`), so it needs
only the standard library and pyzmq (which every kernel has): an attacker's kernel finds the
victim's sockets the way anyone on the machine can, and subscribes to each; the victim's kernel
`chatter`s meanwhile, so that there is something to hear.

- `listening_tcp(uid)`: the TCP ports an account listens on (`/proc/net/tcp` and `tcp6` name
  each listening socket's owner by uid).
- `ipc_sockets(folder)`: the Unix sockets bound under a folder (`/proc/net/unix` lists the path
  of every bound socket on the machine, whoever owns it).
- `eavesdrop(endpoints)`: a ZeroMQ SUB socket on each endpoint, subscribed to everything (an
  IOPub socket asks for no key: its messages are signed, not encrypted); what arrives.
- `connect_unix(paths)`: a plain connection to each socket (raises PermissionError where the
  socket or a folder above it keeps the caller out).
"""

from __future__ import annotations

import contextvars
import os
import socket
import threading
import time

LISTEN = "0A"  # the TCP state of a listening socket in /proc/net/tcp*


def listening_tcp(uid: int) -> list[str]:
    """`tcp://` endpoints on the loopback for every TCP port that `uid` listens on."""
    found = []
    for table, host in (("tcp", "127.0.0.1"), ("tcp6", "[::1]")):
        try:
            lines = open(f"/proc/net/{table}").read().splitlines()[1:]
        except FileNotFoundError:  # no IPv6 here
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == LISTEN and int(fields[7]) == uid:
                found.append(f"tcp://{host}:{int(fields[1].rsplit(':', 1)[1], 16)}")
    return sorted(set(found))


def ipc_sockets(folder: str) -> list[str]:
    """Paths of the Unix sockets bound in `folder` (or below it)."""
    prefix = folder.rstrip("/") + "/"
    paths = set()
    for line in open("/proc/net/unix").read().splitlines()[1:]:
        fields = line.split(None, 7)
        if len(fields) == 8 and fields[7].startswith(prefix):
            paths.add(fields[7])
    return sorted(paths)


def kernel_endpoints(facts: dict) -> list[str]:
    """Everything of the victim's a SUB socket might hear a kernel on: every TCP port their
    account listens on, and every IPC socket in the folder of their kernel's connection file."""
    folder = os.path.dirname(facts["connection_file"])
    return listening_tcp(facts["uid"]) + ["ipc://" + p for p in ipc_sockets(folder)]


def eavesdrop(endpoints: list[str], seconds: float = 4.0) -> list[tuple[str, list[bytes]]]:
    """Subscribe to everything on each endpoint for `seconds`; the messages heard, by endpoint.

    A SUB socket reports no refusal (ZeroMQ connects in the background and keeps retrying), so
    silence is the only sign that an endpoint keeps the caller out.
    """
    import zmq

    context = zmq.Context()
    poller, where = zmq.Poller(), {}
    try:
        for endpoint in endpoints:
            sub = context.socket(zmq.SUB)
            sub.setsockopt(zmq.LINGER, 0)
            sub.setsockopt(zmq.IPV6, 1)
            sub.setsockopt(zmq.RECONNECT_IVL, 500)  # the non-ZeroMQ ports (HTTP) see little
            sub.setsockopt(zmq.SUBSCRIBE, b"")
            sub.connect(endpoint)
            poller.register(sub, zmq.POLLIN)
            where[sub] = endpoint
        heard = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for sub, _ in poller.poll(200):
                heard.append((where[sub], sub.recv_multipart()))
        return heard
    finally:
        context.destroy(linger=0)


def connect_unix(paths: list[str]) -> list[str]:
    """Connect to each Unix socket and hang up; returns the paths connected to."""
    for path in paths:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(path)
    return paths


def chatter(marker: str, seconds: float = 40.0) -> None:
    """Print `marker` five times a second for `seconds`, from a thread (the cell returns at once):
    a kernel's output that an eavesdropper would hear on its IOPub socket.

    The thread runs in a copy of this cell's context, so ipykernel sends its output as this
    cell's (a thread with a context of its own would print into whichever cell runs next,
    between the words of that cell's output)."""
    def loop():
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            print(marker, flush=True)
            time.sleep(0.2)

    context = contextvars.copy_context()
    threading.Thread(target=context.run, args=(loop,), daemon=True, name="chatter").start()
