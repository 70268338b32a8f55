"""The host side of a node in a network namespace: its "machine" and "cable", and their removal.

A node after the first (``NodeLayout.index`` >= 1) stands for a machine of its own: the network
namespace ``wb-node<i>`` is that machine's network stack (its interfaces, routes, iptables and
ipsets, sysctls), a veth pair is the cable between it and the host, and the host routes the
node's pod range down that cable. Its containerd, kubelet, kube-proxy and kube-router run in the
namespace (``node_config.in_node``); files, mounts and cgroups are the host's, kept apart by
path (the node's work dir, its own cgroup root).

``NamespaceHost.prepare`` makes all of it, ``restore`` removes it (after a failed prepare too),
and ``leftovers`` lists whatever is still there. An operator's cluster has real machines and a
real network instead: nothing here is needed there.
"""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass

import node_config as cfg
from node_host import (
    GUARD_CHAIN,
    cgroup_dirs,
    cgroup_processes,
    cni_results,
    kill_cgroup_processes,
    make_cgroups,
    mounts_under,
    remove_cgroups,
    run,
    unmount_under,
)

# The namespace's own sysctls (per network namespace on this kernel): it forwards, and its
# bridge hands frames to iptables, where kube-proxy and kube-router's rules are.
NAMESPACE_SYSCTLS = {
    "net.ipv4.ip_forward": "1",
    "net.bridge.bridge-nf-call-iptables": "1",
    "net.bridge.bridge-nf-call-ip6tables": "1",
}


def link_exists(name: str) -> bool:
    return bool(run(["ip", "-o", "link", "show", name], check=False).strip())


def netns_exists(name: str) -> bool:
    return (cfg.NETNS_DIR / name).exists()


def netns_pids(name: str) -> list[int]:
    """Processes whose network namespace is ``name`` (the node's daemons and pods' sandboxes
    share the host's /proc, so they are found from here)."""
    return [int(p) for p in run(["ip", "netns", "pids", name], check=False).split()]


def kill_netns_processes(name: str) -> None:
    for pid in netns_pids(name):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def host_rules(lay: cfg.NodeLayout) -> list[list[str]]:
    """The host's rules for this node, as ``iptables`` arguments after the table and before
    the verb's chain: (table, chain, rule...).

    - The first node's guard drops forwarded pod traffic that did not come from its own
      bridge: traffic arriving on this node's cable may go to other pods (what would leave the
      contained range is still dropped by the guard's first rule).
    - Pods may not open connections to the host's end of the cable, where the API server and
      the registry are relayed for the node's own components (a pod reaching the registry
      could push images; the node's components come from the cable's addresses)."""
    host_end, _ = lay.cable
    return [["filter", GUARD_CHAIN, "-i", host_end, "-s", cfg.CLUSTER_RANGE,
             "-d", cfg.CONTAINED_RANGE, "-j", "RETURN"],
            ["mangle", "PREROUTING", "-s", cfg.PODS_RANGE, "-d", lay.host_ip,
             "-m", "conntrack", "--ctstate", "NEW", "-j", "DROP"]]


def namespace_rules(lay: cfg.NodeLayout) -> list[list[str]]:
    """The namespace's own rules (gone with it), in mangle's PREROUTING, ahead of every chain
    kube-proxy and kube-router add: its pods may not open connections to either end of the
    cable (the relays; its kubelet and kube-proxy, which on the first node listen on
    loopback), and nothing but the host (the control plane) opens one to the node's address.
    Replies to connections the node or the host opened to a pod still pass."""
    _, node_end = lay.cable
    new = ["-m", "conntrack", "--ctstate", "NEW", "-j", "DROP"]
    return [["mangle", "PREROUTING", "-i", lay.bridge, "-d", cfg.CABLES_RANGE, *new],
            ["mangle", "PREROUTING", "-i", node_end, "-d", lay.node_ip,
             "!", "-s", lay.host_ip, *new]]


def _iptables(verb: str, rule: list[str]) -> list[str]:
    table, chain, *spec = rule
    return ["iptables", "-w", "-t", table, verb, chain, *spec]


@dataclass
class NamespaceHost:
    """The namespace, cable, routes, guard rules and cgroups of one node after the first."""

    lay: cfg.NodeLayout
    prepared: bool = False

    def _in_ns(self, *argv: str, check: bool = True) -> str:
        return run(["ip", "netns", "exec", str(self.lay.netns), *argv], check=check)

    def prepare(self) -> None:
        """Clear what a killed session left under the same names, then make the namespace and
        its cable, bridge, addresses, routes, sysctls and guard rules, and the cgroup folders."""
        lay, ns = self.lay, str(self.lay.netns)
        host_end, node_end = lay.cable
        self.prepared = True
        self._remove()
        run(["ip", "netns", "add", ns])
        run(["ip", "link", "add", host_end, "type", "veth", "peer", "name", node_end,
             "netns", ns])
        run(["ip", "addr", "add", f"{lay.host_ip}/30", "dev", host_end])
        run(["ip", "link", "set", host_end, "up"])
        for argv in (["ip", "link", "set", "lo", "up"],
                     ["ip", "addr", "add", f"{lay.node_ip}/30", "dev", node_end],
                     ["ip", "link", "set", node_end, "up"],
                     ["ip", "link", "add", lay.bridge, "type", "bridge"],
                     ["ip", "addr", "add", f"{lay.gateway}/24", "dev", lay.bridge],
                     ["ip", "link", "set", lay.bridge, "up"],
                     ["ip", "route", "add", "default", "via", lay.host_ip]):
            self._in_ns(*argv)
        for name, value in NAMESPACE_SYSCTLS.items():
            self._in_ns("sysctl", "-q", "-w", f"{name}={value}")
        for rule in namespace_rules(lay):
            self._in_ns(*_iptables("-A", rule))
        run(["ip", "route", "add", lay.pod_subnet, "via", lay.node_ip, "dev", host_end])
        for rule in host_rules(lay):  # first in their chains
            table, chain, *spec = rule
            run(["iptables", "-w", "-t", table, "-I", chain, "1", *spec])
        make_cgroups(lay.cgroup_root)

    def restore(self) -> None:
        """Remove everything ``prepare`` made; call it after the node's processes have ended
        (what still runs in its namespace or cgroups is killed first)."""
        if not self.prepared:
            return
        self.prepared = False
        self._remove()

    def _remove(self) -> None:
        lay, ns = self.lay, str(self.lay.netns)
        host_end, _ = lay.cable
        kill_cgroup_processes(root=lay.cgroup_root)
        if netns_exists(ns):
            kill_netns_processes(ns)
        unmount_under(lay.work)
        if netns_exists(ns):
            run(["ip", "netns", "del", ns], check=False)  # its end of the cable goes with it
        if link_exists(host_end):
            run(["ip", "link", "del", host_end], check=False)
        for rule in host_rules(lay):
            while _present(rule):
                run(_iptables("-D", rule))
        remove_cgroups(lay.cgroup_root)
        for result in cni_results(lay.cni_network):
            result.unlink(missing_ok=True)

    def leftovers(self) -> list[str]:
        lay, ns = self.lay, str(self.lay.netns)
        host_end, _ = lay.cable
        found = [f"mount {p}" for p in mounts_under(lay.work)]
        if netns_exists(ns):
            found.append(f"network namespace {ns}")
        if link_exists(host_end):
            found.append(f"link {host_end}")
        found += [f"iptables rule {' '.join(rule)}" for rule in host_rules(lay) if _present(rule)]
        found += [f"cgroup {d}" for d in cgroup_dirs(lay.cgroup_root) if d.exists()]
        found += [f"process {pid} (in the node's cgroups)"
                  for pid in cgroup_processes(lay.cgroup_root)]
        found += [f"file {p}" for p in cni_results(lay.cni_network)]
        return found


def _present(rule: list[str]) -> bool:
    return subprocess.run(_iptables("-C", rule), capture_output=True).returncode == 0
