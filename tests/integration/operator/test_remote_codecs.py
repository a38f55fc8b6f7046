"""Compressed and encrypted remote block stores on the real DittoFS: what reaches the bucket is
neither the plaintext nor its size, and the key the operator generated opens the store again
after a restart.

The operator runs in-process and the testbed node runs the real `dfs` (see test_serverconfig).
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import aiohttp

from dittofs_controller.dittofs import DittoFSClient
from dittofs_controller.kube.client import KubeClient
from dittofs_controller.kube.resources import PODS, SECRETS
from dittofs_controller.operator import names
from tests.integration.operator.conftest import RunningOperator, wait_for
from tests.integration.operator.test_serverconfig import (
    ALICE_OLD,
    create,
    everything_published,
    pod_ip,
    ready,
    sample,
    secret,
    secret_value,
    server_status,
)
from tests.support.clients import Nfs
from tests.support.s3 import S3Endpoint, running_s3
from tests.testbed.node import Node

MARKER = b"plaintext that must never reach the bucket "
PLAINTEXT = MARKER * 25_000  # about 1 MiB, and very compressible


def bucket_contents(s3: S3Endpoint) -> dict[str, bytes]:
    return {
        key: s3.client.get_object(Bucket=s3.bucket, Key=key)["Body"].read() for key in s3.objects()
    }


async def test_blocks_reach_the_bucket_compressed_and_encrypted(
    kube: KubeClient, namespace: str, node: Node, operator: RunningOperator, tmp_path: Path
) -> None:
    with running_s3(node.address) as s3:
        remote = {
            "name": "s3",
            "type": "s3",
            "compression": "zstd",
            "encryption": {},  # aes-256-gcm, with a key the operator generates
            "s3": {
                "endpoint": s3.url,
                "region": s3.region,
                "bucket": s3.bucket,
                "allowPrivateEndpoint": True,
                "credentialsSecretRef": {"name": "s3-keys"},
            },
        }
        export = {**sample(namespace)["spec"]["shares"][0], "remoteBlockStore": "s3"}
        keys = secret("s3-keys", accessKeyId=s3.access_key_id, secretAccessKey=s3.secret_access_key)
        server = sample(namespace, remoteBlockStores=[remote], shares=[export])
        key = await create(
            kube, namespace, server, keys, secret("alice-password", password=ALICE_OLD)
        )
        await ready(kube, key, node)
        generated = await kube.get(SECRETS, names.encryption_key_secret(key.name), namespace)
        assert set(generated["data"]) == {"passphrase", "key.pem"}
        passphrase = base64.b64decode(generated["data"]["passphrase"])
        assert generated["metadata"]["ownerReferences"][0]["name"] == key.name

        ip = await pod_ip(kube, key)
        await Nfs(ip, "/export").write("/plain.txt", PLAINTEXT.decode(), tmp_path)
        admin = await secret_value(kube, namespace, names.admin_secret(key.name), "password")
        async with aiohttp.ClientSession() as http:
            api = DittoFSClient(http, f"http://{ip}:8080", admin)
            await api.post("/system/drain-uploads")  # every block is in the bucket now

        stored = await asyncio.to_thread(bucket_contents, s3)
        assert stored, "nothing was uploaded"
        assert not [k for k, body in stored.items() if MARKER[:16] in body], "plaintext uploaded"
        total = sum(len(body) for body in stored.values())
        assert total < len(PLAINTEXT) / 10, f"{total} bytes stored for {len(PLAINTEXT)}"

        # A new pod opens the store with the generated key file and passphrase.
        first = await kube.get(PODS, names.pod(key.name), namespace)
        await kube.delete(PODS, names.pod(key.name), namespace)

        async def serving_again() -> Nfs | None:
            pod = await kube.get_or_none(PODS, names.pod(key.name), namespace)
            if pod is None or pod["metadata"]["uid"] == first["metadata"]["uid"]:
                return None
            ip = (pod.get("status") or {}).get("podIP")
            nfs = Nfs(ip, "/export") if ip else None
            return nfs if nfs is not None and await nfs.reachable() is None else None

        nfs = await wait_for(serving_again, "a new DittoFS pod serving /export", timeout=120)
        assert (await nfs.read("/plain.txt")).encode() == PLAINTEXT
        await ready(kube, key, node)
        status = await server_status(kube, key)
        assert [s["name"] for s in status["remoteBlockStores"]] == ["s3"]
        assert passphrase.decode() not in await everything_published(kube, key)
