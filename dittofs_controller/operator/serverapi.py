"""How the operator reaches the DittoFS REST API of a server: where (--dittofs-api-access),
trusting which certificates, as its admin. Shared by the reconcilers that talk to DittoFS
(serverconfig converges its state, workload drains its uploads before a stop).

The functions are pure except `trusted_certificates` (reads a Secret) and `session` (opens
the connection, through a port-forward out of the cluster).
"""

from __future__ import annotations

import contextlib
import ipaddress
import ssl
from collections.abc import AsyncIterator, Mapping
from typing import Literal

import aiohttp

from dittofs_controller.api import v1alpha1
from dittofs_controller.dittofs import ClientCertificate, DittoFSClient, Tokens, pinned_ssl_context
from dittofs_controller.dittofs.client import DEFAULT_TIMEOUT
from dittofs_controller.kube.client import KubeClient
from dittofs_controller.kube.portforward import (
    PortForward,
    PortForwardError,
    PortForwardFailed,
    PortForwardRejected,
)
from dittofs_controller.operator import names
from dittofs_controller.operator.children import Obj
from dittofs_controller.operator.config.build import TLS_CERT_KEY, TLS_KEY_KEY
from dittofs_controller.operator.problems import Problem
from dittofs_controller.operator.references import SecretReader

Spec = v1alpha1.DittoServerSpec
Access = Literal["service", "pod", "port-forward"]

TLS_CA_KEY = "ca.crt"

ACCESS_WHAT: dict[Access, str] = {
    "service": "the API Service",
    "pod": "the pod IP",
    "port-forward": "a port-forward through the API server",
}


def resolve_access(setting: str, kubeconfig: str | None, environ: Mapping[str, str]) -> Access:
    """`auto`: the Service name when the operator runs in a pod, a port-forward otherwise."""
    if setting in ("service", "pod", "port-forward"):
        return setting  # type: ignore[return-value]
    in_cluster = bool(environ.get("KUBERNETES_SERVICE_HOST")) and not kubeconfig
    return "service" if in_cluster else "port-forward"


def api_url(server: Obj, spec: Spec, access: Access, pod_ip: str | None) -> str:
    """Base URL of the REST API: the API Service's cluster DNS name, or the pod's IP.

    Through a port-forward it only names the pod, for messages and for the inputs digest (a
    pass must not repeat because a new tunnel listens on another local port); `forwarded_url`
    is where requests go.
    """
    meta = server["metadata"]
    scheme = "https" if spec.control_plane.tls is not None else "http"
    port = spec.control_plane.port
    if access == "port-forward":
        return f"port-forward://{meta['namespace']}/{names.pod(meta['name'])}:{port}"
    if access == "service":
        host = f"{names.service(meta['name'], 'api')}.{meta['namespace']}.svc"
    else:
        assert pod_ip is not None
        host = f"[{pod_ip}]" if ipaddress.ip_address(pod_ip).version == 6 else pod_ip
    return f"{scheme}://{host}:{port}"


def pod_ip(pod: Obj | None) -> str | None:
    """The IP address of the server's pod, once it has one."""
    ip = ((pod or {}).get("status") or {}).get("podIP")
    return str(ip) if ip else None


def forwarded_url(spec: Spec, local_port: int) -> str:
    """Base URL of the REST API through a port-forward listening on `local_port`."""
    scheme = "https" if spec.control_plane.tls is not None else "http"
    return f"{scheme}://127.0.0.1:{local_port}"


def forward_problem(error: PortForwardError) -> tuple[str, str]:
    """The condition reason for a port-forward that failed, and what to do about it."""
    if isinstance(error, PortForwardRejected) and error.status == 403:
        return "PortForwardForbidden", (
            f"{error}. Out of the cluster the operator reaches the DittoFS API through the API "
            "server's port-forward, as kubectl port-forward does: grant the user of its "
            "kubeconfig get and create on pods/portforward in this namespace, or pick another "
            "--dittofs-api-access"
        )
    if isinstance(error, PortForwardRejected) and error.status == 404 and error.kind == "pods":
        return "PodNotFound", f"{error} (the DittoFS pod is gone: being replaced?)"
    if isinstance(error, PortForwardRejected):
        return "PortForwardRejected", str(error)
    if isinstance(error, PortForwardFailed):
        return "PortForwardFailed", (
            f"the pod's node could not reach the DittoFS API port in the pod: {error}"
        )
    return "PortForwardFailed", str(error)


async def trusted_certificates(secrets: SecretReader, server: Obj, spec: Spec) -> str | None:
    """The certificates to trust when the API serves HTTPS (its own and its CA's); None for
    plain HTTP."""
    tls = spec.control_plane.tls
    if tls is None:
        return None
    namespace = server["metadata"]["namespace"]
    what = "TLS certificate of the REST API"
    certificate = await secrets.value(namespace, tls.secret_name, TLS_CERT_KEY, what=what)
    data = await secrets.data(namespace, tls.secret_name) or {}
    return certificate + "\n" + data.get(TLS_CA_KEY, "")


async def operator_certificate(
    secrets: SecretReader, server: Obj, spec: Spec
) -> ClientCertificate | None:
    """The client certificate to present when the API requires one (tls.clientCA)."""
    tls = spec.control_plane.tls
    if tls is None or tls.operator_certificate is None:
        return None
    namespace, secret = server["metadata"]["namespace"], tls.operator_certificate.secret_name
    what = "client certificate of the operator, spec.controlPlane.tls.operatorCertificate"
    return ClientCertificate(
        certificate=await secrets.value(namespace, secret, TLS_CERT_KEY, what=what),
        key=await secrets.value(namespace, secret, TLS_KEY_KEY, what=what),
    )


def ssl_context(
    spec: Spec, tls: str | None, client: ClientCertificate | None
) -> ssl.SSLContext | bool:
    """The TLS context of a session; a client certificate that does not load is a Problem."""
    if tls is None:
        return True
    try:
        return pinned_ssl_context(tls, client)
    except ssl.SSLError as error:
        tls_spec = spec.control_plane.tls
        assert tls_spec is not None and tls_spec.operator_certificate is not None
        secret = tls_spec.operator_certificate.secret_name
        raise Problem(
            "ClientCertificateInvalid",
            f"the client certificate in Secret {secret!r} (tls.crt, tls.key) does not load "
            f"({error.reason or error}): its certificate or key is not PEM, or the key is not "
            "the certificate's. Without it the operator cannot call the REST API, which "
            "requires client certificates (spec.controlPlane.tls.clientCA)",
        ) from None


def port_forward(client: KubeClient, server: Obj, spec: Spec, access: Access) -> PortForward | None:
    """The port-forward a session goes through, when the access is one; its `failure` says
    why a request through it found no server."""
    if access != "port-forward":
        return None
    meta = server["metadata"]
    return PortForward(client, meta["namespace"], names.pod(meta["name"]), spec.control_plane.port)


@contextlib.asynccontextmanager
async def session(
    spec: Spec,
    url: str,
    password: str,
    tls: str | None,
    forward: PortForward | None,
    *,
    client: ClientCertificate | None = None,
    tokens: Tokens | None = None,
    timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT,
) -> AsyncIterator[DittoFSClient]:
    """The server's REST API as its admin at `url` (through `forward` when given), trusting
    exactly the `tls` certificates when it serves HTTPS and presenting `client` when it asks
    for one; closed on leaving."""
    async with contextlib.AsyncExitStack() as stack:
        base_url = url
        if forward is not None:
            await stack.enter_async_context(forward)
            base_url = forwarded_url(spec, forward.local_port)
        connector = aiohttp.TCPConnector(ssl=ssl_context(spec, tls, client))
        http = await stack.enter_async_context(aiohttp.ClientSession(connector=connector))
        yield DittoFSClient(http, base_url, password, tokens=tokens, timeout=timeout)
