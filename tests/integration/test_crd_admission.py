"""The generated CRD against a real kube-apiserver: it installs, and its schema and CEL rules admit
exactly the manifests they should, with the messages the corpus promises.

Dry runs (`dryRun=All`, `fieldValidation=Strict`) go through the full admission chain without
storing anything; transition rules (oldSelf) need stored objects, so those tests create and
update real ones in a fresh namespace.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from dittofs_controller.api import crd, v1alpha1
from dittofs_controller.api.schema import parse
from dittofs_controller.kube.client import ApiError, KubeClient
from dittofs_controller.kube.resources import CRDS, Resource

CORPUS = Path(__file__).resolve().parents[1] / "unit" / "api"
VALID = sorted((CORPUS / "valid").glob("*.yaml"))
INVALID = sorted((CORPUS / "invalid").glob("*.yaml"))
EXPECT = re.compile(r"^# expect: (?P<message>\S.*)$")
DITTOSERVERS = Resource(v1alpha1.GROUP, v1alpha1.VERSION, crd.PLURAL, v1alpha1.KIND)
# Dry runs store nothing, so they can all share a namespace that always exists.
DRY_RUN_NAMESPACE = "default"
DRY_RUN = {"dryRun": "All", "fieldValidation": "Strict"}


def load(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict)
    return document


def minimal(name: str) -> dict[str, Any]:
    document = load(CORPUS / "valid" / "minimal.yaml")
    document["metadata"]["name"] = name
    return document


async def create(
    kube: KubeClient, body: dict[str, Any], namespace: str, *, dry_run: bool = False
) -> dict[str, Any]:
    body = copy.deepcopy(body)
    body["metadata"]["namespace"] = namespace
    return await kube.request(
        "POST",
        DITTOSERVERS.path(namespace),
        query=DRY_RUN if dry_run else {"fieldValidation": "Strict"},
        body=body,
    )


async def update(kube: KubeClient, obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    return await kube.request(
        "PUT",
        DITTOSERVERS.path(meta["namespace"], meta["name"]),
        query={"fieldValidation": "Strict"},
        body=obj,
    )


async def rejected(kube: KubeClient, obj: dict[str, Any]) -> str:
    with pytest.raises(ApiError) as info:
        await update(kube, obj)
    assert info.value.status == 422, info.value
    return info.value.message


# --- the CRD itself ---------------------------------------------------------------------------


async def test_crd_is_stored_as_generated(dittoservers: KubeClient) -> None:
    stored = await dittoservers.get(CRDS, crd.NAME)
    (version,) = stored["spec"]["versions"]
    assert version["schema"] == crd.crd()["spec"]["versions"][0]["schema"]
    accepted = stored["status"]["acceptedNames"]
    assert (accepted["shortNames"], accepted["categories"]) == (["dittosrv"], ["dittofs"])


# --- the corpus -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
async def test_valid_manifest_is_admitted_with_the_model_defaults(
    dittoservers: KubeClient, path: Path
) -> None:
    document = load(path)
    admitted = await create(dittoservers, document, DRY_RUN_NAMESPACE, dry_run=True)
    # The API server's defaults and the model's agree: both sides parse to the same spec.
    assert parse(v1alpha1.DittoServer, admitted).spec == parse(v1alpha1.DittoServer, document).spec


def expected_message(path: Path) -> str:
    match = EXPECT.match(path.read_text().splitlines()[0])
    assert match, f"{path.name}: no '# expect:' line"
    return match["message"]


@pytest.mark.parametrize(
    ("path", "message"), [(p, expected_message(p)) for p in INVALID], ids=[p.name for p in INVALID]
)
async def test_invalid_manifest_is_rejected_with_its_message(
    dittoservers: KubeClient, path: Path, message: str
) -> None:
    with pytest.raises(ApiError) as info:
        await create(dittoservers, load(path), DRY_RUN_NAMESPACE, dry_run=True)
    assert info.value.status in (400, 422), info.value
    assert message in info.value.message


# --- transition rules (need a stored object) --------------------------------------------------


async def test_storage_can_grow_but_not_shrink(dittoservers: KubeClient, namespace: str) -> None:
    obj = minimal("grow")
    obj["spec"]["localBlockStores"][0]["filesystem"] = {"storage": {"size": "10Gi"}}
    obj = await create(dittoservers, obj, namespace)

    obj["spec"]["localBlockStores"][0]["filesystem"]["storage"]["size"] = "20Gi"
    obj = await update(dittoservers, obj)

    obj["spec"]["localBlockStores"][0]["filesystem"]["storage"]["size"] = "15Gi"
    message = await rejected(dittoservers, obj)
    assert "storage size cannot shrink: PersistentVolumeClaims can only grow" in message


async def test_control_plane_storage_cannot_shrink(
    dittoservers: KubeClient, namespace: str
) -> None:
    obj = await create(dittoservers, minimal("cp-shrink"), namespace)
    obj["spec"]["controlPlane"]["database"]["sqlite"]["storage"]["size"] = "512Mi"
    assert "storage size cannot shrink" in await rejected(dittoservers, obj)


async def test_storage_class_is_immutable_once_set(
    dittoservers: KubeClient, namespace: str
) -> None:
    obj = await create(dittoservers, minimal("class"), namespace)
    storage = {"storageClassName": "fast"}
    obj["spec"]["metadataStores"][0]["badger"] = {"storage": storage}
    obj = await update(dittoservers, obj)  # setting it later is allowed

    obj["spec"]["metadataStores"][0]["badger"]["storage"]["storageClassName"] = "slow"
    assert "storageClassName is immutable once set" in await rejected(dittoservers, obj)

    del obj["spec"]["metadataStores"][0]["badger"]["storage"]["storageClassName"]
    assert "storageClassName is immutable once set" in await rejected(dittoservers, obj)


async def test_store_types_are_immutable(dittoservers: KubeClient, namespace: str) -> None:
    obj = minimal("types")
    obj["spec"]["remoteBlockStores"] = [{"name": "r", "type": "memory"}]
    obj = await create(dittoservers, obj, namespace)

    changed = copy.deepcopy(obj)
    changed["spec"]["metadataStores"][0]["type"] = "memory"
    assert "metadataStores[].type is immutable" in await rejected(dittoservers, changed)

    changed = copy.deepcopy(obj)
    changed["spec"]["localBlockStores"][0]["type"] = "memory"
    assert "localBlockStores[].type is immutable" in await rejected(dittoservers, changed)

    changed = copy.deepcopy(obj)
    changed["spec"]["remoteBlockStores"][0] = {
        "name": "r",
        "type": "s3",
        "s3": {"bucket": "data", "credentialsSecretRef": {"name": "keys"}},
    }
    assert "remoteBlockStores[].type is immutable" in await rejected(dittoservers, changed)

    # Replacing a store under a new name is the supported path.
    obj["spec"]["metadataStores"].append({"name": "meta2", "type": "memory"})
    await update(dittoservers, obj)


async def test_remote_encryption_is_fixed_once_the_store_exists(
    dittoservers: KubeClient, namespace: str
) -> None:
    obj = minimal("sealed")
    obj["spec"]["remoteBlockStores"] = [
        {"name": "plain", "type": "memory", "compression": "lz4"},
        {"name": "sealed", "type": "memory", "encryption": {}},
    ]
    obj = await create(dittoservers, obj, namespace)
    stored = obj["spec"]["remoteBlockStores"]
    assert stored[1]["encryption"] == {"aead": "aes-256-gcm"}
    message = "remoteBlockStores[].encryption cannot be added, removed or changed"
    for store, encryption in ((0, {}), (1, None), (1, {"aead": "chacha20-poly1305"})):
        changed = copy.deepcopy(obj)
        if encryption is None:
            del changed["spec"]["remoteBlockStores"][store]["encryption"]
        else:
            changed["spec"]["remoteBlockStores"][store]["encryption"] = encryption
        assert message in await rejected(dittoservers, changed), (store, encryption)

    # Compression may change: blocks say how they were written.
    obj["spec"]["remoteBlockStores"][0]["compression"] = "zstd"
    await update(dittoservers, obj)


async def test_share_keeps_its_metadata_store(dittoservers: KubeClient, namespace: str) -> None:
    obj = minimal("share-store")
    obj["spec"]["metadataStores"].append({"name": "other", "type": "memory"})
    obj = await create(dittoservers, obj, namespace)
    obj["spec"]["shares"][0]["metadataStore"] = "other"
    assert "shares[].metadataStore is immutable" in await rejected(dittoservers, obj)


async def test_kerberos_is_turned_off_before_it_is_removed(
    dittoservers: KubeClient, namespace: str
) -> None:
    obj = minimal("kerberos")
    obj["spec"]["identity"] = load(CORPUS / "valid" / "identity-kerberos.yaml")["spec"]["identity"]
    obj = await create(dittoservers, obj, namespace)
    assert obj["spec"]["identity"]["kerberos"]["enabled"] is True
    removed = copy.deepcopy(obj)
    del removed["spec"]["identity"]
    message = "identity.kerberos can only be removed once it is off"
    assert message in await rejected(dittoservers, removed)
    obj["spec"]["identity"]["kerberos"]["enabled"] = False
    obj = await update(dittoservers, obj)
    del obj["spec"]["identity"]["kerberos"]
    await update(dittoservers, obj)


async def test_stop_and_start(dittoservers: KubeClient, namespace: str) -> None:
    obj = await create(dittoservers, minimal("stop"), namespace)
    obj["spec"]["replicas"] = 0
    obj = await update(dittoservers, obj)
    assert obj["spec"]["replicas"] == 0
    obj["spec"]["replicas"] = 1
    await update(dittoservers, obj)


# --- status subresource -----------------------------------------------------------------------


async def test_status_accepts_conditions_and_runtime_state(
    dittoservers: KubeClient, namespace: str
) -> None:
    await create(dittoservers, minimal("status"), namespace)
    condition = {
        "type": "Ready",
        "status": "True",
        "reason": "Serving",
        "message": "NFS and SMB are up",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
        "observedGeneration": 1,
    }
    status = {
        "observedGeneration": 1,
        "phase": "Running",
        "conditions": [condition],
        "endpoints": {"nfs": "10.0.0.1:2049", "smb": "10.0.0.2:445"},
        "server": {"adapters": [{"type": "nfs", "running": True, "port": 12049}]},
    }
    stored = await dittoservers.merge_patch(
        DITTOSERVERS, "status", {"status": status}, namespace, subresource="status"
    )
    assert stored["status"] == status
    assert parse(v1alpha1.DittoServer, stored).status == parse(v1alpha1.DittoServerStatus, status)

    bad = {"status": {"conditions": [{**condition, "status": "Maybe"}]}}
    with pytest.raises(ApiError) as info:
        await dittoservers.merge_patch(DITTOSERVERS, "status", bad, namespace, subresource="status")
    assert 'Unsupported value: "Maybe"' in info.value.message
