"""A kubelet (and scheduler) for one node: runs real binaries from the pods the operator writes.

The testbed has no scheduler and no kubelet, so pods would stay Pending. A `Node` registers a
Ready Node object, binds unscheduled pods whose nodeSelector it matches, and runs each container
whose image maps to local files (default_images(): `marmos91c/dittofs` -> the `dfs` built by
binaries.py, at /app/dfs as in the real image; `testbed.local/host` -> the host's own programs,
for tests of the node itself; pass `images=` for more). Each pod gets:

- its own network namespace on the node's bridge (netns.py); the host reaches the pod IP;
- env from values, Secrets, ConfigMaps, the downward API and resource fields, `$(VAR)` expanded;
- volumes: configMap/secret/projected/downwardAPI materialised as files, emptyDir, hostPath and
  persistentVolumeClaim (the bound PV's directory, so data outlives the pod), mounted at their
  mountPaths in a private mount namespace, readOnly honoured; fsGroup applied as kubelet does;
- the image's user (65532 for DittoFS) unless runAsUser/runAsGroup say otherwise,
  runAsNonRoot and readOnlyRootFilesystem enforced; capabilities/seccomp/privileged ignored;
- probes (httpGet, tcpSocket, exec): readiness drives Ready, liveness restarts, startup gates;
- restarts with exponential backoff per restartPolicy, restartCount and last terminated state;
- graceful deletion: preStop, SIGTERM, wait up to the grace period, SIGKILL, then the pod object
  is removed (gracePeriodSeconds=0) so StatefulSet/Deployment controllers replace it.

Services and names: with `kubeconfig=` the node runs the real kube-proxy (kubeproxy.py), so
ClusterIPs, NodePorts (at the node's address) and LoadBalancer addresses route to the pods, from
the host and from pods, and the `kubernetes` Service reaches the API server; and cluster DNS
(dns.py: CoreDNS behind the kube-dns Service), which pods of dnsPolicy ClusterFirst use with
kubelet's search domains. Without it their resolv.conf points at their own loopback, so lookups
fail fast instead of timing out. Containers get kubelet's Service environment (serviceenv.py).

Not emulated: resource
limits (no cgroups; the dfs process sees the host's memory), image pulls, hostPort, ephemeral
containers, pod-level resources, a PID namespace (containers see the host's processes). An
image with no local mapping makes the pod Failed (reason UnknownImage); note that a StatefulSet
then deletes and re-creates it in a loop. Image tags are not checked: any tag of a mapped
repository runs the one local binary.

Pods reach the host at `node.address` (services listening on 0.0.0.0).

Port forwarding: the node serves the kubelet's port-forward endpoint at its InternalIP, port
10250 (streaming.py), so `pods/{name}/portforward` through kube-apiserver reaches its pods as
in a real cluster. The control plane must present a kubelet client certificate of its CA
(controlplane.py does); a cluster reused by kubeconfig that was started without one refuses.

Logs: stdout+stderr of each container run go to a file, `node.logs(namespace, pod)` reads them
(also after the pod is gone; `instance=-2` for the pod of that name before the current one).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import logging
import math
import os
import platform
import re
import shutil
import signal
from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from dittofs_controller.kube.client import ApiError, KubeClient
from dittofs_controller.kube.resources import CONFIGMAPS, PODS, PVCS, SECRETS, SERVICES, Resource

from . import netns
from .dns import CLUSTER_DNS_IP, ClusterDNS, resolv_conf, search_domains
from .kubeproxy import KubeProxy, publish_apiserver
from .provisioner import PVS, Provisioner, list_watch, parse_quantity
from .serviceenv import MASTER_NAMESPACE, MASTER_SERVICE, service_env
from .streaming import KUBELET_PORT, StreamingServer

log = logging.getLogger("testbed.node")

JSON = dict[str, Any]

NODES = Resource("", "v1", "nodes", "Node", namespaced=False)
CORE_EVENTS = Resource("", "v1", "events", "Event")
SERVICEACCOUNTS = Resource("", "v1", "serviceaccounts", "ServiceAccount")

KUBELET_VERSION = "v1.35.4-testbed"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The image this node runs with the host's own programs (sh, sleep, cat...): for tests of the
# node itself. Commands must be given in the pod spec.
HOST_IMAGE = "testbed.local/host"


@dataclass(frozen=True)
class Image:
    """What an image means on this node: host files placed in the container root + its config."""

    files: Mapping[str, Path] = field(default_factory=dict)  # container path -> host file
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    workdir: str = "/"
    user: tuple[int, int] | None = None  # USER uid:gid; None = root
    home: str = "/"  # $HOME of `user` (from the image's /etc/passwd)
    env: Mapping[str, str] = field(default_factory=lambda: {"PATH": DEFAULT_PATH})
    dirs: Mapping[str, tuple[int, int, int]] = field(default_factory=dict)  # path: uid,gid,mode
    # Image VOLUMEs: writable scratch directories even under readOnlyRootFilesystem, as
    # containerd mounts them by default.
    volumes: tuple[str, ...] = ()


def dittofs_image(dfs_binary: Path) -> Image:
    """marmos91c/dittofs as its Dockerfile builds it (Alpine, USER 65532:65532, /app/dfs)."""
    owned = (65532, 65532, 0o755)
    return Image(
        files={"/app/dfs": Path(dfs_binary)},
        entrypoint=("/app/dfs",),
        cmd=("start", "--foreground", "--config", "/config/config.yaml"),
        workdir="/app",
        user=(65532, 65532),
        home="/app",
        dirs={"/app": owned, "/data": owned, "/config": owned},
        volumes=("/data/metadata", "/data/content", "/data/cache", "/config"),
    )


def default_images(dfs_binary: Path | None) -> dict[str, Image]:
    """The image table: repository (no registry, no tag) -> Image."""
    images = {HOST_IMAGE: Image()}
    if dfs_binary is not None:
        images["marmos91c/dittofs"] = dittofs_image(dfs_binary)
    return images


def image_repository(image: str) -> str:
    """`docker.io/marmos91c/dittofs:v0.29.0@sha256:..` -> `marmos91c/dittofs`."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: len(name) - len(last)] + last.split(":", 1)[0]
    for registry in ("docker.io/", "index.docker.io/", "registry-1.docker.io/"):
        name = name.removeprefix(registry)
    return name.removeprefix("library/")


class _NotReady(Exception):
    """Setup cannot complete yet (claim unbound, ConfigMap missing...): retried."""


class _ConfigError(Exception):
    """A container cannot be configured (missing key, runAsNonRoot...): it waits, retried."""


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: defined names are replaced, $$ escapes, the rest stays."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text):
            if text[i + 1] == "$":
                out.append("$")
                i += 2
                continue
            if text[i + 1] == "(" and (end := text.find(")", i + 2)) != -1:
                name = text[i + 2 : end]
                out.append(env[name] if name in env else text[i : end + 1])
                i = end + 1
                continue
        out.append(text[i])
        i += 1
    return "".join(out)


# -- the node --------------------------------------------------------------------------------


class Node:
    """Registers a Node, binds matching Pending pods to it and runs them (see module doc)."""

    def __init__(
        self,
        kube: KubeClient,
        work_dir: Path,
        *,
        images: Mapping[str, Image] | None = None,
        dfs_binary: Path | None = None,
        name: str | None = None,
        labels: Mapping[str, str] | None = None,
        namespaces: Collection[str] | None = None,
        restart_backoff: tuple[float, float] = (1.0, 10.0),
        kubeconfig: Path | None = None,
    ) -> None:
        self.kube = kube
        self.work_dir = Path(work_dir)
        self.images = dict(images) if images is not None else default_images(dfs_binary)
        self._name = name
        self.extra_labels = dict(labels or {})
        self.namespaces = set(namespaces) if namespaces is not None else None
        self.restart_backoff = restart_backoff
        self.kubeconfig = kubeconfig  # given: Services route and names resolve (module doc)
        self.kube_proxy: KubeProxy | None = None
        self.dns: ClusterDNS | None = None
        self.provisioner: Provisioner | None = None  # set by running_node, for tests
        self.bridge: netns.Bridge | None = None
        self.workers: dict[str, _PodWorker] = {}
        self._finished: set[str] = set()
        self._binding: set[str] = set()
        self._log_dirs: dict[tuple[str, str], list[Path]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._watch: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._streaming: StreamingServer | None = None
        self.stopping = False
        self.stop_grace = 5.0

    # -- public API ---------------------------------------------------------------------------

    @property
    def name(self) -> str:
        if self._name is None:
            raise RuntimeError("node not started")
        return self._name

    @property
    def address(self) -> str:
        """The node's (host's) address as pods see it: reach host services here."""
        return str(self._bridge.gateway)

    @property
    def labels(self) -> dict[str, str]:
        return {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": _arch(),
            "node.kubernetes.io/instance-type": "testbed",
            **self.extra_labels,
        }

    async def start(self) -> None:
        """Create the bridge, register the Node and start watching pods."""
        if shutil.which("ip") is None:
            raise netns.NetnsError("iproute2 (`ip`) is required by the testbed node")
        self.bridge = await asyncio.to_thread(netns.Bridge.create)
        try:
            if self._name is None:
                self._name = f"testbed-node-{self.bridge.index}"
            for sub in ("pods", "logs"):
                (self.work_dir / sub).mkdir(parents=True, exist_ok=True)
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True, ssl=False)
            )
            root_ca = await self.kube.get(CONFIGMAPS, "kube-root-ca.crt", "default")
            self._streaming = StreamingServer(
                self.address, self._running_pod, root_ca["data"]["ca.crt"], self.work_dir / "pki"
            )
            await self._streaming.start()
            await self._register()
            if self.kubeconfig is not None:
                await self._start_services(self.kubeconfig)
            synced = asyncio.Event()
            namespace = (
                next(iter(self.namespaces))
                if self.namespaces is not None and len(self.namespaces) == 1
                else None
            )
            self._watch = asyncio.create_task(
                list_watch(self.kube, PODS, self._on_pod, namespace=namespace, synced=synced),
                name=f"{self.name}-pods",
            )
            waiter = asyncio.create_task(synced.wait())
            await asyncio.wait({self._watch, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if self._watch.done():
                waiter.cancel()
                self._watch.result()
        except BaseException:
            await self.stop()
            raise

    async def stop(self, *, grace: float = 5.0, delete_pods: bool = True) -> None:
        """Stop every pod (SIGTERM, then SIGKILL after `grace`), remove the Node and the bridge.

        With delete_pods the pod objects are force-deleted as the pod GC does for a vanished
        node (else they would stay Terminating forever: nothing else would confirm them gone).
        """
        self.stopping = True
        self.stop_grace = grace
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        workers = list(self.workers.values())
        for worker in workers:
            worker.node_stop(delete_pod=delete_pods)
        if workers:
            await asyncio.wait([w.task for w in workers if w.task], timeout=grace + 30)
        for task in list(self._tasks):
            task.cancel()
        if self.dns is not None:
            await asyncio.to_thread(self.dns.stop)
            self.dns = None
        if self.kube_proxy is not None:
            await self.kube_proxy.stop()
            self.kube_proxy = None
        if self._name is not None and self.bridge is not None:
            with contextlib.suppress(ApiError, aiohttp.ClientError):
                await self.kube.delete(NODES, self.name)
        if self._session is not None:
            await self._session.close()
        if self._streaming is not None:
            await self._streaming.stop()
            self._streaming = None
        if self.bridge is not None:
            await asyncio.to_thread(self.bridge.close)
            self.bridge = None

    async def _start_services(self, kubeconfig: Path) -> None:
        """kube-proxy, the `kubernetes` Service's endpoint, and CoreDNS on the host's Service
        address (which kube-proxy's host preparation creates)."""
        from .binaries import executable
        from .controlplane import ExternalCluster

        self.kube_proxy = KubeProxy(
            executable("kubernetes", "kube-proxy"), kubeconfig, self.name, self.work_dir
        )
        await self.kube_proxy.start()
        server = ExternalCluster.from_kubeconfig(kubeconfig).server_url
        port = int(server.rsplit(":", 1)[1].rstrip("/"))
        await publish_apiserver(self.kube, port)
        dns = ClusterDNS(kubeconfig, str(netns.HOST_SERVICES_IP), work_dir=self.work_dir / "dns")
        self.dns = await dns.start()

    @property
    def cluster_dns(self) -> str | None:
        """The kube-dns ClusterIP when this node runs cluster DNS."""
        return CLUSTER_DNS_IP if self.dns is not None else None

    def pod_ip(self, namespace: str, name: str) -> str | None:
        """The IP of the pod of that name this node runs now (None if none)."""
        found = self._running_pod(namespace, name)
        return found[1] if found else None

    def pod_netns(self, namespace: str, name: str) -> str | None:
        """The network namespace (for `ip netns exec`) of the pod of that name, if running."""
        for worker in self.workers.values():
            if (worker.namespace, worker.name) == (namespace, name) and worker.network:
                return worker.network.netns
        return None

    def _running_pod(self, namespace: str, name: str) -> tuple[str, str] | None:
        """(uid, IP) of the pod of that name this node runs now (None if none)."""
        for worker in self.workers.values():
            if (worker.namespace, worker.name) == (namespace, name) and worker.ip:
                return worker.uid, worker.ip
        return None

    def log_path(
        self,
        namespace: str,
        pod: str,
        container: str | None = None,
        *,
        previous: bool = False,
        instance: int = -1,
    ) -> Path:
        """Log file of a container: of the latest pod of that name (instance=-1), latest run."""
        dirs = self._log_dirs.get((namespace, pod))
        if not dirs:
            raise FileNotFoundError(f"pod {namespace}/{pod} never ran on {self.name}")
        directory = dirs[instance]
        runs = sorted(directory.glob("*.log"), key=_run_number)
        if container is None:  # like kubectl: the first container
            container = json.loads((directory / "containers.json").read_text())[0]
        mine = [p for p in runs if p.name.rsplit("-", 1)[0] == container]
        if len(mine) < (2 if previous else 1):
            raise FileNotFoundError(f"no {'previous ' if previous else ''}log of {container}")
        return mine[-2] if previous else mine[-1]

    def logs(
        self,
        namespace: str,
        pod: str,
        container: str | None = None,
        *,
        previous: bool = False,
        instance: int = -1,
    ) -> str:
        """stdout+stderr of a container run (like `kubectl logs [--previous]`)."""
        path = self.log_path(namespace, pod, container, previous=previous, instance=instance)
        return path.read_text(errors="replace")

    async def wait_ready(
        self,
        namespace: str,
        name: str,
        *,
        timeout: float = 60.0,
        not_uid: str | None = None,
    ) -> JSON:
        """Wait until the pod is Ready (a new one, if not_uid is the uid of one it replaces).

        On timeout the AssertionError carries the pod's status and its log tail.
        """
        pod: JSON | None = None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    pod = await self.kube.get_or_none(PODS, name, namespace)
                    if pod and pod["metadata"]["uid"] != not_uid and _is_ready(pod):
                        return pod
                    await asyncio.sleep(0.2)
        except TimeoutError:
            raise AssertionError(self.describe(namespace, name, pod)) from None

    def describe(self, namespace: str, name: str, pod: JSON | None) -> str:
        """Pod status and log tail, for failure messages."""
        status = json.dumps((pod or {}).get("status"), indent=1)[:3000]
        try:
            tail = "\n".join(self.logs(namespace, name).splitlines()[-30:])
        except (OSError, ValueError) as error:
            tail = f"(no log: {error})"
        return f"pod {namespace}/{name} not ready; status: {status}\nlog tail:\n{tail}"

    # -- registration -------------------------------------------------------------------------

    async def _register(self) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "labels": self.labels},
            "spec": {},
        }
        try:
            await self.kube.create(NODES, body)
        except ApiError as error:
            if not error.conflict:
                raise
            # A leftover of a killed run of the same name: take it over.
            await self.kube.merge_patch(NODES, self.name, {"metadata": {"labels": self.labels}})
        await self.kube.merge_patch(
            NODES, self.name, {"status": self._node_status()}, subresource="status"
        )

    def _node_status(self) -> JSON:
        now = _now()
        cpus = str(os.cpu_count() or 1)
        memory = f"{_meminfo_kib()}Ki"
        disk = shutil.disk_usage(self.work_dir).total
        resources = {"cpu": cpus, "memory": memory, "pods": "110", "ephemeral-storage": str(disk)}

        def condition(kind: str, status: str, reason: str, message: str) -> JSON:
            return {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": now,
                "lastTransitionTime": now,
            }

        uname = platform.uname()
        return {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "ok"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "ok"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "ok"),
                condition("Ready", "True", "KubeletReady", "testbed node is posting ready status"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": self.address},
                {"type": "Hostname", "address": self.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": KUBELET_PORT}},
            "nodeInfo": {
                "machineID": "testbed",
                "systemUUID": "testbed",
                "bootID": "testbed",
                "kernelVersion": uname.release,
                "osImage": "testbed (host processes)",
                "containerRuntimeVersion": "testbed://1",
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": _arch(),
            },
        }

    # -- pod events ---------------------------------------------------------------------------

    async def _on_pod(self, kind: str, pod: JSON) -> None:
        if kind == "RELISTED":
            live = {item["metadata"]["uid"] for item in pod["items"]}
            for uid, worker in list(self.workers.items()):
                if uid not in live:
                    worker.on_gone()
            return
        meta, spec = pod["metadata"], pod.get("spec") or {}
        if self.namespaces is not None and meta.get("namespace") not in self.namespaces:
            return
        uid = meta["uid"]
        existing = self.workers.get(uid)
        if kind == "DELETED":
            if existing:
                existing.on_gone()
            return
        node_name = spec.get("nodeName")
        if not node_name:
            if uid not in self._binding and self._schedulable(pod):
                self._binding.add(uid)
                self._spawn(self._bind(pod))
            return
        if node_name != self.name:
            return
        if existing is not None:
            existing.update(pod)
            return
        phase = (pod.get("status") or {}).get("phase")
        if uid in self._finished or phase in ("Succeeded", "Failed"):
            if meta.get("deletionTimestamp"):  # nothing runs: confirm the deletion at once
                self._spawn(self._force_delete(meta["namespace"], meta["name"], uid))
            return
        if self.stopping:
            return
        worker = _PodWorker(self, pod)
        self.workers[uid] = worker
        self._log_dirs.setdefault((worker.namespace, worker.name), []).append(worker.log_dir)
        worker.task = asyncio.create_task(
            worker.run(), name=f"pod {worker.namespace}/{worker.name}"
        )

    def _schedulable(self, pod: JSON) -> bool:
        spec, status = pod["spec"], pod.get("status") or {}
        if self.stopping or pod["metadata"].get("deletionTimestamp"):
            return False
        if status.get("phase", "Pending") != "Pending":
            return False
        if spec.get("schedulerName", "default-scheduler") != "default-scheduler":
            return False
        labels = self.labels
        return all(labels.get(k) == v for k, v in (spec.get("nodeSelector") or {}).items())

    async def _bind(self, pod: JSON) -> None:
        meta = pod["metadata"]
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.name},
        }
        try:
            await self.kube.request(
                "POST", f"{PODS.path(meta['namespace'], meta['name'])}/binding", body=body
            )
        except ApiError as error:
            if error.status not in (404, 409):
                log.warning("binding %s/%s: %s", meta["namespace"], meta["name"], error)
            return
        finally:
            self._binding.discard(meta["uid"])
        message = f"Successfully assigned {meta['namespace']}/{meta['name']} to {self.name}"
        await self.event(pod, "Scheduled", message, component="default-scheduler")

    async def _force_delete(self, namespace: str, name: str, uid: str) -> None:
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": uid}}
        try:
            await self.kube.request("DELETE", PODS.path(namespace, name), body=body)
        except ApiError as error:
            if error.status not in (404, 409):
                log.warning("deleting pod %s/%s: %s", namespace, name, error)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def event(
        self,
        pod: JSON,
        reason: str,
        message: str,
        *,
        kind: str = "Normal",
        component: str = "kubelet",
        field_path: str | None = None,
    ) -> None:
        """Record a core/v1 Event on the pod, as kubelet does (best effort)."""
        meta = pod["metadata"]
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        involved = {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
        }
        if field_path:
            involved["fieldPath"] = field_path
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "type": kind,
            "source": {"component": component, "host": self.name},
            "firstTimestamp": now[:19] + "Z",
            "lastTimestamp": now[:19] + "Z",
            "count": 1,
            "reportingComponent": component,
            "reportingInstance": self.name,
        }
        with contextlib.suppress(ApiError, aiohttp.ClientError, TimeoutError):
            await self.kube.create(CORE_EVENTS, body, meta["namespace"])

    @property
    def _bridge(self) -> netns.Bridge:
        if self.bridge is None:
            raise RuntimeError("node not started")
        return self.bridge

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("node not started")
        return self._session


# -- one pod ---------------------------------------------------------------------------------


class _PodWorker:
    """Everything the node does for one pod (uid), from setup to the deletion of its object."""

    def __init__(self, node: Node, pod: JSON) -> None:
        self.node = node
        self.pod = pod
        meta = pod["metadata"]
        self.uid: str = meta["uid"]
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.dir = node.work_dir / "pods" / self.uid
        self.log_dir = node.work_dir / "logs" / self.namespace / self.name / self.uid[:8]
        self.task: asyncio.Task[None] | None = None
        self.network: netns.PodNetwork | None = None
        self.ip: str | None = None
        self.host_paths: dict[str, Path] = {}
        self.readonly_volumes: set[str] = set()
        self.deleting = asyncio.Event()
        self.gone = False
        self.delete_pod = True
        self.sandbox_ready = False
        self.initialized = False
        self.terminal: tuple[str, str, str] | None = None  # phase, reason, message
        self.start_time = _now()
        self.init_containers: list[_Container] = []
        self.containers: list[_Container] = []
        self._dirty = asyncio.Event()
        self._status_lock = asyncio.Lock()
        self._last_status: JSON | None = None
        self._transitions: dict[str, tuple[str, str]] = {}
        self._reported: set[tuple[str, str]] = set()
        self._sidecars: list[asyncio.Task[int | None]] = []
        self.update(pod)  # e.g. a pod a killed run left Terminating: finish its deletion

    @property
    def spec(self) -> JSON:
        spec: JSON = self.pod["spec"]
        return spec

    @property
    def hostname(self) -> str:
        return str(self.spec.get("hostname") or self.name)[:63]

    @property
    def pod_grace(self) -> float:
        meta = self.pod["metadata"]
        grace = meta.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = self.spec.get("terminationGracePeriodSeconds", 30)
        if self.node.stopping:
            grace = min(grace, self.node.stop_grace)
        if self.gone:
            grace = min(grace, 1)
        return float(grace)

    def update(self, pod: JSON) -> None:
        self.pod = pod
        if pod["metadata"].get("deletionTimestamp"):
            self.deleting.set()

    def on_gone(self) -> None:
        """The object is gone from the API (force-deleted): stop fast, delete nothing."""
        self.gone = True
        self.deleting.set()

    def node_stop(self, *, delete_pod: bool) -> None:
        self.delete_pod = delete_pod
        self.deleting.set()

    def mark_dirty(self) -> None:
        self._dirty.set()

    async def event(
        self, reason: str, message: str, kind: str = "Normal", once: bool = False
    ) -> None:
        if once:
            if (reason, message) in self._reported:
                return
            self._reported.add((reason, message))
        await self.node.event(self.pod, reason, message, kind=kind)

    # -- lifecycle ----------------------------------------------------------------------------

    async def run(self) -> None:
        status_task = asyncio.create_task(self._status_loop())
        try:
            await self._lifecycle()
        except Exception as error:
            log.exception("pod %s/%s", self.namespace, self.name)
            self.terminal = ("Failed", "TestbedNodeError", f"testbed node error: {error!r}")
            await self._write_status()
        finally:
            status_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await status_task
            await self._kill_all(0)
            await self._teardown()
            if self.delete_pod and not self.gone and self.deleting.is_set():
                await self.node._force_delete(self.namespace, self.name, self.uid)
            self.node.workers.pop(self.uid, None)
            self.node._finished.add(self.uid)

    async def _lifecycle(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        names = [c["name"] for c in self.spec.get("containers", [])]
        (self.log_dir / "containers.json").write_text(json.dumps(names))
        unknown = []
        for spec in self.spec.get("initContainers") or []:
            self.init_containers.append(_Container(self, spec, init=True))
        for spec in self.spec.get("containers") or []:
            self.containers.append(_Container(self, spec, init=False))
        for c in self.init_containers + self.containers:
            if c.image is None:
                unknown.append(c.spec.get("image", ""))
        self.mark_dirty()
        if unknown:
            known = ", ".join(sorted(self.node.images))
            message = (
                f"image {', '.join(unknown)} maps to no local binary on testbed node "
                f"{self.node.name} (known images: {known})"
            )
            self.terminal = ("Failed", "UnknownImage", message)
            await self.event("Failed", message, "Warning")
            await self._write_status()
            await self.deleting.wait()
            return
        if not await self._unless_deleted(self._setup()):
            await self._terminate()
            return
        initialized = asyncio.create_task(self._run_init_containers())
        if not await self._unless_deleted(initialized):
            await self._terminate()
            return
        if not initialized.result():  # an init container failed under restartPolicy Never
            await self._write_status()
            await self._teardown_network()
            await self.deleting.wait()
            return
        self.initialized = True
        self.mark_dirty()
        runners = [asyncio.create_task(c.run()) for c in self.containers]
        finished = asyncio.create_task(asyncio.wait(runners))
        deleted = asyncio.create_task(self.deleting.wait())
        await asyncio.wait({finished, deleted}, return_when=asyncio.FIRST_COMPLETED)
        if not self.deleting.is_set():
            deleted.cancel()
            # Every container finished for good (restartPolicy Never/OnFailure): terminal.
            await self._write_status()
            await self._teardown_network()
            await self.deleting.wait()
            await self._write_status()
            return
        finished.cancel()
        await self._terminate()
        for r in runners:
            r.cancel()
        await asyncio.gather(*runners, return_exceptions=True)

    async def _unless_deleted(self, coro: Any) -> bool:
        """Run `coro` (or task); False (and it is cancelled) if deletion comes first."""
        work = coro if isinstance(coro, asyncio.Task) else asyncio.create_task(coro)
        deleted = asyncio.create_task(self.deleting.wait())
        await asyncio.wait({work, deleted}, return_when=asyncio.FIRST_COMPLETED)
        if work.done():
            deleted.cancel()
            work.result()
            return True
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await work
        return False

    async def _terminate(self) -> None:
        """Graceful stop of everything that runs, then a last status before the object goes."""
        grace = self.pod_grace
        if any(c.alive for c in self.containers + self.init_containers):
            names = ", ".join(c.name for c in self.containers if c.alive)
            if names and not self.gone:
                await self.event("Killing", f"Stopping container {names}")
        await asyncio.gather(*(c.stop(grace) for c in self.containers + self.init_containers))
        if not self.gone:
            await self._write_status()

    async def _kill_all(self, grace: float) -> None:
        await asyncio.gather(
            *(c.stop(grace) for c in self.containers + self.init_containers if c.alive)
        )

    async def _teardown_network(self) -> None:
        if self.network is not None and self.node.bridge is not None:
            network, self.network = self.network, None
            await asyncio.to_thread(self.node.bridge.detach, network)

    async def _teardown(self) -> None:
        await self._teardown_network()
        # Only materialised volumes and mountpoints live here; PV directories are elsewhere,
        # and the mounts existed only inside the containers' own mount namespaces.
        await asyncio.to_thread(shutil.rmtree, self.dir, True)

    # -- setup --------------------------------------------------------------------------------

    async def _setup(self) -> None:
        if self.spec.get("hostNetwork"):
            self.ip = self.node.address
        else:
            self.network = await asyncio.to_thread(self.node._bridge.attach)
            self.ip = str(self.network.ip)
        await asyncio.to_thread(self._write_etc_files)
        self.mark_dirty()
        delay = 0.2
        while True:
            try:
                await self._setup_volumes()
                break
            except _NotReady as error:
                for c in self.init_containers + self.containers:
                    c.set_waiting("ContainerCreating", str(error))
                await self.event("FailedMount", str(error), "Warning", once=True)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        self.sandbox_ready = True
        for c in self.init_containers + self.containers:
            c.set_waiting("PodInitializing" if self.init_containers else "ContainerCreating")

    def _write_etc_files(self) -> None:
        """/etc/hosts, /etc/hostname and /etc/resolv.conf as kubelet manages them.

        Without cluster DNS (or for another dnsPolicy) the resolver points at the pod's own
        loopback, so lookups fail at once instead of timing out against the host's nameserver.
        """
        etc = self.dir / "etc"
        etc.mkdir(parents=True, exist_ok=True)
        hosts = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        if self.ip:
            fqdn = ""
            if self.spec.get("subdomain"):
                fqdn = (
                    f"{self.hostname}.{self.spec['subdomain']}.{self.namespace}.svc.cluster.local\t"
                )
            hosts.append(f"{self.ip}\t{fqdn}{self.hostname}")
        for alias in self.spec.get("hostAliases") or []:
            hosts.append(f"{alias['ip']}\t{' '.join(alias.get('hostnames') or [])}")
        (etc / "hosts").write_text("\n".join(hosts) + "\n")
        (etc / "hostname").write_text(self.hostname + "\n")
        policy = self.spec.get("dnsPolicy") or "ClusterFirst"
        if self.node.cluster_dns and policy.startswith("ClusterFirst"):
            resolver = resolv_conf(self.namespace, self.node.cluster_dns)
        else:
            search = " ".join(search_domains(self.namespace))
            options = "ndots:5 timeout:1 attempts:1"
            resolver = f"nameserver 127.0.0.1\nsearch {search}\noptions {options}\n"
        (etc / "resolv.conf").write_text(resolver)

    async def _setup_volumes(self) -> None:
        volumes_dir = self.dir / "volumes"
        psc = self.spec.get("securityContext") or {}
        fs_group = psc.get("fsGroup")
        on_root_mismatch = psc.get("fsGroupChangePolicy") == "OnRootMismatch"
        for volume in self.spec.get("volumes") or []:
            name = volume["name"]
            target = volumes_dir / name
            ownership: bool | None = None  # None: not managed; True: read-only volume
            if claim := volume.get("persistentVolumeClaim"):
                path = await self._claim_path(claim["claimName"])
                self.host_paths[name] = path
                if claim.get("readOnly"):
                    self.readonly_volumes.add(name)
                ownership = bool(claim.get("readOnly"))
            elif "emptyDir" in volume:
                if name not in self.host_paths:
                    target.mkdir(parents=True, exist_ok=True)
                    target.chmod(0o777)
                self.host_paths[name] = target
                ownership = False
            elif "hostPath" in volume:
                self.host_paths[name] = self._host_path(volume["hostPath"])
            else:
                files = await self._volume_files(volume)
                await asyncio.to_thread(_write_files, target, files)
                self.host_paths[name] = target
                self.readonly_volumes.add(name)
                ownership = True
            if fs_group is not None and ownership is not None:
                await asyncio.to_thread(
                    _apply_fs_group,
                    self.host_paths[name],
                    int(fs_group),
                    ownership,
                    on_root_mismatch,
                )

    async def _claim_path(self, claim_name: str) -> Path:
        claim = await self.node.kube.get_or_none(PVCS, claim_name, self.namespace)
        if claim is None:
            raise _NotReady(f'persistentvolumeclaim "{claim_name}" not found')
        volume_name = claim["spec"].get("volumeName")
        if (claim.get("status") or {}).get("phase") != "Bound" or not volume_name:
            raise _NotReady(f'persistentvolumeclaim "{claim_name}" is not bound yet')
        pv = await self.node.kube.get(PVS, volume_name)
        path = (pv["spec"].get("hostPath") or pv["spec"].get("local") or {}).get("path")
        if not path:
            raise _NotReady(
                f"PV {volume_name} has no hostPath/local path: the node cannot mount it"
            )
        if not await asyncio.to_thread(Path(path).is_dir):
            raise _NotReady(f"PV {volume_name}: directory {path} does not exist")
        return Path(path)

    def _host_path(self, spec: JSON) -> Path:
        path = Path(spec["path"])
        kind = spec.get("type") or ""
        if kind == "DirectoryOrCreate":
            path.mkdir(parents=True, exist_ok=True)
        elif kind == "FileOrCreate" and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        if not path.exists():
            raise _NotReady(f"hostPath {path} does not exist")
        return path

    async def _volume_files(self, volume: JSON) -> dict[str, tuple[bytes, int]]:
        """Files of a configMap/secret/projected/downwardAPI volume: relative path -> data, mode."""
        if "configMap" in volume:
            return await self._source_files(volume["configMap"], CONFIGMAPS, None)
        if "secret" in volume:
            src = dict(volume["secret"], name=volume["secret"].get("secretName"))
            return await self._source_files(src, SECRETS, None)
        if "downwardAPI" in volume:
            return self._downward_files(volume["downwardAPI"], None)
        if projected := volume.get("projected"):
            mode = projected.get("defaultMode", 0o644)
            files: dict[str, tuple[bytes, int]] = {}
            for source in projected.get("sources") or []:
                if "configMap" in source:
                    files |= await self._source_files(source["configMap"], CONFIGMAPS, mode)
                elif "secret" in source:
                    files |= await self._source_files(source["secret"], SECRETS, mode)
                elif "downwardAPI" in source:
                    files |= self._downward_files(source["downwardAPI"], mode)
                elif "serviceAccountToken" in source:
                    files |= await self._token_file(source["serviceAccountToken"], mode)
            return files
        kinds = sorted(k for k in volume if k != "name")
        raise _NotReady(f"volume {volume['name']}: type {kinds} not supported by the testbed node")

    async def _source_files(
        self, src: JSON, resource: Resource, default_mode: int | None
    ) -> dict[str, tuple[bytes, int]]:
        name, optional = src.get("name"), bool(src.get("optional"))
        mode = src.get("defaultMode", default_mode if default_mode is not None else 0o644)
        obj = await self.node.kube.get_or_none(resource, str(name), self.namespace)
        kind = resource.kind.lower()
        if obj is None:
            if optional:
                return {}
            raise _NotReady(f'{kind} "{name}" not found')
        data = _object_data(obj)
        items = src.get("items")
        if not items:
            return {key: (value, mode) for key, value in data.items()}
        files = {}
        for item in items:
            if item["key"] not in data:
                if optional:
                    continue
                raise _NotReady(f'{kind} "{name}" has no key "{item["key"]}"')
            files[item["path"]] = (data[item["key"]], item.get("mode", mode))
        return files

    def _downward_files(self, src: JSON, default_mode: int | None) -> dict[str, tuple[bytes, int]]:
        mode = src.get("defaultMode", default_mode if default_mode is not None else 0o644)
        files = {}
        for item in src.get("items") or []:
            if ref := item.get("fieldRef"):
                value = self.field_value(ref["fieldPath"], volume=True)
            else:
                value = self.resource_value(item["resourceFieldRef"], None)
            files[item["path"]] = (value.encode(), item.get("mode", mode))
        return files

    async def _token_file(self, src: JSON, mode: int) -> dict[str, tuple[bytes, int]]:
        account = self.spec.get("serviceAccountName") or "default"
        spec: JSON = {
            "expirationSeconds": src.get("expirationSeconds", 3607),
            "boundObjectRef": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": self.name,
                "uid": self.uid,
            },
        }
        if src.get("audience"):
            spec["audiences"] = [src["audience"]]
        path = f"{SERVICEACCOUNTS.path(self.namespace, account)}/token"
        try:
            reply = await self.node.kube.request("POST", path, body={"spec": spec})
        except ApiError as error:
            log.info("no token for %s/%s: %s", self.namespace, account, error)
            return {}
        return {src["path"]: (reply["status"]["token"].encode(), mode)}

    # -- the downward API ---------------------------------------------------------------------

    def field_value(self, field_path: str, *, volume: bool = False) -> str:
        meta = self.pod["metadata"]
        m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", field_path)
        if m:
            return str((meta.get(m[1]) or {}).get(m[2], ""))
        if field_path in ("metadata.labels", "metadata.annotations") and volume:
            values = meta.get(field_path.split(".")[1]) or {}
            return "\n".join(f'{k}="{v}"' for k, v in sorted(values.items()))
        values = {
            "metadata.name": self.name,
            "metadata.namespace": self.namespace,
            "metadata.uid": self.uid,
            "spec.nodeName": self.node.name,
            "spec.serviceAccountName": self.spec.get("serviceAccountName") or "default",
            "status.hostIP": self.node.address,
            "status.hostIPs": self.node.address,
            "status.podIP": self.ip or "",
            "status.podIPs": self.ip or "",
        }
        if field_path not in values:
            raise _ConfigError(f"unsupported fieldRef {field_path}")
        return str(values[field_path])

    def resource_value(self, ref: JSON, container: JSON | None) -> str:
        """limits.memory, requests.cpu...: in divisor units, rounded up; limits default to the
        node's allocatable, as kubelet does."""
        if ref.get("containerName"):
            matches = [c for c in self.spec["containers"] if c["name"] == ref["containerName"]]
            container = matches[0] if matches else None
        if container is None:
            raise _ConfigError(f"resourceFieldRef {ref} names no container")
        kind, _, resource = ref["resource"].partition(".")
        amounts = (container.get("resources") or {}).get(kind) or {}
        if resource in amounts:
            value = parse_quantity(amounts[resource])
        elif kind == "limits" or resource not in ("cpu", "memory"):
            value = parse_quantity(self.node._node_status()["allocatable"].get(resource, "0"))
        else:
            value = parse_quantity(0)
        # The API server defaults an unset divisor to 0, which kubelet reads as 1.
        divisor = parse_quantity(ref.get("divisor") or "1") or parse_quantity(1)
        return str(math.ceil(value / divisor))

    # -- env ----------------------------------------------------------------------------------

    async def resolve_env(self, container: _Container) -> dict[str, str]:
        spec = container.spec
        env: dict[str, str] = dict(container.image.env) if container.image else {}
        env["HOSTNAME"] = self.hostname
        env |= await self._service_env()
        for source in spec.get("envFrom") or []:
            prefix = source.get("prefix", "")
            if ref := source.get("configMapRef"):
                data = await self._env_object(CONFIGMAPS, ref)
            elif ref := source.get("secretRef"):
                data = await self._env_object(SECRETS, ref)
            else:
                continue
            for key, raw in data.items():
                env[prefix + key] = raw.decode(errors="surrogateescape")
        for var in spec.get("env") or []:
            name = var["name"]
            if "valueFrom" not in var:
                env[name] = _expand(var.get("value", ""), env)
                continue
            value = await self._env_value(var["valueFrom"], spec)
            if value is not None:
                env[name] = value
        if "HOME" not in env:
            uid = container.identity()[0]
            image = container.image
            own = image is not None and image.user is not None and image.user[0] == uid
            env["HOME"] = image.home if own and image else "/root" if uid == 0 else "/"
        return env

    async def _service_env(self) -> dict[str, str]:
        """Kubelet's Service variables (serviceenv.py) from the Services that exist now."""
        listed = (await self.node.kube.request("GET", SERVICES.path(self.namespace)))["items"]
        master = await self.node.kube.get_or_none(SERVICES, MASTER_SERVICE, MASTER_NAMESPACE)
        for service in listed:
            service["metadata"].setdefault("namespace", self.namespace)
        links = self.spec.get("enableServiceLinks", True)
        return service_env(
            [*listed, *([master] if master else [])], self.namespace, enable_links=links
        )

    async def _env_object(self, resource: Resource, ref: JSON) -> dict[str, bytes]:
        obj = await self.node.kube.get_or_none(resource, str(ref.get("name")), self.namespace)
        if obj is None:
            if ref.get("optional"):
                return {}
            raise _ConfigError(f'{resource.kind.lower()} "{ref.get("name")}" not found')
        return _object_data(obj)

    async def _env_value(self, source: JSON, container: JSON) -> str | None:
        if ref := source.get("fieldRef"):
            return self.field_value(ref["fieldPath"])
        if ref := source.get("resourceFieldRef"):
            return self.resource_value(ref, container)
        for key, resource in (("configMapKeyRef", CONFIGMAPS), ("secretKeyRef", SECRETS)):
            if ref := source.get(key):
                data = await self._env_object(resource, ref)
                if ref["key"] in data:
                    return data[ref["key"]].decode(errors="surrogateescape")
                if ref.get("optional"):
                    return None
                kind = resource.kind
                raise _ConfigError(
                    f"couldn't find key {ref['key']} in {kind} {self.namespace}/{ref.get('name')}"
                )
        raise _ConfigError(f"unsupported valueFrom {sorted(source)}")

    # -- containers ---------------------------------------------------------------------------

    async def _run_init_containers(self) -> bool:
        """Run init containers in order; False if one failed for good (restartPolicy Never)."""
        policy = "Never" if self.spec.get("restartPolicy") == "Never" else "OnFailure"
        for container in self.init_containers:
            if container.spec.get("restartPolicy") == "Always":  # a sidecar: runs alongside
                self._sidecars.append(asyncio.create_task(container.run()))
                await container.started_once.wait()
                continue
            code = await container.run(restart_policy=policy)
            if code != 0:
                message = f"init container {container.name} failed with exit code {code}"
                self.terminal = ("Failed", "InitContainerFailed", message)
                return False
        return True

    # -- status -------------------------------------------------------------------------------

    async def _status_loop(self) -> None:
        while True:
            await self._dirty.wait()
            await asyncio.sleep(0.05)  # coalesce bursts of changes into one write
            self._dirty.clear()
            if not await self._write_status():
                await asyncio.sleep(1)
                self._dirty.set()

    async def _write_status(self) -> bool:
        if self.gone:
            return True
        async with self._status_lock:
            status = self.status()
            if status == self._last_status:
                return True
            try:
                await self.node.kube.merge_patch(
                    PODS, self.name, {"status": status}, self.namespace, subresource="status"
                )
            except ApiError as error:
                if error.not_found:
                    self.on_gone()
                    return True
                log.warning("pod %s/%s status: %s", self.namespace, self.name, error)
                return False
            except (aiohttp.ClientError, TimeoutError) as error:
                log.warning("pod %s/%s status: %r", self.namespace, self.name, error)
                return False
            self._last_status = status
            return True

    def _condition(self, kind: str, ok: bool, reason: str | None = None) -> JSON:
        value = "True" if ok else "False"
        previous = self._transitions.get(kind)
        if previous is None or previous[0] != value:
            self._transitions[kind] = (value, _now())
        condition = {
            "type": kind,
            "status": value,
            "lastProbeTime": None,
            "lastTransitionTime": self._transitions[kind][1],
        }
        if reason and not ok:
            condition["reason"] = reason
        return condition

    def status(self) -> JSON:
        phase = self._phase()
        containers_ready = bool(self.containers) and all(c.ready for c in self.containers)
        gates_ok = all(
            any(
                c.get("type") == gate["conditionType"] and c.get("status") == "True"
                for c in (self.pod.get("status") or {}).get("conditions") or []
            )
            for gate in self.spec.get("readinessGates") or []
        )
        terminal = phase in ("Succeeded", "Failed")
        reason = "PodCompleted" if terminal else "ContainersNotReady"
        conditions = [
            self._condition("PodReadyToStartContainers", self.sandbox_ready),
            self._condition(
                "Initialized", self.initialized or terminal, "ContainersNotInitialized"
            ),
            self._condition("Ready", containers_ready and gates_ok and not terminal, reason),
            self._condition("ContainersReady", containers_ready and not terminal, reason),
            self._condition("PodScheduled", True),
        ]
        own = {c["type"] for c in conditions}
        foreign = [
            c
            for c in (self.pod.get("status") or {}).get("conditions") or []
            if c.get("type") not in own
        ]
        status: JSON = {
            "phase": phase,
            "conditions": conditions + foreign,
            "hostIP": self.node.address,
            "hostIPs": [{"ip": self.node.address}],
            "startTime": self.start_time,
            "containerStatuses": [c.status() for c in self.containers],
        }
        if self.ip:
            status["podIP"] = self.ip
            status["podIPs"] = [{"ip": self.ip}]
        if self.init_containers:
            status["initContainerStatuses"] = [c.status() for c in self.init_containers]
        if self.terminal:
            status["reason"], status["message"] = self.terminal[1], self.terminal[2]
        return status

    def _phase(self) -> str:
        if self.terminal:
            return self.terminal[0]
        if not self.initialized or any(c.never_ran for c in self.containers):
            return "Pending"
        if any(not c.final for c in self.containers):
            return "Running"
        failed = any(c.exit_code != 0 for c in self.containers)
        return "Failed" if failed else "Succeeded"


class _Container:
    """One container of a pod: its runs, restarts, probes and reported status."""

    def __init__(self, worker: _PodWorker, spec: JSON, *, init: bool) -> None:
        self.worker = worker
        self.spec = spec
        self.name: str = spec["name"]
        self.init = init
        repository = image_repository(spec.get("image", ""))
        self.image = worker.node.images.get(repository)
        self.image_id = f"testbed://{repository}"
        self.restart_count = 0
        self.state: JSON = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state: JSON = {}
        self.ready = False
        self.started = False
        self.started_once = asyncio.Event()  # sidecars: the next init container may start
        self.never_ran = True
        self.final = False
        self.exit_code: int | None = None
        self.container_id: str | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self.stopping = False
        self._wake = asyncio.Event()
        self._backoff = worker.node.restart_backoff[0]

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def set_waiting(self, reason: str, message: str | None = None) -> None:
        if "running" in self.state or self.final:
            return
        waiting = {"reason": reason}
        if message:
            waiting["message"] = message
        if "terminated" in self.state:
            self.last_state = self.state
        self.state = {"waiting": waiting}
        self.worker.mark_dirty()

    def status(self) -> JSON:
        status: JSON = {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": self.image_id,
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
        }
        if self.container_id:
            status["containerID"] = self.container_id
        return status

    def identity(self) -> tuple[int, int, list[int]]:
        """uid, gid and supplementary groups the process runs with."""
        psc = self.worker.spec.get("securityContext") or {}
        csc = self.spec.get("securityContext") or {}
        image_user = self.image.user if self.image else None
        uid = csc.get("runAsUser", psc.get("runAsUser"))
        if uid is None:
            uid = image_user[0] if image_user else 0
        gid = csc.get("runAsGroup", psc.get("runAsGroup"))
        if gid is None:
            gid = image_user[1] if image_user and image_user[0] == uid else 0
        groups = [int(gid)]
        if psc.get("fsGroup") is not None:
            groups.append(int(psc["fsGroup"]))
        groups += [int(g) for g in psc.get("supplementalGroups") or []]
        return int(uid), int(gid), sorted(set(groups))

    # -- runs ---------------------------------------------------------------------------------

    async def run(self, restart_policy: str | None = None) -> int | None:
        """Run until the restart policy says stop (or stop() is called); the last exit code."""
        policy = (
            restart_policy
            or self.spec.get("restartPolicy")
            or self.worker.spec.get("restartPolicy", "Always")
        )
        while not self.stopping:
            try:
                env = await self.worker.resolve_env(self)
                exec_spec = self._exec_spec(env)
            except (_ConfigError, _NotReady) as error:
                self.set_waiting("CreateContainerConfigError", str(error))
                await self.worker.event("Failed", f"Error: {error}", "Warning", once=True)
                await self._sleep(2)
                continue
            started = asyncio.get_running_loop().time()
            code = await self._run_once(exec_spec)
            if self.stopping:
                return code
            if policy == "Never" or (policy == "OnFailure" and code == 0):
                self.final = True
                self.worker.mark_dirty()
                return code
            if asyncio.get_running_loop().time() - started > 60:
                self._backoff = self.worker.node.restart_backoff[0]
            await self.backoff()
        return self.exit_code

    async def backoff(self) -> None:
        """CrashLoopBackOff: wait (doubling up to the node's maximum) before the next run."""
        delay = self._backoff
        self._backoff = min(delay * 2, self.worker.node.restart_backoff[1])
        message = (
            f"back-off {delay:g}s restarting failed container={self.name} pod={self.worker.name}"
        )
        self.set_waiting("CrashLoopBackOff", message)
        await self.worker.event(
            "BackOff", f"Back-off restarting failed container {self.name}", "Warning"
        )
        await self._sleep(delay)
        if not self.stopping:
            self.restart_count += 1

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    def _exec_spec(self, env: dict[str, str]) -> JSON:
        assert self.image is not None
        image, spec, worker = self.image, self.spec, self.worker
        uid, gid, groups = self.identity()
        csc = spec.get("securityContext") or {}
        psc = worker.spec.get("securityContext") or {}
        if csc.get("runAsNonRoot", psc.get("runAsNonRoot")) and uid == 0:
            raise _ConfigError("container has runAsNonRoot and image will run as root")
        command = [_expand(a, env) for a in spec.get("command") or []]
        args = [_expand(a, env) for a in spec.get("args") or []]
        if command:
            argv = command + args
        else:
            argv = list(image.entrypoint) + (
                args if spec.get("args") is not None else list(image.cmd)
            )
        if not argv:
            raise _ConfigError("no command specified")
        mounts: list[JSON] = [
            {"source": str(worker.dir / "etc" / name), "target": f"/etc/{name}", "readonly": False}
            for name in ("hosts", "hostname", "resolv.conf")
        ]
        for container_path, host_file in image.files.items():
            mounts.append({"source": str(host_file), "target": container_path, "readonly": True})
        mount_paths = {m["mountPath"].rstrip("/") for m in spec.get("volumeMounts") or []}
        scratch = worker.dir / "containers" / self.name / "image-volumes"
        for i, path in enumerate(image.volumes):
            if path.rstrip("/") in mount_paths:
                continue
            directory = scratch / str(i)
            directory.mkdir(parents=True, exist_ok=True)
            if image.user:
                os.chown(directory, *image.user)
            mounts.append({"source": str(directory), "target": path, "readonly": False})
        for vm in spec.get("volumeMounts") or []:
            name = vm["name"]
            if name not in worker.host_paths:
                raise _ConfigError(f"volumeMount {name} names no volume of the pod")
            source = worker.host_paths[name]
            sub = _expand(vm.get("subPathExpr", ""), env) or vm.get("subPath", "")
            if sub:
                if ".." in Path(sub).parts or sub.startswith("/"):
                    raise _ConfigError(f"subPath {sub!r} must be relative and stay in the volume")
                source = source / sub
                if not source.exists():
                    source.mkdir(parents=True)
            readonly = bool(vm.get("readOnly")) or name in worker.readonly_volumes
            mounts.append({"source": str(source), "target": vm["mountPath"], "readonly": readonly})
        root = worker.dir / "containers" / self.name / "root"
        root.mkdir(parents=True, exist_ok=True)
        return {
            "netns": str(worker.network.path) if worker.network else None,
            "hostname": worker.hostname,
            "root": str(root),
            "dirs": [
                {"path": p, "uid": u, "gid": g, "mode": mode}
                for p, (u, g, mode) in image.dirs.items()
            ],
            "mounts": mounts,
            "readonly_root": bool(csc.get("readOnlyRootFilesystem")),
            "workdir": spec.get("workingDir") or image.workdir,
            "uid": uid,
            "gid": gid,
            "groups": groups,
            "argv": argv,
            "env": env,
            "pdeathsig": True,
        }

    async def _run_once(self, exec_spec: JSON) -> int:
        worker = self.worker
        run = self.restart_count
        log_path = worker.log_dir / f"{self.name}-{run}.log"
        self.container_id = f"testbed://{worker.uid[:8]}-{self.name}-{run}"
        with log_path.open("ab") as log_file:
            proc = await asyncio.create_subprocess_exec(
                *netns.helper_command(),
                stdin=asyncio.subprocess.PIPE,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        self.proc = proc
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(exec_spec).encode())
        with contextlib.suppress(ConnectionError):
            await proc.stdin.drain()
        proc.stdin.close()
        started_at = _now()
        if "terminated" in self.state:
            self.last_state = self.state
        self.state = {"running": {"startedAt": started_at}}
        self.never_ran = False
        self.ready = False
        has_startup = bool(self.spec.get("startupProbe"))
        self.started = not has_startup
        self.worker.mark_dirty()
        await self.worker.event("Started", f"Started container {self.name}")
        probes = asyncio.create_task(self._probes(proc))
        try:
            code = await proc.wait()
        finally:
            probes.cancel()
            await asyncio.gather(probes, return_exceptions=True)
        exit_code = code if code >= 0 else 128 - code
        self.exit_code = exit_code
        self.ready = False
        self.started = False
        terminated: JSON = {
            "exitCode": exit_code,
            "reason": "Completed" if exit_code == 0 else "Error",
            "startedAt": started_at,
            "finishedAt": _now(),
            "containerID": self.container_id,
        }
        if code < 0:
            terminated["signal"] = -code
        policy = self.spec.get("terminationMessagePolicy")
        if exit_code != 0 and policy == "FallbackToLogsOnError":
            tail = log_path.read_bytes()[-2048:].decode(errors="replace")
            terminated["message"] = "\n".join(tail.splitlines()[-80:])
        self.state = {"terminated": terminated}
        self.worker.mark_dirty()
        return exit_code

    async def stop(self, grace: float) -> None:
        """preStop, SIGTERM, wait up to `grace` seconds in all, SIGKILL the process group."""
        self.stopping = True
        self._wake.set()
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        hook = ((self.spec.get("lifecycle") or {}).get("preStop")) if not self.init else None
        if hook and grace > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self._handler(hook, proc, timeout=grace)
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(proc.wait()), max(0.0, deadline - loop.time()))
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()

    # -- probes and hooks ---------------------------------------------------------------------

    async def _probes(self, proc: asyncio.subprocess.Process) -> None:
        spec = self.spec
        try:
            if (startup := spec.get("startupProbe")) and not await self._startup(startup):
                await self._kill_for_restart(proc, startup, "failed startup probe")
                return
            self.started = True
            self.started_once.set()
            self.worker.mark_dirty()
            tasks = []
            if readiness := spec.get("readinessProbe"):
                tasks.append(self._readiness(readiness))
            else:
                self.ready = True
                self.worker.mark_dirty()
            if liveness := spec.get("livenessProbe"):
                tasks.append(self._liveness(liveness, proc))
            await asyncio.gather(*tasks)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("probes of %s/%s %s", self.worker.namespace, self.worker.name, self.name)

    async def _startup(self, probe: JSON) -> bool:
        """Probe until the first success (True) or failureThreshold failures in a row."""
        await asyncio.sleep(probe.get("initialDelaySeconds", 0))
        failures = 0
        while True:
            ok, message = await self._probe(probe)
            if ok:
                return True
            failures += 1
            await self.worker.event("Unhealthy", f"Startup probe failed: {message}", "Warning")
            if failures >= probe.get("failureThreshold", 3):
                return False
            await asyncio.sleep(probe.get("periodSeconds", 10))

    async def _readiness(self, probe: JSON) -> None:
        await asyncio.sleep(probe.get("initialDelaySeconds", 0))
        success, failure = probe.get("successThreshold", 1), probe.get("failureThreshold", 3)
        hits = misses = 0
        while True:
            ok, message = await self._probe(probe)
            hits, misses = (hits + 1, 0) if ok else (0, misses + 1)
            if ok and hits >= success and not self.ready:
                self.ready = True
                self.worker.mark_dirty()
            elif not ok:
                text = f"Readiness probe failed: {message}"
                await self.worker.event("Unhealthy", text, "Warning", once=True)
                if misses >= failure and self.ready:
                    self.ready = False
                    self.worker.mark_dirty()
            await asyncio.sleep(probe.get("periodSeconds", 10))

    async def _liveness(self, probe: JSON, proc: asyncio.subprocess.Process) -> None:
        """Kill the container after failureThreshold failures in a row (it is then restarted)."""
        await asyncio.sleep(probe.get("initialDelaySeconds", 0))
        failures = 0
        while True:
            ok, message = await self._probe(probe)
            if ok:
                failures = 0
            else:
                failures += 1
                await self.worker.event("Unhealthy", f"Liveness probe failed: {message}", "Warning")
                if failures >= probe.get("failureThreshold", 3):
                    await self._kill_for_restart(proc, probe, "failed liveness probe")
                    return
            await asyncio.sleep(probe.get("periodSeconds", 10))

    async def _kill_for_restart(
        self, proc: asyncio.subprocess.Process, probe: JSON, why: str
    ) -> None:
        await self.worker.event("Killing", f"Container {self.name} {why}, will be restarted")
        grace = probe.get(
            "terminationGracePeriodSeconds",
            self.worker.spec.get("terminationGracePeriodSeconds", 30),
        )
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(proc.wait()), grace)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    async def _probe(self, probe: JSON) -> tuple[bool, str]:
        if self.proc is None:
            return False, "container not running"
        try:
            await self._handler(probe, self.proc, timeout=probe.get("timeoutSeconds", 1))
        except _ProbeFailed as error:
            return False, str(error)
        return True, ""

    async def _handler(
        self, handler: JSON, proc: asyncio.subprocess.Process, timeout: float
    ) -> None:
        """Run an httpGet/tcpSocket/exec probe or hook; raise _ProbeFailed if it fails."""
        host = self.worker.ip or "127.0.0.1"
        try:
            async with asyncio.timeout(timeout):
                if get := handler.get("httpGet"):
                    scheme = str(get.get("scheme", "HTTP")).lower()
                    port = self._port(get["port"])
                    path = get.get("path", "/")
                    path = path if path.startswith("/") else f"/{path}"
                    url = f"{scheme}://{get.get('host') or host}:{port}{path}"
                    headers = {"User-Agent": "kube-probe/1.35", "Accept": "*/*"}
                    headers |= {h["name"]: h["value"] for h in get.get("httpHeaders") or []}
                    async with self.worker.node.session.get(url, headers=headers) as response:
                        if not 200 <= response.status < 400:
                            raise _ProbeFailed(
                                f"HTTP probe failed with statuscode: {response.status}"
                            )
                elif sock := handler.get("tcpSocket"):
                    _, writer = await asyncio.open_connection(
                        sock.get("host") or host, self._port(sock["port"])
                    )
                    writer.close()
                elif ex := handler.get("exec"):
                    await self._exec_in(ex.get("command") or [], proc)
                elif "sleep" in handler:
                    await asyncio.sleep(handler["sleep"]["seconds"])
                else:
                    raise _ProbeFailed(f"unsupported handler {sorted(handler)}")
        except TimeoutError:
            raise _ProbeFailed(f"timeout after {timeout}s") from None
        except (OSError, aiohttp.ClientError) as error:
            raise _ProbeFailed(str(error) or repr(error)) from None

    async def _exec_in(self, command: list[str], proc: asyncio.subprocess.Process) -> None:
        uid, gid, _ = self.identity()
        try:
            env = await self.worker.resolve_env(self)
        except (_ConfigError, _NotReady) as error:
            raise _ProbeFailed(str(error)) from None
        argv = ["nsenter", f"--target={proc.pid}", "--mount", "--uts", "--net", "--root", "--wd"]
        argv += [f"--setuid={uid}", f"--setgid={gid}", "--", *command]
        child = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
        )
        try:
            output, _ = await child.communicate()
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()
        if child.returncode != 0:
            text = output.decode(errors="replace").strip()[-300:]
            raise _ProbeFailed(f"command {command} exited with {child.returncode}: {text}")

    def _port(self, port: int | str) -> int:
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        for p in self.spec.get("ports") or []:
            if p.get("name") == port:
                return int(p["containerPort"])
        raise _ProbeFailed(f"no container port named {port}")


class _ProbeFailed(Exception):
    pass


# -- helpers ---------------------------------------------------------------------------------


def _is_ready(pod: JSON) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _run_number(path: Path) -> int:
    return int(path.stem.rsplit("-", 1)[1])


def _object_data(obj: JSON) -> dict[str, bytes]:
    """A ConfigMap's data+binaryData or a Secret's data (+stringData) as bytes."""
    data: dict[str, bytes] = {}
    if obj.get("kind") == "Secret" or "type" in obj:
        for key, value in (obj.get("data") or {}).items():
            data[key] = base64.b64decode(value)
        for key, value in (obj.get("stringData") or {}).items():
            data[key] = value.encode()
        return data
    for key, value in (obj.get("data") or {}).items():
        data[key] = value.encode()
    for key, value in (obj.get("binaryData") or {}).items():
        data[key] = base64.b64decode(value)
    return data


def _write_files(directory: Path, files: Mapping[str, tuple[bytes, int]]) -> None:
    """Materialise a volume's files afresh (read at container start, no live refresh)."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    directory.chmod(0o755)
    for relative, (data, mode) in files.items():
        path = directory / relative
        if ".." in Path(relative).parts or relative.startswith("/"):
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(mode)


def _apply_fs_group(root: Path, gid: int, readonly: bool, on_root_mismatch: bool) -> None:
    """kubelet's SetVolumeOwnership: group fsGroup, g+rw (g+r read-only), setgid directories."""
    if on_root_mismatch:
        st = root.stat()
        if st.st_gid == gid and st.st_mode & 0o2070 == 0o2070:
            return
    mask = 0o440 if readonly else 0o660
    for current, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            _own(Path(current) / name, gid, mask)
    _own(root, gid, mask)


def _own(path: Path, gid: int, mask: int) -> None:
    st = path.lstat()
    if os.path.islink(path):
        return
    os.chown(path, -1, gid)
    extra = mask | (0o2110 if path.is_dir() else 0)
    path.chmod((st.st_mode & 0o7777) | extra)


def _meminfo_kib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1])
    return 0


def _arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


@contextlib.asynccontextmanager
async def running_node(
    kube: KubeClient,
    work_dir: Path,
    dfs_binary: Path | None,
    *,
    namespaces: Collection[str] | None = None,
    provision: bool = True,
    reuse_volumes_by_name: bool = True,
    **node_options: Any,
) -> AsyncIterator[Node]:
    """A started Node (plus, by default, a Provisioner for its claims), stopped afterwards.

    Pass `namespaces=[namespace]` so the node only schedules and runs pods of the test's own
    namespaces: other tests may expect their pods to stay Pending. PV data lives under
    `<work_dir>/volumes`, logs under `<work_dir>/logs`.
    """
    from .provisioner import running_provisioner

    work_dir = Path(work_dir)
    async with contextlib.AsyncExitStack() as stack:
        provisioner = None
        if provision:
            provisioner = await stack.enter_async_context(
                running_provisioner(
                    kube,
                    work_dir / "volumes",
                    namespaces=namespaces,
                    reuse_by_name=reuse_volumes_by_name,
                )
            )
        node = Node(kube, work_dir, dfs_binary=dfs_binary, namespaces=namespaces, **node_options)
        node.provisioner = provisioner
        await node.start()
        stack.push_async_callback(node.stop)
        yield node


__all__ = [
    "HOST_IMAGE",
    "Image",
    "Node",
    "default_images",
    "dittofs_image",
    "image_repository",
    "running_node",
]
