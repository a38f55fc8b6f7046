"""MetalLB's controller on the real control plane: LoadBalancer Services get real addresses.

The operator waits for its NFS/SMB Services' status.loadBalancer.ingress; these tests pin down
what the testbed's load balancer does with Services, so tests of the operator can rely on it
instead of patching that status by hand.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

from dittofs_controller.kube.client import KubeClient
from dittofs_controller.kube.resources import SERVICES, Resource
from tests.testbed.loadbalancer import POOL_NAME, LoadBalancerController

JSON = dict[str, Any]
EVENTS = Resource("", "v1", "events", "Event")
REQUEST_ANNOTATION = "metallb.io/loadBalancerIPs"
POOL_ANNOTATION = "metallb.io/ip-allocated-from-pool"
TIMEOUT = 30.0


def _service(name: str, annotations: dict[str, str] | None = None, **spec: Any) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 2049, "protocol": "TCP"}], **spec},
    }


async def _ingress(kube: KubeClient, namespace: str, name: str) -> list[str]:
    service = await kube.get(SERVICES, name, namespace)
    ingress = service.get("status", {}).get("loadBalancer", {}).get("ingress", [])
    return [entry["ip"] for entry in ingress]


async def _address(kube: KubeClient, namespace: str, name: str) -> str:
    """The one address the Service is given, once it is."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            if ips := await _ingress(kube, namespace, name):
                assert len(ips) == 1, ips
                return ips[0]
            await asyncio.sleep(0.1)


async def _event(kube: KubeClient, namespace: str, name: str, reason: str) -> str:
    """The message of the first `reason` Event about Service `name`, once there is one."""
    selector = f"involvedObject.kind=Service,involvedObject.name={name},reason={reason}"
    async with asyncio.timeout(TIMEOUT):
        while True:
            events = await kube.request(
                "GET", EVENTS.path(namespace), query={"fieldSelector": selector}
            )
            if events["items"]:
                return str(events["items"][0]["message"])
            await asyncio.sleep(0.1)


async def test_a_service_gets_an_address_from_the_pool(
    kube: KubeClient, namespace: str, load_balancer: LoadBalancerController
) -> None:
    await kube.create(SERVICES, _service("nfs"), namespace)

    ip = ipaddress.ip_address(await _address(kube, namespace, "nfs"))

    assert ip in load_balancer.pool
    assert ip.packed[-1] not in (0, 255)  # the pool avoids them
    message = await _event(kube, namespace, "nfs", "IPAllocated")
    assert str(ip) in message
    service = await kube.get(SERVICES, "nfs", namespace)
    assert service["metadata"]["annotations"][POOL_ANNOTATION] == POOL_NAME


async def test_two_services_get_different_addresses(
    kube: KubeClient, namespace: str, load_balancer: LoadBalancerController
) -> None:
    await kube.create(SERVICES, _service("nfs"), namespace)
    await kube.create(SERVICES, _service("smb"), namespace)

    nfs, smb = await _address(kube, namespace, "nfs"), await _address(kube, namespace, "smb")

    assert nfs != smb
    assert {ipaddress.ip_address(nfs), ipaddress.ip_address(smb)} <= set(load_balancer.pool)


async def test_a_service_gets_the_address_it_asks_for_by_annotation(
    kube: KubeClient, namespace: str, load_balancer: LoadBalancerController
) -> None:
    wanted = str(load_balancer.pool[200])
    await kube.create(SERVICES, _service("nfs", {REQUEST_ANNOTATION: wanted}), namespace)

    assert await _address(kube, namespace, "nfs") == wanted


async def test_a_service_gets_the_address_it_asks_for_in_its_spec(
    kube: KubeClient, namespace: str, load_balancer: LoadBalancerController
) -> None:
    """spec.loadBalancerIP is deprecated upstream but still what many charts set."""
    wanted = str(load_balancer.pool[201])
    await kube.create(SERVICES, _service("nfs", loadBalancerIP=wanted), namespace)

    assert await _address(kube, namespace, "nfs") == wanted


async def test_deleting_a_service_frees_its_address(
    kube: KubeClient, namespace: str, load_balancer: LoadBalancerController
) -> None:
    wanted = str(load_balancer.pool[202])
    await kube.create(SERVICES, _service("first", {REQUEST_ANNOTATION: wanted}), namespace)
    assert await _address(kube, namespace, "first") == wanted
    await kube.create(SERVICES, _service("second", {REQUEST_ANNOTATION: wanted}), namespace)
    refused = await _event(kube, namespace, "second", "AllocationFailed")
    assert f"in use by {namespace}/first" in refused
    assert await _ingress(kube, namespace, "second") == []

    await kube.delete(SERVICES, "first", namespace)

    assert await _address(kube, namespace, "second") == wanted


async def test_a_service_of_another_load_balancer_class_is_left_alone(
    kube: KubeClient, namespace: str, load_balancer: LoadBalancerController
) -> None:
    await kube.create(
        SERVICES, _service("elsewhere", loadBalancerClass="example.com/other"), namespace
    )
    # Created after it, so once this one has an address the other one has been seen too.
    await kube.create(SERVICES, _service("ours"), namespace)
    await _address(kube, namespace, "ours")

    assert await _ingress(kube, namespace, "elsewhere") == []
    elsewhere = await kube.get(SERVICES, "elsewhere", namespace)
    assert POOL_ANNOTATION not in elsewhere["metadata"].get("annotations", {})
