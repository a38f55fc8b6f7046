"""The testbed's cluster DNS: the real CoreDNS answering from the real API server.

Queries go straight to CoreDNS's listen address (no kube-proxy here): Service names resolve to
their ClusterIPs, unknown names are NXDOMAIN, headless Services list their endpoints, and the
kube-dns Service that pods would dial is published with an EndpointSlice to CoreDNS.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.reversename
import pytest

from dittofs_controller.kube.client import KubeClient
from dittofs_controller.kube.resources import SERVICES
from tests.testbed import Cluster, netns
from tests.testbed.dns import (
    CLUSTER_DNS_IP,
    ENDPOINTSLICES,
    SERVICE_NAME,
    SERVICE_NAMESPACE,
    ClusterDNS,
)

JSON = dict[str, Any]


@pytest.fixture
async def cluster_dns(control_plane: Cluster) -> AsyncIterator[ClusterDNS]:
    async with ClusterDNS(control_plane.kubeconfig_path, "127.0.0.1") as running:
        yield running


def query(server: ClusterDNS, name: str, rdtype: str = "A") -> dns.message.Message:
    request = dns.message.make_query(name, rdtype)
    return dns.query.udp(request, server.listen_ip, port=server.port, timeout=2)


def addresses(reply: dns.message.Message) -> set[str]:
    return {rd.address for rrset in reply.answer for rd in rrset if rrset.rdtype == dns.rdatatype.A}


async def resolve(server: ClusterDNS, name: str, rdtype: str = "A") -> dns.message.Message:
    """Query until `name` exists: CoreDNS learns of new objects through its watch."""
    async with asyncio.timeout(15):
        while True:
            reply = await asyncio.to_thread(query, server, name, rdtype)
            if reply.rcode() == dns.rcode.NOERROR and reply.answer:
                return reply
            await asyncio.sleep(0.1)


async def test_service_name_resolves_to_its_cluster_ip(
    cluster_dns: ClusterDNS, kube: KubeClient, namespace: str
) -> None:
    service = await kube.create(
        SERVICES,
        {
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
        },
        namespace,
    )
    cluster_ip = service["spec"]["clusterIP"]

    reply = await resolve(cluster_dns, f"web.{namespace}.svc.cluster.local")
    assert addresses(reply) == {cluster_ip}
    reverse = await resolve(cluster_dns, str(dns.reversename.from_address(cluster_ip)), "PTR")
    assert [str(rd) for rd in reverse.answer[0]] == [f"web.{namespace}.svc.cluster.local."]

    missing = await asyncio.to_thread(
        query, cluster_dns, f"nothing-here.{namespace}.svc.cluster.local"
    )
    assert missing.rcode() == dns.rcode.NXDOMAIN


async def test_headless_service_lists_its_endpoints(
    cluster_dns: ClusterDNS, kube: KubeClient, namespace: str
) -> None:
    """As for a StatefulSet's pods: one record per ready endpoint, and one per hostname."""
    await kube.create(
        SERVICES,
        {"metadata": {"name": "db"}, "spec": {"clusterIP": "None", "ports": [{"port": 5432}]}},
        namespace,
    )
    await kube.create(
        ENDPOINTSLICES,
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": "db-1", "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.233.250.5"], "hostname": "db-0"},
                {"addresses": ["10.233.250.6"], "hostname": "db-1"},
            ],
            "ports": [{"port": 5432, "protocol": "TCP"}],
        },
        namespace,
    )

    reply = await resolve(cluster_dns, f"db.{namespace}.svc.cluster.local")
    assert addresses(reply) == {"10.233.250.5", "10.233.250.6"}
    pod = await resolve(cluster_dns, f"db-1.db.{namespace}.svc.cluster.local")
    assert addresses(pod) == {"10.233.250.6"}


async def test_kube_dns_service_points_at_coredns(
    cluster_dns: ClusterDNS, kube: KubeClient
) -> None:
    service = await kube.get(SERVICES, SERVICE_NAME, SERVICE_NAMESPACE)
    assert service["spec"]["clusterIP"] == CLUSTER_DNS_IP
    assert "selector" not in service["spec"]
    assert {
        (p["name"], p["protocol"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]
    } == {
        ("dns", "UDP", 53, cluster_dns.port),
        ("dns-tcp", "TCP", 53, cluster_dns.port),
    }
    endpoint_slice = await kube.get(ENDPOINTSLICES, f"{SERVICE_NAME}-testbed", SERVICE_NAMESPACE)
    assert endpoint_slice["metadata"]["labels"]["kubernetes.io/service-name"] == SERVICE_NAME
    assert {(p["name"], p["protocol"], p["port"]) for p in endpoint_slice["ports"]} == {
        ("dns", "UDP", cluster_dns.port),
        ("dns-tcp", "TCP", cluster_dns.port),
    }
    # The API server refuses loopback endpoints: pods could not reach 127.0.0.1 anyway.
    assert not endpoint_slice.get("endpoints")


async def test_on_a_bridge_gateway_pods_get_an_endpoint(
    control_plane: Cluster, kube: KubeClient
) -> None:
    """Where pods can reach it, kube-dns's EndpointSlice carries CoreDNS's address."""
    if os.geteuid() != 0:
        pytest.fail("a testbed bridge needs root")  # CI must notice, not skip
    bridge = await asyncio.to_thread(netns.Bridge.create)
    try:
        async with ClusterDNS(control_plane.kubeconfig_path, str(bridge.gateway)) as server:
            reply = await resolve(server, "kubernetes.default.svc.cluster.local")
            assert addresses(reply) == {"10.0.0.1"}
            endpoint_slice = await kube.get(
                ENDPOINTSLICES, f"{SERVICE_NAME}-testbed", SERVICE_NAMESPACE
            )
            assert [e["addresses"] for e in endpoint_slice["endpoints"]] == [[str(bridge.gateway)]]
    finally:
        await asyncio.to_thread(bridge.close)


async def test_stop_ends_coredns(control_plane: Cluster) -> None:
    server = await ClusterDNS(control_plane.kubeconfig_path).start()
    work_dir = server.work_dir
    server.stop()
    request = dns.message.make_query("kubernetes.default.svc.cluster.local", "A")
    with pytest.raises(ConnectionRefusedError):
        dns.query.tcp(request, server.listen_ip, port=server.port, timeout=2)
    assert work_dir is not None and not work_dir.exists()
