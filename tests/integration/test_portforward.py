"""Port forwarding for real: client -> kube-apiserver (pods/portforward) -> the testbed node's
kubelet endpoint -> a process in the pod, and the failures each hop reports."""

from __future__ import annotations

import asyncio
import os

import pytest

from dittofs_controller.kube.client import KubeClient
from dittofs_controller.kube.portforward import (
    PortForward,
    PortForwardFailed,
    PortForwardRejected,
)
from dittofs_controller.kube.resources import PODS
from tests.testbed.node import HOST_IMAGE, Node

ECHO_PORT = 7000
# A threaded TCP echo server, run by the host's python3 in the pod.
ECHO = f"""
import socketserver
class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while data := self.request.recv(65536):
            self.request.sendall(data)
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer(("0.0.0.0", {ECHO_PORT}), Echo).serve_forever()
"""


def pod(name: str, **spec: object) -> dict[str, object]:
    container = {
        "name": "echo",
        "image": HOST_IMAGE,
        "command": ["python3", "-c", ECHO],
        "readinessProbe": {"tcpSocket": {"port": ECHO_PORT}, "periodSeconds": 1},
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [container], "terminationGracePeriodSeconds": 1, **spec},
    }


async def echoed(forward: PortForward, payload: bytes) -> bytes:
    """Send `payload` through a new local connection and read as many bytes back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", forward.local_port)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(len(payload)), 30)
    finally:
        writer.close()


async def closed_at_once(forward: PortForward) -> bytes:
    """What a local connection reads before the tunnel closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", forward.local_port)
    try:
        return await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()


async def test_connections_reach_the_pod_through_the_api_server(
    kube: KubeClient, namespace: str, node: Node
) -> None:
    await kube.create(PODS, pod("echo"), namespace)
    await node.wait_ready(namespace, "echo")
    async with PortForward(kube, namespace, "echo", ECHO_PORT) as forward:
        big = os.urandom(1024 * 1024)  # many WebSocket messages each way
        small = [f"connection {i}\n".encode() for i in range(4)]
        answers = await asyncio.gather(echoed(forward, big), *(echoed(forward, s) for s in small))
        assert answers == [big, *small]
        assert forward.failure is None


async def test_failures_name_their_cause(kube: KubeClient, namespace: str, node: Node) -> None:
    await kube.create(PODS, pod("echo"), namespace)
    unscheduled = pod("unscheduled", nodeSelector={"testbed.local/none": "x"})
    await kube.create(PODS, unscheduled, namespace)
    await node.wait_ready(namespace, "echo")

    # The kubelet cannot connect: nothing listens on that port in the pod.
    async with PortForward(kube, namespace, "echo", ECHO_PORT + 1) as forward:
        assert await closed_at_once(forward) == b""
        assert isinstance(forward.failure, PortForwardFailed)
        assert f"error forwarding port {ECHO_PORT + 1} to pod" in str(forward.failure)
        assert "refused" in str(forward.failure)

    # The API server refuses, in its own words: no such pod; a pod with no node yet.
    refusals = (
        ("missing", 404, 'pods "missing" not found', "pods"),
        ("unscheduled", 400, "pod unscheduled does not have a host assigned", ""),
    )
    for name, status, words, kind in refusals:
        async with PortForward(kube, namespace, name, ECHO_PORT) as forward:
            assert await closed_at_once(forward) == b""
            assert isinstance(forward.failure, PortForwardRejected), forward.failure
            assert (forward.failure.status, forward.failure.kind) == (status, kind)
            assert words in str(forward.failure)


async def test_leaving_closes_the_listener_and_open_tunnels(
    kube: KubeClient, namespace: str, node: Node
) -> None:
    await kube.create(PODS, pod("echo"), namespace)
    await node.wait_ready(namespace, "echo")
    async with PortForward(kube, namespace, "echo", ECHO_PORT) as forward:
        port = forward.local_port
        assert await echoed(forward, b"closed by the client") == b"closed by the client"
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.readexactly(4), 30) == b"ping"
    # The tunnel still open was closed with the forward, and nothing listens any more.
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
