"""A local job's network of its own: a loopback that no other account can reach.

A local job's processes talk over the machine's loopback: the supervisor's rendezvous store (cold
path), rank 0's TCP store and each rank's endpoint (Paddle's, with no authentication at all). On
the machine's own loopback any local account could connect to them, read the rendezvous and
rewrite a job's peers. So the supervisor moves itself, before it starts anything, into a network
namespace of its own (`enter_private_network`), with only a loopback that is up; its nodes and
ranks inherit it. Nothing outside the job can reach a port the job listens on, and the job
reaches no network but its own loopback (a local job's nodes are all on this machine; data comes
from the user's home, fetched in the notebook where a download is needed).

An account other than root gets the namespace from a user namespace of its own, which maps its
uid and gid to themselves (so files keep their owner) and gives it no power over anything
outside. Root needs no user namespace. Where the machine allows neither (user namespaces turned
off), the job runs on the machine's loopback and the engine says so in the panel (`available`).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct
import subprocess
import sys

CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
_LIBC = ctypes.CDLL(None, use_errno=True)


def enter_private_network() -> str | None:
    """Move this process (which must have one thread) into a network namespace of its own with
    its loopback up. Returns None, or why it could not (nothing changed then)."""
    uid, gid = os.getuid(), os.getgid()
    flags = CLONE_NEWNET if os.geteuid() == 0 else CLONE_NEWUSER | CLONE_NEWNET
    if _LIBC.unshare(flags) != 0:
        return f"a network namespace of its own was refused: {os.strerror(ctypes.get_errno())}"
    if flags & CLONE_NEWUSER:
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                           ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as handle:
                handle.write(text)
    with socket.socket() as sock:
        request = struct.pack("16sH", b"lo", 0)
        current = struct.unpack("16sH", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH", b"lo", current | IFF_UP))
    return None


_PROBE = ("import sys; from launcher_magic.engines.local.isolation import enter_private_network"
          " as e; why = e(); print(why or ''); sys.exit(1 if why else 0)")


def available(python: str = sys.executable) -> str | None:
    """None when a job started by this account gets a network of its own here, else why not
    (a probe in a fresh interpreter: this one has threads, and unshare needs a single one)."""
    try:
        probe = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True,
                               timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"the probe could not run: {err}"
    return None if probe.returncode == 0 else (probe.stdout.strip() or probe.stderr.strip())
