"""Stops with a remote block store, against the real DittoFS and a real S3 (moto): every byte
written just before a stop is in the bucket once the pod is gone.

DittoFS v0.29.0 uploads nothing on SIGTERM, so these tests fail without the operator's drain
(measured: the bucket then lacks most or all of a file written a moment before the stop). The
proof that the bucket holds the file is the strongest there is: the local block store's volume
is emptied while no pod runs, the server starts on it again, DittoFS warms the share from the
bucket alone (POST /shares/{name}/blockstore/warm), and the file read back over NFS has the
hash of what was written. (Emptied and not warmed, DittoFS v0.29.0 reads the file as zeros: its
local store's index is what says which ranges were written.)
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from dittofs_controller.dittofs import DittoFSClient
from dittofs_controller.kube.client import KubeClient
from dittofs_controller.kube.resources import DITTOSERVERS, PODS, PVCS, ObjectKey
from dittofs_controller.operator import names
from dittofs_controller.operator.conditions import now_rfc3339
from tests.integration.operator.conftest import RunningOperator, wait_for
from tests.integration.operator.test_serverconfig import (
    ALICE_OLD,
    create,
    event_reasons,
    pod_ip,
    ready,
    sample,
    secret,
    secret_value,
    server_status,
    set_spec,
    until,
)
from tests.support.clients import Nfs, missing_tools
from tests.support.s3 import S3Endpoint, running_s3
from tests.testbed.node import Node
from tests.testbed.provisioner import PVS

Obj = dict[str, Any]
MIB = 1 << 20
# Never runs on the testbed node (no local binary maps to it): a restarting change whose pod
# cannot start, so nothing but the old pod could have uploaded what the bucket holds.
UNRUNNABLE_IMAGE = "example.invalid/dittofs:never"
WARM_TIMEOUT = 120.0

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def _clients() -> None:
    if missing := missing_tools():
        pytest.fail(f"missing {missing}: apt-get install -y libnfs-utils smbclient")


def with_s3(namespace: str, s3: S3Endpoint, **spec: Any) -> tuple[Obj, Obj]:
    """The sample server with its share's contents in the bucket, and the keys' Secret."""
    remote = {
        "name": "s3",
        "type": "s3",
        "s3": {
            "endpoint": s3.url,
            "region": s3.region,
            "bucket": s3.bucket,
            "prefix": "files/",
            "allowPrivateEndpoint": True,  # the node's bridge address is private
            "credentialsSecretRef": {"name": "s3-keys"},
        },
    }
    export = {**sample(namespace)["spec"]["shares"][0], "remoteBlockStore": "s3"}
    server = sample(namespace, remoteBlockStores=[remote], shares=[export], **spec)
    keys = secret("s3-keys", accessKeyId=s3.access_key_id, secretAccessKey=s3.secret_access_key)
    return server, keys


class Written:
    """A file of random bytes written over NFS, and its hash."""

    def __init__(self, scratch: Path, name: str, size: int) -> None:
        self.path = f"/{name}"
        self.local = scratch / name
        self.local.write_bytes(os.urandom(size))
        self.size = size
        self.digest = hashlib.sha256(self.local.read_bytes()).hexdigest()

    async def write(self, nfs: Nfs) -> None:
        await nfs.upload(self.local, self.path)

    async def read_back(self, nfs: Nfs, scratch: Path) -> str:
        back = scratch / f"back-{self.local.name}"
        await nfs.download(self.path, back)
        return hashlib.sha256(back.read_bytes()).hexdigest()


def bucket_bytes(s3: S3Endpoint) -> int:
    return sum(s3.objects("files/").values())


async def pod_uid(kube: KubeClient, key: ObjectKey) -> str | None:
    pod = await kube.get_or_none(PODS, names.pod(key.name), key.namespace)
    return None if pod is None else str(pod["metadata"]["uid"])


async def pod_gone(kube: KubeClient, key: ObjectKey, uid: str | None) -> None:
    """Wait until the pod of `uid` no longer exists (deleted, or replaced by another)."""

    async def gone() -> bool:
        return await pod_uid(kube, key) != uid

    await wait_for(gone, f"pod {names.pod(key.name)} ({uid}) to be gone", timeout=120)


async def upload_drain(kube: KubeClient, key: ObjectKey, cause: str, since: str) -> Obj:
    """status.uploadDrain once it tells of a wait for `cause` begun at `since` or later (the
    pass that stops the pod writes it, and the pod may be gone first)."""

    async def reported() -> Obj | None:
        server = await kube.get(DITTOSERVERS, key.name, key.namespace)
        drained = dict((server.get("status") or {}).get("uploadDrain") or {})
        fresh = drained.get("startedAt", "") >= since
        return drained if drained.get("cause") == cause and fresh else None

    drained: Obj = await wait_for(reported, f"status.uploadDrain of a {cause} since {since}")
    return drained


async def empty_local_block_store(kube: KubeClient, key: ObjectKey) -> None:
    """Remove everything from the share's local block store volume, while no pod uses it."""
    claim = await kube.get(PVCS, names.blocks_claim(key.name, "blocks"), key.namespace)
    volume = await kube.get(PVS, claim["spec"]["volumeName"])
    await asyncio.to_thread(_empty, Path(volume["spec"]["hostPath"]["path"]))


def _empty(directory: Path) -> None:
    for entry in directory.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


async def warm_from_bucket(kube: KubeClient, key: ObjectKey) -> Obj:
    """Have DittoFS fetch every block of the share from the bucket; its final job status."""
    ip = await pod_ip(kube, key)
    admin = await secret_value(kube, key.namespace, names.admin_secret(key.name), "password")
    async with aiohttp.ClientSession() as http:
        api = DittoFSClient(http, f"http://{ip}:8080", admin)
        started = await api.post("/shares/export/blockstore/warm")

        async def finished() -> Obj | None:
            job: Obj = await api.get(f"/shares/export/blockstore/warm/{started['job_id']}")
            return job if job["state"] not in ("pending", "running") else None

        job: Obj = await wait_for(finished, "the warm job", timeout=WARM_TIMEOUT)
    return job


async def served_from_bucket(
    kube: KubeClient, key: ObjectKey, node: Node, files: list[Written], scratch: Path
) -> None:
    """With the local block store emptied before the start: every file, fetched from the bucket
    alone, has the bytes that were written."""
    await ready(kube, key, node)
    job = await warm_from_bucket(kube, key)
    assert job["state"] == "done", job
    assert job["bytes_done"] >= sum(file.size for file in files), job
    nfs = Nfs(await pod_ip(kube, key), "/export")
    for file in files:
        assert await file.read_back(nfs, scratch) == file.digest, f"{file.path} differs"


async def test_every_byte_written_before_a_stop_is_in_the_bucket_once_the_pod_is_gone(
    kube: KubeClient, namespace: str, node: Node, operator: RunningOperator, tmp_path: Path
) -> None:
    with running_s3(node.address) as s3:
        server, keys = with_s3(namespace, s3)
        key = await create(
            kube, namespace, server, keys, secret("alice-password", password=ALICE_OLD)
        )
        await ready(kube, key, node)
        assert [s["name"] for s in (await server_status(kube, key))["remoteBlockStores"]] == ["s3"]
        written: list[Written] = []

        # spec.replicas 0 a moment after a large write.
        first = Written(tmp_path, "first.bin", 256 * MIB)
        await first.write(Nfs(await pod_ip(kube, key), "/export"))
        running, since = await pod_uid(kube, key), now_rfc3339()
        await set_spec(kube, key, replicas=0)
        await pod_gone(kube, key, running)
        written.append(first)
        assert bucket_bytes(s3) >= first.size
        drained = await upload_drain(kube, key, "Stop", since)
        assert drained["outcome"] == "Drained", drained
        assert drained["unsyncedBytes"] == 0, drained
        await until(kube, key, "Available", "False", "Stopped")
        await empty_local_block_store(kube, key)
        await set_spec(kube, key, replicas=1)
        await served_from_bucket(kube, key, node, written, tmp_path)

        # A change that restarts the pod, to an image that never runs: only the old pod can
        # have uploaded what the bucket holds then.
        second = Written(tmp_path, "second.bin", 64 * MIB)
        await second.write(Nfs(await pod_ip(kube, key), "/export"))
        running, since = await pod_uid(kube, key), now_rfc3339()
        image = server["spec"].get("image")
        await set_spec(kube, key, image=UNRUNNABLE_IMAGE)
        await pod_gone(kube, key, running)
        written.append(second)
        assert bucket_bytes(s3) >= first.size + second.size
        drained = await upload_drain(kube, key, "Restart", since)
        assert drained["outcome"] == "Drained", drained
        await empty_local_block_store(kube, key)
        await set_spec(kube, key, image=image)  # back to the default; no pod serves to drain
        await served_from_bucket(kube, key, node, written, tmp_path)

        # The DittoServer deleted (deletionPolicy Retain keeps its volumes) a moment after a
        # write, then made again on them.
        third = Written(tmp_path, "third.bin", 64 * MIB)
        await third.write(Nfs(await pod_ip(kube, key), "/export"))
        running = await pod_uid(kube, key)
        await kube.delete(DITTOSERVERS, key.name, namespace)

        async def deleted() -> bool:
            return await kube.get_or_none(DITTOSERVERS, key.name, namespace) is None

        await wait_for(deleted, "the DittoServer to go", timeout=120)
        await pod_gone(kube, key, running)
        written.append(third)
        assert bucket_bytes(s3) >= first.size + second.size + third.size
        await empty_local_block_store(kube, key)
        await kube.create(DITTOSERVERS, server, namespace)
        await served_from_bucket(kube, key, node, written, tmp_path)
        assert "UploadsNotDrained" not in await event_reasons(kube, key)


async def test_a_pod_that_could_not_upload_stops_anyway_and_says_how_much_it_kept(
    kube: KubeClient, namespace: str, node: Node, operator: RunningOperator, tmp_path: Path
) -> None:
    """The bucket unreachable: the wait ends at uploadDrainTimeout, the pod stops, and the
    bytes it kept in its local block store are in status.uploadDrain and a Warning Event."""
    with running_s3(node.address) as s3:
        server, keys = with_s3(namespace, s3, controlPlane={"uploadDrainTimeout": 5})
        key = await create(
            kube, namespace, server, keys, secret("alice-password", password=ALICE_OLD)
        )
        await ready(kube, key, node)
    kept = Written(tmp_path, "kept.bin", 16 * MIB)
    await kept.write(Nfs(await pod_ip(kube, key), "/export"))
    running, since = await pod_uid(kube, key), now_rfc3339()
    await set_spec(kube, key, replicas=0)
    await pod_gone(kube, key, running)
    drained = await upload_drain(kube, key, "Stop", since)
    assert drained["outcome"] in ("TimedOut", "Failed"), drained
    assert drained["unsyncedBytes"] >= kept.size, drained
    assert "UploadsNotDrained" in await event_reasons(kube, key)
    await until(kube, key, "Available", "False", "Stopped")
