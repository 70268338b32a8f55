"""What the real test node runs, as data: addresses, file layout, configs and command lines.

Everything here is pure: ``NodeLayout`` says where the node keeps its files and which ports it
listens on, and each function turns it into a config (containerd's TOML, the CNI network list,
the kubelet's and kube-proxy's configuration objects) or an argv. ``real_node.RealNode`` writes
them and starts the processes; a reader can see every setting that matters in this one file.

Addresses: pods get 198.18.0.0/24 on the bridge ``wb-cni0``, whose address 198.18.0.1 is also
the node's InternalIP; everything stays inside 198.18.0.0/15 (RFC 2544 benchmarking space), is
never masqueraded, and ``node_host`` drops any forwarded packet that would leave that range.

More nodes (``NodeLayout.index`` 1, 2, ...) each stand for a machine of their own: a network
namespace ``wb-node<i>`` (the machine), joined to the host by a veth pair (its network cable:
198.18.255.<4i-3> on the host, 198.18.255.<4i-2> in the namespace, which is the node's
InternalIP and its name), with pods in 198.18.<i>.0/24 on its own bridge ``wb-cni<i>``. The
host routes each node's pod range to its cable; a node's default route is the host, so pods
of every node reach each other with their own addresses. Each such node reaches the API
server through a relay of its own on the host's end of its cable.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from k8s_plane import KUBELET_CLIENT, SERVICE_CIDR

# The node's name. The API server reaches a kubelet at the node's Hostname address first; the
# kubelet listens on loopback only, where nothing in a pod can reach it. Naming the node
# "localhost" makes its Hostname address resolve there. Every request to the kubelet's API is
# authenticated (client certificate or token) and authorized by the API server: the API
# server's own certificate (KUBELET_CLIENT) is bound to system:kubelet-api-admin.
NODE_NAME = "localhost"
# Test pods schedule onto the real node only when they tolerate this taint and select the
# label, so pods of the KWOK tests never land on a node that cannot pull their images.
NODE_TAINT = {"key": "workbench.test/real-node", "value": "true", "effect": "NoSchedule"}
NODE_LABEL = ("workbench.test/real-node", "true")

BRIDGE = "wb-cni0"
POD_SUBNET = "198.18.0.0/24"
NODE_IP = "198.18.0.1"
# The whole range the node's traffic must stay in (pod subnet, node address).
CONTAINED_RANGE = "198.18.0.0/15"
CNI_NETWORK = "wb-pods"
# Cluster DNS: CoreDNS as a pod in kube-system labelled `k8s-app: kube-dns` behind the
# `kube-dns` Service (the tenants' allow-dns NetworkPolicy names exactly those), answering
# cluster.local from the API server. The Service's address is the tenth of the plane's range.
CLUSTER_DOMAIN = "cluster.local"
DNS_IP = str(ipaddress.ip_network(SERVICE_CIDR)[10])
DNS_NAMESPACE, DNS_SERVICE, DNS_APP = "kube-system", "kube-dns", "kube-dns"
DNS_ACCOUNT = "coredns"  # the pod's service account; its ClusterRole and binding share:
DNS_USER = "workbench-node-coredns"
DNS_READY_PORT = 8181
# Pods reach the API server through the `kubernetes` Service: an EndpointSlice of ours sends it
# to a relay on the node's address (the test plane's API server listens on loopback only).
API_RELAY_PORT = 6443
API_ENDPOINT_SLICE = "kubernetes-workbench-node"
# NetworkPolicy: kube-router's policy controller, with an identity of its own.
POLICY_USER = "workbench-node-kube-router"
# Each v1 cgroup hierarchy gets this folder; the kubelet puts kubepods/ under it.
CGROUP_ROOT = "/paddle-workbench-node"

CNI_BIN_DIR = "/usr/lib/cni"  # Debian's containernetworking-plugins
CONTAINERD = "/usr/bin/containerd"
CTR = "/usr/bin/ctr"
RUNC = "/usr/sbin/runc"
# The one registry the node may pull from (the internal one of the image pipeline); the
# nodes in namespaces reach it through a relay on the host's end of their cable.
REGISTRY_PORT = 5000
INTERNAL_REGISTRY = f"http://127.0.0.1:{REGISTRY_PORT}"
# build.sh names the images it packs after these (see deploy/node/build.sh).
PAUSE_IMAGE = "localhost/workbench/pause:1"
TESTSERVER_IMAGE = "localhost/workbench/testserver:1"
COREDNS_IMAGE = "localhost/workbench/coredns:1"


# Every node's pod range lies in this one (198.18.<i>.0/24; the cables in 198.18.255.0/24):
# kube-proxy counts a source in it as inside the cluster.
CLUSTER_RANGE = "198.18.0.0/16"
# Every node's pods (198.18.<i>.0/24, i < 128), and nothing else of it: no cable's address.
PODS_RANGE = "198.18.0.0/17"
# The cables between the host and the nodes after the first (198.18.255.<4i-3>/30 each).
CABLES_RANGE = "198.18.255.0/24"
NETNS_DIR = Path("/run/netns")


@dataclass(frozen=True)
class NodeLayout:
    """Where one node keeps its files and which ports it listens on.

    ``build`` is deploy/node/build.sh's output (bin/, images/); ``work`` is this session's
    folder, holding every file, socket, mount and network namespace the node makes. ``index``
    0 is the first node, on the host's own network; 1, 2, ... are nodes in network namespaces
    (see the module doc), which reach the API server through a relay on ``relay_port``.
    """

    build: Path
    work: Path
    server: str
    ca_file: Path
    kubelet_port: int
    kubelet_healthz_port: int
    proxy_healthz_port: int
    proxy_metrics_port: int
    policy_health_port: int
    index: int = 0
    relay_port: int = 0

    # --- the node's identity and addresses ---------------------------------------------------
    @property
    def name(self) -> str:
        """The Node's name: ``NODE_NAME`` for the first node; its address for the others (the
        API server dials a kubelet at its Hostname address, and an address needs no DNS)."""
        return NODE_NAME if self.index == 0 else self.node_ip

    @property
    def netns(self) -> str | None:
        """The network namespace standing in for the node's machine (None: the host's own)."""
        return f"wb-node{self.index}" if self.index else None

    @property
    def bridge(self) -> str:
        return f"wb-cni{self.index}"

    @property
    def pod_subnet(self) -> str:
        return f"198.18.{self.index}.0/24"

    @property
    def gateway(self) -> str:
        """The bridge's address: the pods' gateway."""
        return f"198.18.{self.index}.1"

    @property
    def node_ip(self) -> str:
        """The node's InternalIP: the bridge's address on the host, its cable's end otherwise."""
        return NODE_IP if self.index == 0 else f"198.18.255.{4 * self.index - 2}"

    @property
    def host_ip(self) -> str:
        """The host's end of the node's cable (the relay to the API server listens there)."""
        return f"198.18.255.{4 * self.index - 3}"

    @property
    def cable(self) -> tuple[str, str]:
        """The veth pair's names: (the host's end, the node's end)."""
        return f"wb-n{self.index}host", f"wb-n{self.index}"

    @property
    def listen_ip(self) -> str:
        """Where the kubelet and kube-proxy listen: loopback on the host (nothing in a pod
        reaches it); the node's address in a namespace, whose loopback the API server cannot
        reach (the namespace's guard drops pod traffic to it)."""
        return "127.0.0.1" if self.index == 0 else self.node_ip

    @property
    def cgroup_root(self) -> str:
        return CGROUP_ROOT + (str(self.index) if self.index else "")

    @property
    def cni_network(self) -> str:
        return CNI_NETWORK + (str(self.index) if self.index else "")

    @property
    def registry(self) -> str:
        """The internal registry as this node's containerd reaches it."""
        return INTERNAL_REGISTRY if self.index == 0 else f"http://{self.host_ip}:{REGISTRY_PORT}"

    @property
    def api_server(self) -> str:
        """The API server as this node's components reach it."""
        return self.server if self.index == 0 else f"https://{self.host_ip}:{self.relay_port}"

    def binary(self, name: str) -> str:
        return str(self.build / "bin" / name)

    def image_archive(self, name: str) -> Path:
        return self.build / "images" / f"{name}.tar"

    @property
    def containerd_dir(self) -> Path:
        return self.work / "containerd"

    @property
    def containerd_socket(self) -> Path:
        return self.containerd_dir / "containerd.sock"

    @property
    def kubelet_dir(self) -> Path:
        return self.work / "kubelet"

    @property
    def cni_conf_dir(self) -> Path:
        return self.work / "cni" / "net.d"

    @property
    def pki(self) -> Path:
        return self.work / "pki"

    def config_file(self, name: str) -> Path:
        return self.work / "config" / name

    def log_file(self, component: str) -> Path:
        return self.work / "logs" / f"{component}.log"

    def kubeconfig(self, user: str) -> Path:
        return self.work / "config" / f"{user}.kubeconfig"


def containerd_config(lay: NodeLayout) -> str:
    """containerd 1.6's config (version 2): CRI with runc on cgroupfs and the local pause image.

    ``restrict_oom_score_adj``: root on this machine lacks CAP_SYS_RESOURCE, so an OOM score
    below containerd's own fails every sandbox ("can't get final child's PID from pipe");
    clamping them makes sandboxes start. Registries: hosts.toml files under ``certs.d``
    (``registry_hosts``) point every registry at the internal one.
    """
    d = lay.containerd_dir
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{d / 'root'}"
state = "{d / 'state'}"

[grpc]
  address = "{lay.containerd_socket}"

[ttrpc]
  address = "{d / 'containerd.sock.ttrpc'}"

[metrics]
  address = ""

[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  BinaryName = "{RUNC}"
  SystemdCgroup = false

[{cri}.cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = "{lay.cni_conf_dir}"
  max_conf_num = 1

[{cri}.registry]
  config_path = "{d / 'certs.d'}"
"""


def registry_hosts(registry: str = INTERNAL_REGISTRY) -> dict[str, str]:
    """hosts.toml per registry namespace: ``_default`` (any registry not named) and the usual
    public ones all resolve to the internal registry, so nothing is pulled from outside."""
    # The host entry as well as the server: containerd 1.6 dials a registry named by an
    # address (127.0.0.1:5000) itself when only `server` names another one.
    text = (f'server = "{registry}"\n\n[host."{registry}"]\n'
            '  capabilities = ["pull", "resolve"]\n')
    own = INTERNAL_REGISTRY.split("://", 1)[1]  # images named by its loopback address too
    return {name: text for name in ("_default", own, "docker.io", "registry.k8s.io", "quay.io",
                                     "ghcr.io")}


def cni_config(lay: NodeLayout) -> dict[str, Any]:
    """The pod network: Debian's bridge plugin with host-local addresses, no masquerading."""
    return {
        "cniVersion": "1.0.0",
        "name": lay.cni_network,
        "plugins": [{
            "type": "bridge",
            "bridge": lay.bridge,
            "isGateway": True,
            "ipMasq": False,
            "hairpinMode": True,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": lay.pod_subnet, "gateway": lay.gateway}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": str(lay.work / "cni" / "ipam"),
            },
        }],
    }


def kubelet_config(lay: NodeLayout) -> dict[str, Any]:
    """The KubeletConfiguration: cgroupfs on cgroup v1, swap tolerated, loopback only."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": lay.listen_ip,
        "port": lay.kubelet_port,
        "readOnlyPort": 0,
        "healthzBindAddress": lay.listen_ip,
        "healthzPort": lay.kubelet_healthz_port,
        "tlsCertFile": str(lay.pki / "kubelet-serving.crt"),
        "tlsPrivateKeyFile": str(lay.pki / "kubelet-serving.key"),
        # No anonymous request; certificates of the plane's CA and tokens (TokenReview) are
        # accepted as their users, and the API server decides what each may do
        # (SubjectAccessReview on nodes/proxy, nodes/log, ...). See NODE_NAME.
        "authentication": {"anonymous": {"enabled": False},
                           "webhook": {"enabled": True, "cacheTTL": "30s"},
                           "x509": {"clientCAFile": str(lay.ca_file)}},
        "authorization": {"mode": "Webhook",
                          "webhook": {"cacheAuthorizedTTL": "30s",
                                      "cacheUnauthorizedTTL": "10s"}},
        "containerRuntimeEndpoint": f"unix://{lay.containerd_socket}",
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": lay.cgroup_root,
        "failSwapOn": False,
        "podLogsDir": str(lay.work / "pod-logs"),
        "volumePluginDir": str(lay.work / "volume-plugins"),
        "resolvConf": str(lay.config_file("resolv.conf")),
        "clusterDNS": [DNS_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        "registerWithTaints": [NODE_TAINT],
        "maxPods": 30,
        "serializeImagePulls": False,
        # Images are imported, never pulled: garbage-collecting them would lose them.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        # A shared build machine runs low on disk now and then; that must not evict test pods.
        "evictionHard": {"memory.available": "50Mi", "nodefs.available": "1%",
                         "nodefs.inodesFree": "1%", "imagefs.available": "1%"},
        "enforceNodeAllocatable": ["pods"],
    }


def kube_proxy_config(lay: NodeLayout) -> dict[str, Any]:
    """kube-proxy in iptables mode; no sysctl it would change on its own (conntrack sizes,
    route_localnet for localhost NodePorts)."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(lay.kubeconfig("kube-proxy"))},
        "hostnameOverride": lay.name,
        "mode": "iptables",
        "clusterCIDR": CLUSTER_RANGE,
        "healthzBindAddress": f"{lay.listen_ip}:{lay.proxy_healthz_port}",
        "metricsBindAddress": f"{lay.listen_ip}:{lay.proxy_metrics_port}",
        "nodePortAddresses": [f"{lay.node_ip}/32"],
        "conntrack": {"maxPerCore": 0, "min": 0},
        "iptables": {"localhostNodePorts": False, "masqueradeAll": False},
    }


def corefile() -> str:
    """CoreDNS's config: Service and pod names of cluster.local from the API server (in-cluster:
    the pod's service account, through the `kubernetes` Service). No forward plugin: other names
    are refused, nothing leaves."""
    return f"""{CLUSTER_DOMAIN}:53 in-addr.arpa:53 {{
    errors
    ready :{DNS_READY_PORT}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa {{
        pods verified
    }}
    cache 5
}}
"""


def node_placement(node: str = "") -> dict[str, Any]:
    """The pod spec fields that put a pod on a real node (its label selected, taint tolerated);
    with ``node``, on that one (its hostname label, which the kubelet sets to its name)."""
    key, value = NODE_LABEL
    selector = {key: value, **({"kubernetes.io/hostname": node} if node else {})}
    return {"nodeSelector": selector,
            "tolerations": [{"key": NODE_TAINT["key"], "operator": "Equal",
                             "value": NODE_TAINT["value"], "effect": NODE_TAINT["effect"]}]}


def coredns_objects() -> list[dict[str, Any]]:
    """CoreDNS as the cluster's DNS: its service account, Corefile, pod and `kube-dns` Service
    (fixed address ``DNS_IP``, which the kubelet hands to pods). It runs as a non-root user and
    binds port 53 through the namespaced sysctl ``net.ipv4.ip_unprivileged_port_start``."""
    meta = {"namespace": DNS_NAMESPACE}
    app = {"k8s-app": DNS_APP}
    ports = [{"name": f"dns-{p.lower()}", "port": 53, "protocol": p} for p in ("UDP", "TCP")]
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {**meta, "name": DNS_ACCOUNT}},
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {**meta, "name": DNS_ACCOUNT}, "data": {"Corefile": corefile()}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {**meta, "name": DNS_SERVICE, "labels": app},
         "spec": {"selector": app, "clusterIP": DNS_IP, "ports": ports}},
        {"apiVersion": "v1", "kind": "Pod",
         "metadata": {**meta, "name": DNS_ACCOUNT, "labels": app},
         "spec": {
             **node_placement(NODE_NAME),  # on the first node, whatever joins later
             "serviceAccountName": DNS_ACCOUNT,
             "dnsPolicy": "Default",
             "terminationGracePeriodSeconds": 1,
             "securityContext": {
                 "runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                 "seccompProfile": {"type": "RuntimeDefault"},
                 "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "53"}]},
             "containers": [{
                 "name": "coredns", "image": COREDNS_IMAGE, "imagePullPolicy": "Never",
                 "args": ["-conf", "/etc/coredns/Corefile"],
                 "ports": [{"containerPort": 53, "name": p["name"], "protocol": p["protocol"]}
                           for p in ports],
                 "readinessProbe": {"httpGet": {"path": "/ready", "port": DNS_READY_PORT},
                                    "periodSeconds": 1},
                 "securityContext": {"allowPrivilegeEscalation": False,
                                     "readOnlyRootFilesystem": True,
                                     "capabilities": {"drop": ["ALL"]}},
                 "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns",
                                   "readOnly": True}]}],
             "volumes": [{"name": "config", "configMap": {"name": DNS_ACCOUNT}}]}},
    ]


def coredns_rbac() -> list[dict[str, Any]]:
    """What CoreDNS's kubernetes plugin reads (its upstream ClusterRole), bound to its pod's
    service account."""
    name = DNS_USER
    return [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": name},
         "rules": [{"apiGroups": [""], "resources": ["services", "pods", "namespaces"],
                    "verbs": ["list", "watch"]},
                   {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                    "verbs": ["list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": name},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": DNS_ACCOUNT,
                       "namespace": DNS_NAMESPACE}]},
    ]


def kubelet_client_rbac() -> dict[str, Any]:
    """The API server's kubelet client may use the kubelet's API (logs, exec, port-forward),
    through Kubernetes' own role for it."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": KUBELET_CLIENT},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "system:kubelet-api-admin"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                      "name": KUBELET_CLIENT}],
    }


def policy_rbac() -> list[dict[str, Any]]:
    """What kube-router's policy controller reads (pods, namespaces, policies, the node)."""
    name = POLICY_USER
    return [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": name},
         "rules": [{"apiGroups": [""],
                    "resources": ["namespaces", "pods", "services", "nodes", "endpoints"],
                    "verbs": ["get", "list", "watch"]},
                   {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"],
                    "verbs": ["get", "list", "watch"]},
                   {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                    "verbs": ["get", "list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": name},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": name},
         "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": name}]},
    ]


def kube_router_argv(lay: NodeLayout) -> list[str]:
    """kube-router with only its NetworkPolicy controller (iptables and ipset): no routing, no
    service proxy (kube-proxy does that), no CNI config of its own."""
    return [lay.binary("kube-router"), "--run-firewall=true", "--run-router=false",
            "--run-service-proxy=false", "--enable-cni=false", "--enable-ipv6=false",
            f"--kubeconfig={lay.kubeconfig('kube-router')}", f"--hostname-override={lay.name}",
            # The plane's Service range: kube-router must not treat Service IPs as outside.
            f"--service-cluster-ip-range={SERVICE_CIDR}", "--metrics-port=0",
            f"--health-port={lay.policy_health_port}", "--v=1"]


def api_relay_argv(lay: NodeLayout) -> list[str]:
    """The relay from the node's address to the API server's loopback port: for pods (the
    `kubernetes` Service) on the first node; for the node's own components on the others, at
    the host's end of their cable."""
    api_port = lay.server.rsplit(":", 1)[1]
    listen = (f"{NODE_IP}:{API_RELAY_PORT}" if lay.index == 0
              else f"{lay.host_ip}:{lay.relay_port}")
    return [lay.binary("tcprelay"), "-listen", listen, "-to", f"127.0.0.1:{api_port}"]


def registry_relay_argv(lay: NodeLayout) -> list[str]:
    """A node in a namespace reaches the internal registry (loopback on the host) here."""
    return [lay.binary("tcprelay"), "-listen", f"{lay.host_ip}:{REGISTRY_PORT}",
            "-to", f"127.0.0.1:{REGISTRY_PORT}"]


def in_node(lay: NodeLayout, argv: list[str]) -> list[str]:
    """``argv`` run in the node's network namespace (``nsenter``, which keeps the host's /sys
    and cgroup mounts, unlike ``ip netns exec``); as it is on the first node."""
    return argv if lay.netns is None else in_netns(lay.netns, argv)


def in_netns(netns: str, argv: list[str]) -> list[str]:
    return ["nsenter", f"--net={NETNS_DIR / netns}", "--", *argv]


def netns_of(address: str) -> str | None:
    """The network namespace of the node whose pod range holds `address` (None: the first
    node's, the host's own, or no pod's)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if ip not in ipaddress.ip_network(PODS_RANGE):
        return None
    index = ip.packed[2]  # 198.18.<index>.0/24 is node <index>'s pod range
    return f"wb-node{index}" if index else None


def api_endpoint_slice() -> dict[str, Any]:
    """Endpoints of the `kubernetes` Service: the relay. The test plane runs no endpoint
    reconciler (its API server's address is loopback), so nothing else writes them."""
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": API_ENDPOINT_SLICE, "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "kubernetes",
                                "endpointslice.kubernetes.io/managed-by": "workbench-node"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [NODE_IP], "conditions": {"ready": True}}],
        "ports": [{"name": "https", "port": API_RELAY_PORT, "protocol": "TCP"}],
    }


def containerd_argv(lay: NodeLayout) -> list[str]:
    return [CONTAINERD, f"--config={lay.config_file('containerd.toml')}"]


def kubelet_argv(lay: NodeLayout) -> list[str]:
    key, value = NODE_LABEL
    return [
        lay.binary("kubelet"),
        f"--config={lay.config_file('kubelet.yaml')}",
        f"--kubeconfig={lay.kubeconfig('kubelet')}",
        f"--root-dir={lay.kubelet_dir}",
        f"--cert-dir={lay.pki}",
        f"--hostname-override={lay.name}",
        f"--node-ip={lay.node_ip}",
        f"--node-labels={key}={value}",
        "--v=2",
    ]


def kube_proxy_argv(lay: NodeLayout) -> list[str]:
    return [lay.binary("kube-proxy"), f"--config={lay.config_file('kube-proxy.yaml')}", "--v=2"]


def ctr_argv(lay: NodeLayout, *args: str) -> list[str]:
    """``ctr`` against this node's containerd, in the CRI's namespace."""
    return [CTR, f"--address={lay.containerd_socket}", "--namespace=k8s.io", *args]


def config_files(lay: NodeLayout) -> dict[Path, str]:
    """Every config file the node reads, path -> text (YAML is written as JSON, a subset)."""
    files = {
        lay.config_file("containerd.toml"): containerd_config(lay),
        lay.config_file("kubelet.yaml"): json.dumps(kubelet_config(lay), indent=1),
        lay.config_file("kube-proxy.yaml"): json.dumps(kube_proxy_config(lay), indent=1),
        # Host resolvers the kubelet would hand to pods (dnsPolicy Default, and the search
        # path of ClusterFirst): none, so no query ever leaves the machine.
        lay.config_file("resolv.conf"): "# the test node has no upstream resolver\n",
        lay.cni_conf_dir / f"10-{lay.cni_network}.conflist": json.dumps(cni_config(lay), indent=1),
    }
    for name, text in registry_hosts(lay.registry).items():
        files[lay.containerd_dir / "certs.d" / name / "hosts.toml"] = text
    return files
