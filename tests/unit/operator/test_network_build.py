"""Desired Services, Ingress, NetworkPolicies, ServiceMonitor, and endpoints read back from live
Services."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from dittofs_controller.api.schema import parse
from dittofs_controller.api.v1alpha1 import DittoServerSpec
from dittofs_controller.operator.children import APPLIED_HASH_ANNOTATION, needs_apply
from dittofs_controller.operator.network import build

VALID = Path(__file__).resolve().parents[1] / "api" / "valid"
SERVER = {"metadata": {"name": "files", "namespace": "team", "uid": "u-1", "generation": 1}}
BASE: dict[str, Any] = {
    "metadataStores": [{"name": "meta", "type": "badger"}],
    "localBlockStores": [{"name": "blocks", "type": "filesystem"}],
    "shares": [{"name": "/export", "metadataStore": "meta", "localBlockStore": "blocks"}],
}
SELECTOR = {"app.kubernetes.io/name": "dittofs", "app.kubernetes.io/instance": "files"}


# NFS and SMB on load balancers, for the clients of one network (as the samples expose them).
CLIENTS = ["203.0.113.0/24"]
BALANCED = {
    "nfs": {"type": "LoadBalancer", "loadBalancerSourceRanges": CLIENTS},
    "smb": {"type": "LoadBalancer", "loadBalancerSourceRanges": CLIENTS},
}


def spec_of(**fields: Any) -> DittoServerSpec:
    return parse(DittoServerSpec, {**copy.deepcopy(BASE), **fields})


def sample(name: str) -> DittoServerSpec:
    return parse(DittoServerSpec, yaml.safe_load((VALID / name).read_text())["spec"])


def service(spec: DittoServerSpec, purpose: str) -> dict[str, Any]:
    built = build.service(SERVER, spec, purpose)
    assert built is not None
    return built


def live(desired: dict[str, Any], *, ingress: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """`desired` as the API server would return it: node ports allocated, LB status filled."""
    obj = copy.deepcopy(desired)
    for number, port in enumerate(obj["spec"]["ports"]):
        if obj["spec"]["type"] != "ClusterIP":
            port.setdefault("nodePort", 31000 + number)
    obj["status"] = {"loadBalancer": {"ingress": ingress} if ingress else {}}
    return obj


# --- Services -------------------------------------------------------------------------------


def test_default_services_publish_standard_ports_on_unprivileged_container_ports() -> None:
    services = build.services(SERVER, spec_of())
    nfs, smb, api = services["nfs"], services["smb"], services["api"]
    assert nfs and smb and api
    assert nfs["metadata"]["name"] == "files-nfs"
    # Nothing leaves the cluster unless the spec says so.
    assert nfs["spec"] == {
        "type": "ClusterIP",
        "selector": SELECTOR,
        "ports": [{"name": "nfs", "port": 2049, "targetPort": 12049, "protocol": "TCP"}],
    }
    assert smb["spec"]["type"] == "ClusterIP"
    assert smb["spec"]["ports"] == [
        {"name": "smb", "port": 445, "targetPort": 12445, "protocol": "TCP"}
    ]
    assert api["metadata"]["name"] == "files-api"
    assert api["spec"]["type"] == "ClusterIP"
    assert api["spec"]["ports"] == [
        {"name": "api", "port": 8080, "targetPort": 8080, "protocol": "TCP"},
        {"name": "metrics", "port": 9090, "targetPort": 9090, "protocol": "TCP"},
    ]


def test_services_are_owned_and_labelled() -> None:
    nfs = service(spec_of(), "nfs")
    meta = nfs["metadata"]
    assert meta["namespace"] == "team"
    assert meta["ownerReferences"][0]["uid"] == "u-1"
    assert meta["ownerReferences"][0]["controller"] is True
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "dittofs-operator"
    assert meta["labels"]["app.kubernetes.io/component"] == "nfs"
    assert (nfs["apiVersion"], nfs["kind"]) == ("v1", "Service")


def test_load_balancer_options() -> None:
    spec = spec_of(
        expose={
            "nfs": {
                "type": "LoadBalancer",
                "annotations": {
                    "service.beta.kubernetes.io/scw-loadbalancer-timeout-server": "30m"
                },
                "labels": {"team": "storage", "app.kubernetes.io/managed-by": "someone-else"},
                "loadBalancerClass": "service.k8s.aws/nlb",
                "loadBalancerSourceRanges": ["203.0.113.0/24", "2001:db8::/32"],
                "externalTrafficPolicy": "Local",
                "nodePort": 32049,
            }
        }
    )
    nfs = service(spec, "nfs")
    meta, body = nfs["metadata"], nfs["spec"]
    assert (
        meta["annotations"]["service.beta.kubernetes.io/scw-loadbalancer-timeout-server"] == "30m"
    )
    assert meta["labels"]["team"] == "storage"
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "dittofs-operator"
    assert body["loadBalancerClass"] == "service.k8s.aws/nlb"
    assert body["loadBalancerSourceRanges"] == ["203.0.113.0/24", "2001:db8::/32"]
    assert body["externalTrafficPolicy"] == "Local"
    assert body["ports"][0]["nodePort"] == 32049


def test_node_port_service_drops_load_balancer_only_fields() -> None:
    spec = spec_of(
        expose={
            "smb": {
                "type": "NodePort",
                "nodePort": 30445,
                "externalTrafficPolicy": "Local",
                "loadBalancerSourceRanges": ["10.0.0.0/8"],
            }
        }
    )
    body = service(spec, "smb")["spec"]
    assert body["type"] == "NodePort"
    assert body["ports"] == [
        {"name": "smb", "port": 445, "targetPort": 12445, "protocol": "TCP", "nodePort": 30445}
    ]
    assert body["externalTrafficPolicy"] == "Local"
    assert "loadBalancerSourceRanges" not in body
    assert "loadBalancerClass" not in body


def test_cluster_ip_service_sends_no_external_fields() -> None:
    body = service(spec_of(expose={"nfs": {"type": "ClusterIP"}}), "nfs")["spec"]
    assert body["type"] == "ClusterIP"
    assert set(body) == {"type", "selector", "ports"}
    assert "nodePort" not in body["ports"][0]


def test_portmapper_is_published_on_the_nfs_service() -> None:
    spec = spec_of(adapters={"nfs": {"portmapper": {"enabled": True}}})
    ports = service(spec, "nfs")["spec"]["ports"]
    assert ports[1] == {"name": "portmapper", "port": 111, "targetPort": 10111, "protocol": "TCP"}


def test_static_node_port_applies_to_the_nfs_port_only() -> None:
    spec = spec_of(
        adapters={"nfs": {"portmapper": {"enabled": True}}},
        expose={"nfs": {"type": "NodePort", "nodePort": 32049}},
    )
    ports = service(spec, "nfs")["spec"]["ports"]
    assert ports[0]["nodePort"] == 32049
    assert "nodePort" not in ports[1]


def test_disabled_adapters_have_no_service() -> None:
    spec = sample("custom-ports-metrics.yaml")
    services = build.services(SERVER, spec)
    assert services["nfs"] is None
    smb, api = services["smb"], services["api"]
    assert smb and api
    assert smb["spec"]["ports"][0] == {
        "name": "smb",
        "port": 445,
        "targetPort": 10445,
        "protocol": "TCP",
    }
    assert [(p["name"], p["port"]) for p in api["spec"]["ports"]] == [
        ("api", 18080),
        ("metrics", 19090),
    ]
    assert build.services(SERVER, spec_of(adapters={"smb": {"enabled": False}}))["smb"] is None


def test_api_without_metrics_publishes_one_port() -> None:
    spec = spec_of(controlPlane={"metrics": {"enabled": False}})
    assert [p["name"] for p in service(spec, "api")["spec"]["ports"]] == ["api"]


def test_removing_a_setting_changes_the_desired_object() -> None:
    """A subset comparison alone would keep a removed annotation forever: the hash sees it."""
    with_annotation = service(spec_of(expose={"nfs": {"annotations": {"a": "1"}}}), "nfs")
    without = service(spec_of(), "nfs")
    assert (
        without["metadata"]["annotations"][APPLIED_HASH_ANNOTATION]
        != (with_annotation["metadata"]["annotations"][APPLIED_HASH_ANNOTATION])
    )
    assert needs_apply(without, live(with_annotation))
    assert not needs_apply(without, live(without))


def test_load_balancer_class_change_needs_a_new_service() -> None:
    def balanced(**options: Any) -> dict[str, Any]:
        return service(spec_of(expose={"nfs": {**BALANCED["nfs"], **options}}), "nfs")

    aws, other, plain = (
        balanced(loadBalancerClass="aws"),
        balanced(loadBalancerClass="other"),
        balanced(),
    )
    node_port = service(spec_of(expose={"nfs": {"type": "NodePort"}}), "nfs")
    assert build.needs_recreate(other, live(aws))
    assert build.needs_recreate(plain, live(aws))
    assert not build.needs_recreate(aws, live(aws))
    assert not build.needs_recreate(node_port, live(aws))
    assert not build.needs_recreate(aws, live(node_port))


# --- Ingress --------------------------------------------------------------------------------


def ingress_of(**options: Any) -> dict[str, Any]:
    spec = spec_of(expose={"ingress": {"enabled": True, "host": "dittofs.example.com", **options}})
    built = build.ingress(SERVER, spec)
    assert built is not None
    return built


def test_ingress_is_absent_unless_enabled() -> None:
    assert build.ingress(SERVER, spec_of()) is None


def test_ingress_with_cluster_issuer_gets_the_default_tls_secret() -> None:
    ingress = ingress_of(clusterIssuer="letsencrypt-prod", className="traefik", path="/dfs")
    assert ingress["metadata"]["name"] == "files-api"
    assert ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == (
        "letsencrypt-prod"
    )
    assert "cert-manager.io/issuer" not in ingress["metadata"]["annotations"]
    assert ingress["spec"] == {
        "ingressClassName": "traefik",
        "rules": [
            {
                "host": "dittofs.example.com",
                "http": {
                    "paths": [
                        {
                            "path": "/dfs",
                            "pathType": "Prefix",
                            "backend": {"service": {"name": "files-api", "port": {"number": 8080}}},
                        }
                    ]
                },
            }
        ],
        "tls": [{"hosts": ["dittofs.example.com"], "secretName": "files-api-tls"}],
    }


def test_ingress_with_namespaced_issuer_and_own_secret_name() -> None:
    ingress = ingress_of(issuer="ca", tlsSecretName="my-cert")
    annotations = ingress["metadata"]["annotations"]
    assert annotations["cert-manager.io/issuer"] == "ca"
    assert "cert-manager.io/cluster-issuer" not in annotations
    assert ingress["spec"]["tls"] == [{"hosts": ["dittofs.example.com"], "secretName": "my-cert"}]


def test_ingress_with_a_tls_secret_only_and_user_annotations() -> None:
    ingress = ingress_of(
        tlsSecretName="wildcard",
        annotations={"nginx.ingress.kubernetes.io/backend-protocol": "HTTPS"},
    )
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/backend-protocol"] == "HTTPS"
    assert not any(key.startswith("cert-manager.io/") for key in annotations)
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"][0]["secretName"] == "wildcard"


def test_ingress_adds_no_controller_specific_annotations_for_a_tls_backend() -> None:
    spec = spec_of(
        controlPlane={"tls": {"secretName": "api-cert"}},
        expose={"ingress": {"enabled": True, "host": "h.example.com", "tlsSecretName": "x"}},
    )
    built = build.ingress(SERVER, spec)
    assert built is not None
    assert set(built["metadata"]["annotations"]) == {APPLIED_HASH_ANNOTATION}


# --- NetworkPolicies ------------------------------------------------------------------------


def test_network_policies_are_absent_when_disabled() -> None:
    spec = spec_of(expose={"networkPolicy": {"enabled": False}})
    assert build.network_policies(SERVER, spec, "ops") == {"api": None, "files": None}


def test_network_policies_are_made_by_default() -> None:
    policies = build.network_policies(SERVER, spec_of(), "ops")
    api = policies["api"]
    assert api and policies["files"]
    assert api["spec"]["ingress"][0]["from"] == [build.operator_peer("ops")]


def test_network_policies_from_the_sample() -> None:
    policies = build.network_policies(SERVER, sample("network-policy.yaml"), "ops")
    api, files = policies["api"], policies["files"]
    assert api and files
    assert api["metadata"]["name"] == "files-api"
    assert api["spec"]["podSelector"] == {"matchLabels": SELECTOR}
    assert api["spec"]["policyTypes"] == ["Ingress"]
    assert api["spec"]["ingress"] == [
        {
            "ports": [{"port": 8080, "protocol": "TCP"}, {"port": 9090, "protocol": "TCP"}],
            "from": [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ops"}}},
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
                    }
                },
            ],
        }
    ]
    assert files["metadata"]["name"] == "files-files"
    assert files["spec"]["policyTypes"] == ["Ingress"]
    assert files["spec"]["ingress"] == [
        {
            "ports": [
                {"port": 12049, "protocol": "TCP"},
                {"port": 10111, "protocol": "TCP"},
                {"port": 12445, "protocol": "TCP"},
            ],
            "from": [{"ipBlock": {"cidr": "10.20.0.0/16", "except": ["10.20.99.0/24"]}}],
        }
    ]


def test_empty_file_from_allows_everyone_and_empty_api_from_only_the_operator() -> None:
    spec = spec_of(controlPlane={"metrics": {"enabled": False}})
    policies = build.network_policies(SERVER, spec, "dittofs-system")
    api, files = policies["api"], policies["files"]
    assert api and files
    assert api["spec"]["ingress"] == [
        {
            "ports": [{"port": 8080, "protocol": "TCP"}],
            "from": [build.operator_peer("dittofs-system")],
        }
    ]
    assert files["spec"]["ingress"] == [
        {"ports": [{"port": 12049, "protocol": "TCP"}, {"port": 12445, "protocol": "TCP"}]}
    ]


def test_no_files_policy_without_file_protocols() -> None:
    """A rule without ports would open every port: no policy at all then."""
    spec = spec_of(adapters={"nfs": {"enabled": False}, "smb": {"enabled": False}})
    policies = build.network_policies(SERVER, spec, "ops")
    assert policies["files"] is None
    assert policies["api"] is not None


def test_peers_lose_empty_selector_fields_the_api_server_would_drop() -> None:
    spec = spec_of(
        expose={
            "networkPolicy": {
                "enabled": True,
                "fileFrom": [
                    {"namespaceSelector": {}, "podSelector": {"matchLabels": {}}},
                    {"ipBlock": {"cidr": "10.0.0.0/8", "except": []}},
                ],
            }
        }
    )
    files = build.network_policies(SERVER, spec, "ops")["files"]
    assert files
    assert files["spec"]["ingress"][0]["from"] == [
        {"namespaceSelector": {}, "podSelector": {}},
        {"ipBlock": {"cidr": "10.0.0.0/8"}},
    ]


# --- endpoints and the verdict --------------------------------------------------------------


def live_services(spec: DittoServerSpec, **ingress: list[dict[str, str]]) -> dict[str, Any]:
    return {
        purpose: live(desired, ingress=ingress.get(purpose))
        for purpose, desired in build.services(SERVER, spec).items()
        if desired is not None
    }


def test_load_balancer_addresses_become_endpoints() -> None:
    spec = spec_of(expose=BALANCED)
    services = live_services(
        spec, nfs=[{"ip": "203.0.113.10"}], smb=[{"hostname": "smb.lb.example.com"}]
    )
    found = build.endpoints(spec, services)
    assert found == {
        "nfs": "203.0.113.10:2049",
        "smb": "smb.lb.example.com:445",
        "api": "http://files-api.team.svc:8080",
        "mountHint": "mount -t nfs -o vers=4.1,port=2049 203.0.113.10:/export /mnt/dittofs"
        "  # NFSv3: mount -t nfs -o vers=3,port=2049,mountport=2049,nolock "
        "203.0.113.10:/export /mnt/dittofs",
    }
    outcome = build.judge(SERVER, services, found)
    assert (outcome.status, outcome.reason) == ("True", "Exposed")
    assert "203.0.113.10:2049" in outcome.message


def test_ipv6_addresses_are_bracketed() -> None:
    spec = spec_of(expose=BALANCED)
    found = build.endpoints(spec, live_services(spec, nfs=[{"ip": "2001:db8::10"}]))
    assert found["nfs"] == "[2001:db8::10]:2049"
    assert "[2001:db8::10]:/export" in found["mountHint"]


def test_pending_load_balancers_are_waited_for_not_failed() -> None:
    spec = spec_of(expose=BALANCED)
    services = live_services(spec, nfs=[{"ip": "203.0.113.10"}])
    found = build.endpoints(spec, services)
    assert "smb" not in found
    assert found["nfs"] == "203.0.113.10:2049"
    outcome = build.judge(SERVER, services, found)
    assert (outcome.status, outcome.reason) == ("Unknown", "WaitingForLoadBalancer")
    assert "files-smb" in outcome.message
    assert "files-nfs" not in outcome.message


def test_node_port_and_cluster_ip_endpoints() -> None:
    spec = spec_of(
        expose={"nfs": {"type": "NodePort", "nodePort": 32049}, "smb": {"type": "ClusterIP"}}
    )
    services = live_services(spec)
    found = build.endpoints(spec, services)
    assert found["nfs"] == "<node-ip>:32049"
    assert found["smb"] == "files-smb.team.svc:445"
    assert found["mountHint"].startswith(
        "mount -t nfs -o vers=4.1,port=32049 <node-ip>:/export /mnt/dittofs"
    )
    assert build.judge(SERVER, services, found).status == "True"


def test_api_endpoint_is_https_through_the_ingress_or_with_tls() -> None:
    ingress = {"enabled": True, "host": "dittofs.example.com", "tlsSecretName": "c"}
    with_ingress = spec_of(expose={"ingress": {**ingress, "path": "/dfs/"}})
    assert build.endpoints(with_ingress, live_services(with_ingress))["api"] == (
        "https://dittofs.example.com/dfs"
    )
    root = spec_of(expose={"ingress": ingress})
    assert build.endpoints(root, live_services(root))["api"] == "https://dittofs.example.com"
    tls = spec_of(controlPlane={"tls": {"secretName": "c"}})
    assert build.endpoints(tls, live_services(tls))["api"] == "https://files-api.team.svc:8080"


def test_no_mount_hint_without_shares_or_nfs() -> None:
    no_shares = parse(
        DittoServerSpec, {key: value for key, value in BASE.items() if key != "shares"}
    )
    found = build.endpoints(no_shares, live_services(no_shares, nfs=[{"ip": "203.0.113.10"}]))
    assert "mountHint" not in found
    smb_only = sample("custom-ports-metrics.yaml")
    found = build.endpoints(smb_only, live_services(smb_only, smb=[{"ip": "203.0.113.11"}]))
    assert set(found) == {"smb", "api"}


def test_a_service_being_recreated_is_waited_for() -> None:
    spec = spec_of()
    services: dict[str, Any] = {**live_services(spec), "nfs": None}
    outcome = build.judge(SERVER, services, build.endpoints(spec, services))
    assert (outcome.status, outcome.reason) == ("Unknown", "WaitingForService")
    assert "files-nfs" in outcome.message


@pytest.mark.parametrize("sample_name", sorted(p.name for p in VALID.glob("*.yaml")))
def test_every_valid_sample_builds(sample_name: str) -> None:
    spec = sample(sample_name)
    built = [
        *build.services(SERVER, spec).values(),
        build.ingress(SERVER, spec),
        *build.network_policies(SERVER, spec, "ops").values(),
    ]
    assert any(obj is not None for obj in built)
    assert build.services(SERVER, spec)["api"] is not None


# --- ServiceMonitor -------------------------------------------------------------------------


def monitor_spec(**service_monitor: Any) -> DittoServerSpec:
    return spec_of(
        controlPlane={"metrics": {"serviceMonitor": {"enabled": True, **service_monitor}}}
    )


def test_service_monitor_scrapes_the_metrics_port_of_the_api_service_only() -> None:
    spec = sample("custom-ports-metrics.yaml")
    monitor = build.service_monitor(SERVER, spec)
    assert monitor is not None
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["kind"] == "ServiceMonitor"
    meta = monitor["metadata"]
    assert (meta["name"], meta["namespace"]) == ("files-metrics", "team")
    assert meta["labels"]["release"] == "kube-prometheus-stack"
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "dittofs-operator"
    (owner,) = meta["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("DittoServer", "u-1", True)
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "30s"}
    ]

    selector = monitor["spec"]["selector"]["matchLabels"]
    selected = [
        purpose
        for purpose, svc in build.services(SERVER, spec).items()
        if svc is not None and selector.items() <= svc["metadata"]["labels"].items()
    ]
    assert selected == ["api"]
    api = service(spec, "api")
    assert {"name": "metrics", "port": 19090, "targetPort": 19090, "protocol": "TCP"} in api[
        "spec"
    ]["ports"]


def test_no_service_monitor_unless_metrics_and_the_monitor_are_enabled() -> None:
    assert build.service_monitor(SERVER, spec_of()) is None
    assert build.service_monitor(SERVER, sample("minimal.yaml")) is None
    without_metrics = spec_of(
        controlPlane={"metrics": {"enabled": False, "serviceMonitor": {"enabled": True}}}
    )
    assert build.service_monitor(SERVER, without_metrics) is None
    # the metrics port it would scrape is gone from the API Service too
    assert [p["name"] for p in service(without_metrics, "api")["spec"]["ports"]] == ["api"]


def test_service_monitor_leaves_the_interval_to_prometheus_when_unset() -> None:
    monitor = build.service_monitor(SERVER, monitor_spec())
    assert monitor is not None
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics"}]


def test_service_monitor_selector_ignores_user_labels_and_keeps_managed_ones() -> None:
    spec = spec_of(
        controlPlane={
            "metrics": {
                "serviceMonitor": {
                    "enabled": True,
                    "labels": {"app.kubernetes.io/managed-by": "someone", "team": "a"},
                }
            }
        },
        expose={"api": {"labels": {"exposed": "yes"}}},
    )
    monitor = build.service_monitor(SERVER, spec)
    assert monitor is not None
    assert monitor["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "dittofs-operator"
    assert monitor["metadata"]["labels"]["team"] == "a"
    assert monitor["spec"]["selector"]["matchLabels"] == {
        **SELECTOR,
        "app.kubernetes.io/component": "api",
        "app.kubernetes.io/managed-by": "dittofs-operator",
    }


def test_changing_the_interval_or_dropping_it_is_applied() -> None:
    before = build.service_monitor(SERVER, monitor_spec(interval="30s"))
    after = build.service_monitor(SERVER, monitor_spec())
    assert before is not None and after is not None
    assert not needs_apply(before, copy.deepcopy(before))
    assert needs_apply(after, before)  # the hash annotation changed: the interval is removed
    assert (
        after["metadata"]["annotations"][APPLIED_HASH_ANNOTATION]
        != before["metadata"]["annotations"][APPLIED_HASH_ANNOTATION]
    )


def test_a_port_edited_by_hand_or_moved_by_the_spec_is_foreign() -> None:
    """Compared by (port, protocol) as server-side apply does; the protocol defaults to TCP."""
    desired = service(spec_of(), "nfs")
    edited = live(desired)
    assert not build.foreign_ports(desired, edited)
    edited["spec"]["ports"] = [{"name": "nfs", "port": 2049, "targetPort": 1111}]
    assert not build.foreign_ports(desired, edited)
    edited["spec"]["ports"] = [{"name": "nfs", "port": 1111, "targetPort": 1111}]
    assert build.foreign_ports(desired, edited)
    moved = service(spec_of(adapters={"nfs": {"servicePort": 3049}}), "nfs")
    assert build.foreign_ports(moved, live(desired))
