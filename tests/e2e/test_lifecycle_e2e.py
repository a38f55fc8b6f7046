"""What happens to a running server and its files when things change, end to end.

All on the badger-filesystem sample (everything on volumes): files survive a deleted pod and a
restarting change; changes DittoFS takes over REST (shares, user passwords) do not restart the
pod; deleting the DittoServer under deletionPolicy Retain keeps its claims, and a DittoServer
created again under the same name serves the same files.
"""

from __future__ import annotations

import asyncio
import copy
import time
from typing import Any

from dittofs_controller.kube.resources import (
    CONFIGMAPS,
    DITTOSERVERS,
    PODS,
    PVCS,
    SECRETS,
    STATEFULSETS,
)
from dittofs_controller.operator import names
from tests.e2e.conftest import SAMPLES_DIR, Deployment, Timings, documents
from tests.support.clients import Nfs, Smb
from tests.testbed.devserver import local_clients

Obj = dict[str, Any]
SAMPLE = SAMPLES_DIR / "badger-filesystem.yaml"
NAME = "badger-filesystem"
BIG = "".join(f"{i:08d} persistent payload line\n" for i in range(60000))  # ~1.9 MB


def base_docs() -> list[Obj]:
    return local_clients(documents(SAMPLE))


async def write_files(deployment: Deployment) -> None:
    """A small file over NFSv3, a multi-block one over NFSv3, one over SMB."""
    nfs, smb = await deployment.nfs(NAME), await deployment.smb(NAME)
    await nfs.write("/notes.txt", "kept across restarts\n", deployment.scratch)
    await nfs.write("/big.txt", BIG, deployment.scratch)
    await smb.put("smb.txt", "written over SMB\n", deployment.scratch)


async def assert_files(deployment: Deployment, when: str) -> None:
    nfs, smb = await deployment.nfs(NAME), await deployment.smb(NAME)
    listing = set(await nfs.listing())
    assert {"notes.txt", "big.txt", "smb.txt"} <= listing, f"{when}: NFSv4 lists {listing}"
    assert await nfs.read("/notes.txt") == "kept across restarts\n", when
    assert await nfs.read("/big.txt") == BIG, f"{when}: big.txt differs"
    assert await smb.read("smb.txt", deployment.scratch) == "written over SMB\n", when


async def pod_uid(deployment: Deployment) -> str:
    pod = await deployment.pod(NAME)
    return str(pod["metadata"]["uid"])


async def test_files_survive_pod_deletion_and_a_restarting_change(
    deployment: Deployment, timings: Timings
) -> None:
    await deployment.create(base_docs())
    await deployment.wait_ready(NAME)
    timings.mark("ready")
    await write_files(deployment)
    first = await deployment.pod(NAME)

    # The pod goes: the StatefulSet brings a new one, on the same claims.
    await deployment.kube.delete(PODS, f"{NAME}-0", deployment.namespace)
    second = await deployment.pod(NAME, not_uid=first["metadata"]["uid"])
    await deployment.wait_ready(NAME)
    timings.mark("pod-replaced")
    await assert_files(deployment, "after the pod was deleted")

    # A setting DittoFS reads only at start: the pod is replaced with the new config.
    await deployment.patch(NAME, {"controlPlane": {"logLevel": "DEBUG"}})
    third = await deployment.pod(NAME, not_uid=second["metadata"]["uid"])
    await deployment.wait_ready(NAME)
    timings.mark("restarted")
    annotation = names.RESTART_HASH_ANNOTATION
    assert (
        third["metadata"]["annotations"][annotation]
        != (second["metadata"]["annotations"][annotation])
    )
    config = await deployment.kube.get(CONFIGMAPS, names.config_map(NAME), deployment.namespace)
    assert "level: DEBUG" in config["data"][names.CONFIG_KEY]
    debug = '"level":"DEBUG"'
    assert debug not in deployment.server_log(NAME, instance=-2), "the INFO pod logged DEBUG"
    assert debug in deployment.server_log(NAME), "the restarted server does not log at DEBUG"
    await assert_files(deployment, "after the logLevel change restarted the pod")
    timings.mark("checked")


async def test_share_changes_apply_without_a_restart(
    deployment: Deployment, timings: Timings
) -> None:
    docs = base_docs()
    await deployment.create(docs)
    await deployment.wait_ready(NAME)
    await write_files(deployment)
    before = await deployment.pod(NAME)
    revision = await update_revision(deployment)
    timings.mark("ready")

    shares = copy.deepcopy(docs[0]["spec"]["shares"])
    scratch_share = {**copy.deepcopy(shares[0]), "name": "/scratch"}
    await deployment.patch(NAME, {"shares": [*shares, scratch_share]})
    await deployment.wait_ready(NAME)
    await assert_not_restarted(deployment, before, revision, "adding share /scratch")
    nfs_scratch = await deployment.nfs(NAME, "/scratch")
    await nfs_scratch.write("/new.txt", "in the new share\n", deployment.scratch)
    smb_scratch = await deployment.smb(NAME, "/scratch")
    assert await smb_scratch.read("new.txt", deployment.scratch) == "in the new share\n"
    assert "new.txt" not in await (await deployment.nfs(NAME)).listing(), "shares are separate"
    timings.mark("share-added")

    await deployment.patch(NAME, {"shares": shares})
    await deployment.wait_ready(NAME)
    await assert_not_restarted(deployment, before, revision, "removing share /scratch")
    await wait_unmountable(nfs_scratch, smb_scratch)
    await assert_files(deployment, "after /scratch came and went")
    timings.mark("share-removed")


async def test_rotating_a_user_password_changes_the_smb_login(
    deployment: Deployment, timings: Timings
) -> None:
    docs = base_docs()
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "alice-password"},
        "stringData": {"password": "Alice-Old-Passw0rd"},
    }
    docs[0]["spec"]["users"] = [
        {
            "name": "alice",
            "passwordSecretRef": {"name": "alice-password", "key": "password"},
            "uid": 1001,
            "gid": 1001,
        }
    ]
    await deployment.create([secret, *docs])
    await deployment.wait_ready(NAME)
    before = await deployment.pod(NAME)
    revision = await update_revision(deployment)
    old = await deployment.smb(NAME, user="alice", password="Alice-Old-Passw0rd")
    new = await deployment.smb(NAME, user="alice", password="Alice-New-Passw0rd")
    assert await old.login_error() is None, f"alice cannot log in with her password ({old})"
    assert await new.login_error() == "NT_STATUS_LOGON_FAILURE"
    await old.put("alice.txt", "alice was here\n", deployment.scratch)
    timings.mark("ready")

    patch = {"stringData": {"password": "Alice-New-Passw0rd"}}
    await deployment.kube.merge_patch(SECRETS, "alice-password", patch, deployment.namespace)
    deadline = time.monotonic() + 60
    while (error := await new.login_error()) is not None:
        assert time.monotonic() < deadline, (
            f"the new password still fails ({error}) 60 s after the Secret changed\n"
            f"{await deployment.describe(NAME)}"
        )
        await asyncio.sleep(1)
    timings.mark("rotated")
    assert await old.login_error() == "NT_STATUS_LOGON_FAILURE", "the old password still works"
    assert await new.read("alice.txt", deployment.scratch) == "alice was here\n"
    await assert_not_restarted(deployment, before, revision, "rotating a user's password")


async def test_retain_keeps_claims_and_a_recreated_server_serves_the_files(
    deployment: Deployment, timings: Timings
) -> None:
    docs = base_docs()
    await deployment.create(docs)
    await deployment.wait_ready(NAME)
    await write_files(deployment)
    claims = {
        names.controlplane_claim(NAME),
        names.metadata_claim(NAME, "meta"),
        names.blocks_claim(NAME, "blocks"),
    }
    live = await claim_uids(deployment, claims)
    timings.mark("ready")

    kube, namespace = deployment.kube, deployment.namespace
    await kube.delete(DITTOSERVERS, NAME, namespace)
    deadline = time.monotonic() + 120
    while (server := await kube.get_or_none(DITTOSERVERS, NAME, namespace)) is not None or (
        pod := await kube.get_or_none(PODS, f"{NAME}-0", namespace)
    ) is not None:
        assert time.monotonic() < deadline, (
            f"the DittoServer ({server and server['metadata']}) or its pod did not go\n"
            f"{deployment.node.describe(namespace, f'{NAME}-0', pod)}"
        )
        await asyncio.sleep(0.5)
    timings.mark("deleted")
    kept = await claim_uids(deployment, claims)
    assert kept == live, "the claims must be the same objects, untouched"
    for claim in claims:
        pvc = await kube.get(PVCS, claim, namespace)
        assert not pvc["metadata"].get("deletionTimestamp"), f"claim {claim} is being deleted"
        assert not pvc["metadata"].get("ownerReferences"), f"claim {claim} still has an owner"

    # The DittoServer again; alice's password Secret is the user's, never deleted with it.
    await deployment.create([doc for doc in docs if doc["kind"] == "DittoServer"])
    await deployment.wait_ready(NAME)
    timings.mark("recreated")
    assert await claim_uids(deployment, claims) == live, "the new server adopted other claims"
    await assert_files(deployment, "after the DittoServer was deleted and created again")


# -- helpers ---------------------------------------------------------------------------------


async def update_revision(deployment: Deployment) -> str:
    sts = await deployment.kube.get(STATEFULSETS, names.statefulset(NAME), deployment.namespace)
    return str(sts["status"]["updateRevision"])


async def assert_not_restarted(
    deployment: Deployment, before: Obj, revision: str, change: str
) -> None:
    """Same pod, container never restarted, pod template unchanged."""
    now = await deployment.pod(NAME)
    assert now["metadata"]["uid"] == before["metadata"]["uid"], f"{change} replaced the pod"
    restarts = now["status"]["containerStatuses"][0]["restartCount"]
    assert restarts == 0, f"{change}: the container restarted {restarts} time(s)"
    assert await update_revision(deployment) == revision, f"{change} changed the pod template"


async def wait_unmountable(nfs: Nfs, smb: Smb, timeout: float = 30) -> None:
    """A removed share: NFS cannot mount it, SMB cannot connect to it."""
    deadline = time.monotonic() + timeout
    while True:
        nfs_error, smb_error = await nfs.reachable(), await smb.login_error()
        if nfs_error is not None and smb_error is not None:
            assert "MNT3ERR_NOENT" in nfs_error or "NFS4ERR_NOENT" in nfs_error, nfs_error
            assert smb_error == "NT_STATUS_BAD_NETWORK_NAME", smb_error
            return
        assert time.monotonic() < deadline, (
            f"the removed share is still served: NFS {nfs_error or 'ok'}, SMB {smb_error or 'ok'}"
        )
        await asyncio.sleep(1)


async def claim_uids(deployment: Deployment, claims: set[str]) -> dict[str, str]:
    found = {}
    for claim in claims:
        pvc = await deployment.kube.get(PVCS, claim, deployment.namespace)
        found[claim] = pvc["metadata"]["uid"]
    return found
