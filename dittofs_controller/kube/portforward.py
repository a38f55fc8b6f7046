"""Port forwarding to a pod through the API server, as `kubectl port-forward` does.

Out of the cluster the operator cannot resolve Service names nor, usually, route to pod IPs,
and the API server's service proxy is no way in: kube-apiserver drops the Authorization header
after authenticating the caller, and DittoFS only takes `Authorization: Bearer`. The
`pods/{name}/portforward` subresource carries raw bytes instead, so the header reaches DittoFS.

The protocol is the kubelet's own WebSocket one, which kube-apiserver passes through to the
kubelet untouched (it only translates clients that ask for the SPDY-tunnelling subprotocols):
- GET /api/v1/namespaces/{ns}/pods/{name}/portforward?ports=P with subprotocol
  `v4.channel.k8s.io`; the API server authorizes `get` and (since 1.35) `create` on
  pods/portforward, then forwards to the node as /portForward/{ns}/{name}?port=P.
- Every binary message starts with a channel byte. Port i of the request has data channel 2i
  and error channel 2i+1; we forward one port, so channels 0 and 1.
- The kubelet opens both channels by writing the port number as an unsigned 16-bit little-endian
  integer; what follows on the data channel is the pod's bytes. Bytes for the pod are sent on the
  data channel the same way (channel byte + payload, no port prefix).
- If the kubelet cannot reach the port it writes a text message on the error channel, then
  closes. The v4 protocol has no half-close: one WebSocket carries exactly one TCP connection and
  closing either end ends both.

`PortForward` listens on 127.0.0.1 (an ephemeral port) and tunnels each accepted connection
through one new WebSocket, so any HTTP client can talk to the pod at `127.0.0.1:<port>`. A
tunnel that fails records why (`failure`) before it closes the local connection: the caller's
client sees the connection drop and asks the forwarder for the cause. A refused upgrade is
asked again without it, to get the API server's Status message (`_rejection`).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from types import TracebackType
from typing import Self

import aiohttp
import attrs
import structlog
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from dittofs_controller.kube.client import ApiError, KubeClient
from dittofs_controller.kube.resources import PODS

log = structlog.get_logger("dittofs_controller.kube.portforward")

SUBPROTOCOL = "v4.channel.k8s.io"
DATA_CHANNEL = 0
ERROR_CHANNEL = 1
PORT_PREAMBLE = struct.Struct("<H")
# Opening a tunnel (TLS to the API server, upgrade through it to the kubelet) must end well
# before the caller's own request timeout, so a hung tunnel surfaces as a tunnel failure.
OPEN_TIMEOUT = 10.0
# A dial the API server refused (restarting, or its endpoint just moved) is tried again within
# OPEN_TIMEOUT, DIAL_ATTEMPTS in all: it never reached the kubelet, so nothing happens twice.
DIAL_ATTEMPTS = 3
DIAL_WAIT = wait_exponential(multiplier=0.1, max=1) + wait_random(0, 0.1)
CHUNK = 64 * 1024


def _refused_dial(error: BaseException) -> bool:
    """The connection to the API server failed before carrying the request (not its TLS)."""
    return isinstance(error, aiohttp.ClientConnectorError) and not isinstance(
        error, aiohttp.ClientSSLError
    )


class PortForwardError(Exception):
    """A tunnel to a pod's port could not be opened or broke."""


class PortForwardRejected(PortForwardError):
    """The API server refused the port-forward request (no such pod, no permission...)."""

    def __init__(self, status: int, message: str, kind: str = "") -> None:
        super().__init__(f"the API server answered {status}: {message}")
        self.status = status
        self.kind = kind  # what was not found (pods, nodes...), when the API server says


class PortForwardFailed(PortForwardError):
    """The kubelet reported on the error channel that it could not forward (nothing listens on
    the port in the pod, the pod is not running...)."""


class PortForwardProtocolError(PortForwardError):
    """The other end broke the port-forward protocol."""


# --- framing (pure) -------------------------------------------------------------------------


def data_frame(payload: bytes) -> bytes:
    """A message carrying `payload` to the pod."""
    return bytes((DATA_CHANNEL,)) + payload


def split_frame(frame: bytes) -> tuple[int, bytes]:
    """(channel, payload) of a message from the kubelet."""
    if not frame:
        raise PortForwardProtocolError("empty message (no channel byte)")
    channel = frame[0]
    if channel not in (DATA_CHANNEL, ERROR_CHANNEL):
        raise PortForwardProtocolError(f"message on channel {channel}; one port has 0 and 1")
    return channel, frame[1:]


def rejection_message(status: int) -> str:
    """What a refused upgrade means when the API server's own words are not to be had."""
    return {
        400: "the request is invalid or the pod has no node yet",
        401: "the operator's credentials were not accepted",
        403: "forbidden: pods/portforward needs get and create",
        404: "no such pod",
    }.get(status, "the API server could not reach the pod's node")


@attrs.define
class Inbound:
    """The kubelet's side of one port's two channels: strips the port number that opens each
    channel (checking it is the one asked for) and collects the error channel's text."""

    port: int
    _preambles: dict[int, bytearray] = attrs.field(
        factory=lambda: {DATA_CHANNEL: bytearray(), ERROR_CHANNEL: bytearray()}
    )
    _error: bytearray = attrs.field(factory=bytearray)

    def feed(self, frame: bytes) -> bytes:
        """The pod's bytes in `frame` (b"" for none); error text is kept for `error`."""
        channel, payload = split_frame(frame)
        pending = self._preambles[channel]
        if len(pending) < PORT_PREAMBLE.size:
            take = PORT_PREAMBLE.size - len(pending)
            pending += payload[:take]
            payload = payload[take:]
            if len(pending) == PORT_PREAMBLE.size:
                (port,) = PORT_PREAMBLE.unpack(pending)
                if port != self.port:
                    raise PortForwardProtocolError(
                        f"channel {channel} opened for port {port}, not {self.port}"
                    )
        if channel == ERROR_CHANNEL:
            self._error += payload
            return b""
        return payload

    @property
    def opened(self) -> bool:
        """Whether the kubelet has opened the data channel (it does before dialing the pod)."""
        return len(self._preambles[DATA_CHANNEL]) == PORT_PREAMBLE.size

    @property
    def error(self) -> str | None:
        return self._error.decode(errors="replace") if self._error else None


# --- the listener ---------------------------------------------------------------------------


class PortForward:
    """A local listener on 127.0.0.1 forwarding each connection to `port` of one pod.

    Use as an async context manager; leaving it closes the listener and every tunnel.
    """

    def __init__(
        self,
        kube: KubeClient,
        namespace: str,
        pod: str,
        port: int,
        *,
        open_timeout: float = OPEN_TIMEOUT,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.pod = pod
        self.port = port
        self.open_timeout = open_timeout
        self.failure: PortForwardError | None = None
        self._server: asyncio.Server | None = None
        self._tunnels: set[asyncio.Task[None]] = set()

    @property
    def local_port(self) -> int:
        if self._server is None:
            raise RuntimeError("port forward not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def __str__(self) -> str:
        return f"port-forward to pod {self.namespace}/{self.pod} port {self.port}"

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._accepted, "127.0.0.1", 0)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.close()
        tunnels = list(self._tunnels)
        for task in tunnels:
            task.cancel()
        await asyncio.gather(*tunnels, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tunnels.add(task)
        try:
            await self._tunnel(reader, writer)
        except aiohttp.ClientError as error:
            self._failed(PortForwardError(f"the tunnel broke: {error or type(error).__name__}"))
        except OSError:
            pass  # the local client went away: nothing to report
        except PortForwardError as error:
            self._failed(error)
        except asyncio.CancelledError:
            # Only __aexit__ cancels a tunnel, and this task is start_server's, awaited by no
            # caller: ending normally keeps Python 3.11 from logging the cancellation as an error.
            pass
        finally:
            self._tunnels.discard(task)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    def _failed(self, error: PortForwardError) -> None:
        """Keep the first failure (later ones usually repeat it) and log each."""
        if self.failure is None:
            self.failure = error
        log.info("port-forward failed", target=str(self), error=str(error))

    async def open(self) -> aiohttp.ClientWebSocketResponse:
        """One WebSocket to the pod's port, the kubelet's answer not yet read."""
        path = PODS.path(self.namespace, self.pod, "portforward")
        try:
            async with asyncio.timeout(self.open_timeout):
                async for attempt in AsyncRetrying(
                    retry=retry_if_exception(_refused_dial),
                    stop=stop_after_attempt(DIAL_ATTEMPTS),
                    wait=DIAL_WAIT,
                    reraise=True,
                ):
                    with attempt:
                        return await self.kube.websocket(
                            path, query={"ports": str(self.port)}, protocols=(SUBPROTOCOL,)
                        )
                raise AssertionError("unreachable: tenacity reraises the last error")
        except aiohttp.WSServerHandshakeError as error:
            raise await self._rejection(error.status) from None
        except TimeoutError:
            raise PortForwardError(
                f"no WebSocket from the API server within {self.open_timeout:g} s"
            ) from None
        except aiohttp.ClientError as error:
            raise PortForwardError(f"cannot reach the API server: {error}") from None

    async def _rejection(self, status: int) -> PortForwardRejected:
        """The refusal in the API server's words. A failed WebSocket handshake hides the Status
        body, so the request is repeated without the upgrade: it fails the same way (the pod
        and its node are looked up first), or passes and is then refused for lacking one."""
        path = PODS.path(self.namespace, self.pod, "portforward")
        try:
            async with asyncio.timeout(self.open_timeout):
                await self.kube.request("GET", path, query={"ports": str(self.port)})
        except ApiError as error:
            if error.status == status and error.message:
                return PortForwardRejected(status, error.message, error.kind)
        except (aiohttp.ClientError, TimeoutError):
            pass
        return PortForwardRejected(status, rejection_message(status))

    async def _tunnel(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ws = await self.open()
        inbound = Inbound(self.port)
        outbound = asyncio.create_task(_to_pod(reader, ws))
        try:
            async for message in ws:
                if message.type != aiohttp.WSMsgType.BINARY:
                    break  # CLOSE/CLOSED/ERROR end the tunnel; TEXT is not this subprotocol
                if data := inbound.feed(message.data):
                    writer.write(data)
                    await writer.drain()
        finally:
            outbound.cancel()
            await asyncio.gather(outbound, return_exceptions=True)
            await ws.close()
        if inbound.error is not None:
            raise PortForwardFailed(inbound.error)
        if not inbound.opened:
            raise PortForwardProtocolError(
                f"the WebSocket closed before the kubelet opened port {self.port}"
            )


async def _to_pod(reader: asyncio.StreamReader, ws: aiohttp.ClientWebSocketResponse) -> None:
    """Local bytes to the pod; the local end closing closes the WebSocket (no half-close)."""
    while chunk := await reader.read(CHUNK):
        await ws.send_bytes(data_frame(chunk))
    await ws.close()
