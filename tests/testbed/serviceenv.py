"""The environment kubelet gives a container for Services (pkg/kubelet/envvars), a pure function.

In-cluster clients find the API server through KUBERNETES_SERVICE_HOST/PORT; Docker-links style
variables (`<NAME>_SERVICE_HOST`, `<NAME>_PORT_<port>_TCP`...) are there for every Service of the
pod's namespace unless the pod sets `enableServiceLinks: false`. Kubelet lists the Services when
the container starts, so Services created later are not in it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

JSON = dict[str, Any]

MASTER_NAMESPACE = "default"
MASTER_SERVICE = "kubernetes"


def service_env(services: Iterable[JSON], namespace: str, *, enable_links: bool) -> dict[str, str]:
    """Variables for `services` (of any namespace) as kubelet computes them for a pod."""
    env: dict[str, str] = {}
    for service in services:
        meta, spec = service["metadata"], service.get("spec") or {}
        ip = spec.get("clusterIP")
        if not ip or ip == "None" or not spec.get("ports"):
            continue
        is_master = meta["name"] == MASTER_SERVICE and meta["namespace"] == MASTER_NAMESPACE
        if meta["namespace"] != namespace and not is_master:
            continue
        if not enable_links and not is_master:
            continue
        env.update(_links(meta["name"], ip, spec["ports"]))
    return env


def _links(name: str, ip: str, ports: list[JSON]) -> dict[str, str]:
    prefix = name.upper().replace("-", "_")
    first = ports[0]
    env = {
        f"{prefix}_SERVICE_HOST": ip,
        f"{prefix}_SERVICE_PORT": str(first["port"]),
        f"{prefix}_PORT": _url(ip, first),
    }
    for port in ports:
        if port.get("name"):
            env[f"{prefix}_SERVICE_PORT_{port['name'].upper().replace('-', '_')}"] = str(
                port["port"]
            )
        protocol = str(port.get("protocol", "TCP")).upper()
        base = f"{prefix}_PORT_{port['port']}_{protocol}"
        env[base] = _url(ip, port)
        env[f"{base}_PROTO"] = protocol.lower()
        env[f"{base}_PORT"] = str(port["port"])
        env[f"{base}_ADDR"] = ip
    return env


def _url(ip: str, port: JSON) -> str:
    return f"{str(port.get('protocol', 'TCP')).lower()}://{ip}:{port['port']}"
