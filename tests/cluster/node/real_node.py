"""A real Kubernetes node on this machine, registered to the test control plane.

``RealNode(build_dir, work, plane).start()`` starts containerd (Debian's, with runc and the CRI
plugin), imports the images build.sh packed (the pause sandbox and the test server: nothing is
pulled), the kubelet and kube-proxy built from the control plane's Kubernetes release, CoreDNS
as the cluster's kube-dns pod, and kube-router's NetworkPolicy controller. The node is
``node_config.NODE_NAME``; it carries a NoSchedule taint, so only pods that tolerate it land
there. ``RealNode(..., index=1)`` (2, ...) is a further node beside a running first one, in a
network namespace of its own standing for its machine (``node_netns``): the same binaries and
images, its own containerd, kubelet, kube-proxy and kube-router, pod range and cgroup root; the
cluster's DNS and the pods' API server address stay on the first node. ``stop()`` deletes the node's pods, stops every
process (containerd's shims too), unmounts, deletes chains, bridge and cgroups, puts the
sysctls back and raises ``NodeError`` listing anything still left behind. One node per
machine: a second session waits on a lock file in the build cache until the first one's
node has stopped.

The argv and configs come from ``node_config`` (pure), the host changes from ``node_host``.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import k8s_pki as pki
import node_config as cfg
import node_host
import node_netns
from k8s_plane import free_port

REPO = Path(__file__).resolve().parents[3]
BUILD_SCRIPT = REPO / "deploy" / "node" / "build.sh"
# How long a session waits for another session's node on the same machine to stop.
LOCK_WAIT_S = 1200


class NodeError(RuntimeError):
    """The node did not start, or did not stop cleanly; the message names the log to read."""


class ProcessExited(NodeError):
    """One of the node's processes ended while it should run; waiting longer cannot help."""


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    """Call ``check`` until it returns something truthy; ``NodeError`` naming ``what`` after
    ``timeout`` seconds. An exception from ``check`` counts as "not yet"."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        try:
            result = check()
            if result:
                return result
        except ProcessExited:
            raise
        except Exception as exc:  # noqa: BLE001 - anything else means "not ready yet"
            last = exc
        if time.monotonic() > deadline:
            detail = f" (last error: {last})" if last else ""
            raise NodeError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


def build_node() -> tuple[Path | None, str]:
    """Run deploy/node/build.sh. Returns (output dir, "") or (None, why it failed)."""
    try:
        done = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True,
                              timeout=3600)
    except subprocess.TimeoutExpired:
        return None, "deploy/node/build.sh ran for over an hour"
    if done.returncode == 0:
        return Path(done.stdout.strip().splitlines()[-1]), ""
    tail = "\n".join(done.stderr.strip().splitlines()[-15:])
    return None, f"deploy/node/build.sh failed (exit {done.returncode}):\n{tail}"


class RealNode:
    """One running node. Construct, ``start()``, use, ``stop()`` (also after a failed start)."""

    def __init__(self, build: Path, work: Path, plane: Any, index: int = 0):
        self.layout = cfg.NodeLayout(
            build=build, work=work, server=plane.server, ca_file=plane.ca_file,
            kubelet_port=free_port(), kubelet_healthz_port=free_port(),
            proxy_healthz_port=free_port(), proxy_metrics_port=free_port(),
            policy_health_port=free_port(), index=index,
            relay_port=free_port() if index else 0)
        self.name = self.layout.name
        self.first = index == 0
        self._plane = plane
        self._procs: dict[str, subprocess.Popen] = {}
        self._host: Any = (node_host.HostState(work, record=build.parent / "host-state.json")
                           if self.first else node_netns.NamespaceHost(self.layout))
        self._lock: Any = None
        self._started = False
        self.start_seconds: float | None = None

    def log_file(self, component: str) -> Path:
        return self.layout.log_file(component)

    # --- start ----------------------------------------------------------------------------
    def start(self, timeout: float = 180) -> None:
        """Start containerd (and import the images), the kubelet, kube-proxy, the API server
        relay, the CoreDNS pod and kube-router; return once the node is Ready, CoreDNS ready and
        kube-router healthy.

        Raises ``NodeError`` naming the component and its log (call ``stop()`` anyway)."""
        began = time.monotonic()
        self._started = True
        lay = self.layout
        if self.first:
            self._take_lock()
        for sub in ("logs", "config", "pki", "kubelet", "pod-logs", "cni/ipam"):
            (lay.work / sub).mkdir(parents=True, exist_ok=True)
        self._write_pki()
        for path, text in cfg.config_files(lay).items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        if self.first:  # later nodes start beside a running first one: nothing is stale then
            stale = node_host.recover(self.layout.build.parent)
            if stale:
                (lay.work / "logs" / "recovered.log").write_text("\n".join(stale) + "\n")
        try:
            self._host.prepare()
        except (node_host.HostError, OSError) as exc:
            raise NodeError(f"could not prepare the host: {exc}") from exc
        if not self.first:  # its own way to the API server and the registry: its cable's host end
            self._spawn("api-relay", cfg.api_relay_argv(lay), in_node=False)
            self._spawn("registry-relay", cfg.registry_relay_argv(lay), in_node=False)

        self._spawn("containerd", cfg.containerd_argv(lay))
        wait_for(lambda: self._ctr("version"), timeout, self._what("containerd"))
        for image in ("pause", "testserver", "coredns") if self.first else ("pause", "testserver"):
            self._ctr("images", "import", str(lay.image_archive(image)))

        self._bind_kubelet_client()
        self._spawn("kubelet", cfg.kubelet_argv(lay))
        listen = lay.listen_ip
        wait_for(lambda: self._http_ok(f"http://{listen}:{lay.kubelet_healthz_port}/healthz"),
                 timeout, self._what("kubelet", "the kubelet's /healthz"))
        self._spawn("kube-proxy", cfg.kube_proxy_argv(lay))
        wait_for(lambda: self._http_ok(f"http://{listen}:{lay.proxy_healthz_port}/healthz"),
                 timeout, self._what("kube-proxy", "kube-proxy's /healthz"))
        wait_for(self._ready, timeout, self._what("kubelet", f"node {self.name} to be Ready"))
        if self.first:
            self._start_api_relay()
            self._start_coredns(timeout)
        self._start_policy_controller(timeout)
        self.start_seconds = time.monotonic() - began

    def _start_coredns(self, timeout: float) -> None:
        """CoreDNS as the kube-dns pod (it reads the API server through the relay)."""
        from kubernetes import utils

        api = self._plane.api_client()
        for obj in (*cfg.coredns_rbac(), *cfg.coredns_objects()):
            utils.create_from_dict(api, obj)
        wait_for(self._dns_ready, timeout, self._what("kubelet", "the CoreDNS pod to be Ready"))

    def _dns_ready(self) -> bool:
        from kubernetes import client

        self._check_alive()
        pod = client.CoreV1Api(self._plane.api_client()).read_namespaced_pod(
            cfg.DNS_ACCOUNT, cfg.DNS_NAMESPACE)
        return any(c.type == "Ready" and c.status == "True"
                   for c in (pod.status.conditions or []))

    def _bind_kubelet_client(self) -> None:
        """The API server's kubelet client may use the kubelet's API (the kubelet asks)."""
        from kubernetes import client

        try:
            client.RbacAuthorizationV1Api(self._plane.api_client()).create_cluster_role_binding(
                cfg.kubelet_client_rbac())
        except client.ApiException as exc:
            if exc.status != 409:  # left by an earlier node of this plane
                raise

    def _start_api_relay(self) -> None:
        from kubernetes import client

        self._spawn("api-relay", cfg.api_relay_argv(self.layout))
        client.DiscoveryV1Api(self._plane.api_client()).create_namespaced_endpoint_slice(
            "default", cfg.api_endpoint_slice())

    def _start_policy_controller(self, timeout: float) -> None:
        """kube-router's NetworkPolicy controller; it needs the Node to exist (its address)."""
        from kubernetes import client

        rbac = client.RbacAuthorizationV1Api(self._plane.api_client())
        role, binding = cfg.policy_rbac()
        if self.first:  # one identity for every node's controller
            rbac.create_cluster_role(role)
            rbac.create_cluster_role_binding(binding)
        self._spawn("kube-router", cfg.kube_router_argv(self.layout))
        health = f"http://{self.layout.listen_ip}:{self.layout.policy_health_port}/healthz"
        wait_for(lambda: self._http_ok(health), timeout,
                 self._what("kube-router", "kube-router /healthz"))

    def _take_lock(self, wait: float = LOCK_WAIT_S) -> None:
        """One node per machine: wait up to ``wait`` seconds for another session's node to
        stop (engineers sharing a machine run test sessions side by side), then give up."""
        lock_path = self.layout.build.parent / ".node.lock"
        self._lock = lock_path.open("w")
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    self._lock.close()
                    self._lock = None
                    raise NodeError(
                        f"another test session has run a real node on this machine for over "
                        f"{wait:.0f}s (it holds {lock_path}); one node per machine") from None
                time.sleep(2)

    def _write_pki(self) -> None:
        lay, d = self.layout, self.layout.pki
        ca = pki.KeyPair(cert=self._plane.ca_file, key=self._plane.ca_file.with_suffix(".key"))
        # The Node authorizer and NodeRestriction know a kubelet by this name and group.
        kubelet = pki.make_cert(d, "kubelet", ca, f"system:node:{self.name}",
                                organizations=("system:nodes",))
        # system:kube-proxy is bound to the system:node-proxier role by the API server.
        proxy = pki.make_cert(d, "kube-proxy", ca, "system:kube-proxy")
        pki.make_cert(d, "kubelet-serving", ca, self.name, server=True,
                      dns_names=("localhost",), ips=tuple({"127.0.0.1", lay.listen_ip}))
        policy = pki.make_cert(d, "kube-router", ca, cfg.POLICY_USER)
        for user, pair in (("kubelet", kubelet), ("kube-proxy", proxy),
                           ("kube-router", policy)):
            config = pki.kubeconfig(lay.api_server, lay.ca_file, user, client=pair)
            if not self.first:  # through the relay: the API server's certificate names localhost
                config["clusters"][0]["cluster"]["tls-server-name"] = "localhost"
            pki.write_kubeconfig(lay.kubeconfig(user), config)

    # --- stop -----------------------------------------------------------------------------
    def stop(self, timeout: float = 90) -> None:
        """Stop everything and put the host back; ``NodeError`` lists what is left over.

        Order: the node's pods (CoreDNS's too) are deleted so that the kubelet tears their
        sandboxes down (network, volumes) itself; then kube-router, the relay, kube-proxy and
        the kubelet stop; any task still running is killed through containerd; containerd and its
        shims stop; then ``node_host`` unmounts and deletes what remains. The lock is released
        last, so that no other session's node can be mistaken for a leftover of this one."""
        if not self._started:
            return  # never started, or already stopped: nothing here is ours
        self._started = False
        try:
            if "kubelet" in self._procs and self._procs["kubelet"].poll() is None:
                self._drain(timeout)
            for name in ("kube-router", "api-relay", "registry-relay", "kube-proxy", "kubelet"):
                if name in self._procs:
                    _terminate(self._procs.pop(name))
            if "containerd" in self._procs:
                self._kill_tasks()
                _terminate(self._procs.pop("containerd"))
            self._kill_shims()
            self._delete_api_objects()
        finally:
            try:
                self._host.restore()
                left = self._host.leftovers() + [
                    f"process {pid}" for pid in self.processes()]
            finally:
                if self._lock is not None:
                    self._lock.close()
                    self._lock = None
        if left:
            raise NodeError("the node left behind: " + "; ".join(left))

    def power_off(self) -> None:
        """As near a power cut as one machine allows, for a node after the first: SIGKILL every
        process of the node at once (kubelet, containerd and its shims, kube-proxy,
        kube-router, every pod's processes), leaving its network namespace dark. The host's
        relays on its cable stay, as a network outlives a dead machine. ``stop()`` still
        cleans up after it.

        Dark first: a killed process's kernel would still close its connections (a FIN or a
        reset to every peer, which a peer's training process takes for its partner's crash),
        and a machine without power sends nothing. So every packet into or out of the node's
        network stack is dropped before the processes die."""
        if self.first:
            raise NodeError("the first node holds the cluster's DNS: power off a later one")
        lay = self.layout
        for chain in ("PREROUTING", "OUTPUT"):
            node_host.run(cfg.in_node(lay, ["iptables", "-w", "-t", "raw", "-I", chain, "1",
                                            "-j", "DROP"]))
        daemons = {name: proc for name, proc in self._procs.items()
                   if name not in ("api-relay", "registry-relay")}
        pids = ({p.pid for p in daemons.values()} | set(self.processes())
                | set(node_host.cgroup_processes(root=lay.cgroup_root))
                | set(node_netns.netns_pids(str(lay.netns))))
        pids.discard(os.getpid())
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for name, proc in daemons.items():
            proc.wait()
            del self._procs[name]

    def processes(self) -> list[int]:
        """Pids of processes that name this node's work dir (containerd, shims, kubelet)."""
        work = str(self.layout.work).encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                try:
                    if work in (entry / "cmdline").read_bytes():
                        pids.append(int(entry.name))
                except OSError:
                    pass
        return pids

    def _drain(self, timeout: float) -> None:
        from kubernetes import client

        core = client.CoreV1Api(self._plane.api_client())
        pods = core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={self.name}")
        for pod in pods.items:
            try:
                core.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace,
                                           grace_period_seconds=0)
            except client.ApiException as exc:
                if exc.status != 404:
                    raise
        try:
            wait_for(lambda: not self._ctr("tasks", "ls", "-q").split(), timeout,
                     "the kubelet to stop every container")
        except NodeError:
            pass  # _kill_tasks below ends what is left

    def _kill_tasks(self) -> None:
        try:
            tasks = self._ctr("tasks", "ls", "-q").split()
        except NodeError:
            return
        for task in tasks:
            self._ctr("tasks", "kill", "-s", "SIGKILL", task, check=False)
        for task in tasks:
            self._ctr("tasks", "delete", "-f", task, check=False)
        for container in self._ctr("containers", "ls", "-q", check=False).split():
            self._ctr("containers", "delete", container, check=False)

    def _kill_shims(self) -> None:
        """A shim daemonizes out of containerd's process group; it names our socket."""
        for pid in self.processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_for(lambda: not self.processes(), 30, "containerd's shims to exit")

    def _delete_api_objects(self) -> None:
        """The Node; for the first node also the API server's EndpointSlice, CoreDNS's
        Service, ConfigMap and service account, the RBAC of CoreDNS, kube-router and the API
        server's kubelet client: the plane outlives the node in a test session."""
        from kubernetes import client

        api = self._plane.api_client()
        core = client.CoreV1Api(api)
        rbac = client.RbacAuthorizationV1Api(api)
        discovery = client.DiscoveryV1Api(api)
        dns = cfg.DNS_NAMESPACE
        shared = () if not self.first else (
            (lambda n: core.delete_namespaced_service(n, dns), cfg.DNS_SERVICE),
            (lambda n: core.delete_namespaced_config_map(n, dns), cfg.DNS_ACCOUNT),
            (lambda n: core.delete_namespaced_service_account(n, dns), cfg.DNS_ACCOUNT),
            (lambda n: discovery.delete_namespaced_endpoint_slice(n, "default"),
             cfg.API_ENDPOINT_SLICE),
            (rbac.delete_cluster_role_binding, cfg.DNS_USER),
            (rbac.delete_cluster_role, cfg.DNS_USER),
            (rbac.delete_cluster_role_binding, cfg.POLICY_USER),
            (rbac.delete_cluster_role_binding, cfg.KUBELET_CLIENT),
            (rbac.delete_cluster_role, cfg.POLICY_USER))
        for delete, name in ((core.delete_node, self.name), *shared):
            try:
                delete(name)
            except client.ApiException as exc:
                if exc.status != 404:
                    raise

    # --- helpers --------------------------------------------------------------------------
    def _what(self, component: str, thing: str = "") -> str:
        return f"{thing or component} (see {self.log_file(component)})"

    def _spawn(self, name: str, argv: list[str], in_node: bool = True) -> None:
        """Start ``argv`` in its own session (on the node's machine unless ``in_node`` is
        false), logging to the component's log."""
        log = self.log_file(name)
        with log.open("ab") as out:
            self._procs[name] = subprocess.Popen(
                cfg.in_node(self.layout, argv) if in_node else argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.layout.work, start_new_session=True)

    def _check_alive(self) -> None:
        for name, popen in self._procs.items():
            code = popen.poll()
            if code is not None:
                tail = self.log_file(name).read_text(errors="replace")[-3000:]
                raise ProcessExited(f"{name} exited with {code}; log {self.log_file(name)}:\n{tail}")

    def pull(self, image: str) -> None:
        """Pull `image` into the node's containerd from its machine, with its registry settings,
        as the kubelet would: a figure taken next then counts no pull."""
        lay = self.layout
        argv = cfg.in_node(lay, cfg.ctr_argv(lay, "images", "pull", "--hosts-dir",
                                             str(lay.containerd_dir / "certs.d"), image))
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise NodeError(f"pulling {image} on node {self.name} failed: {done.stderr.strip()}")

    def _ctr(self, *args: str, check: bool = True) -> str:
        self._check_alive()
        done = subprocess.run(cfg.ctr_argv(self.layout, *args), capture_output=True, text=True,
                              timeout=120)
        if check and done.returncode != 0:
            raise NodeError(f"ctr {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def _http_ok(self, url: str) -> bool:
        self._check_alive()
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status == 200

    def _ready(self) -> bool:
        from kubernetes import client

        self._check_alive()
        node = client.CoreV1Api(self._plane.api_client()).read_node(self.name)
        return any(c.type == "Ready" and c.status == "True"
                   for c in (node.status.conditions or []))


def _terminate(popen: subprocess.Popen, grace: float = 15) -> None:
    """SIGTERM the process group, SIGKILL it after ``grace`` seconds, and reap the leader."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(popen.pid, sig)
        except ProcessLookupError:
            break
        try:
            popen.wait(timeout=grace)
            break
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(popen.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if popen.poll() is None:
        popen.wait(timeout=grace)
