"""The kubelet's streaming endpoint for port forwarding, served by a testbed node.

kube-apiserver serves `pods/{name}/portforward` by finding the pod's node (its InternalIP and
daemonEndpoints.kubeletEndpoint.Port), dialing it over TLS with its kubelet client certificate
and passing the upgraded connection through. This endpoint answers there, like the kubelet:
- HTTPS on the node's address, port 10250, with a self-signed certificate (what a kubelet
  makes when given none; kube-apiserver does not verify it without
  --kubelet-certificate-authority); clients must present a certificate signed by the cluster CA
  (the kubelet's --client-ca-file; this one is read from the kube-root-ca.crt ConfigMap). The
  kubelet would also ask the API server whether that user may use nodes/proxy; this one trusts
  any certificate of the cluster CA.
- GET /portForward/{namespace}/{pod}[/{uid}]?port=P[,P...] upgraded to a WebSocket with
  subprotocol `v4.channel.k8s.io` (or none): port i has data channel 2i and error channel 2i+1,
  each message is a channel byte then payload, each channel opens with the port as an unsigned
  16-bit little-endian integer; a port that cannot be reached gets an error text on its error
  channel. The WebSocket closes when every port's connection has ended.
- Not served: SPDY (what older kubectl speaks), the base64 subprotocol, exec/attach/logs.

A real kubelet dials `localhost:P` inside the pod's network namespace; this one dials the
pod's IP from the host, so a listener bound only to the pod's loopback is not reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import struct
from collections.abc import Callable
from pathlib import Path

import aiohttp
from aiohttp import web

from . import pki

log = logging.getLogger("testbed.streaming")

KUBELET_PORT = 10250
SUBPROTOCOL = "v4.channel.k8s.io"
DIAL_TIMEOUT = 5.0

# (namespace, pod name) -> (uid, pod IP) of the pod the node runs now, or None.
PodLookup = Callable[[str, str], tuple[str, str] | None]


def parse_ports(values: list[str]) -> list[int]:
    """The `port` query values (each a comma-separated list), as the kubelet reads them."""
    if not values:
        raise ValueError('query parameter "port" is required')
    ports = []
    for value in values:
        for item in value.split(","):
            if not item.isdigit() or not 0 < int(item) < 65536:
                raise ValueError(f"unable to parse {value!r} as a port")
            ports.append(int(item))
    return ports


class StreamingServer:
    """The port-forward endpoint of one node (see the module doc)."""

    def __init__(self, address: str, lookup: PodLookup, client_ca: str, work_dir: Path) -> None:
        self.address = address
        self.lookup = lookup
        self.client_ca = client_ca
        self.work_dir = work_dir
        self._runner: web.AppRunner | None = None
        self._sockets: set[web.WebSocketResponse] = set()

    async def start(self) -> None:
        pair = pki.self_signed_server(self.work_dir, "kubelet", self.address)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cadata=self.client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_cert_chain(pair.cert, pair.key)
        app = web.Application()
        app.router.add_get("/portForward/{namespace}/{pod}", self._port_forward)
        app.router.add_get("/portForward/{namespace}/{pod}/{uid}", self._port_forward)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.address, KUBELET_PORT, ssl_context=context)
        await site.start()

    async def stop(self) -> None:
        for ws in list(self._sockets):
            await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _port_forward(self, request: web.Request) -> web.StreamResponse:
        namespace, name = request.match_info["namespace"], request.match_info["pod"]
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return web.Response(status=400, text="this node serves port-forward over WebSockets")
        try:
            ports = parse_ports(request.query.getall("port", []))
        except ValueError as error:
            return web.Response(status=400, text=str(error))
        offered = [
            p.strip()
            for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")
            if p.strip()
        ]
        if offered and SUBPROTOCOL not in offered:
            return web.Response(
                status=400, text=f"requested protocol(s) are not supported: {offered}"
            )
        found = self.lookup(namespace, name)
        uid = request.match_info.get("uid")
        if found is None or (uid is not None and uid != found[0]):
            return web.Response(status=404, text=f"pod {namespace}/{name} not found")
        pod_uid, ip = found
        ws = web.WebSocketResponse(protocols=(SUBPROTOCOL,) if offered else ())
        await ws.prepare(request)
        self._sockets.add(ws)
        try:
            await _forward(ws, f"{namespace}/{name}", pod_uid, ip, ports)
        finally:
            self._sockets.discard(ws)
            await ws.close()
        return ws


async def _forward(
    ws: web.WebSocketResponse, pod: str, uid: str, ip: str, ports: list[int]
) -> None:
    """Open every port's two channels, dial each port, copy until all connections end."""
    for index, port in enumerate(ports):
        preamble = struct.pack("<H", port)
        await ws.send_bytes(bytes([2 * index]) + preamble)
        await ws.send_bytes(bytes([2 * index + 1]) + preamble)
    inboxes: list[asyncio.Queue[bytes]] = [asyncio.Queue() for _ in ports]
    port_tasks = [
        asyncio.create_task(_one_port(ws, index, port, pod, uid, ip, inboxes[index]))
        for index, port in enumerate(ports)
    ]
    receiver = asyncio.create_task(_receive(ws, inboxes))
    # Awaited in `finally` too: a gather cancelled with its tasks and never awaited logs
    # "exception was never retrieved".
    all_ports = asyncio.gather(*port_tasks, return_exceptions=True)
    try:
        await asyncio.wait([receiver, all_ports], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in [receiver, *port_tasks]:
            task.cancel()
        await asyncio.gather(receiver, all_ports, return_exceptions=True)


async def _receive(ws: web.WebSocketResponse, inboxes: list[asyncio.Queue[bytes]]) -> None:
    """Bytes for the pods, by data channel; frames for other channels are dropped."""
    async for message in ws:
        if message.type != aiohttp.WSMsgType.BINARY or not message.data:
            continue
        channel, payload = message.data[0], message.data[1:]
        if channel % 2 == 0 and channel // 2 < len(inboxes):
            inboxes[channel // 2].put_nowait(payload)


async def _one_port(
    ws: web.WebSocketResponse,
    index: int,
    port: int,
    pod: str,
    uid: str,
    ip: str,
    inbox: asyncio.Queue[bytes],
) -> None:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), DIAL_TIMEOUT)
    except (OSError, TimeoutError) as error:
        cause = os.strerror(error.errno).lower() if error.errno else "i/o timeout"
        text = (
            f"error forwarding port {port} to pod {pod}, uid {uid}: "
            f"dial tcp {ip}:{port}: connect: {cause}"
        )
        log.info(text)
        await ws.send_bytes(bytes([2 * index + 1]) + text.encode())
        return

    async def to_pod() -> None:
        while True:
            data = await inbox.get()
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(to_pod())
    try:
        while data := await reader.read(64 * 1024):
            await ws.send_bytes(bytes([2 * index]) + data)
    except OSError:
        pass
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
