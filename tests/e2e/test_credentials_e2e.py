"""Rotated credentials take effect, end to end, against an S3 endpoint that checks its keys.

DittoFS saves a store's new keys when they are sent over its API but keeps uploading with the
ones it opened the store with, until it restarts. Against an endpoint that accepts any key
(moto by default) nothing shows; here moto checks every request, so after the keys are rotated
and the old ones revoked, only a server that really uses the new keys gets its files into the
bucket, and a server left with revoked keys must not be reported healthy.
"""

from __future__ import annotations

import pytest

from dittofs_controller.kube.resources import SECRETS
from dittofs_controller.operator.serverconfig import report
from tests.e2e.conftest import (
    SAMPLES_DIR,
    Deployment,
    Timings,
    documents,
    localize,
    sample_server,
)
from tests.support.s3 import checking_keys, running_s3

SAMPLE = SAMPLES_DIR / "memory-s3.yaml"
PREFIX = "memory-s3/"
SECRET = sample_server(SAMPLE)["spec"]["remoteBlockStores"][0]["s3"]["credentialsSecretRef"]["name"]


def payload(tag: str) -> str:
    return "".join(f"{tag} line {i:06d} of a file larger than one block\n" for i in range(30000))


async def test_rotated_s3_keys_are_used_and_revoked_ones_are_reported(
    deployment: Deployment, timings: Timings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Compare a converged server every 5 s instead of 5 min, to see the revocation soon.
    monkeypatch.setattr(report, "DRIFT_INTERVAL", 5.0)
    scratch, kube, namespace = deployment.scratch, deployment.kube, deployment.namespace
    with running_s3(deployment.node.address) as s3, checking_keys(s3) as keyed:
        first = keyed.issue()
        docs = await localize(documents(SAMPLE), keyed.with_keys(first), None)
        name = await deployment.create(docs)
        await deployment.wait_ready(name)
        before = await deployment.pod(name)
        nfs = await deployment.nfs(name)
        first_file = payload("first")
        await nfs.write("/first.txt", first_file, scratch)
        uploaded = await keyed.endpoint.wait_for_objects(PREFIX, len(first_file), timeout=90)
        timings.mark("uploaded")

        second = keyed.issue()
        rotated = {"accessKeyId": second.access_key_id, "secretAccessKey": second.secret_access_key}
        await kube.merge_patch(SECRETS, SECRET, {"stringData": rotated}, namespace)
        keyed.revoke(first)
        # DittoFS opens its stores when it starts: a new pod, for the new keys.
        after = await deployment.pod(name, not_uid=before["metadata"]["uid"], timeout=180)
        assert after["metadata"]["uid"] != before["metadata"]["uid"]
        await deployment.wait_condition(name, "ServerConfigured", "True", "Converged", 120)
        nfs = await deployment.nfs(name)
        second_file = payload("second")
        await nfs.write("/second.txt", second_file, scratch)
        wanted = sum(uploaded.values()) + len(second_file)
        await keyed.endpoint.wait_for_objects(PREFIX, wanted, timeout=90)
        timings.mark("rotated")

        # Keys revoked and none given instead: the store cannot upload, and status says so.
        keyed.revoke(second)
        unhealthy = await deployment.wait_condition(
            name, "ServerConfigured", "False", "StoreUnhealthy", timeout=120
        )
        assert "remote block store s3" in unhealthy["message"], unhealthy
        await deployment.wait_condition(name, "Ready", "False", timeout=30)
        timings.mark("reported")
