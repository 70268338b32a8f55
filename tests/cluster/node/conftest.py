"""Fixtures for the real-node tier: pods that really run, on this machine.

``real_node`` (session scope) builds (deploy/node/build.sh, cached outside the clone) and
starts a ``real_node.RealNode`` beside the session's ``control_plane``
(tests/cluster/conftest.py): containerd + runc from Debian, kubelet and kube-proxy of the
plane's Kubernetes release, the CNI bridge on 198.18.0.0/24, CoreDNS (the kube-dns pod) and
kube-router's NetworkPolicy controller. It yields the node; ``node.name`` is the Node's name
and ``node.layout`` says where its files and logs are. Right after the last test of this
folder (not at the end of the session, so that a ``pytest tests/cluster`` run does not hold
the machine's one node and its host changes while the KWOK tests run) it deletes the node's
pods, stops every process and removes every container, network namespace, mount, iptables
chain, ipset, bridge and cgroup it made; anything left over fails that teardown.

``second_node`` (module scope) starts a second node beside ``real_node`` for the tests of one
module (``real_node.RealNode(..., index=1)``: a network namespace standing for a machine of its
own, from the same binaries) and stops it, checked clean, after them. It is not session-wide:
while it runs, pods that any node may take can land on either, so only the modules that ask
for it see it.

``cpu_image`` (session scope) is the images tier's CPU image on the internal registry the node
pulls from (``job_image``: registry started when none answers, image built only when missing).

``metadata_service`` (module scope) makes the cloud instance-metadata address,
169.254.169.254 port 80, answer pod traffic on this machine (which has no such service of its
own, or must keep its own): a routing rule of the node's own sends packets from the pod subnet
for that address to a local route, and a small HTTP server bound there answers; the host's own
traffic is not rerouted. Packets stay on the host (the INPUT path, where the policy controller
filters pod egress), never forwarded. Afterwards the rule, the route and the server are gone,
or the fixture fails.

``node_tenant`` is a tenant provisioned by ``workbench apply``'s bundle, routed to the node
(``placement``), with ada's claim bound to a local volume there; a test may name the job API
(indirect parameter). It yields (tenant, ada's home) and deprovisions afterwards.
``node_tenant_with`` makes one too, on storage every node mounts when no node is named.

``restricted_namespace`` gives a test its own namespace with Pod Security ``restricted``
enforced, like a tenant's; ``pods.server_pod`` builds a pod that fits it and the node, and
``pod_client`` waits for pods and talks to them over the pod network.

The node needs root and the Debian packages in scripts/system-packages.txt (containerd, runc,
containernetworking-plugins, iptables, ipset, conntrack); where one is missing the tests fail
and say what to install (CI installs them with scripts/setup.sh, so nothing here skips there).
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from node_figures import FIGURES  # noqa: E402 - needs the sys.path line above
from node_tenants import node_tenant_with  # noqa: E402

_HERE = Path(__file__).resolve().parent
_RUNNING: list = []  # this session's node while it runs

_NEEDED = {
    "/usr/bin/containerd": "containerd",
    "/usr/bin/ctr": "containerd",
    "/usr/sbin/runc": "runc",
    "/usr/lib/cni/bridge": "containernetworking-plugins",
    "/usr/lib/cni/host-local": "containernetworking-plugins",
    "/usr/sbin/iptables": "iptables",
    "/usr/sbin/ipset": "ipset",
}


def _missing_prerequisites() -> str:
    """Why the node cannot start on this machine, or "" when it can."""
    if os.geteuid() != 0:
        return "the real node runs containers and changes iptables: run the tests as root"
    packages = sorted({pkg for path, pkg in _NEEDED.items() if not Path(path).exists()})
    if packages:
        return (f"the real node needs the Debian packages {', '.join(packages)}: run "
                "scripts/setup.sh as root, or apt-get install them (scripts/system-packages.txt)")
    if shutil.which("go") is None:
        return "the real node's kubelet is built with Go: put go >= 1.24 on PATH"
    return ""


@pytest.fixture(scope="session")
def real_node(control_plane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A started real node registered to ``control_plane``; stopped and cleaned up at the end."""
    why = _missing_prerequisites()
    if why:
        pytest.fail(why, pytrace=False)
    import real_node as rn

    build, error = rn.build_node()
    if build is None:
        pytest.fail(error, pytrace=False)
    node = _started(rn.RealNode(build, tmp_path_factory.mktemp("node"), control_plane),
                    "the real node", "node start (s)")
    _RUNNING.append(node)
    yield node
    if _RUNNING:
        _stop(_RUNNING.pop())


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Stop the node once no test of this folder is left to run (they are collected together)."""
    if _RUNNING and _HERE in item.path.parents and (
            nextitem is None or _HERE not in nextitem.path.parents):
        _stop(_RUNNING.pop())


@pytest.fixture(scope="module")
def second_node(control_plane, real_node, tmp_path_factory: pytest.TempPathFactory):
    """A second started node, stopped and checked clean after the module's tests."""
    yield from _second_node(control_plane, real_node, tmp_path_factory)


@pytest.fixture
def doomed_node(control_plane, real_node, tmp_path_factory: pytest.TempPathFactory):
    """A second started node for one test, which may power it off; stopped and checked clean
    after it."""
    yield from _second_node(control_plane, real_node, tmp_path_factory)


def _second_node(control_plane, real_node, tmp_path_factory: pytest.TempPathFactory):
    import real_node as rn

    node = _started(rn.RealNode(real_node.layout.build, tmp_path_factory.mktemp("node2"),
                                control_plane, index=1), "the second node",
                    "second node start (s)")
    yield node
    _stop(node)


def _started(node, what: str, figure: str):
    """`node` started, its start time in FIGURES; a node that did not start is stopped (what it
    made removed) and fails the test."""
    import real_node as rn

    try:
        node.start()
    except rn.NodeError as exc:
        _stop(node)
        pytest.fail(f"{what} did not start: {exc}", pytrace=False)
    except BaseException:
        _stop(node)
        raise
    FIGURES[figure] = node.start_seconds
    return node


def _stop(node) -> None:
    import real_node as rn

    try:
        node.stop()
    except rn.NodeError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def cpu_image() -> Iterator[str]:
    """The images tier's CPU image on the registry the node pulls from (``job_image``): the
    registry is started if none answers there (and then stopped at the end), the image built
    and pushed only when the registry lacks the one built from the same inputs."""
    import job_image

    registry = job_image.InternalRegistry()
    try:
        registry.start()
        reference = job_image.cpu_image()
    except job_image.ImageError as exc:
        registry.stop()
        pytest.fail(str(exc), pytrace=False)
    try:
        yield reference
    finally:
        registry.stop()


@pytest.fixture
def restricted_namespace(control_plane, real_node) -> Iterator[str]:
    """A fresh namespace enforcing Pod Security ``restricted`` (as tenant namespaces do)."""
    from kubernetes import client

    core = client.CoreV1Api(control_plane.api_client())
    name = f"n-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name, "labels": {
        "pod-security.kubernetes.io/enforce": "restricted"}}})
    # Pods mount the default service account's token; the controller manager makes it.
    import real_node as rn

    rn.wait_for(lambda: core.read_namespaced_service_account("default", name), 60,
                f"the default service account of {name}")
    yield name
    core.delete_namespace(name)


METADATA_IP = "169.254.169.254"
METADATA_PORT = 80
# The routing table and rule priority the metadata stand-in uses (ours alone on this machine).
METADATA_TABLE = "198"
METADATA_RULE_PRIORITY = "198"
# Bind (and answer from) an address no interface carries: the kernel routes a reply's source
# only for a transparent socket (FREEBIND alone binds, but every SYN-ACK is dropped).
_IP_TRANSPARENT = getattr(socket, "IP_TRANSPARENT", 19)


class _MetadataHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the http.server hook's name
        body = b"instance metadata stand-in\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


class _MetadataServer(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self) -> None:
        # No address lookup (HTTPServer's would ask DNS for a name of 169.254.169.254).
        self.socket.setsockopt(socket.IPPROTO_IP, _IP_TRANSPARENT, 1)
        self.socket.bind(self.server_address)
        self.server_name, self.server_port = self.server_address


@pytest.fixture
def node_tenant(request, control_plane, real_node, paddle_runtime, cpu_image, tmp_path):
    """A provisioned tenant whose pods land on the real node, and ada's storage there; yields
    (tenant, ada's home). The home is where the notebook fixture puts it. The tenant's job API
    is the default (``trainjob``) unless the test asks for another (indirect parameter)."""
    job_api = getattr(request, "param", None)
    with node_tenant_with(control_plane, cpu_image, tmp_path, job_api,
                          node=real_node.name) as made:
        yield made


def _metadata_routing() -> tuple[list[str], list[str]]:
    """The `ip` arguments of the local route and the rule that sends pod traffic to it."""
    import node_config as cfg

    route = ["local", f"{METADATA_IP}/32", "dev", "lo", "table", METADATA_TABLE]
    rule = ["from", cfg.POD_SUBNET, "to", f"{METADATA_IP}/32", "lookup", METADATA_TABLE,
            "priority", METADATA_RULE_PRIORITY]
    return route, rule


def _metadata_leftovers() -> list[str]:
    from node_host import run

    left = [f"rule {line.strip()}" for line in run(["ip", "rule", "list"]).splitlines()
            if METADATA_IP in line]
    left += [f"route {line.strip()}" for line in run(
        ["ip", "route", "show", "table", METADATA_TABLE], check=False).splitlines()]
    return left


@pytest.fixture(scope="module")
def metadata_service(real_node) -> Iterator[str]:
    """``169.254.169.254:80`` answering HTTP for pods of the real node (see the module doc)."""
    from node_host import run

    route, rule = _metadata_routing()
    server = None
    try:
        run(["ip", "route", "replace", *route])
        run(["ip", "rule", "add", *rule])
        server = _MetadataServer((METADATA_IP, METADATA_PORT), _MetadataHandler)
        threading.Thread(target=server.serve_forever, name="metadata", daemon=True).start()
        yield f"{METADATA_IP}:{METADATA_PORT}"
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        run(["ip", "rule", "del", *rule], check=False)
        run(["ip", "route", "del", *route], check=False)
        left = _metadata_leftovers()
        if left:
            pytest.fail(f"the metadata stand-in left {left}", pytrace=False)


def pytest_terminal_summary(terminalreporter) -> None:
    """Print the start-up figures this session measured (node start, pod start)."""
    if FIGURES:
        terminalreporter.write_sep("-", "real node figures (this machine, this load)")
        for what, seconds in FIGURES.items():
            terminalreporter.write_line(f"{what}: {seconds:.1f}")
