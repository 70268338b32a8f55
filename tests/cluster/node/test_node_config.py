"""The real node's configuration, as data: the settings its safety rests on (no cluster)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import node_config as cfg
import pytest

try:
    import tomllib
except ImportError:  # Python 3.10: pip vendors the same parser
    from pip._vendor import tomli as tomllib

CONTAINED = ipaddress.ip_network(cfg.CONTAINED_RANGE)


@pytest.fixture
def layout(tmp_path: Path) -> cfg.NodeLayout:
    return cfg.NodeLayout(build=tmp_path / "build", work=tmp_path / "work",
                          server="https://127.0.0.1:6443", ca_file=tmp_path / "ca.crt",
                          kubelet_port=10250, kubelet_healthz_port=10248,
                          proxy_healthz_port=10256, proxy_metrics_port=10249,
                          policy_health_port=20244)


def test_containerd_clamps_oom_scores_uses_the_local_pause_image_and_keeps_state_in_work(layout):
    conf = tomllib.loads(cfg.containerd_config(layout))
    cri = conf["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["restrict_oom_score_adj"] is True
    assert cri["sandbox_image"] == cfg.PAUSE_IMAGE
    assert cri["netns_mounts_under_state_dir"] is True
    assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is False
    for path in (conf["root"], conf["state"], conf["grpc"]["address"],
                 cri["cni"]["conf_dir"], cri["registry"]["config_path"]):
        assert Path(path).is_relative_to(layout.work), path


@pytest.mark.parametrize("registry", sorted(cfg.registry_hosts()))
def test_every_registry_resolves_to_the_internal_one_on_loopback(registry):
    server = tomllib.loads(cfg.registry_hosts()[registry])["server"]
    host = server.split("://", 1)[1].split(":")[0].split("/")[0]
    assert host in ("127.0.0.1", "localhost"), server


def test_the_pod_network_stays_in_the_contained_range_without_masquerading(layout):
    bridge = cfg.cni_config(layout)["plugins"][0]
    assert bridge["ipMasq"] is False
    (subnet_range,) = bridge["ipam"]["ranges"]
    subnet = ipaddress.ip_network(subnet_range[0]["subnet"])
    assert subnet.subnet_of(CONTAINED)
    assert ipaddress.ip_address(subnet_range[0]["gateway"]) in subnet
    assert ipaddress.ip_address(cfg.NODE_IP) in subnet
    proxy = cfg.kube_proxy_config(layout)
    assert ipaddress.ip_network(proxy["clusterCIDR"]).subnet_of(CONTAINED)
    assert proxy["iptables"]["masqueradeAll"] is False


def test_the_kubelet_listens_on_loopback_and_lets_the_api_server_decide(layout):
    kubelet = cfg.kubelet_config(layout)
    assert kubelet["authentication"]["anonymous"]["enabled"] is False
    assert kubelet["authentication"]["webhook"]["enabled"] is True
    assert kubelet["authorization"]["mode"] == "Webhook"
    binding = cfg.kubelet_client_rbac()
    assert binding["roleRef"]["name"] == "system:kubelet-api-admin"
    assert binding["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                                    "name": cfg.KUBELET_CLIENT}]
    assert ipaddress.ip_address(kubelet["address"]).is_loopback
    assert ipaddress.ip_address(kubelet["healthzBindAddress"]).is_loopback
    assert kubelet["readOnlyPort"] == 0
    # kube-proxy must not open loopback to pods (route_localnet) for NodePorts.
    assert cfg.kube_proxy_config(layout)["iptables"]["localhostNodePorts"] is False


def test_only_pods_that_ask_for_the_real_node_land_on_it(layout):
    kubelet = cfg.kubelet_config(layout)
    assert cfg.NODE_TAINT in kubelet["registerWithTaints"]
    assert cfg.NODE_TAINT["effect"] == "NoSchedule"
    assert f"--node-labels={'='.join(cfg.NODE_LABEL)}" in cfg.kubelet_argv(layout)


def test_cluster_dns_answers_cluster_names_only_and_forwards_nothing(layout):
    corefile = cfg.corefile()
    assert "forward" not in corefile and "proxy" not in corefile
    assert cfg.kubelet_config(layout)["clusterDNS"] == [cfg.DNS_IP]
    (role, binding) = cfg.coredns_rbac()
    verbs = {verb for rule in role["rules"] for verb in rule["verbs"]}
    assert verbs == {"list", "watch"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": cfg.DNS_ACCOUNT,
                                    "namespace": cfg.DNS_NAMESPACE}]


def test_cluster_dns_is_the_pod_and_service_the_tenants_policies_allow():
    """The network module's allow-dns policy names kube-system pods labelled k8s-app: kube-dns."""
    import tenancy

    from hub_config.cluster_policy import network
    from hub_config.tenants import Tenant

    tenant = Tenant.from_dict(tenancy.tenant_data("dns"), strict=True)
    (allow_dns,) = [p for p in network.network_policies(tenant, hub_namespace="hub")
                    if p["metadata"]["name"].endswith("allow-dns")]
    (peer,) = allow_dns["spec"]["egress"][0]["to"]
    objects = {obj["kind"]: obj for obj in cfg.coredns_objects()}
    pod, service = objects["Pod"], objects["Service"]
    namespace_labels = {"kubernetes.io/metadata.name": pod["metadata"]["namespace"]}
    assert peer["namespaceSelector"]["matchLabels"].items() <= namespace_labels.items()
    assert peer["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert service["metadata"]["name"] == "kube-dns"
    assert service["spec"]["clusterIP"] == cfg.DNS_IP
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert ipaddress.ip_address(cfg.DNS_IP) in ipaddress.ip_network(cfg.SERVICE_CIDR)
    assert {p["port"] for p in allow_dns["spec"]["egress"][0]["ports"]} == {
        c["containerPort"] for c in pod["spec"]["containers"][0]["ports"]}


def test_kube_router_only_enforces_policies_and_only_reads_the_api(layout):
    argv = cfg.kube_router_argv(layout)
    for flag in ("--run-firewall=true", "--run-router=false", "--run-service-proxy=false",
                 "--enable-cni=false"):
        assert flag in argv
    role, binding = cfg.policy_rbac()
    assert {verb for rule in role["rules"] for verb in rule["verbs"]} <= {"get", "list", "watch"}
    assert binding["subjects"][0]["name"] == cfg.POLICY_USER
