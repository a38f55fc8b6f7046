"""The storage reconciler on the real API server: claims, growth, binding states, Retain/Delete.

There is no provisioner and no kubelet: a test binds a claim by creating a PersistentVolume
reserved for it (the real PV binder in kube-controller-manager does the binding), and finishes
an expansion by writing the claim's status capacity, as a CSI resizer would.
"""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from dittofs_controller.kube.client import KubeClient
from dittofs_controller.kube.resources import (
    CONFIGMAPS,
    DITTOSERVERS,
    PODS,
    PVCS,
    SECRETS,
    STORAGECLASSES,
    ObjectKey,
    Resource,
)
from dittofs_controller.operator import names
from dittofs_controller.operator.base import Context
from dittofs_controller.operator.children import child_metadata
from dittofs_controller.operator.config.reconciler import ConfigReconciler
from dittofs_controller.operator.specs import server_spec
from dittofs_controller.operator.storage import reconciler as storage_reconciler
from dittofs_controller.runtime.informer import ResourceCache
from dittofs_controller.settings import Settings
from tests.integration.operator.conftest import (
    StartOperator,
    condition,
    load_manifest,
    wait_for,
)

VALID = Path(__file__).resolve().parents[2] / "unit" / "api" / "valid"
PVS = Resource("", "v1", "persistentvolumes", "PersistentVolume", namespaced=False)

Obj = dict[str, Any]


def server(namespace: str, name: str = "files", **spec: Any) -> Obj:
    """A DittoServer with one badger and one filesystem store (minimal.yaml), spec overridden."""
    manifest = load_manifest(VALID / "minimal.yaml", namespace)
    manifest["metadata"]["name"] = name
    manifest["spec"].update(copy.deepcopy(spec))
    return manifest


def stores(storage_class: str, size: str = "1Gi", **storage: Any) -> Obj:
    """Spec fields putting every volume (control plane, metadata, blocks) on `storage_class`."""
    volume = {"storage": {"size": size, "storageClassName": storage_class, **storage}}
    return {
        "controlPlane": {"database": {"type": "sqlite", "sqlite": copy.deepcopy(volume)}},
        "metadataStores": [{"name": "meta", "type": "badger", "badger": copy.deepcopy(volume)}],
        "localBlockStores": [{"name": "blocks", "type": "memory"}],
        "shares": [],
    }


CLAIMS = ("files-controlplane", "files-meta-meta")


async def storage_ready(kube: KubeClient, key: ObjectKey) -> Obj | None:
    return await condition(kube, key, "StorageReady")


async def wait_reason(kube: KubeClient, key: ObjectKey, reason: str, timeout: float = 30) -> Obj:
    async def check() -> Obj | None:
        found = await storage_ready(kube, key)
        return found if found and found["reason"] == reason else None

    try:
        result: Obj = await wait_for(check, f"StorageReady reason {reason}", timeout)
    except AssertionError as error:
        raise AssertionError(
            f"{reason} not reached; last: {await storage_ready(kube, key)}"
        ) from error
    return result


async def claim(kube: KubeClient, namespace: str, name: str) -> Obj | None:
    return await kube.get_or_none(PVCS, name, namespace)


@pytest.fixture
async def cluster_objects(kube: KubeClient) -> AsyncIterator[list[tuple[Resource, str]]]:
    """Cluster-scoped objects a test creates (StorageClasses, PersistentVolumes), deleted after:
    the control plane is shared by the whole session."""
    created: list[tuple[Resource, str]] = []
    yield created
    for resource, name in reversed(created):
        await kube.delete(resource, name)


MakeClass = Callable[..., Awaitable[str]]


@pytest.fixture
def storage_class(kube: KubeClient, cluster_objects: list[tuple[Resource, str]]) -> MakeClass:
    async def make(**fields: Any) -> str:
        name = f"test-{uuid.uuid4().hex[:8]}"
        body = {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": name},
            "provisioner": "example.com/nothing",
            **fields,
        }
        await kube.create(STORAGECLASSES, body)
        cluster_objects.append((STORAGECLASSES, name))
        return name

    return make


Reserve = Callable[[str, str, str], Awaitable[None]]


@pytest.fixture
def reserve(kube: KubeClient, cluster_objects: list[tuple[Resource, str]]) -> Reserve:
    """Create a 1Gi ReadWriteOnce PersistentVolume of a class reserved for a claim (made before
    the claim, so the PV binder binds it as soon as the claim appears)."""

    async def reserve_for(namespace: str, name: str, storage_class_name: str) -> None:
        pv_name = f"pv-{uuid.uuid4().hex[:10]}"
        body = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": pv_name},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": storage_class_name,
                "persistentVolumeReclaimPolicy": "Retain",
                "hostPath": {"path": f"/tmp/{pv_name}"},
                "claimRef": {"namespace": namespace, "name": name},
            },
        }
        await kube.create(PVS, body)
        cluster_objects.append((PVS, pv_name))

    return reserve_for


async def test_claims_follow_the_spec_and_are_restored_when_edited_or_deleted(
    kube: KubeClient, namespace: str, start_operator: StartOperator
) -> None:
    await start_operator()
    manifest = load_manifest(VALID / "storage-options.yaml", namespace)
    await kube.create(DITTOSERVERS, manifest, namespace)
    key = ObjectKey(namespace, manifest["metadata"]["name"])
    stored = await kube.get(DITTOSERVERS, key.name, namespace)
    ready = await wait_reason(kube, key, "Provisioning")
    assert ready["status"] == "True"

    expected = {
        "storage-controlplane": ("512Mi", "standard", ["ReadWriteOnce"]),
        "storage-meta-meta": ("5Gi", "fast-ssd", ["ReadWriteOncePod"]),
        "storage-blocks-blocks": ("1Ti", "bulk-hdd", ["ReadWriteOnce"]),
    }
    for name, (size, storage_class_name, modes) in expected.items():
        live = await kube.get(PVCS, name, namespace)
        assert live["spec"]["resources"]["requests"]["storage"] == size
        assert live["spec"]["storageClassName"] == storage_class_name
        assert live["spec"]["accessModes"] == modes
        owner = live["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["uid"], owner["controller"]) == (
            "DittoServer",
            stored["metadata"]["uid"],
            True,
        )
        assert name in ready["message"]

    # An edited label is put back; a deleted claim is created again.
    await kube.merge_patch(
        PVCS,
        "storage-meta-meta",
        {"metadata": {"labels": {"app.kubernetes.io/component": "edited"}}},
        namespace,
    )

    async def label_restored() -> bool:
        live = await kube.get(PVCS, "storage-meta-meta", namespace)
        return bool(live["metadata"]["labels"]["app.kubernetes.io/component"] == "storage")

    await wait_for(label_restored, "the claim's label to be restored")

    first = await kube.get(PVCS, "storage-blocks-blocks", namespace)
    await kube.delete(PVCS, "storage-blocks-blocks", namespace)

    async def recreated() -> bool:
        live = await claim(kube, namespace, "storage-blocks-blocks")
        return live is not None and live["metadata"]["uid"] != first["metadata"]["uid"]

    await wait_for(recreated, "the deleted claim to be created again")


async def test_a_removed_store_keeps_its_claim_and_says_so(
    kube: KubeClient, namespace: str, start_operator: StartOperator
) -> None:
    await start_operator()
    manifest = server(namespace)
    manifest["spec"]["metadataStores"].append({"name": "old", "type": "badger"})
    await kube.create(DITTOSERVERS, manifest, namespace)
    key = ObjectKey(namespace, "files")
    await wait_for(lambda: claim(kube, namespace, "files-meta-old"), "the claim of store old")

    await kube.merge_patch(
        DITTOSERVERS,
        "files",
        {"spec": {"metadataStores": [{"name": "meta", "type": "badger"}]}},
        namespace,
    )

    async def mentioned() -> bool:
        found = await storage_ready(kube, key)
        return bool(found and "no longer in the spec: files-meta-old" in found["message"])

    await wait_for(mentioned, "the kept claim to be mentioned")
    assert await claim(kube, namespace, "files-meta-old") is not None


async def test_a_bound_claim_grows_and_reports_resizing_until_its_capacity_follows(
    kube: KubeClient,
    namespace: str,
    start_operator: StartOperator,
    storage_class: MakeClass,
    reserve: Reserve,
) -> None:
    expandable = await storage_class(allowVolumeExpansion=True)
    for name in CLAIMS:
        await reserve(namespace, name, expandable)
    await start_operator()
    await kube.create(DITTOSERVERS, server(namespace, **stores(expandable, "1Gi")), namespace)
    key = ObjectKey(namespace, "files")
    bound = await wait_reason(kube, key, "Bound")
    assert bound["status"] == "True"

    grown = stores(expandable, "2Gi")
    await kube.merge_patch(DITTOSERVERS, "files", {"spec": grown}, namespace)
    resizing = await wait_reason(kube, key, "Resizing")
    assert resizing["status"] == "True"
    assert "files-meta-meta is being expanded from 1Gi to 2Gi" in resizing["message"]
    for name in CLAIMS:
        live = await kube.get(PVCS, name, namespace)
        assert live["spec"]["resources"]["requests"]["storage"] == "2Gi"

    for name in CLAIMS:  # the resizer finishes
        await kube.merge_patch(
            PVCS,
            name,
            {"status": {"capacity": {"storage": "2Gi"}}},
            namespace,
            subresource="status",
        )
    await wait_reason(kube, key, "Bound")


async def test_a_class_without_expansion_blocks_growth_without_touching_the_claim(
    kube: KubeClient,
    namespace: str,
    start_operator: StartOperator,
    storage_class: MakeClass,
    reserve: Reserve,
) -> None:
    fixed = await storage_class()
    for name in CLAIMS:
        await reserve(namespace, name, fixed)
    await start_operator()
    await kube.create(DITTOSERVERS, server(namespace, **stores(fixed, "1Gi")), namespace)
    key = ObjectKey(namespace, "files")
    await wait_reason(kube, key, "Bound")

    await kube.merge_patch(DITTOSERVERS, "files", {"spec": stores(fixed, "2Gi")}, namespace)
    blocked = await wait_reason(kube, key, "ClaimExpansionNotSupported")
    assert blocked["status"] == "False"
    assert f"StorageClass {fixed} does not set allowVolumeExpansion" in blocked["message"]
    live = await kube.get(PVCS, "files-meta-meta", namespace)
    assert live["spec"]["resources"]["requests"]["storage"] == "1Gi"


async def test_binding_states(
    kube: KubeClient,
    namespace: str,
    start_operator: StartOperator,
    storage_class: MakeClass,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(storage_reconciler, "PENDING_GRACE", 3.0)
    wffc = await storage_class(volumeBindingMode="WaitForFirstConsumer")
    immediate = await storage_class()
    await start_operator()

    await kube.create(DITTOSERVERS, server(namespace, "late", **stores(wffc)), namespace)
    waiting = await wait_reason(kube, ObjectKey(namespace, "late"), "WaitingForFirstConsumer")
    assert waiting["status"] == "True"
    assert "late-meta-meta is bound when the DittoFS pod is scheduled" in waiting["message"]

    await kube.create(DITTOSERVERS, server(namespace, "stuck", **stores(immediate)), namespace)
    stuck = ObjectKey(namespace, "stuck")

    async def both_claims_pending() -> Obj | None:
        # The claims pass their grace period one after the other: wait until both are reported.
        found = await storage_ready(kube, stuck)
        ok = found and found["reason"] == "ClaimPending" and "stuck-meta-meta" in found["message"]
        return found if ok else None

    pending = await wait_for(both_claims_pending, "both claims reported Pending")
    assert pending["status"] == "False"
    assert (
        "stuck-controlplane (the control-plane database) has been Pending since"
        in pending["message"]
    )
    assert "stuck-meta-meta (metadata store meta) has been Pending since" in pending["message"]

    # A claim that stays Pending must not rewrite the status on every pass (each write would
    # trigger the next pass: a hot loop). The other concerns may still be catching up (the
    # pod being created, Ready quoting them), so the status must come to rest: 4 s unchanged.
    async def at_rest() -> bool:
        before = (await kube.get(DITTOSERVERS, "stuck", namespace))["metadata"]["resourceVersion"]
        await asyncio.sleep(4)
        after = (await kube.get(DITTOSERVERS, "stuck", namespace))["metadata"]["resourceVersion"]
        return before == after

    await wait_for(at_rest, "the status to come to rest", 60)
    assert f"StorageClass {immediate} (provisioner example.com/nothing)" in pending["message"]
    assert f"kubectl describe pvc stuck-meta-meta -n {namespace}" in pending["message"]


async def test_what_a_claim_cannot_change_is_reported_and_the_claim_kept(
    kube: KubeClient, namespace: str, start_operator: StartOperator, storage_class: MakeClass
) -> None:
    later = await storage_class()
    await start_operator()
    await kube.create(DITTOSERVERS, server(namespace), namespace)
    key = ObjectKey(namespace, "files")
    await wait_reason(kube, key, "Provisioning")
    first = await kube.get(PVCS, "files-meta-meta", namespace)
    assert "storageClassName" not in first["spec"]  # no default class in this cluster

    # A class set after the claim was made is for new volumes: not an error.
    volume = {"storage": {"storageClassName": later}}
    await kube.merge_patch(
        DITTOSERVERS,
        "files",
        {"spec": {"metadataStores": [{"name": "meta", "type": "badger", "badger": volume}]}},
        namespace,
    )
    await wait_for(
        lambda: claim(kube, namespace, "files-blocks-blocks"), "the operator to keep working"
    )

    async def observed() -> Obj | None:
        stored = await kube.get(DITTOSERVERS, "files", namespace)
        found = await storage_ready(kube, key)
        current = found and found["observedGeneration"] == stored["metadata"]["generation"]
        return found if current else None

    assert (await wait_for(observed, "the class change to be observed"))["status"] == "True"

    volume = {"storage": {"storageClassName": later, "accessModes": ["ReadWriteMany"]}}
    await kube.merge_patch(
        DITTOSERVERS,
        "files",
        {"spec": {"metadataStores": [{"name": "meta", "type": "badger", "badger": volume}]}},
        namespace,
    )
    refused = await wait_reason(kube, key, "ClaimImmutableFieldChanged")
    assert refused["status"] == "False"
    assert "files-meta-meta (metadata store meta) cannot change accessModes" in refused["message"]
    live = await kube.get(PVCS, "files-meta-meta", namespace)
    assert live["metadata"]["uid"] == first["metadata"]["uid"]
    assert live["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert "storageClassName" not in live["spec"]


async def gone(kube: KubeClient, namespace: str, name: str) -> bool:
    return await kube.get_or_none(DITTOSERVERS, name, namespace) is None


async def test_retain_keeps_the_claims_and_a_new_server_of_the_same_name_adopts_them(
    kube: KubeClient, namespace: str, start_operator: StartOperator
) -> None:
    await start_operator()
    await kube.create(DITTOSERVERS, server(namespace), namespace)
    key = ObjectKey(namespace, "files")
    await wait_reason(kube, key, "Provisioning")
    before = {name: await kube.get(PVCS, name, namespace) for name in CLAIMS}

    await kube.delete(DITTOSERVERS, "files", namespace)
    await wait_for(lambda: gone(kube, namespace, "files"), "the DittoServer to go")
    for name in CLAIMS:
        live = await kube.get(PVCS, name, namespace)
        assert not live["metadata"].get("ownerReferences")
        assert not live["metadata"].get("deletionTimestamp")

    await kube.create(DITTOSERVERS, server(namespace), namespace)
    new_uid = (await kube.get(DITTOSERVERS, "files", namespace))["metadata"]["uid"]

    async def adopted() -> bool:
        for name in CLAIMS:
            refs = (await kube.get(PVCS, name, namespace))["metadata"].get("ownerReferences")
            if not refs or refs[0]["uid"] != new_uid:
                return False
        return True

    await wait_for(adopted, "the retained claims to be adopted")
    for name in CLAIMS:  # the same claims, so the same data
        live = await kube.get(PVCS, name, namespace)
        assert live["metadata"]["uid"] == before[name]["metadata"]["uid"]


async def test_delete_lets_the_garbage_collector_remove_the_claims(
    kube: KubeClient, namespace: str, start_operator: StartOperator
) -> None:
    await start_operator()
    await kube.create(DITTOSERVERS, server(namespace, deletionPolicy="Delete"), namespace)
    await wait_reason(kube, ObjectKey(namespace, "files"), "Provisioning")

    await kube.delete(DITTOSERVERS, "files", namespace)

    async def claims_gone() -> bool:
        return all([await claim(kube, namespace, name) is None for name in CLAIMS])

    # The garbage collector may need ~30 s to discover a freshly installed CRD's kind.
    await wait_for(claims_gone, "the garbage collector to delete the claims", timeout=90)


async def test_retain_keeps_children_the_cache_has_not_seen_yet(
    dittoservers: KubeClient, namespace: str
) -> None:
    """A child created a moment before its DittoServer is deleted may not be cached yet when
    the finalizer runs; Retain must keep it all the same. No operator runs here and the caches
    are never started: as if every child's watch event were still on its way."""
    kube = dittoservers
    created = await kube.create(DITTOSERVERS, server(namespace, deletionPolicy="Retain"), namespace)
    claim = names.controlplane_claim("files")
    jwt = names.jwt_secret("files")
    await kube.create(
        PVCS,
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": child_metadata(created, claim, "storage"),
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
        namespace,
    )
    await kube.create(
        SECRETS,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": child_metadata(created, jwt, "config"),
            "stringData": {"secret": "not-read-by-this-test"},
        },
        namespace,
    )

    def unstarted(resource: Resource) -> ResourceCache:
        return ResourceCache(kube, resource, namespaces=[namespace])

    ctx = Context(
        client=kube,
        servers=unstarted(DITTOSERVERS),
        secrets=unstarted(SECRETS),
        pods=unstarted(PODS),
        secret_values=None,  # type: ignore[arg-type]  # release reads no Secret value
        events=None,  # type: ignore[arg-type]  # and records no Event
        settings=Settings(),
    )
    spec = server_spec(created)
    await storage_reconciler.StorageReconciler(ctx, unstarted(PVCS)).release(created, spec)
    await ConfigReconciler(ctx, unstarted(CONFIGMAPS)).release(created, spec)

    for resource, name in ((PVCS, claim), (SECRETS, jwt)):
        live = await kube.get(resource, name, namespace)
        assert "ownerReferences" not in live["metadata"], f"{resource.kind} {name} still owned"
