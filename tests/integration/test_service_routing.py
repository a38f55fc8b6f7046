"""Services route on the testbed: the real kube-proxy (nftables) of the node, from the host and
from pods, for ClusterIP, NodePort and LoadBalancer addresses, and the `kubernetes` Service.

Each pod serves its own name over HTTP (python's http.server from the host image), so a reply
proves which endpoint answered. Needs root (like every test of the node).
"""

from __future__ import annotations

import asyncio
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from dittofs_controller.kube.client import KubeClient
from dittofs_controller.kube.resources import PODS, SERVICES
from tests.testbed import netns
from tests.testbed.node import HOST_IMAGE, Node

JSON = dict[str, Any]
PORT = 8080
SERVE = (
    'mkdir -p /tmp/www && printf %s "$HOSTNAME" > /tmp/www/name && '
    f"exec python3 -m http.server {PORT} --bind 0.0.0.0 --directory /tmp/www"
)
LB_IP = str(netns.LOAD_BALANCER_POOL.network_address + 200)


def web_pod(name: str, app: str) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {
            "containers": [
                {
                    "name": "web",
                    "image": HOST_IMAGE,
                    "command": ["sh", "-c", SERVE],
                    "ports": [{"name": "http", "containerPort": PORT}],
                    "readinessProbe": {
                        "httpGet": {"path": "/name", "port": PORT},
                        "periodSeconds": 1,
                    },
                }
            ]
        },
    }


def service(name: str, app: str, kind: str = "ClusterIP", target: int | str = PORT) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "type": kind,
            "selector": {"app": app},
            "ports": [{"name": "http", "port": 80, "targetPort": target}],
        },
    }


def fetch(url: str, netns_name: str | None = None, timeout: float = 3.0) -> str:
    """GET url from the host, or from inside a pod's network namespace."""
    if netns_name is None:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return str(response.read().decode())
    code = (
        f"import urllib.request as u; print(u.urlopen({url!r}, timeout={timeout}).read().decode())"
    )
    result = subprocess.run(
        ["ip", "netns", "exec", netns_name, "python3", "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout + 10,
        check=False,
    )
    if result.returncode != 0:
        raise OSError(result.stderr.strip()[-300:])
    return result.stdout.strip()


async def answers(
    url: str, expected: str, netns_name: str | None = None, timeout: float = 30
) -> None:
    """Wait until the URL answers `expected` (kube-proxy syncs a moment after a change)."""
    last: object = None
    try:
        async with asyncio.timeout(timeout):
            while True:
                try:
                    last = await asyncio.to_thread(fetch, url, netns_name)
                    if last == expected:
                        return
                except OSError as error:
                    last = error
                await asyncio.sleep(0.3)
    except TimeoutError:
        raise AssertionError(f"{url} did not answer {expected!r}; last: {last!r}") from None


async def refused(url: str, netns_name: str | None = None, timeout: float = 30) -> None:
    """Wait until the URL stops answering."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                await asyncio.to_thread(fetch, url, netns_name, 1.0)
            except OSError:
                return
            await asyncio.sleep(0.3)


@pytest.fixture
async def web(kube: KubeClient, namespace: str, node: Node) -> tuple[str, str]:
    """Two ready pods: `web` (app=web) and `client` (app=client); their network namespaces."""
    await kube.create(PODS, web_pod("web", "web"), namespace)
    await kube.create(PODS, web_pod("client", "client"), namespace)
    await node.wait_ready(namespace, "web")
    await node.wait_ready(namespace, "client")
    web_ns, client_ns = node.pod_netns(namespace, "web"), node.pod_netns(namespace, "client")
    assert web_ns and client_ns
    return web_ns, client_ns


async def test_cluster_ip_node_port_and_load_balancer_reach_the_pod(
    kube: KubeClient, namespace: str, node: Node, web: tuple[str, str]
) -> None:
    web_ns, client_ns = web
    cluster = await kube.create(SERVICES, service("web", "web"), namespace)
    node_port = await kube.create(SERVICES, service("web-np", "web", "NodePort"), namespace)
    balanced = await kube.create(SERVICES, service("web-lb", "web", "LoadBalancer"), namespace)
    status = {"loadBalancer": {"ingress": [{"ip": LB_IP}]}}
    await kube.merge_patch(SERVICES, "web-lb", {"status": status}, namespace, subresource="status")

    cluster_url = f"http://{cluster['spec']['clusterIP']}/name"
    node_port_url = f"http://{node.address}:{node_port['spec']['ports'][0]['nodePort']}/name"
    balanced_url = f"http://{LB_IP}/name"
    for url in (cluster_url, node_port_url, balanced_url):
        await answers(url, "web")  # from the host
        await answers(url, "web", client_ns)  # from another pod
    await answers(cluster_url, "web", web_ns)  # a pod through its own Service (hairpin)
    assert balanced["spec"]["clusterIP"]


async def test_a_broken_selector_or_target_port_stops_traffic_until_restored(
    kube: KubeClient, namespace: str, node: Node, web: tuple[str, str]
) -> None:
    created = await kube.create(SERVICES, service("web", "web"), namespace)
    url = f"http://{created['spec']['clusterIP']}/name"
    await answers(url, "web")

    await kube.merge_patch(SERVICES, "web", {"spec": {"selector": {"app": "nobody"}}}, namespace)
    await refused(url)
    await kube.merge_patch(SERVICES, "web", {"spec": {"selector": {"app": "web"}}}, namespace)
    await answers(url, "web")

    ports = [{"name": "http", "port": 80, "targetPort": PORT + 1}]
    await kube.merge_patch(SERVICES, "web", {"spec": {"ports": ports}}, namespace)
    await refused(url)


async def test_pods_reach_the_api_server_through_the_kubernetes_service(
    kube: KubeClient, web: tuple[str, str], tmp_path: Path
) -> None:
    _, client_ns = web
    root = await kube.request("GET", "/api/v1/namespaces/default/configmaps/kube-root-ca.crt")
    ca = tmp_path / "ca.crt"
    ca.write_text(root["data"]["ca.crt"])
    # /livez needs no credentials (system:public-info-viewer); TLS is verified against the
    # cluster's CA with the Service IP as the name, as an in-cluster client does.
    code = (
        "import ssl, urllib.request as u; "
        f"c = ssl.create_default_context(cafile={str(ca)!r}); "
        "print(u.urlopen('https://10.0.0.1:443/livez', context=c, timeout=5).read().decode())"
    )
    result = await asyncio.to_thread(
        subprocess.run,
        ["ip", "netns", "exec", client_ns, "python3", "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-500:]
    assert result.stdout.strip() == "ok"


async def test_pods_resolve_services_through_cluster_dns(
    kube: KubeClient, namespace: str, node: Node, web: tuple[str, str]
) -> None:
    await kube.create(SERVICES, service("web", "web"), namespace)
    # The short name goes through the search path (ndots:5), the full one as it is.
    names = ("web", f"web.{namespace}.svc.cluster.local")
    fetches = "; ".join(
        f"print(u.urlopen('http://{name}/name', timeout=5).read().decode())" for name in names
    )
    lookup = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "lookup"},
        "spec": {
            "restartPolicy": "OnFailure",
            "containers": [
                {
                    "name": "lookup",
                    "image": HOST_IMAGE,
                    "command": ["python3", "-c", f"import urllib.request as u; {fetches}"],
                }
            ],
        },
    }
    await kube.create(PODS, lookup, namespace)

    async def succeeded() -> bool:
        pod = await kube.get(PODS, "lookup", namespace)
        return bool(pod.get("status", {}).get("phase") == "Succeeded")

    try:
        async with asyncio.timeout(60):
            while True:
                if await succeeded():
                    break
                await asyncio.sleep(0.5)
    except TimeoutError:
        raise AssertionError(node.logs(namespace, "lookup")) from None
    assert node.logs(namespace, "lookup").split() == ["web", "web"]
