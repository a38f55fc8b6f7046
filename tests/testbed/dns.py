"""Cluster DNS for the testbed: the real CoreDNS, serving cluster.local from the API server.

CoreDNS runs as a local process outside the cluster (its kubernetes plugin reads the API through
a kubeconfig) and listens on one address of this machine. So that pods find it the way they do
in a real cluster, `start()` also publishes the `kube-dns` Service in kube-system at
CLUSTER_DNS_IP, with an EndpointSlice pointing at that address: with kube-proxy routing
ClusterIPs, a pod whose resolv.conf is `resolv_conf(namespace)` resolves Service names.

The API server refuses loopback endpoint addresses (pods could not reach them anyway): a CoreDNS
on 127.0.0.1 serves the host only, and its EndpointSlice has no endpoints. Listen on a node
bridge's gateway (netns.Bridge.gateway) to serve pods.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from dittofs_controller.kube.client import KubeClient, connect
from dittofs_controller.kube.resources import SERVICES, Resource

from . import binaries, netns, pki
from .controlplane import _in_main_thread, _Process, _tail, _terminate, kill_with_parent

CLUSTER_DOMAIN = "cluster.local"
# Tenth address of the service range, as kubeadm picks: kubelets' --cluster-dns.
CLUSTER_DNS_IP = "10.0.0.10"
SERVICE_NAME = "kube-dns"
SERVICE_NAMESPACE = "kube-system"
# Marks the EndpointSlice as ours; the EndpointSlice controller leaves such slices alone.
MANAGED_BY = "testbed.dittofs.io"
FIELD_MANAGER = "testbed-cluster-dns"

ENDPOINTSLICES = Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice")

_PORT_ATTEMPTS = 3


class ClusterDNSError(RuntimeError):
    """CoreDNS failed to start or to answer; the message carries its log tail."""


def search_domains(namespace: str, cluster_domain: str = CLUSTER_DOMAIN) -> list[str]:
    """The search path kubelet gives a ClusterFirst pod of `namespace`."""
    return [f"{namespace}.svc.{cluster_domain}", f"svc.{cluster_domain}", cluster_domain]


def resolv_conf(
    namespace: str, nameserver: str = CLUSTER_DNS_IP, cluster_domain: str = CLUSTER_DOMAIN
) -> str:
    """/etc/resolv.conf as kubelet writes it for a ClusterFirst pod of `namespace`.

    ndots:5: a name with fewer than five dots (`web.team-a`, `web.team-a.svc`) tries the search
    path before being looked up as it is, so partial Service names resolve.
    """
    return (
        f"nameserver {nameserver}\n"
        f"search {' '.join(search_domains(namespace, cluster_domain))}\n"
        "options ndots:5\n"
    )


class ClusterDNS:
    """CoreDNS on `listen_ip:port` (port 0: a free one), plus the kube-dns Service for it."""

    def __init__(
        self,
        kubeconfig: Path,
        listen_ip: str = "127.0.0.1",
        port: int = 0,
        *,
        work_dir: Path | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.listen_ip = listen_ip
        self.port = port
        self.start_timeout = start_timeout
        self._given_port = port
        self._given_work_dir = work_dir
        self.work_dir: Path | None = None
        self._process: _Process | None = None

    @property
    def corefile_path(self) -> Path:
        return self._work / "Corefile"

    @property
    def log_path(self) -> Path:
        """CoreDNS's stdout and stderr, one line per query (the log plugin)."""
        return self._work / "coredns.log"

    def running(self) -> bool:
        return self._process is not None and self._process.running()

    async def start(self) -> Self:
        """Start CoreDNS, wait until it answers from synced informers, publish kube-dns."""
        exe = await asyncio.to_thread(binaries.executable, "coredns", "coredns")
        self.work_dir = self._given_work_dir or Path(tempfile.mkdtemp(prefix="dittofs-dns-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        try:
            for attempt in range(_PORT_ATTEMPTS):
                try:
                    await self._start(exe)
                    break
                except ClusterDNSError as exc:
                    # A picked port can be taken before CoreDNS binds it: rare, pick again.
                    in_use = "address already in use" in str(exc)
                    if self._given_port or not in_use or attempt == _PORT_ATTEMPTS - 1:
                        raise
                    self._stop_process()
            kube = await connect(str(self.kubeconfig), None)
            try:
                await self._publish(kube)
            finally:
                await kube.close()
        except ClusterDNSError as exc:
            self._stop_process()
            exc.add_note(f"logs kept in {self.work_dir}")
            raise
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Terminate CoreDNS. kube-dns stays, as a Service outlives its pods; the next start
        updates it."""
        self._stop_process()
        if self.work_dir is not None and self._given_work_dir is None:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- process ------------------------------------------------------------------------------

    async def _start(self, exe: Path) -> None:
        self.port = self._given_port or _free_dns_port(self.listen_ip)
        self.corefile_path.write_text(self._corefile())
        self._process = self._spawn(exe)
        await self._wait_answering(self._process)

    def _spawn(self, exe: Path) -> _Process:
        proc = _Process("coredns", [str(exe), "-conf", str(self.corefile_path)], self.log_path)
        proc.log_file = self.log_path.open("ab")
        # Own session and death with the parent, as the control plane's processes.
        proc.popen = subprocess.Popen(
            proc.args,
            stdin=subprocess.DEVNULL,
            stdout=proc.log_file,
            stderr=subprocess.STDOUT,
            cwd=self.work_dir,
            start_new_session=True,
            preexec_fn=kill_with_parent if _in_main_thread() else None,
        )
        return proc

    async def _wait_answering(self, proc: _Process) -> None:
        """Until CoreDNS resolves the `kubernetes` Service, which every cluster has: that
        proves it listens and its informers have synced (until then it answers NXDOMAIN)."""
        name = f"kubernetes.default.svc.{CLUSTER_DOMAIN}"
        deadline = time.monotonic() + self.start_timeout
        while True:
            if not proc.running():
                code = proc.popen.returncode if proc.popen else None
                raise ClusterDNSError(
                    f"coredns exited with code {code} while starting:\n{_tail(self.log_path)}"
                )
            answers = await asyncio.to_thread(_query_a, self.listen_ip, self.port, name)
            if answers:
                return
            if time.monotonic() > deadline:
                raise ClusterDNSError(
                    f"coredns did not resolve {name} within {self.start_timeout:.0f} s:\n"
                    + _tail(self.log_path)
                )
            await asyncio.sleep(0.1)

    def _stop_process(self) -> None:
        proc, self._process = self._process, None
        if proc is None:
            return
        _terminate([proc])
        if proc.log_file is not None:
            proc.log_file.close()

    # -- configuration ------------------------------------------------------------------------

    def _corefile(self) -> str:
        """One server block for the cluster domain and the reverse zones of services and pods."""
        zones = " ".join(f"{zone}:{self.port}" for zone in _zones())
        return f"""\
{zones} {{
    bind {self.listen_ip}
    errors
    log
    kubernetes {{
        kubeconfig {self.kubeconfig}
        pods insecure
    }}
    loadbalance
    # A name looked up just before its Service appears must resolve as soon as CoreDNS sees it.
    cache 30 {{
        disable denial
    }}
}}
"""

    async def _publish(self, kube: KubeClient) -> None:
        """Create or update kube-dns and its EndpointSlice to point at this CoreDNS."""
        ports = [("dns", "UDP"), ("dns-tcp", "TCP")]
        labels = {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"}
        service: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": SERVICE_NAME, "namespace": SERVICE_NAMESPACE, "labels": labels},
            "spec": {
                "clusterIP": CLUSTER_DNS_IP,
                "ports": [
                    {"name": n, "protocol": p, "port": 53, "targetPort": self.port}
                    for n, p in ports
                ],
            },
        }
        endpoints = []
        if not ipaddress.ip_address(self.listen_ip).is_loopback:
            endpoints.append(
                {"addresses": [self.listen_ip], "conditions": {"ready": True, "serving": True}}
            )
        endpoint_slice: dict[str, Any] = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{SERVICE_NAME}-testbed",
                "namespace": SERVICE_NAMESPACE,
                "labels": {
                    "kubernetes.io/service-name": SERVICE_NAME,
                    "endpointslice.kubernetes.io/managed-by": MANAGED_BY,
                },
            },
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": [{"name": n, "protocol": p, "port": self.port} for n, p in ports],
        }
        await kube.apply(SERVICES, service, field_manager=FIELD_MANAGER)
        await kube.apply(ENDPOINTSLICES, endpoint_slice, field_manager=FIELD_MANAGER)

    @property
    def _work(self) -> Path:
        if self.work_dir is None:
            raise ClusterDNSError("cluster DNS not started")
        return self.work_dir


def _zones() -> list[str]:
    """cluster.local and the in-addr.arpa zones of the service and pod networks."""
    nets = [ipaddress.IPv4Network(pki.SERVICE_CLUSTER_IP_RANGE), netns.NETWORK]
    return [CLUSTER_DOMAIN, *(_reverse_zone(net) for net in nets)]


def _reverse_zone(net: ipaddress.IPv4Network) -> str:
    """10.233.0.0/16 -> 233.10.in-addr.arpa (octet boundaries only, as DNS delegation is)."""
    if net.prefixlen % 8:
        raise ValueError(f"{net} does not end on an octet boundary")
    octets = str(net.network_address).split(".")[: net.prefixlen // 8]
    return ".".join([*reversed(octets), "in-addr", "arpa"])


def _free_dns_port(ip: str) -> int:
    """A port free for both UDP and TCP on `ip` (DNS needs both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((ip, 0))
            port: int = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((ip, port))
                except OSError:
                    continue
                return port
    raise ClusterDNSError(f"no port free for both UDP and TCP on {ip}")


def _query_a(ip: str, port: int, name: str, timeout: float = 0.5) -> int:
    """Number of answers to a UDP query for `name`'s A records (0 on any error or timeout)."""
    query_id = int.from_bytes(os.urandom(2), "big")
    qname = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"
    # Header: id, flags (recursion desired), 1 question; then QTYPE A, QCLASS IN.
    packet = struct.pack("!6H", query_id, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!2H", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        with contextlib.suppress(OSError, struct.error):
            sock.sendto(packet, (ip, port))
            reply = sock.recv(4096)
            reply_id, flags, _, answers = struct.unpack("!4H", reply[:8])
            if reply_id == query_id and flags & 0x000F == 0:
                return int(answers)
    return 0
