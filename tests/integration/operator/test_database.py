"""The database reconciler on the real API server, with the real PerconaPGCluster schema.

No Percona operator runs here: the tests play it (status.state, the user Secret, its finalizer).
The Percona CRD is cluster-wide and the control plane is shared by the session, so the one test
that needs it absent removes it itself and installs it again; every other test installs it.
"""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from dittofs_controller.api.schema import parse
from dittofs_controller.api.v1alpha1 import DittoServerSpec
from dittofs_controller.kube.client import APPLY_PATCH, ApiError, KubeClient
from dittofs_controller.kube.resources import (
    CRDS,
    DITTOSERVERS,
    PERCONA_PG_CLUSTERS,
    SECRETS,
    ObjectKey,
)
from dittofs_controller.operator.children import is_subset
from dittofs_controller.operator.database import build
from dittofs_controller.runtime.metrics import REGISTRY
from tests.integration.operator.conftest import (
    RunningOperator,
    StartOperator,
    condition,
    load_manifest,
    wait_for,
)

VALID = Path(__file__).resolve().parents[2] / "unit" / "api" / "valid"
PERCONA_CRD = Path(__file__).parent / "percona-crd-minimal.yaml"
PERCONA_CRD_NAME = "perconapgclusters.pgv2.percona.com"

Obj = dict[str, Any]


async def install_percona_crd(kube: KubeClient) -> None:
    """Server-side apply the stand-in PerconaPGCluster CRD; wait until it is served."""
    body = yaml.safe_load(PERCONA_CRD.read_text())
    await kube.request(
        "PATCH",
        CRDS.path(name=PERCONA_CRD_NAME),
        query={"fieldManager": "dittofs-tests", "force": "true"},
        body=body,
        content_type=APPLY_PATCH,
    )

    async def served() -> bool:
        try:
            await kube.request("GET", PERCONA_PG_CLUSTERS.path("default"), query={"limit": 1})
        except ApiError as error:
            if error.status == 404:
                return False
            raise
        return True

    await wait_for(served, "PerconaPGClusters to be served")


async def uninstall_percona_crd(kube: KubeClient) -> None:
    """Delete the CRD. Its objects go first; any finalizer on them (which the absent Percona
    operator would handle) is dropped so that cannot hang."""
    try:
        listed = await kube.request("GET", PERCONA_PG_CLUSTERS.path())
    except ApiError as error:
        if error.status != 404:
            raise
        listed = {}
    for item in listed.get("items") or ():
        meta = item["metadata"]
        if meta.get("finalizers"):
            await kube.merge_patch(
                PERCONA_PG_CLUSTERS,
                meta["name"],
                {"metadata": {"finalizers": None}},
                meta["namespace"],
            )
    await kube.delete(CRDS, PERCONA_CRD_NAME)
    await wait_for(lambda: _absent(kube), "the Percona CRD to be deleted", timeout=120)


async def _absent(kube: KubeClient) -> bool:
    return await kube.get_or_none(CRDS, PERCONA_CRD_NAME) is None


@pytest.fixture
async def percona_crd(kube: KubeClient) -> KubeClient:
    await install_percona_crd(kube)
    return kube


def server(namespace: str, sample: str = "percona.yaml", **spec: Any) -> Obj:
    manifest = load_manifest(VALID / sample, namespace)
    manifest["metadata"]["name"] = "files"
    manifest["spec"].update(copy.deepcopy(spec))
    return manifest


async def database_ready(kube: KubeClient, key: ObjectKey) -> Obj | None:
    return await condition(kube, key, "DatabaseReady")


async def wait_reason(kube: KubeClient, key: ObjectKey, reason: str, timeout: float = 30) -> Obj:
    async def check() -> Obj | None:
        found = await database_ready(kube, key)
        return found if found and found["reason"] == reason else None

    try:
        result: Obj = await wait_for(check, f"DatabaseReady reason {reason}", timeout)
    except AssertionError as error:
        raise AssertionError(
            f"{reason} not reached; last: {await database_ready(kube, key)}"
        ) from error
    return result


async def cluster(kube: KubeClient, namespace: str, name: str = "files-pg") -> Obj | None:
    return await kube.get_or_none(PERCONA_PG_CLUSTERS, name, namespace)


async def set_state(kube: KubeClient, namespace: str, state: str, name: str = "files-pg") -> None:
    """What the Percona operator reports."""
    await kube.merge_patch(
        PERCONA_PG_CLUSTERS, name, {"status": {"state": state}}, namespace, subresource="status"
    )


async def create_secret(kube: KubeClient, namespace: str, name: str, **data: str) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "stringData": data,
    }
    await kube.create(SECRETS, body, namespace)


USER_SECRET = {
    "host": "files-pg-primary.ns.svc",
    "port": "5432",
    "user": "dittofs",
    "password": "not-a-real-one",
    "dbname": "dittofs",
}
CA_SECRET = {"root.crt": "not-a-real-certificate"}  # beside it, Percona's root.key


def retries(controller: str) -> float:
    """Reconciles of `controller` that asked to run again (error or requeue-after)."""
    return sum(
        REGISTRY.get_sample_value(
            "controller_runtime_reconcile_total", {"controller": controller, "result": result}
        )
        or 0.0
        for result in ("error", "requeue_after")
    )


async def test_no_postgres_is_not_required(
    kube: KubeClient, namespace: str, operator: RunningOperator
) -> None:
    manifest = load_manifest(VALID / "minimal.yaml", namespace)
    await kube.create(DITTOSERVERS, manifest, namespace)
    ready = await wait_reason(kube, ObjectKey(namespace, "minimal"), "NotRequired")
    assert ready["status"] == "True"


async def test_external_secrets_are_required_key_by_key_and_picked_up_when_created(
    kube: KubeClient, namespace: str, operator: RunningOperator
) -> None:
    manifest = load_manifest(VALID / "external-postgres.yaml", namespace)
    await kube.create(DITTOSERVERS, manifest, namespace)
    key = ObjectKey(namespace, manifest["metadata"]["name"])
    missing = await wait_reason(kube, key, "SecretNotFound")
    assert missing["status"] == "False"
    assert "rds-credentials" in missing["message"]

    await create_secret(
        kube, namespace, "rds-credentials", endpoint="db", port="5432", username="u", password="p"
    )
    no_key = await wait_reason(kube, key, "SecretKeyNotFound")
    assert "'rds-credentials'" in no_key["message"] and "'database'" in no_key["message"]

    await kube.merge_patch(
        SECRETS, "rds-credentials", {"stringData": {"database": "dittofs"}}, namespace
    )
    no_ca = await wait_reason(kube, key, "SecretNotFound")
    assert "rds-ca" in no_ca["message"]

    await create_secret(kube, namespace, "rds-ca", **{"ca.pem": "-----BEGIN CERTIFICATE-----"})
    ready = await wait_reason(kube, key, "ExternalSecretReady")
    assert ready["status"] == "True"
    assert "rds-credentials" in ready["message"]
    assert "not-a-real-one" not in str(await kube.get(DITTOSERVERS, key.name, namespace))


async def test_percona_absent_then_installed_recovers_without_a_restart(
    kube: KubeClient, namespace: str, start_operator: StartOperator
) -> None:
    if not await _absent(kube):
        await uninstall_percona_crd(kube)
    try:
        operator = await start_operator()
        await wait_for(
            lambda: asyncio.sleep(0, operator.manager.caches_synced()),
            "the operator to be ready without the Percona CRD",
        )
        await kube.create(DITTOSERVERS, server(namespace), namespace)
        key = ObjectKey(namespace, "files")
        absent = await wait_reason(kube, key, "PerconaOperatorNotInstalled")
        assert absent["status"] == "False"
        assert "install the Percona Operator for PostgreSQL" in absent["message"]
        assert PERCONA_CRD_NAME in absent["message"]
        before = retries("database")
        await asyncio.sleep(3)
        assert retries("database") == before  # waits for the CRD: no retry, no polling

        await install_percona_crd(kube)
        await wait_for(lambda: cluster(kube, namespace), "the PerconaPGCluster", timeout=60)
        await wait_reason(kube, key, "PerconaClusterNotReady")

        await set_state(kube, namespace, "initializing")

        async def says_initializing() -> bool:
            found = await database_ready(kube, key)
            return bool(found and "files-pg is initializing" in found["message"])

        await wait_for(says_initializing, "the state in the message")

        await set_state(kube, namespace, "ready")
        no_secret = await wait_reason(kube, key, "SecretNotFound")
        assert "files-pg-pguser-dittofs" in no_secret["message"]

        await create_secret(kube, namespace, "files-pg-pguser-dittofs", **USER_SECRET)

        async def says_no_ca() -> bool:  # the CA Secret, which verifies the server, is next
            found = await database_ready(kube, key)
            return bool(
                found
                and found["reason"] == "SecretNotFound"
                and "files-pg-cluster-ca-cert" in found["message"]
            )

        await wait_for(says_no_ca, "SecretNotFound naming the CA Secret")

        await create_secret(kube, namespace, "files-pg-cluster-ca-cert", **CA_SECRET)
        ready = await wait_reason(kube, key, "PerconaClusterReady")
        assert ready["status"] == "True"
        assert "files-pg-pguser-dittofs" in ready["message"]
        assert "files-pg-cluster-ca-cert" in ready["message"]
    finally:
        await install_percona_crd(kube)


async def test_the_pguser_secret_alone_is_not_enough(
    kube: KubeClient, namespace: str, percona_crd: KubeClient, operator: RunningOperator
) -> None:
    """Percona writes the Secrets before the database is ready."""
    await create_secret(kube, namespace, "files-pg-pguser-dittofs", **USER_SECRET)
    await create_secret(kube, namespace, "files-pg-cluster-ca-cert", **CA_SECRET)
    await kube.create(DITTOSERVERS, server(namespace), namespace)
    key = ObjectKey(namespace, "files")
    await wait_for(lambda: cluster(kube, namespace), "the PerconaPGCluster")
    await wait_reason(kube, key, "PerconaClusterNotReady")
    await set_state(kube, namespace, "ready")
    await wait_reason(kube, key, "PerconaClusterReady")
    await set_state(kube, namespace, "paused")
    paused = await wait_reason(kube, key, "PerconaClusterNotReady")
    assert "files-pg is paused" in paused["message"]


async def test_a_renamed_cluster_is_created_and_the_old_one_kept_and_mentioned(
    kube: KubeClient, namespace: str, percona_crd: KubeClient, operator: RunningOperator
) -> None:
    await kube.create(DITTOSERVERS, server(namespace), namespace)
    key = ObjectKey(namespace, "files")
    await wait_for(lambda: cluster(kube, namespace), "the PerconaPGCluster")

    await kube.merge_patch(
        DITTOSERVERS,
        "files",
        {"spec": {"postgres": {"percona": {"clusterName": "renamed"}}}},
        namespace,
    )
    await wait_for(lambda: cluster(kube, namespace, "renamed"), "the renamed cluster")
    await set_state(kube, namespace, "ready", "renamed")
    await create_secret(kube, namespace, "renamed-pguser-dittofs", **USER_SECRET)
    await create_secret(kube, namespace, "renamed-cluster-ca-cert", **CA_SECRET)
    ready = await wait_reason(kube, key, "PerconaClusterReady")
    assert "PerconaPGCluster renamed is ready" in ready["message"]
    assert (
        "Kept PerconaPGClusters no longer in the spec, still running: files-pg"
        in (ready["message"])
    )
    assert await cluster(kube, namespace) is not None


@pytest.mark.parametrize("sample", ["percona.yaml", "percona-pg16-backups.yaml"])
async def test_built_clusters_pass_the_real_schema_strictly(
    kube: KubeClient, namespace: str, percona_crd: KubeClient, sample: str
) -> None:
    manifest = server(namespace, sample)
    spec = parse(DittoServerSpec, manifest["spec"])
    assert spec.postgres is not None and spec.postgres.percona is not None
    owner = {**manifest, "metadata": {**manifest["metadata"], "uid": "0000-test"}}
    desired = build.percona_cluster(owner, spec, spec.postgres.percona)
    desired["metadata"]["finalizers"] = [build.DELETE_PVC_FINALIZER]
    applied = await kube.request(
        "PATCH",
        PERCONA_PG_CLUSTERS.path(namespace, desired["metadata"]["name"]),
        query={
            "fieldManager": "dittofs-tests",
            "force": "true",
            "dryRun": "All",
            "fieldValidation": "Strict",
        },
        body=desired,
        content_type=APPLY_PATCH,
    )
    assert is_subset(desired, applied)  # nothing pruned


async def test_the_operator_created_cluster_is_exactly_the_built_one(
    kube: KubeClient, namespace: str, percona_crd: KubeClient, operator: RunningOperator
) -> None:
    await kube.create(DITTOSERVERS, server(namespace), namespace)
    live = await wait_for(lambda: cluster(kube, namespace), "the PerconaPGCluster")
    stored = await kube.get(DITTOSERVERS, "files", namespace)
    spec = parse(DittoServerSpec, stored["spec"])
    assert spec.postgres is not None and spec.postgres.percona is not None
    assert is_subset(build.percona_cluster(stored, spec, spec.postgres.percona), live)
    assert not live["metadata"].get("finalizers")  # deletionPolicy Retain

    # Drift is restored.
    edited = copy.deepcopy(live["spec"]["instances"])
    edited[0]["replicas"] = 1
    await kube.merge_patch(
        PERCONA_PG_CLUSTERS, "files-pg", {"spec": {"instances": edited}}, namespace
    )

    async def restored() -> bool:
        found = await cluster(kube, namespace)
        return bool(found and found["spec"]["instances"][0]["replicas"] == 3)

    await wait_for(restored, "the edited cluster to be restored")


async def test_retain_keeps_the_cluster_and_a_new_server_of_the_same_name_adopts_it(
    kube: KubeClient, namespace: str, percona_crd: KubeClient, operator: RunningOperator
) -> None:
    await kube.create(DITTOSERVERS, server(namespace), namespace)
    first = await wait_for(lambda: cluster(kube, namespace), "the PerconaPGCluster")

    await kube.delete(DITTOSERVERS, "files", namespace)

    async def server_gone() -> bool:
        return await kube.get_or_none(DITTOSERVERS, "files", namespace) is None

    await wait_for(server_gone, "the DittoServer to go")
    kept = await cluster(kube, namespace)
    assert kept is not None and not kept["metadata"].get("ownerReferences")
    assert not kept["metadata"].get("deletionTimestamp")

    await kube.create(DITTOSERVERS, server(namespace), namespace)
    uid = (await kube.get(DITTOSERVERS, "files", namespace))["metadata"]["uid"]

    async def adopted() -> bool:
        found = await cluster(kube, namespace)
        refs = (found or {}).get("metadata", {}).get("ownerReferences") or []
        return bool(refs and refs[0]["uid"] == uid)

    await wait_for(adopted, "the retained cluster to be adopted")
    assert (await cluster(kube, namespace) or {})["metadata"]["uid"] == first["metadata"]["uid"]


async def test_delete_puts_the_pvc_finalizer_on_and_the_cluster_goes_with_the_server(
    kube: KubeClient, namespace: str, percona_crd: KubeClient, operator: RunningOperator
) -> None:
    await kube.create(DITTOSERVERS, server(namespace, deletionPolicy="Delete"), namespace)

    async def finalizer(present: bool) -> bool:
        found = await cluster(kube, namespace)
        return found is not None and build.has_delete_pvc(found) == present

    await wait_for(lambda: finalizer(True), "percona.com/delete-pvc on the cluster")
    await kube.merge_patch(DITTOSERVERS, "files", {"spec": {"deletionPolicy": "Retain"}}, namespace)
    await wait_for(lambda: finalizer(False), "the finalizer to go under Retain")
    await kube.merge_patch(DITTOSERVERS, "files", {"spec": {"deletionPolicy": "Delete"}}, namespace)
    await wait_for(lambda: finalizer(True), "the finalizer to come back under Delete")

    await kube.delete(DITTOSERVERS, "files", namespace)

    async def deleting() -> bool:
        found = await cluster(kube, namespace)
        return bool(found and found["metadata"].get("deletionTimestamp"))

    # The garbage collector may need ~30 s to discover a freshly installed CRD's kind.
    await wait_for(deleting, "the garbage collector to delete the cluster", timeout=90)
    await kube.merge_patch(  # the Percona operator deletes the PVCs, then drops its finalizer
        PERCONA_PG_CLUSTERS, "files-pg", {"metadata": {"finalizers": None}}, namespace
    )

    async def cluster_gone() -> bool:
        return await cluster(kube, namespace) is None

    await wait_for(cluster_gone, "the cluster to be gone")
