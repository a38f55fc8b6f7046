"""Services that route: the real kube-proxy for a testbed node, and the host side it needs.

kube-proxy (built from the same k8s.io/kubernetes version as the API server) runs in nftables
mode in the host's network namespace, which is the node's: it programs ClusterIP, NodePort and
LoadBalancer-address rules from the cluster's Services and EndpointSlices, as on any node.

What a real node has and this host lacks, `prepare_host()` adds, once and idempotently:
- a link `dfstb-svc` holding HOST_SERVICES_IP (where the API server and cluster DNS are reached
  from pods) with routes for the Service range and the load-balancer pool. A connection from the
  host needs a route to pass before kube-proxy's output DNAT rewrites it; through this link, a
  packet no rule rewrote is dropped on this machine instead of leaving it. It is a bridge with
  no ports, the kernel here has no dummy links;
- IPv4 forwarding, so a pod's packet to a Service is routed back onto the bridge after DNAT,
  with an nftables table of ours that drops anything forwarded between a testbed link and any
  other link: pods reach only this machine;
- bridge-nf-call-iptables (kubeadm's preflight requirement), so a reply from one pod to another
  on the same bridge passes conntrack and is un-DNATed.

Only one kube-proxy runs on the machine at a time (a lock file, waited for): two would fight
over the same nftables table. `KubeProxy.stop()` removes its tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

import yaml

from dittofs_controller.kube.client import KubeClient
from dittofs_controller.kube.resources import Resource

from . import netns, pki
from .controlplane import free_ports, kill_with_parent

SERVICE_NETWORK = ipaddress.IPv4Network(pki.SERVICE_CLUSTER_IP_RANGE)
HOST_LINK = "dfstb-svc"
FILTER_TABLE = "dittofs-testbed"
LOCK_PATH = Path("/run/dittofs-testbed-kube-proxy.lock")
LOCK_TIMEOUT = 900.0  # a whole e2e test may hold it
KUBE_PROXY_TABLES = (("ip", "kube-proxy"), ("ip6", "kube-proxy"))

ENDPOINTSLICES = Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice")
MANAGED_BY = "testbed.dittofs.io"


class KubeProxyError(RuntimeError):
    """kube-proxy or the host routing it needs could not be set up; says what and why."""


def _run(*argv: str, stdin: str | None = None) -> None:
    result = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise KubeProxyError(f"{' '.join(argv)}: {(result.stderr or result.stdout).strip()}")


def _sysctl(path: str, value: str) -> None:
    Path("/proc/sys", path).write_text(value)


def prepare_host() -> None:
    """The Service link, its routes, forwarding and the forwarding filter (see module doc)."""
    if os.geteuid() != 0:
        raise KubeProxyError("routing Services needs root (links, routes, nftables)")
    if not Path("/sys/class/net", HOST_LINK).exists():
        netns.ip("link", "add", HOST_LINK, "type", "bridge", check=False)
    netns.ip("link", "set", "dev", HOST_LINK, "up")
    netns.ip("addr", "replace", f"{netns.HOST_SERVICES_IP}/32", "dev", HOST_LINK)
    for network in (SERVICE_NETWORK, netns.LOAD_BALANCER_POOL):
        netns.ip("route", "replace", str(network), "dev", HOST_LINK)
    # Replaced whole each time, so a changed rule set never piles up on an old one.
    _run("nft", "-f", "-", stdin=_filter_rules())
    _sysctl("net/ipv4/ip_forward", "1")
    bridge_nf = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
    if not bridge_nf.exists():
        raise KubeProxyError(
            "br_netfilter is not loaded (/proc/sys/net/bridge missing): `modprobe br_netfilter`"
        )
    bridge_nf.write_text("1")


def _filter_rules() -> str:
    testbed = f'"{netns.BRIDGE_PREFIX}*"'  # the pods' bridges and the Service link
    return f"""
table inet {FILTER_TABLE}
delete table inet {FILTER_TABLE}
table inet {FILTER_TABLE} {{
    chain forward {{
        type filter hook forward priority filter; policy accept;
        iifname {testbed} oifname != {testbed} drop
        oifname {testbed} iifname != {testbed} drop
    }}
}}
"""


async def publish_apiserver(kube: KubeClient, port: int) -> None:
    """Point the `kubernetes` Service at the API server, listening on HOST_SERVICES_IP:port.

    The control plane runs with --endpoint-reconciler-type=none (it binds 127.0.0.1, which an
    EndpointSlice may not hold), so this slice is what in-cluster clients reach through
    10.0.0.1:443.
    """
    body = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "kubernetes",
            "namespace": "default",
            "labels": {
                "kubernetes.io/service-name": "kubernetes",
                "endpointslice.kubernetes.io/managed-by": MANAGED_BY,
            },
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [str(netns.HOST_SERVICES_IP)], "conditions": {"ready": True}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    }
    await kube.apply(ENDPOINTSLICES, body, field_manager=MANAGED_BY)


class KubeProxy:
    """One kube-proxy process for a node, in nftables mode, with the admin's kubeconfig."""

    def __init__(self, executable: Path, kubeconfig: Path, node_name: str, work_dir: Path) -> None:
        self.executable = executable
        self.kubeconfig = kubeconfig
        self.node_name = node_name
        self.work_dir = work_dir
        self.log_path = work_dir / "kube-proxy.log"
        self.healthz_port, self.metrics_port = free_ports(2)
        self._process: asyncio.subprocess.Process | None = None
        self._lock: IO[str] | None = None
        self._log: IO[bytes] | None = None

    async def start(self, timeout: float = 60.0) -> None:
        """Take the machine's kube-proxy lock, prepare the host, start and wait for healthy."""
        await self._take_lock()
        try:
            await asyncio.to_thread(prepare_host)
            self.work_dir.mkdir(parents=True, exist_ok=True)
            config = self.work_dir / "kube-proxy.yaml"
            config.write_text(yaml.safe_dump(self._config()))
            self._log = self.log_path.open("ab")
            self._process = await asyncio.create_subprocess_exec(
                str(self.executable),
                f"--config={config}",
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=kill_with_parent,
            )
            await self._wait_healthy(timeout)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop the process and remove its nftables tables; release the lock."""
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, 15)
            try:
                await asyncio.wait_for(self._process.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._process.pid, 9)
                await self._process.wait()
        self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._lock is not None:
            for family, table in KUBE_PROXY_TABLES:
                with contextlib.suppress(KubeProxyError):
                    await asyncio.to_thread(_run, "nft", "delete", "table", family, table)
            self._lock.close()  # releases the flock
            self._lock = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError as error:
            return f"(no kube-proxy log: {error})"

    def _config(self) -> dict[str, object]:
        return {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self.kubeconfig)},
            "hostnameOverride": self.node_name,
            "mode": "nftables",
            # Pod addresses: traffic from elsewhere to a ClusterIP is masqueraded, as on a node.
            "clusterCIDR": str(netns.NETWORK),
            "detectLocalMode": "ClusterCIDR",
            "healthzBindAddress": f"127.0.0.1:{self.healthz_port}",
            "metricsBindAddress": f"127.0.0.1:{self.metrics_port}",
            # Leave the host's conntrack table sizes and timeouts as they are.
            "conntrack": {
                "maxPerCore": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
            "nftables": {"syncPeriod": "30s", "minSyncPeriod": "0s"},
        }

    async def _take_lock(self, timeout: float = LOCK_TIMEOUT) -> None:
        """Wait for the machine's kube-proxy lock (another test run's node may hold it)."""
        lock = await asyncio.to_thread(LOCK_PATH.open, "a+")
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    lock.seek(0)
                    holder = lock.read().strip() or "unknown"
                    lock.close()
                    raise KubeProxyError(
                        f"another testbed kube-proxy (pid {holder}) held this machine's nftables "
                        f"tables for {timeout:.0f} s: only one node can route Services at a time"
                    ) from None
                await asyncio.sleep(0.5)
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        self._lock = lock

    async def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.healthz_port}/healthz"
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.returncode is not None:
                raise KubeProxyError(
                    f"kube-proxy exited with {self._process.returncode}:\n{self.log_tail()}"
                )
            if await asyncio.to_thread(_http_ok, url):
                return
            await asyncio.sleep(0.2)
        raise KubeProxyError(f"kube-proxy not healthy after {timeout} s:\n{self.log_tail()}")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


async def wait_connectable(host: str, port: int, timeout: float = 60.0) -> None:
    """Until a TCP connection to host:port opens, else ConnectionError.

    kube-proxy programs a Service's new address a moment after it is published (as on any
    cluster), so a client's first try may find nothing there yet; anything longer is a fault.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2.0)
        except (OSError, TimeoutError) as error:
            if time.monotonic() > deadline:
                raise ConnectionError(
                    f"nothing accepts connections at {host}:{port} after {timeout} s: {error}"
                ) from None
            await asyncio.sleep(0.3)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return
