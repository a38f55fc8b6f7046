"""The port-forward framing: channel bytes and port preambles as kube-apiserver and the kubelet
(pkg/kubelet/cri/streaming/portforward/websocket.go) write them; the dial's retries against a
local stand-in for the API server's upgrade."""

from __future__ import annotations

import asyncio
import socket

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from kubernetes_asyncio import client as k8s_client

from dittofs_controller.kube.client import KubeClient
from dittofs_controller.kube.portforward import (
    SUBPROTOCOL,
    Inbound,
    PortForward,
    PortForwardError,
    PortForwardProtocolError,
    data_frame,
    rejection_message,
    split_frame,
)

# Port 8080 = 0x1f90, sent little-endian as the first two bytes of each channel.
PORT_8080 = b"\x90\x1f"


def test_bytes_for_the_pod_go_on_channel_zero() -> None:
    assert data_frame(b"GET / HTTP/1.1\r\n") == b"\x00GET / HTTP/1.1\r\n"
    assert data_frame(b"") == b"\x00"


def test_frames_are_split_into_channel_and_payload() -> None:
    assert split_frame(b"\x00abc") == (0, b"abc")
    assert split_frame(b"\x01") == (1, b"")


@pytest.mark.parametrize(("frame", "words"), [(b"", "empty"), (b"\x02x", "channel 2")])
def test_malformed_frames_are_protocol_errors(frame: bytes, words: str) -> None:
    with pytest.raises(PortForwardProtocolError, match=words):
        split_frame(frame)


def test_each_channel_opens_with_the_port_then_carries_the_pods_bytes() -> None:
    inbound = Inbound(8080)
    assert not inbound.opened
    assert inbound.feed(b"\x00" + PORT_8080) == b""
    assert inbound.opened
    assert inbound.feed(b"\x01" + PORT_8080) == b""
    assert inbound.feed(b"\x00HTTP/1.1 200 OK") == b"HTTP/1.1 200 OK"
    assert inbound.feed(b"\x00" + PORT_8080) == PORT_8080  # later, the same bytes are data
    assert inbound.error is None


def test_a_preamble_split_across_frames_or_followed_by_data_is_stripped() -> None:
    inbound = Inbound(8080)
    assert inbound.feed(b"\x00\x90") == b""
    assert not inbound.opened
    assert inbound.feed(b"\x00\x1fdata") == b"data"
    assert inbound.opened


def test_the_error_channel_collects_the_kubelets_message() -> None:
    inbound = Inbound(8080)
    inbound.feed(b"\x00" + PORT_8080)
    inbound.feed(b"\x01" + PORT_8080)
    assert inbound.feed(b"\x01error forwarding port 8080 to pod ") == b""
    assert inbound.feed(b"\x01files-0: connection refused") == b""
    assert inbound.error == "error forwarding port 8080 to pod files-0: connection refused"


def test_a_channel_opened_for_another_port_is_a_protocol_error() -> None:
    with pytest.raises(PortForwardProtocolError, match="port 8081, not 8080"):
        Inbound(8080).feed(b"\x00\x91\x1f")


def test_refusals_are_explained_by_their_status() -> None:
    assert rejection_message(403) == "forbidden: pods/portforward needs get and create"
    assert rejection_message(404) == "no such pod"
    assert "node" in rejection_message(502)


# --- the dial -------------------------------------------------------------------------------


async def test_a_refused_dial_is_tried_again_until_the_api_server_listens() -> None:
    """The WebSocket of a port-forward reaches an API server that starts listening late."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there: the first dial is refused
    upgrades: list[str] = []

    async def portforward(request: web.Request) -> web.WebSocketResponse:
        upgrades.append(request.query["ports"])
        ws = web.WebSocketResponse(protocols=(SUBPROTOCOL,))
        await ws.prepare(request)
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/api/v1/namespaces/ns/pods/p/portforward", portforward)
    server = TestServer(app, host="127.0.0.1", port=port)

    async def start_soon() -> None:
        await asyncio.sleep(0.02)  # before the first retry's wait ends (0.1 s at least)
        await server.start_server()

    configuration = k8s_client.Configuration()
    configuration.host = f"http://127.0.0.1:{port}"
    starting = asyncio.create_task(start_soon())
    async with k8s_client.ApiClient(configuration) as api:
        ws = await PortForward(KubeClient(api), "ns", "p", 8080).open()
        await ws.close()
    await starting
    await server.close()
    assert upgrades == ["8080"]


async def test_a_dial_that_keeps_being_refused_fails_naming_the_api_server() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    configuration = k8s_client.Configuration()
    configuration.host = f"http://127.0.0.1:{port}"
    async with k8s_client.ApiClient(configuration) as api:
        with pytest.raises(PortForwardError, match="cannot reach the API server"):
            await PortForward(KubeClient(api), "ns", "p", 8080).open()
