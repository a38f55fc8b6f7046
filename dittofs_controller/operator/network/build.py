"""Desired Services, Ingress, NetworkPolicies and ServiceMonitor of a DittoServer, and what the
live Services say.

Pure functions of the DittoServer and its parsed spec. The reconciler applies what `services`,
`ingress`, `network_policies` and `service_monitor` build (None = the child must not exist) and
publishes what `judge` and `endpoints` conclude from the Services as the API server returned
them (allocated node ports, load-balancer addresses).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from dittofs_controller.api import v1alpha1
from dittofs_controller.kube.resources import SERVICE_MONITORS
from dittofs_controller.operator import names
from dittofs_controller.operator.children import (
    Obj,
    child_metadata,
    labels,
    object_for,
    selector_labels,
    stamped,
)
from dittofs_controller.operator.conditions import Outcome

Spec = v1alpha1.DittoServerSpec

SERVICE_PURPOSES = ("nfs", "smb", "api")
POLICY_PURPOSES = ("api", "files")

CLUSTER_ISSUER_ANNOTATION = "cert-manager.io/cluster-issuer"
ISSUER_ANNOTATION = "cert-manager.io/issuer"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set on every namespace by the API server
NODE_IP = "<node-ip>"  # a NodePort is reached on any node's address, which we cannot pick
MOUNT_POINT = "/mnt/dittofs"
METRICS_PATH = "/metrics"  # DittoFS' metrics.path default


def _server_name(server: Obj) -> str:
    name: str = server["metadata"]["name"]
    return name


def _tcp(name: str, port: int, target: int) -> Obj:
    return {"name": name, "port": port, "targetPort": target, "protocol": "TCP"}


def _exposure(spec: Spec, purpose: str) -> v1alpha1.ServiceSpec:
    expose = spec.expose
    return {"nfs": expose.nfs, "smb": expose.smb, "api": expose.api}[purpose]


def _service_ports(spec: Spec, purpose: str) -> list[Obj]:
    """Published port -> container port; empty when the purpose's adapter is disabled."""
    nfs, smb, control_plane = spec.adapters.nfs, spec.adapters.smb, spec.control_plane
    if purpose == "nfs":
        ports = [_tcp("nfs", nfs.service_port, nfs.port)] if nfs.enabled else []
        if ports and nfs.portmapper.enabled:
            portmapper = nfs.portmapper
            ports.append(_tcp("portmapper", portmapper.service_port, portmapper.port))
        return ports
    if purpose == "smb":
        return [_tcp("smb", smb.service_port, smb.port)] if smb.enabled else []
    ports = [_tcp("api", control_plane.port, control_plane.port)]
    if control_plane.metrics.enabled:
        metrics = control_plane.metrics.port
        ports.append(_tcp("metrics", metrics, metrics))
    return ports


def service(server: Obj, spec: Spec, purpose: str) -> Obj | None:
    """The Service of `purpose` (nfs, smb or api), or None when its adapter is disabled.

    Only fields the spec sets are sent: a nodePort or healthCheckNodePort the API server
    allocated is not ours and is never fought over. Fields valid only for some types are sent
    only for those types, so changing the type (LoadBalancer -> NodePort...) drops them in the
    same apply.
    """
    ports = _service_ports(spec, purpose)
    if not ports:
        return None
    expose = _exposure(spec, purpose)
    external = expose.type != "ClusterIP"
    if external and expose.node_port is not None:
        ports[0]["nodePort"] = expose.node_port
    body: Obj = {
        "type": expose.type,
        "selector": selector_labels(_server_name(server)),
        "ports": ports,
    }
    if external and expose.external_traffic_policy:
        body["externalTrafficPolicy"] = expose.external_traffic_policy
    if expose.type == "LoadBalancer":
        if expose.load_balancer_class:
            body["loadBalancerClass"] = expose.load_balancer_class
        if expose.load_balancer_source_ranges:
            body["loadBalancerSourceRanges"] = list(expose.load_balancer_source_ranges)
    metadata = child_metadata(
        server,
        names.service(_server_name(server), purpose),
        purpose,
        extra_labels=expose.labels,
        annotations=expose.annotations,
    )
    return stamped(object_for("v1", "Service", metadata, spec=body))


def services(server: Obj, spec: Spec) -> dict[str, Obj | None]:
    return {purpose: service(server, spec, purpose) for purpose in SERVICE_PURPOSES}


def foreign_ports(desired: Obj, live: Obj) -> bool:
    """Whether the live Service has ports the desired one lacks, so its port list must be
    replaced before applying: server-side apply keeps list entries another field manager owns,
    so after a hand edit of a port (`kubectl edit`) the applied port would join the edited one
    under the same name, which the API server rejects on every later apply."""
    wanted = {_port_key(port) for port in desired["spec"].get("ports") or ()}
    return any(
        _port_key(port) not in wanted for port in (live.get("spec") or {}).get("ports") or ()
    )


def _port_key(port: Obj) -> tuple[int, str]:
    """How server-side apply tells a Service's ports apart."""
    return int(port["port"]), port.get("protocol") or "TCP"


def needs_recreate(desired: Obj, live: Obj) -> bool:
    """Whether the Service must be deleted first: the API server refuses to change the
    loadBalancerClass of a Service that stays a LoadBalancer."""
    want, have = desired["spec"], live.get("spec") or {}
    stays_load_balancer: bool = want["type"] == have.get("type") == "LoadBalancer"
    return stays_load_balancer and want.get("loadBalancerClass") != have.get("loadBalancerClass")


def ingress(server: Obj, spec: Spec) -> Obj | None:
    """The Ingress of the REST API, or None when spec.expose.ingress is disabled.

    With controlPlane.tls the API Service speaks HTTPS, so the ingress controller must open TLS
    connections to it. How to say so is controller-specific and deliberately not set here (the
    community ingress-nginx lost its maintenance): ingress-nginx needs the annotation
    `nginx.ingress.kubernetes.io/backend-protocol: HTTPS`, Traefik a ServersTransport or an
    `https` port scheme; put it in spec.expose.ingress.annotations.
    """
    options = spec.expose.ingress
    if not options.enabled:
        return None
    server_name = _server_name(server)
    annotations = dict(options.annotations)
    if options.cluster_issuer:
        annotations[CLUSTER_ISSUER_ANNOTATION] = options.cluster_issuer
    if options.issuer:
        annotations[ISSUER_ANNOTATION] = options.issuer
    backend = {
        "service": {
            "name": names.service(server_name, "api"),
            "port": {"number": spec.control_plane.port},
        }
    }
    path = {"path": options.path, "pathType": "Prefix", "backend": backend}
    rule: Obj = {"http": {"paths": [path]}}
    hosts = [options.host] if options.host else []
    if options.host:
        rule["host"] = options.host
    body: Obj = {"ingressClassName": options.class_name, "rules": [rule]}
    issued = options.cluster_issuer or options.issuer
    secret = options.tls_secret_name or (names.ingress_tls_secret(server_name) if issued else None)
    if secret:
        body["tls"] = [{"hosts": hosts, "secretName": secret}]
    metadata = child_metadata(
        server, names.ingress(server_name), "api", annotations=annotations or None
    )
    return stamped(object_for("networking.k8s.io/v1", "Ingress", metadata, spec=body))


def _peer(peer: Obj) -> Obj:
    """A user's NetworkPolicyPeer as the API server stores it: empty label maps and lists are
    omitted on the wire, so keeping them would look like drift on every pass."""
    return {
        key: {k: v for k, v in value.items() if v not in ({}, [], None)}
        if isinstance(value, dict)
        else value
        for key, value in peer.items()
    }


def operator_peer(operator_namespace: str) -> Obj:
    return {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: operator_namespace}}}


def _policy(server: Obj, purpose: str, ports: list[int], peers: list[Obj]) -> Obj:
    rule: Obj = {"ports": [{"port": port, "protocol": "TCP"} for port in ports]}
    if peers:
        rule["from"] = peers
    body = {
        "podSelector": {"matchLabels": selector_labels(_server_name(server))},
        "policyTypes": ["Ingress"],
        "ingress": [rule],
    }
    metadata = child_metadata(
        server, names.network_policy(_server_name(server), purpose), "network-policy"
    )
    return stamped(object_for("networking.k8s.io/v1", "NetworkPolicy", metadata, spec=body))


def network_policies(server: Obj, spec: Spec, operator_namespace: str) -> dict[str, Obj | None]:
    """The api and files NetworkPolicies, or None for those that must not exist.

    api: the REST API and metrics ports, from apiFrom plus the operator's namespace, always.
    Requiring users to list the operator would let one forgotten entry lock the operator out of
    the server it manages (the Go operator's mTLS mistake in another form); any pod of the
    operator's namespace may reach the port, and the API still demands the admin's login.
    The ingress controller and Prometheus must be listed in apiFrom: nothing identifies them.

    files: the NFS (and portmapper) and SMB container ports, from fileFrom, or from anywhere
    when it is empty. A policy sees the pod's ports, not the Service's, and client addresses
    only survive a load balancer with externalTrafficPolicy Local (ipBlock peers need that).
    It is omitted when no file protocol is enabled: a rule without ports would allow them all.
    """
    options = spec.expose.network_policy
    if not options.enabled:
        return dict.fromkeys(POLICY_PURPOSES)
    control_plane, adapters = spec.control_plane, spec.adapters
    api_ports = [control_plane.port]
    if control_plane.metrics.enabled:
        api_ports.append(control_plane.metrics.port)
    api_peers = [operator_peer(operator_namespace), *map(_peer, options.api_from)]
    file_ports = []
    if adapters.nfs.enabled:
        file_ports.append(adapters.nfs.port)
        if adapters.nfs.portmapper.enabled:
            file_ports.append(adapters.nfs.portmapper.port)
    if adapters.smb.enabled:
        file_ports.append(adapters.smb.port)
    files_peers = [_peer(peer) for peer in options.file_from]
    return {
        "api": _policy(server, "api", api_ports, api_peers),
        "files": _policy(server, "files", file_ports, files_peers) if file_ports else None,
    }


def service_monitor(server: Obj, spec: Spec) -> Obj | None:
    """The ServiceMonitor scraping the API Service's `metrics` port, or None unless metrics and
    spec.controlPlane.metrics.serviceMonitor are enabled.

    It selects the API Service by the operator's own labels only: the user's extra Service
    labels (spec.expose.api.labels) may change, the component label never does. The metrics
    listener speaks plain HTTP on DittoFS' default path (the config never sets metrics.path).
    """
    metrics = spec.control_plane.metrics
    options = metrics.service_monitor
    if not (metrics.enabled and options.enabled):
        return None
    server_name = _server_name(server)
    endpoint: Obj = {"port": "metrics", "path": METRICS_PATH}
    if options.interval:
        endpoint["interval"] = options.interval
    body = {"selector": {"matchLabels": labels(server_name, "api")}, "endpoints": [endpoint]}
    metadata = child_metadata(
        server, names.service_monitor(server_name), "metrics", extra_labels=options.labels
    )
    return stamped(
        object_for(SERVICE_MONITORS.api_version, SERVICE_MONITORS.kind, metadata, spec=body)
    )


# --- reading the live Services back ---------------------------------------------------------


def _load_balancer_host(service: Obj) -> str | None:
    ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or ()
    for entry in ingress:
        host = entry.get("ip") or entry.get("hostname")
        if host:
            return str(host)
    return None


def _bracket(host: str) -> str:
    """An IPv6 address in brackets, as host:port and NFS's host:/path need it."""
    try:
        return f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    except ValueError:
        return host


def _hostport(host: str, port: int | str) -> str:
    return f"{_bracket(host)}:{port}"


def reach(live: Mapping[str, Obj | None], purpose: str) -> tuple[str, int | str] | None:
    """(host, port) where clients reach the main port of a purpose's Service, None while it is
    absent or its load balancer has no address: the LoadBalancer's address and published
    port, any node's address and the node port, or the cluster DNS name for a ClusterIP."""
    service = live.get(purpose)
    if service is None:
        return None
    spec = service.get("spec") or {}
    port = next((p for p in spec.get("ports") or () if p.get("name") == purpose), None)
    if port is None:
        return None
    kind = spec.get("type")
    if kind == "LoadBalancer":
        host = _load_balancer_host(service)
        return (host, port["port"]) if host else None
    if kind == "NodePort":
        return (NODE_IP, port["nodePort"]) if port.get("nodePort") else None
    meta = service["metadata"]
    return (f"{meta['name']}.{meta['namespace']}.svc", port["port"])


def mount_hint(host: str, port: int | str, share: str) -> str:
    """NFSv4.1 mount command, with the NFSv3 variant as a comment (MOUNT and NLM share the NFS
    port, so v3 clients need no rpcbind when told the port)."""
    target = f"{_bracket(host)}:{share} {MOUNT_POINT}"
    return (
        f"mount -t nfs -o vers=4.1,port={port} {target}  # NFSv3: mount -t nfs -o "
        f"vers=3,port={port},mountport={port},nolock {target}"
    )


def endpoints(spec: Spec, live: Mapping[str, Obj | None]) -> Obj:
    """status.endpoints from the live Services (purpose -> Service); unknown ones omitted."""
    result: Obj = {}
    nfs_at, smb_at, api_at = (reach(live, purpose) for purpose in SERVICE_PURPOSES)
    if nfs_at:
        result["nfs"] = _hostport(*nfs_at)
    if smb_at:
        result["smb"] = _hostport(*smb_at)
    ingress = spec.expose.ingress
    if ingress.enabled and ingress.host:
        result["api"] = f"https://{ingress.host}{ingress.path.rstrip('/')}"
    elif api_at:
        scheme = "https" if spec.control_plane.tls else "http"
        result["api"] = f"{scheme}://{_hostport(*api_at)}"
    if nfs_at and spec.shares:
        result["mountHint"] = mount_hint(*nfs_at, spec.shares[0].name)
    return result


def judge(server: Obj, live: Mapping[str, Obj | None], found: Obj) -> Outcome:
    """NetworkReady from the live Services (None: being recreated) and their endpoints.

    A load balancer without an address is progress, not failure: Unknown, and the Service's
    status update (the watch) triggers the next look.
    """
    recreating = sorted(
        names.service(_server_name(server), purpose)
        for purpose, service in live.items()
        if service is None
    )
    if recreating:
        return Outcome.unknown(
            "WaitingForService",
            f"waiting for Service {', '.join(recreating)} to be deleted and recreated",
        )
    pending = sorted(
        service["metadata"]["name"]
        for service in live.values()
        if service is not None
        and (service.get("spec") or {}).get("type") == "LoadBalancer"
        and not _load_balancer_host(service)
    )
    if pending:
        return Outcome.unknown(
            "WaitingForLoadBalancer",
            f"waiting for a load-balancer address for Service {', '.join(pending)} (type "
            "LoadBalancer needs a load-balancer implementation: a cloud controller, MetalLB...)",
        )
    shown = ", ".join(f"{key} {found[key]}" for key in ("nfs", "smb", "api") if key in found)
    return Outcome.true("Exposed", f"reachable: {shown}")
