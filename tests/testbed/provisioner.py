"""A PersistentVolume provisioner (and resizer) for the testbed: local directories as PVs.

kube-controller-manager's PV binder binds a claim only to a PV that exists; on a real cluster a
CSI provisioner creates it. Here every Pending claim without a volumeName gets a hostPath PV
pre-bound to it (claimRef), pointing at a directory under the testbed's data root; the binder
then binds the pair. Growing a bound claim's request grows the PV and the claim's
status.capacity, as an external resizer would (the API server only accepts the change when the
claim's StorageClass allows expansion: use STORAGE_CLASS, which `ensure_storage_class` creates).

Where data lives, and when it comes back: the directory is keyed by namespace and claim name
(`<data_root>/<namespace>/<claim>`), PVs are Retain, and a directory is never deleted here. A
claim deleted and re-created under the same name therefore gets a new PV pointing at the same
directory, i.e. its old data, as an administrator re-binding a Retained volume would arrange. This
is what lets a re-created DittoServer find its control-plane database. A real dynamic provisioner
would hand out an empty volume instead: pass `reuse_by_name=False` to get that (the directory is
then keyed by the claim's uid as well). The fresh directory is root:root 0755, like the root of a
new filesystem: only a pod's fsGroup (applied by the node) makes it writable for a non-root user.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp

from dittofs_controller.kube.client import ApiError, KubeClient
from dittofs_controller.kube.resources import PVCS, Resource

log = logging.getLogger("testbed.provisioner")

JSON = dict[str, Any]

PVS = Resource("", "v1", "persistentvolumes", "PersistentVolume", namespaced=False)
STORAGECLASSES = Resource("storage.k8s.io", "v1", "storageclasses", "StorageClass", False)

PROVISIONER_NAME = "testbed.dittofs.io/hostpath"
STORAGE_CLASS = "testbed-hostpath"
LABEL_PROVISIONER = "testbed.dittofs.io/provisioner"
LABEL_CLAIM_NAMESPACE = "testbed.dittofs.io/claim-namespace"
LABEL_CLAIM_NAME = "testbed.dittofs.io/claim-name"
_RESIZE_CONDITIONS = {"Resizing", "FileSystemResizePending", "ControllerResizeError"}

# -- list + watch ----------------------------------------------------------------------------

# Watch event types plus RELISTED: after every (re)list the handler gets {"items": [...]}, so it
# can forget objects whose DELETED event fell into a gap between two watches.
EventHandler = Callable[[str, JSON], Awaitable[None]]


async def list_watch(
    kube: KubeClient,
    resource: Resource,
    handler: EventHandler,
    *,
    namespace: str | None = None,
    synced: asyncio.Event | None = None,
) -> None:
    """List then watch `resource` forever, relisting after a 410 or any error (level-triggered)."""
    path = resource.path(namespace)
    while True:
        try:
            listing = await kube.request("GET", path)
            version = listing["metadata"]["resourceVersion"]
            items = listing.get("items") or []
            for item in items:
                await handler("ADDED", item)
            await handler("RELISTED", {"items": items})
            if synced is not None:
                synced.set()
            while True:
                query = {
                    "watch": "1",
                    "resourceVersion": version,
                    "allowWatchBookmarks": "true",
                    "timeoutSeconds": "290",
                }
                timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=320)
                async for event in kube.stream_lines(path, query=query, timeout=timeout):
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":
                        raise ApiError(int(obj.get("code") or 500), "", str(obj.get("message")))
                    version = obj["metadata"]["resourceVersion"]
                    if kind != "BOOKMARK":
                        await handler(str(kind), obj)
        except asyncio.CancelledError:
            raise
        except ApiError as error:
            if not error.gone:
                log.warning("watch %s: %s; relisting", path, error)
                await asyncio.sleep(1)
        except Exception as error:  # connection drops, apiserver restarts: relist
            log.warning("watch %s failed: %r; relisting", path, error)
            await asyncio.sleep(1)


# -- quantities ------------------------------------------------------------------------------

_SUFFIXES: dict[str, int | Decimal] = {
    "": 1,
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")


def parse_quantity(quantity: str | int | float) -> Decimal:
    """A resource.Quantity ("1Gi", "500m", "1e3") as a number."""
    m = _QUANTITY.match(str(quantity).strip())
    if not m or m[2] not in _SUFFIXES or ("e" in m[1].lower() and m[2]):
        raise ValueError(f"not a quantity: {quantity!r}")
    return Decimal(m[1]) * Decimal(_SUFFIXES[m[2]])


# -- the provisioner -------------------------------------------------------------------------


class Provisioner:
    """Creates a hostPath PV for every Pending claim; grows PVs when their claims grow."""

    def __init__(
        self,
        kube: KubeClient,
        data_root: Path,
        *,
        namespaces: Collection[str] | None = None,
        reuse_by_name: bool = True,
    ) -> None:
        self.kube = kube
        self.data_root = Path(data_root)
        self.namespaces = set(namespaces) if namespaces is not None else None
        self.reuse_by_name = reuse_by_name
        self.created: set[str] = set()  # PV names, for cleanup
        self.synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def claim_dir(self, namespace: str, claim: str, uid: str | None = None) -> Path:
        """The directory backing a claim (stable per namespace/name unless reuse_by_name=False)."""
        leaf = claim if self.reuse_by_name or not uid else f"{claim}-{uid}"
        return self.data_root / namespace / leaf

    async def start(self) -> None:
        """Run in the background; return once the first list has been handled."""
        self.data_root.mkdir(parents=True, exist_ok=True)
        namespace = (
            next(iter(self.namespaces)) if self.namespaces and len(self.namespaces) == 1 else None
        )
        self._task = asyncio.create_task(
            list_watch(self.kube, PVCS, self._on_event, namespace=namespace, synced=self.synced),
            name="testbed-provisioner",
        )
        waiter = asyncio.create_task(self.synced.wait())
        done, _ = await asyncio.wait({self._task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if self._task in done:
            waiter.cancel()
            self._task.result()

    async def stop(self, *, delete_volumes: bool = True) -> None:
        """Stop watching; delete the PVs it created (never their directories) if asked."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if delete_volumes:
            for name in sorted(self.created):
                with contextlib.suppress(ApiError):
                    await self.kube.delete(PVS, name)
            self.created.clear()

    async def _on_event(self, kind: str, claim: JSON) -> None:
        if kind in ("DELETED", "RELISTED"):
            return
        meta = claim["metadata"]
        if self.namespaces is not None and meta.get("namespace") not in self.namespaces:
            return
        if meta.get("deletionTimestamp"):
            return
        try:
            if not claim["spec"].get("volumeName"):
                await self._provision(claim)
            elif (claim.get("status") or {}).get("phase") == "Bound":
                await self._resize(claim)
        except ApiError as error:
            log.warning("claim %s/%s: %s", meta.get("namespace"), meta["name"], error)

    async def _provision(self, claim: JSON) -> None:
        meta, spec = claim["metadata"], claim["spec"]
        namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
        pv_name = f"pvc-{uid}"
        if pv_name in self.created:
            return
        request = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
        directory = self.claim_dir(namespace, name, uid)
        directory.mkdir(parents=True, exist_ok=True)
        pv: JSON = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {
                "name": pv_name,
                "labels": {
                    LABEL_PROVISIONER: "hostpath",
                    LABEL_CLAIM_NAMESPACE: namespace,
                    LABEL_CLAIM_NAME: name,
                },
                "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER_NAME},
            },
            "spec": {
                "capacity": {"storage": request},
                "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                "volumeMode": spec.get("volumeMode") or "Filesystem",
                "storageClassName": spec.get("storageClassName") or "",
                "persistentVolumeReclaimPolicy": "Retain",
                "hostPath": {"path": str(directory), "type": "Directory"},
                "claimRef": {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "namespace": namespace,
                    "name": name,
                    "uid": uid,
                },
            },
        }
        try:
            await self.kube.create(PVS, pv)
        except ApiError as error:
            if not error.conflict:
                raise
        self.created.add(pv_name)
        log.info("provisioned %s for claim %s/%s at %s", pv_name, namespace, name, directory)
        if self.reuse_by_name:
            await self._delete_released(namespace, name, keep=pv_name)

    async def _delete_released(self, namespace: str, name: str, keep: str) -> None:
        """Drop Released PVs of earlier claims of this name: their directory is in use again."""
        selector = f"{LABEL_CLAIM_NAMESPACE}={namespace},{LABEL_CLAIM_NAME}={name}"
        listing = await self.kube.request("GET", PVS.path(), query={"labelSelector": selector})
        for pv in listing.get("items") or []:
            pv_name = pv["metadata"]["name"]
            if pv_name != keep and (pv.get("status") or {}).get("phase") == "Released":
                await self.kube.delete(PVS, pv_name)
                self.created.discard(pv_name)

    async def _resize(self, claim: JSON) -> None:
        meta, spec = claim["metadata"], claim["spec"]
        status = claim.get("status") or {}
        request = ((spec.get("resources") or {}).get("requests") or {}).get("storage")
        current = (status.get("capacity") or {}).get("storage")
        if not request or not current or parse_quantity(request) <= parse_quantity(current):
            return
        pv = await self.kube.get(PVS, spec["volumeName"])
        if (pv["metadata"].get("labels") or {}).get(LABEL_PROVISIONER) != "hostpath":
            return  # not ours
        await self.kube.merge_patch(
            PVS, pv["metadata"]["name"], {"spec": {"capacity": {"storage": request}}}
        )
        conditions = [
            c for c in status.get("conditions") or [] if c.get("type") not in _RESIZE_CONDITIONS
        ]
        patch = {
            "status": {
                "capacity": {"storage": request},
                "allocatedResources": {"storage": request},
                "allocatedResourceStatuses": None,
                "conditions": conditions or None,
            }
        }
        await self.kube.merge_patch(
            PVCS, meta["name"], patch, meta["namespace"], subresource="status"
        )
        log.info("resized claim %s/%s to %s", meta["namespace"], meta["name"], request)


async def ensure_storage_class(kube: KubeClient, name: str = STORAGE_CLASS) -> None:
    """A non-default StorageClass that allows expansion (the API server checks the class)."""
    body = {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": name},
        "provisioner": PROVISIONER_NAME,
        "reclaimPolicy": "Retain",
        "volumeBindingMode": "Immediate",
        "allowVolumeExpansion": True,
    }
    try:
        await kube.create(STORAGECLASSES, body)
    except ApiError as error:
        if not error.conflict:
            raise


@contextlib.asynccontextmanager
async def running_provisioner(
    kube: KubeClient,
    data_root: Path,
    *,
    namespaces: Collection[str] | None = None,
    reuse_by_name: bool = True,
) -> AsyncIterator[Provisioner]:
    """A started Provisioner (with STORAGE_CLASS ensured), stopped and its PVs deleted after."""
    await ensure_storage_class(kube)
    provisioner = Provisioner(kube, data_root, namespaces=namespaces, reuse_by_name=reuse_by_name)
    await provisioner.start()
    try:
        yield provisioner
    finally:
        await provisioner.stop()
