"""The host-side state a real node changes, and how to put every bit of it back.

A kubelet, kube-proxy, kube-router and containerd change the machine they run on: sysctls, a
bridge, iptables chains (``KUBE-*``) and ipsets, mounts (overlay root file systems, shm,
projected volumes, network namespaces), cgroups. ``HostState`` records what was there before
(``prepare``) and removes what was added (``restore``), and ``HostState.leftovers`` lists
whatever is still there, so that the fixture can fail loudly instead of leaking.

Every function shells out to the standard tools (``ip``, ``iptables``, ``umount``) so that an
operator can read what it does and repeat it by hand.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import node_config as cfg

# Sysctls the node changes: the first three it needs, the kubelet writes the other six
# (its "kernel tunables") on start. All of them are put back by ``restore``.
NEEDED_SYSCTLS = {
    "net.ipv4.ip_forward": "1",
    "net.bridge.bridge-nf-call-iptables": "1",
    "net.bridge.bridge-nf-call-ip6tables": "1",
}
KUBELET_SYSCTLS = ("vm.overcommit_memory", "vm.panic_on_oom", "kernel.panic",
                   "kernel.panic_on_oops", "kernel.keys.root_maxkeys", "kernel.keys.root_maxbytes")
ROUTE_LOCALNET = "net.ipv4.conf.all.route_localnet"
# Chains made by the kubelet and kube-proxy (KUBE-), and by this module (WB-NODE-).
CHAIN_PREFIXES = ("KUBE-", "WB-NODE-")
GUARD_CHAIN = "WB-NODE-GUARD"
TABLES = ("filter", "nat", "mangle", "raw")
# Folders the kubelet and containerd make at fixed places whatever their config says (the
# device-plugin socket folder, the runc state and shim sockets, the CNI result cache). Those
# that did not exist before the node started are removed after it stopped.
FIXED_DIRS = (Path("/var/lib/kubelet"), Path("/run/containerd"), Path("/var/lib/cni"))
CNI_RESULTS = Path("/var/lib/cni/results")


class HostError(RuntimeError):
    """A host command failed; the message has the command and its output."""


def run(argv: list[str], check: bool = True) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if check and done.returncode != 0:
        raise HostError(f"`{shlex.join(argv)}` failed ({done.returncode}): "
                        f"{(done.stderr or done.stdout).strip()}")
    return done.stdout


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def read_sysctl(name: str) -> str | None:
    path = _sysctl_path(name)
    return path.read_text().strip() if path.exists() else None


def write_sysctl(name: str, value: str) -> None:
    _sysctl_path(name).write_text(value + "\n")


# --- iptables ------------------------------------------------------------------------------
def _families() -> list[str]:
    return [tool for tool in ("iptables", "ip6tables")
            if subprocess.run([f"{tool}-save"], capture_output=True).returncode == 0]


def node_chains() -> dict[tuple[str, str], list[str]]:
    """(tool, table) -> the node's chains present there."""
    found: dict[tuple[str, str], list[str]] = {}
    for tool in _families():
        for table in TABLES:
            out = subprocess.run([f"{tool}-save", "-t", table], capture_output=True, text=True)
            chains = [line[1:].split()[0] for line in out.stdout.splitlines()
                      if line.startswith(":") and line[1:].startswith(CHAIN_PREFIXES)]
            if chains:
                found[(tool, table)] = chains
    return found


def remove_node_chains() -> None:
    """Delete every rule that jumps to a node chain, then flush and delete those chains."""
    for (tool, table), chains in node_chains().items():
        out = run([f"{tool}-save", "-t", table])
        for line in out.splitlines():
            if not line.startswith("-A "):
                continue
            words = shlex.split(line)
            chain = words[1]
            if chain.startswith(CHAIN_PREFIXES):
                continue  # goes away with the chain
            target = next((words[i + 1] for i, w in enumerate(words[:-1]) if w in ("-j", "-g")),
                          "")
            if target.startswith(CHAIN_PREFIXES):
                run([tool, "-w", "-t", table, "-D", *words[1:]], check=False)
        for chain in chains:
            run([tool, "-w", "-t", table, "-F", chain], check=False)
        for chain in chains:
            run([tool, "-w", "-t", table, "-X", chain], check=False)


def node_ipsets() -> list[str]:
    """ipsets of the policy controller (kube-router names them KUBE-SRC-*, KUBE-DST-*, ...)."""
    out = subprocess.run(["ipset", "list", "-n"], capture_output=True, text=True)
    return [name for name in out.stdout.split() if name.startswith(CHAIN_PREFIXES)]


def remove_node_ipsets() -> None:
    """Destroy them; call after the chains that match on them are gone."""
    for name in node_ipsets():
        run(["ipset", "destroy", name], check=False)


def add_guard() -> None:
    """Drop forwarded packets that would carry pod traffic out of (or into) the contained
    range: a pod reaches other pods, Services and the host, never the network beyond."""
    r = cfg.CONTAINED_RANGE
    run(["iptables", "-w", "-N", GUARD_CHAIN])
    run(["iptables", "-w", "-A", GUARD_CHAIN, "-s", r, "!", "-d", r, "-j", "DROP"])
    run(["iptables", "-w", "-A", GUARD_CHAIN, "-d", r, "!", "-i", cfg.BRIDGE, "-j", "DROP"])
    run(["iptables", "-w", "-I", "FORWARD", "1", "-j", GUARD_CHAIN])


# --- mounts, network namespaces, cgroups ----------------------------------------------------
def mounts_under(root: Path) -> list[str]:
    """Mount points at or below ``root`` (from /proc/self/mountinfo), deepest first."""
    prefix = str(root).rstrip("/") + "/"
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == str(root) or point.startswith(prefix):
            points.append(point)
    return sorted(set(points), key=lambda p: p.count("/"), reverse=True)


def unmount_under(root: Path) -> None:
    for point in mounts_under(root):
        if subprocess.run(["umount", point], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True)


def cgroup_dirs(root: str = cfg.CGROUP_ROOT, unified: bool = True) -> list[Path]:
    """The node's cgroup folder ``root`` in each mounted v1 hierarchy and, with ``unified``,
    in the v2 one that systemd mounts beside them (runc makes the node's folders there too)."""
    types = ("cgroup", "cgroup2") if unified else ("cgroup",)
    roots = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        parts = line.split()
        if parts[2] in types:
            roots.append(Path(parts[1]) / root.strip("/"))
    return roots


def make_cgroups(root: str = cfg.CGROUP_ROOT) -> None:
    for d in cgroup_dirs(root, unified=False):
        d.mkdir(exist_ok=True)
        # A new cpuset starts empty and takes no tasks; give it its parent's CPUs and nodes.
        for name in ("cpuset.cpus", "cpuset.mems"):
            if (d / name).exists():
                (d / name).write_text((d.parent / name).read_text())


def cgroup_processes(root: str = cfg.CGROUP_ROOT) -> set[int]:
    """Pids in the node's cgroups: every container process, whoever started it."""
    pids: set[int] = set()
    for d in cgroup_dirs(root):
        for procs in d.rglob("cgroup.procs") if d.exists() else ():
            try:
                pids.update(int(p) for p in procs.read_text().split())
            except OSError:
                pass
    return pids


def kill_cgroup_processes(grace: float = 10, root: str = cfg.CGROUP_ROOT) -> None:
    """SIGKILL whatever still runs in the node's cgroups (a container whose shim is gone) and
    wait up to ``grace`` seconds for the kernel to take them out."""
    deadline = time.monotonic() + grace
    while (pids := cgroup_processes(root)) and time.monotonic() < deadline:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)


def remove_cgroups(root: str = cfg.CGROUP_ROOT) -> None:
    """Remove the node's cgroup folders, deepest first; one still in use stays (and is
    reported by ``HostState.leftovers``)."""
    for d in cgroup_dirs(root):
        if d.exists():
            subs = sorted((p for p in d.rglob("*") if p.is_dir()),
                          key=lambda p: len(p.parts), reverse=True)
            for sub in [*subs, d]:
                try:
                    sub.rmdir()
                except OSError:
                    pass


def cni_results(network: str = cfg.CNI_NETWORK) -> list[Path]:
    """The CNI result cache entries of the node's network (containerd keeps them there)."""
    return sorted(CNI_RESULTS.glob(f"{network}-*")) if CNI_RESULTS.is_dir() else []


def bridge_ports() -> list[str]:
    """Links enslaved to the pod bridge (the host ends of pods' veth pairs)."""
    out = run(["ip", "-o", "link", "show", "master", cfg.BRIDGE], check=False)
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]


def _node_work_dir(argv: list[str], cache_root: Path) -> Path | None:
    """The work dir of a node process, from its argv; None when it is no node's process."""
    for i, arg in enumerate(argv):
        value = arg.split("=", 1)[1] if arg.startswith("-") and "=" in arg else arg
        if i > 0 and argv[i - 1] == "-address":
            value = arg
        path = Path(value)
        if path.name in ("containerd.toml", "kubelet.yaml", "kube-proxy.yaml", "Corefile") \
                and path.parent.name == "config":
            return path.parent.parent
        if path.name == "containerd.sock" and path.parent.name == "containerd":
            return path.parent.parent
    if argv and Path(argv[0]).is_relative_to(cache_root):
        for arg in argv:  # kube-router names only its kubeconfig
            if arg.startswith("--kubeconfig=") and Path(arg[13:]).parent.name == "config":
                return Path(arg[13:]).parent.parent
        if Path(argv[0]).name == "tcprelay":  # names no file at all
            return cache_root
    return None


def stale_node_processes(cache_root: Path) -> dict[int, Path]:
    """Processes of an earlier node whose session was killed before it could stop them
    (containerd, shims, kubelet, kube-proxy, CoreDNS, kube-router): pid -> its work dir.
    Call it holding the node lock: then no live session owns them."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = [a.decode(errors="replace")
                    for a in (entry / "cmdline").read_bytes().split(b"\0") if a]
        except OSError:
            continue
        work = _node_work_dir(argv, cache_root)
        if work is not None:
            found[int(entry.name)] = work
    return found


def recover(cache_root: Path) -> list[str]:
    """Stop what an earlier, killed node left running and unmount its work dirs; returns
    what it found (for the log). Chains, ipsets, bridge and cgroups follow in ``prepare``."""
    stale = stale_node_processes(cache_root)
    for pid in stale:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    kill_cgroup_processes()
    for work in set(stale.values()):
        unmount_under(work)
    return [f"process {pid} of {work}" for pid, work in stale.items()]


def bridge_exists() -> bool:
    return subprocess.run(["ip", "link", "show", cfg.BRIDGE], capture_output=True).returncode == 0


@dataclass
class HostState:
    """What ``prepare`` found and changed; ``restore`` undoes it (safe after a failed prepare)."""

    work: Path
    # Where the original sysctls and the folders made are kept while a node runs, so that the
    # next session restores the true originals after a session that was killed outright.
    record: Path
    sysctls: dict[str, str] = field(default_factory=dict)
    made_dirs: list[Path] = field(default_factory=list)
    prepared: bool = False

    def prepare(self) -> None:
        """Record the sysctls, clear leftovers of an earlier run that died, then make the
        bridge (so the node's address exists before the kubelet starts), the guard chain and
        the cgroup folders."""
        self.prepared = True
        if self.record.exists():  # left by a killed session: its originals are the true ones
            earlier = json.loads(self.record.read_text())
            self.sysctls = earlier["sysctls"]
            self.made_dirs = [Path(d) for d in earlier["made_dirs"]]
        else:
            self.made_dirs = [d for d in FIXED_DIRS if not d.exists()]
            for name in (*NEEDED_SYSCTLS, *KUBELET_SYSCTLS, ROUTE_LOCALNET):
                value = read_sysctl(name)
                if value is not None:
                    self.sysctls[name] = value
            self.record.write_text(json.dumps(
                {"sysctls": self.sysctls, "made_dirs": [str(d) for d in self.made_dirs]}))
        if "net.bridge.bridge-nf-call-iptables" not in self.sysctls:
            raise HostError("the kernel has no br_netfilter (net.bridge.bridge-nf-call-iptables"
                            " is missing): run `modprobe br_netfilter` as root")
        remove_node_chains()
        remove_node_ipsets()
        if bridge_exists():
            run(["ip", "link", "del", cfg.BRIDGE])
        remove_cgroups()
        for name, value in NEEDED_SYSCTLS.items():
            write_sysctl(name, value)
        run(["ip", "link", "add", cfg.BRIDGE, "type", "bridge"])
        run(["ip", "addr", "add", f"{cfg.NODE_IP}/24", "dev", cfg.BRIDGE])
        run(["ip", "link", "set", cfg.BRIDGE, "up"])
        add_guard()
        make_cgroups()

    def restore(self) -> None:
        """Unmount what the node left under its work dir, delete its chains, bridge and
        cgroups, and put the sysctls back. Call it after every node process has ended; it does
        nothing when ``prepare`` never ran (another session's node may own those things)."""
        if not self.prepared:
            return
        self.prepared = False
        kill_cgroup_processes()
        unmount_under(self.work)
        remove_node_chains()
        remove_node_ipsets()
        for veth in bridge_ports():
            run(["ip", "link", "del", veth], check=False)
        if bridge_exists():
            run(["ip", "link", "del", cfg.BRIDGE], check=False)
        remove_cgroups()
        for d in self.made_dirs:
            shutil.rmtree(d, ignore_errors=True)
        for result in cni_results():
            result.unlink(missing_ok=True)
        for name, value in self.sysctls.items():
            try:
                write_sysctl(name, value)
            except OSError:
                pass
        self.sysctls.clear()
        self.record.unlink(missing_ok=True)

    def leftovers(self) -> list[str]:
        """What the node left on the host; empty when ``restore`` did its job."""
        found = [f"mount {p}" for p in mounts_under(self.work)]
        found += [f"{tool} -t {table} chain {c}"
                  for (tool, table), chains in node_chains().items() for c in chains]
        found += [f"ipset {name}" for name in node_ipsets()]
        if bridge_exists():
            found.append(f"link {cfg.BRIDGE}")
        found += [f"cgroup {d}" for d in cgroup_dirs() if d.exists()]
        found += [f"process {pid} (in the node's cgroups)" for pid in cgroup_processes()]
        found += [f"file {p}" for p in cni_results()]
        found += [f"folder {d}" for d in self.made_dirs if d.exists()]
        return found
