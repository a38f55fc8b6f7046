"""The network reconciler on the real API server: Services, Ingress, NetworkPolicies, endpoints.

There is no cloud controller: a load-balancer address is simulated by patching the Service's
status subresource with 203.0.113.10 (a documentation address, never contacted).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dittofs_controller.kube.client import KubeClient
from dittofs_controller.kube.resources import (
    DITTOSERVERS,
    INGRESSES,
    NETWORKPOLICIES,
    SERVICES,
    ObjectKey,
    Resource,
)
from dittofs_controller.runtime.metrics import REGISTRY
from tests.integration.operator.conftest import (
    RunningOperator,
    condition,
    load_manifest,
    unused_node_port,
    wait_for,
)

MINIMAL = Path(__file__).resolve().parents[2] / "unit" / "api" / "valid" / "minimal.yaml"
LB_IP = "203.0.113.10"
Obj = dict[str, Any]


# NFS and SMB on load balancers for one client network, as the samples expose them; a test's
# `expose` is laid over it per protocol.
BALANCED = {"type": "LoadBalancer", "loadBalancerSourceRanges": ["203.0.113.0/24"]}


async def create_server(
    kube: KubeClient, namespace: str, name: str = "files", **spec: Any
) -> ObjectKey:
    server = load_manifest(MINIMAL, namespace)
    server["metadata"]["name"] = name
    expose = dict(spec.pop("expose", {}))
    for protocol in ("nfs", "smb"):
        expose[protocol] = {**BALANCED, **expose.get(protocol, {})}
    server["spec"].update(spec, expose=expose)
    await kube.create(DITTOSERVERS, server, namespace)
    return ObjectKey(namespace, name)


async def patch_spec(kube: KubeClient, key: ObjectKey, spec: Obj) -> None:
    await kube.merge_patch(DITTOSERVERS, key.name, {"spec": spec}, key.namespace)


async def child_where(
    kube: KubeClient,
    resource: Resource,
    key: ObjectKey,
    name: str,
    check: Callable[[Obj | None], bool],
    what: str,
) -> Obj | None:
    async def probe() -> tuple[Obj | None] | None:
        obj = await kube.get_or_none(resource, name, key.namespace)
        return (obj,) if check(obj) else None

    found = await wait_for(probe, f"{resource.kind} {name}: {what}")
    result: Obj | None = found[0]
    return result


async def service_where(
    kube: KubeClient, key: ObjectKey, name: str, check: Callable[[Obj], bool], what: str
) -> Obj:
    found = await child_where(
        kube, SERVICES, key, name, lambda svc: svc is not None and check(svc), what
    )
    assert found is not None
    return found


async def gone(kube: KubeClient, resource: Resource, key: ObjectKey, name: str) -> None:
    await child_where(kube, resource, key, name, lambda obj: obj is None, "deleted")


async def network_ready(
    kube: KubeClient, key: ObjectKey, status: str, reason: str, timeout: float = 30
) -> Obj:
    async def check() -> Obj | None:
        found = await condition(kube, key, "NetworkReady")
        if found and (found["status"], found["reason"]) == (status, reason):
            return found
        return None

    result: Obj = await wait_for(check, f"NetworkReady {status}/{reason}", timeout)
    return result


async def endpoints(kube: KubeClient, key: ObjectKey) -> Obj:
    server = await kube.get(DITTOSERVERS, key.name, key.namespace)
    return dict((server.get("status") or {}).get("endpoints") or {})


async def assign_load_balancer(kube: KubeClient, key: ObjectKey, name: str, ip: str) -> None:
    """What a cloud controller would do once the load balancer exists (the operator creates
    a DittoServer's Services concurrently, so the named one may come last)."""
    await service_where(kube, key, name, lambda _: True, "created")
    await kube.merge_patch(
        SERVICES,
        name,
        {"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}},
        key.namespace,
        subresource="status",
    )


def ports(service: Obj) -> list[tuple[str, int, int, str]]:
    return [
        (p["name"], p["port"], p["targetPort"], p["protocol"]) for p in service["spec"]["ports"]
    ]


def network_passes() -> float:
    value = REGISTRY.get_sample_value(
        "controller_runtime_reconcile_total", {"controller": "network", "result": "success"}
    )
    return value or 0.0


async def test_services_and_load_balancer_endpoints(
    kube: KubeClient, namespace: str, operator: RunningOperator
) -> None:
    key = await create_server(kube, namespace)
    nfs = await service_where(kube, key, "files-nfs", lambda s: True, "created")
    smb = await service_where(kube, key, "files-smb", lambda s: True, "created")
    api = await service_where(kube, key, "files-api", lambda s: True, "created")
    assert nfs["spec"]["type"] == smb["spec"]["type"] == "LoadBalancer"
    assert ports(nfs) == [("nfs", 2049, 12049, "TCP")]
    assert ports(smb) == [("smb", 445, 12445, "TCP")]
    assert api["spec"]["type"] == "ClusterIP"
    assert ports(api) == [("api", 8080, 8080, "TCP"), ("metrics", 9090, 9090, "TCP")]
    selector = {"app.kubernetes.io/name": "dittofs", "app.kubernetes.io/instance": "files"}
    assert nfs["spec"]["selector"] == selector
    server = await kube.get(DITTOSERVERS, key.name, namespace)
    owner = nfs["metadata"]["ownerReferences"][0]
    assert (owner["uid"], owner["controller"]) == (server["metadata"]["uid"], True)

    waiting = await network_ready(kube, key, "Unknown", "WaitingForLoadBalancer")
    assert "files-nfs" in waiting["message"] and "files-smb" in waiting["message"]
    assert await endpoints(kube, key) == {"api": f"http://files-api.{namespace}.svc:8080"}

    await assign_load_balancer(kube, key, "files-nfs", LB_IP)
    waiting = await wait_for(
        lambda: _message_without(kube, key, "files-nfs"), "the NFS address noticed"
    )
    assert "files-smb" in waiting["message"]
    await assign_load_balancer(kube, key, "files-smb", "203.0.113.11")
    ready = await network_ready(kube, key, "True", "Exposed")
    assert LB_IP in ready["message"]
    assert await endpoints(kube, key) == {
        "nfs": f"{LB_IP}:2049",
        "smb": "203.0.113.11:445",
        "api": f"http://files-api.{namespace}.svc:8080",
        "mountHint": f"mount -t nfs -o vers=4.1,port=2049 {LB_IP}:/export /mnt/dittofs"
        "  # NFSv3: mount -t nfs -o vers=3,port=2049,mountport=2049,nolock "
        f"{LB_IP}:/export /mnt/dittofs",
    }
    server = await kube.get(DITTOSERVERS, key.name, namespace)
    managers = {
        entry["manager"]
        for entry in server["metadata"]["managedFields"]
        if entry.get("subresource") == "status" and "f:endpoints" in str(entry.get("fieldsV1"))
    }
    assert managers == {"dittofs-operator/network"}


async def _message_without(kube: KubeClient, key: ObjectKey, name: str) -> Obj | None:
    found = await condition(kube, key, "NetworkReady")
    return found if found and name not in found["message"] else None


async def test_edited_or_deleted_services_are_restored(
    kube: KubeClient, namespace: str, operator: RunningOperator
) -> None:
    key = await create_server(kube, namespace)
    original = await service_where(kube, key, "files-nfs", lambda s: True, "created")
    await kube.merge_patch(
        SERVICES,
        "files-nfs",
        {
            "metadata": {"labels": {"app.kubernetes.io/instance": "other"}},
            "spec": {
                "ports": [{"name": "nfs", "port": 2049, "targetPort": 9999, "protocol": "TCP"}],
                "selector": {"app": "elsewhere"},
            },
        },
        namespace,
    )
    restored = await service_where(
        kube,
        key,
        "files-nfs",
        lambda s: (
            ports(s) == [("nfs", 2049, 12049, "TCP")]
            and s["metadata"]["labels"]["app.kubernetes.io/instance"] == "files"
        ),
        "ports and labels restored",
    )
    assert restored["spec"]["selector"]["app.kubernetes.io/instance"] == "files"
    await kube.delete(SERVICES, "files-nfs", namespace)
    recreated = await service_where(
        kube,
        key,
        "files-nfs",
        lambda s: s["metadata"]["uid"] != original["metadata"]["uid"],
        "recreated",
    )
    assert ports(recreated) == [("nfs", 2049, 12049, "TCP")]


async def test_disabling_smb_removes_its_service(
    kube: KubeClient, namespace: str, operator: RunningOperator
) -> None:
    key = await create_server(kube, namespace, expose={"smb": {"type": "ClusterIP"}})
    await service_where(kube, key, "files-smb", lambda s: True, "created")
    await assign_load_balancer(kube, key, "files-nfs", LB_IP)
    await network_ready(kube, key, "True", "Exposed")
    assert (await endpoints(kube, key))["smb"] == f"files-smb.{namespace}.svc:445"

    await patch_spec(kube, key, {"adapters": {"smb": {"enabled": False}}})
    await gone(kube, SERVICES, key, "files-smb")
    await wait_for(
        lambda: _endpoints_without(kube, key, "smb"), "the SMB endpoint removed from status"
    )
    await patch_spec(kube, key, {"adapters": {"smb": {"enabled": True}}})
    await service_where(kube, key, "files-smb", lambda s: True, "created again")


async def _endpoints_without(kube: KubeClient, key: ObjectKey, name: str) -> Obj | None:
    found = await endpoints(kube, key)
    return found if found and name not in found else None


async def test_switching_nfs_from_load_balancer_to_a_static_node_port(
    kube: KubeClient, namespace: str, operator: RunningOperator
) -> None:
    key = await create_server(
        kube,
        namespace,
        adapters={"nfs": {"portmapper": {"enabled": True}}},
        expose={
            "nfs": {
                "loadBalancerClass": "example.com/none",
                "loadBalancerSourceRanges": ["203.0.113.0/24"],
                "externalTrafficPolicy": "Local",
                "annotations": {"example.com/lb-timeout": "30m"},
            }
        },
    )
    before = await service_where(kube, key, "files-nfs", lambda s: True, "created")
    assert before["spec"]["loadBalancerClass"] == "example.com/none"
    assert before["spec"]["loadBalancerSourceRanges"] == ["203.0.113.0/24"]
    assert ports(before) == [("nfs", 2049, 12049, "TCP"), ("portmapper", 111, 10111, "TCP")]

    # Removing settings (not only changing them) reaches the Service.
    await patch_spec(
        kube, key, {"expose": {"nfs": {"annotations": None, "externalTrafficPolicy": None}}}
    )
    await service_where(
        kube,
        key,
        "files-nfs",
        lambda s: (
            "example.com/lb-timeout" not in s["metadata"].get("annotations", {})
            and s["spec"]["externalTrafficPolicy"] == "Cluster"
        ),
        "annotation and externalTrafficPolicy removed",
    )

    node_port = await unused_node_port(kube)
    await patch_spec(
        kube,
        key,
        {
            "expose": {
                "nfs": {
                    "type": "NodePort",
                    "nodePort": node_port,
                    "loadBalancerClass": None,
                    "loadBalancerSourceRanges": None,
                    "allowAllSources": True,
                }
            }
        },
    )
    after = await service_where(
        kube, key, "files-nfs", lambda s: s["spec"]["type"] == "NodePort", "type NodePort"
    )
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert after["spec"]["ports"][0]["nodePort"] == node_port
    assert after["spec"]["ports"][1]["nodePort"]  # allocated by the API server, kept
    assert "loadBalancerClass" not in after["spec"]
    assert "loadBalancerSourceRanges" not in after["spec"]

    await service_where(kube, key, "files-smb", lambda s: True, "created")
    await assign_load_balancer(kube, key, "files-smb", LB_IP)
    await network_ready(kube, key, "True", "Exposed")
    found = await endpoints(kube, key)
    assert found["nfs"] == f"<node-ip>:{node_port}"
    assert found["mountHint"].startswith(
        f"mount -t nfs -o vers=4.1,port={node_port} <node-ip>:/export"
    )

    await patch_spec(kube, key, {"expose": {"nfs": {"type": "ClusterIP", "nodePort": None}}})
    cluster_ip = await service_where(
        kube, key, "files-nfs", lambda s: s["spec"]["type"] == "ClusterIP", "type ClusterIP"
    )
    assert all("nodePort" not in port for port in cluster_ip["spec"]["ports"])


async def test_a_new_load_balancer_class_recreates_the_service(
    kube: KubeClient, namespace: str, operator: RunningOperator
) -> None:
    key = await create_server(kube, namespace, expose={"nfs": {"loadBalancerClass": "x.io/a"}})
    before = await service_where(kube, key, "files-nfs", lambda s: True, "created")
    await patch_spec(kube, key, {"expose": {"nfs": {"loadBalancerClass": "x.io/b"}}})
    after = await service_where(
        kube,
        key,
        "files-nfs",
        lambda s: s["spec"].get("loadBalancerClass") == "x.io/b",
        "recreated with the new class",
    )
    assert after["metadata"]["uid"] != before["metadata"]["uid"]


async def test_ingress_with_cluster_issuer(
    kube: KubeClient, namespace: str, operator: RunningOperator
) -> None:
    ingress_spec = {
        "enabled": True,
        "className": "traefik",
        "host": "dittofs.example.com",
        "clusterIssuer": "letsencrypt-prod",
        "annotations": {"example.com/extra": "yes"},
    }
    ingress_controller = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ic"}}
    }
    key = await create_server(
        kube,
        namespace,
        expose={"ingress": ingress_spec, "networkPolicy": {"apiFrom": [ingress_controller]}},
    )
    found = await child_where(
        kube, INGRESSES, key, "files-api", lambda obj: obj is not None, "created"
    )
    assert found is not None
    annotations = found["metadata"]["annotations"]
    assert annotations["cert-manager.io/cluster-issuer"] == "letsencrypt-prod"
    assert annotations["example.com/extra"] == "yes"
    assert found["spec"]["ingressClassName"] == "traefik"
    assert found["spec"]["tls"] == [
        {"hosts": ["dittofs.example.com"], "secretName": "files-api-tls"}
    ]
    rule = found["spec"]["rules"][0]
    assert rule["host"] == "dittofs.example.com"
    assert rule["http"]["paths"][0]["pathType"] == "Prefix"
    assert rule["http"]["paths"][0]["backend"]["service"] == {
        "name": "files-api",
        "port": {"number": 8080},
    }
    await wait_for(
        lambda: _endpoint_is(kube, key, "api", "https://dittofs.example.com"),
        "the API endpoint through the Ingress",
    )

    await patch_spec(kube, key, {"expose": {"ingress": {"enabled": False}}})
    await gone(kube, INGRESSES, key, "files-api")
    await wait_for(
        lambda: _endpoint_is(kube, key, "api", f"http://files-api.{namespace}.svc:8080"),
        "the in-cluster API endpoint",
    )


async def _endpoint_is(kube: KubeClient, key: ObjectKey, name: str, value: str) -> bool:
    return (await endpoints(kube, key)).get(name) == value


async def test_network_policies_by_default_then_with_peers_then_off(
    kube: KubeClient, namespace: str, operator: RunningOperator
) -> None:
    operator_namespace = operator.manager.settings.leader_election.lease_namespace
    operator_peer = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": operator_namespace}}
    }
    key = await create_server(kube, namespace)  # nothing said about NetworkPolicies
    api = await child_where(
        kube, NETWORKPOLICIES, key, "files-api", lambda obj: obj is not None, "created"
    )
    files = await child_where(
        kube, NETWORKPOLICIES, key, "files-files", lambda obj: obj is not None, "created"
    )
    assert api is not None and files is not None
    assert api["spec"]["policyTypes"] == ["Ingress"]
    assert api["spec"]["ingress"][0]["from"] == [operator_peer]  # the operator only
    assert [p["port"] for p in api["spec"]["ingress"][0]["ports"]] == [8080, 9090]
    assert [p["port"] for p in files["spec"]["ingress"][0]["ports"]] == [12049, 12445]
    assert "from" not in files["spec"]["ingress"][0]

    monitoring = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mon"}}}
    await patch_spec(kube, key, {"expose": {"networkPolicy": {"apiFrom": [monitoring]}}})
    await child_where(
        kube,
        NETWORKPOLICIES,
        key,
        "files-api",
        lambda obj: (
            obj is not None and obj["spec"]["ingress"][0]["from"] == [operator_peer, monitoring]
        ),
        "admitting the declared peer",
    )

    await patch_spec(kube, key, {"expose": {"networkPolicy": {"enabled": False}}})
    await gone(kube, NETWORKPOLICIES, key, "files-api")
    await gone(kube, NETWORKPOLICIES, key, "files-files")


async def test_a_foreign_object_with_our_name_is_reported_not_taken_over(
    kube: KubeClient, namespace: str, operator: RunningOperator
) -> None:
    foreign = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "files-smb", "namespace": namespace},
        "spec": {"ports": [{"port": 1}]},
    }
    await kube.create(SERVICES, foreign, namespace)
    key = await create_server(kube, namespace)
    problem = await network_ready(kube, key, "False", "NameConflict")
    assert "files-smb" in problem["message"]
    kept = await kube.get(SERVICES, "files-smb", namespace)
    assert kept["spec"]["ports"][0]["port"] == 1 and "ownerReferences" not in kept["metadata"]


async def test_a_node_port_taken_by_another_server_is_reported(
    kube: KubeClient, namespace: str, operator: RunningOperator
) -> None:
    node_port = await unused_node_port(kube)
    nfs = {"type": "NodePort", "nodePort": node_port, "allowAllSources": True}
    first = await create_server(kube, namespace, "first", expose={"nfs": nfs})
    await service_where(kube, first, "first-nfs", lambda s: True, "created")
    second = await create_server(kube, namespace, "second", expose={"nfs": nfs})
    problem = await network_ready(kube, second, "False", "PortConflict")
    assert "second-nfs" in problem["message"] and str(node_port) in problem["message"]


async def test_nothing_is_written_when_nothing_changed(
    kube: KubeClient, namespace: str, operator: RunningOperator, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = await create_server(
        kube,
        namespace,
        expose={
            "nfs": {"loadBalancerSourceRanges": ["203.0.113.0/24"]},
            "ingress": {"enabled": True, "host": "d.example.com", "issuer": "ca"},
            "networkPolicy": {
                "enabled": True,
                "fileFrom": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": []}}],
                "apiFrom": [{"namespaceSelector": {"matchLabels": {"name": "ic"}}}],
            },
        },
    )
    for name in ("files-nfs", "files-smb"):
        await service_where(kube, key, name, lambda s: True, "created")
        await assign_load_balancer(kube, key, name, LB_IP)
    await network_ready(kube, key, "True", "Exposed")
    children = [
        (SERVICES, "files-nfs"),
        (SERVICES, "files-smb"),
        (SERVICES, "files-api"),
        (INGRESSES, "files-api"),
        (NETWORKPOLICIES, "files-api"),
        (NETWORKPOLICIES, "files-files"),
    ]

    async def versions() -> list[str]:
        return [
            (await kube.get(resource, name, namespace))["metadata"]["resourceVersion"]
            for resource, name in children
        ]

    writes: list[tuple[str, str]] = []
    request = kube.request

    async def recording(method: str, path: str, **options: Any) -> Obj:
        """The operator shares `kube`: note every write it makes as the network reconciler."""
        query = options.get("query") or {}
        if method == "DELETE" or query.get("fieldManager") == "dittofs-operator/network":
            writes.append((method, path))
        return await request(method, path, **options)

    await asyncio.sleep(1.0)  # let passes triggered by the last status write settle
    before = await versions()
    passes = network_passes()
    await kube.merge_patch(
        DITTOSERVERS, key.name, {"metadata": {"labels": {"touched": "yes"}}}, namespace
    )
    monkeypatch.setattr(kube, "request", recording)
    await wait_for(lambda: _more_passes_than(passes), "a network pass after the touch")
    await asyncio.sleep(1.0)
    assert writes == []
    assert await versions() == before


async def _more_passes_than(count: float) -> bool:
    return network_passes() > count
