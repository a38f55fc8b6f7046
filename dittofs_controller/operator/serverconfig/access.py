"""Where the DittoFS REST API of a server is reached (--dittofs-api-access), and what a
port-forward that failed means (pure: no I/O)."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Literal

from dittofs_controller.kube.portforward import (
    PortForwardError,
    PortForwardFailed,
    PortForwardRejected,
)
from dittofs_controller.operator import names
from dittofs_controller.operator.children import Obj
from dittofs_controller.operator.serverconfig.model import Spec

Access = Literal["service", "pod", "port-forward"]

TLS_CA_KEY = "ca.crt"


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
