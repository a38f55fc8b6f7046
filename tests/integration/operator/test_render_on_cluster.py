"""`render` against the real API server: what it prints is accepted, and it is what the operator
really creates.

(a) Every object rendered for every sample and every valid corpus manifest passes a
server-side dry-run create with strict field validation (the Percona and ServiceMonitor kinds
against the tests' stand-in CRDs).
(b) For a few manifests the real operator runs; the live DittoServer, as `kubectl get -o yaml`
prints it (uid, managedFields, status), is piped into `render -f -`, and the operator's
children must be exactly the rendered (kind, name) set, each holding every rendered field
except the documented placeholders, plus the generated Secrets render names in its header and
never prints. For the Percona manifest the test plays the Percona
operator's part (the cluster's ready state and its user Secret), so the StatefulSet follows.
"""

from __future__ import annotations

import asyncio
import copy
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from dittofs_controller.kube.client import KubeClient
from dittofs_controller.kube.resources import (
    CONFIGMAPS,
    DITTOSERVERS,
    INGRESSES,
    NETWORKPOLICIES,
    PERCONA_PG_CLUSTERS,
    PVCS,
    SECRETS,
    SERVICE_MONITORS,
    SERVICES,
    STATEFULSETS,
    ObjectKey,
    Resource,
)
from dittofs_controller.operator import names
from dittofs_controller.operator.children import APPLIED_HASH_ANNOTATION, LABEL_INSTANCE, is_subset
from tests.integration.operator import test_servicemonitor
from tests.integration.operator.conftest import StartOperator, load_manifest, wait_for
from tests.support import percona

ROOT = Path(__file__).resolve().parents[3]
VALID = ROOT / "tests/unit/api/valid"
MANIFESTS = sorted((ROOT / "samples").glob("*.yaml")) + sorted(VALID.glob("*.yaml"))
RESOURCES: dict[str, Resource] = {
    resource.kind: resource
    for resource in (
        CONFIGMAPS,
        PVCS,
        PERCONA_PG_CLUSTERS,
        SERVICES,
        INGRESSES,
        NETWORKPOLICIES,
        SERVICE_MONITORS,
        STATEFULSETS,
    )
}
# Kinds the operator creates for the manifests of (b) (no ServiceMonitor there).
COMPARED = (
    SECRETS,
    CONFIGMAPS,
    PVCS,
    PERCONA_PG_CLUSTERS,
    SERVICES,
    INGRESSES,
    NETWORKPOLICIES,
    STATEFULSETS,
)
Obj = dict[str, Any]
NOT_PRINTED = re.compile(r"^# - Secret (\S+) \(key (\S+)\)", re.MULTILINE)


async def render_cli(*args: str, stdin: str | None = None) -> str:
    """Run `python -m dittofs_controller render` as a user would; its output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dittofs_controller",
        "render",
        *args,
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(
        process.communicate(stdin.encode() if stdin is not None else None), 120
    )
    assert process.returncode == 0, err.decode()
    return out.decode()


def documents(text: str) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


async def test_every_rendered_object_passes_a_server_side_dry_run(
    dittoservers: KubeClient, namespace: str
) -> None:
    kube = dittoservers
    await percona.install_crd(kube)
    await test_servicemonitor.install_crd(kube)
    try:
        args = [arg for path in MANIFESTS for arg in ("-f", str(path))]
        objects = documents(await render_cli(*args, "-n", namespace))
        kinds = {obj["kind"] for obj in objects}
        assert kinds == set(RESOURCES), kinds  # every kind render prints, never a Secret
        rejected = []
        for obj in objects:
            resource = RESOURCES[obj["kind"]]
            try:
                await kube.request(
                    "POST",
                    resource.path(namespace),
                    query={"dryRun": "All", "fieldValidation": "Strict"},
                    body=obj,
                )
            except Exception as error:
                rejected.append(f"{obj['kind']} {obj['metadata']['name']}: {error}")
        assert not rejected, "\n".join(rejected)
        listing = await kube.request("GET", SERVICES.path(namespace))
        assert not listing["items"]  # a dry run creates nothing
    finally:
        await test_servicemonitor.uninstall_crd(kube)


def _without_placeholders(obj: Obj) -> Obj:
    """The rendered object minus what only the cluster knows (documented in render.py)."""
    obj = copy.deepcopy(obj)
    annotations = obj["metadata"].get("annotations") or {}
    annotations.pop(names.RESTART_HASH_ANNOTATION, None)
    if obj["kind"] == "StatefulSet":  # these hash the pod template, restart hash included
        annotations.pop(APPLIED_HASH_ANNOTATION, None)
        annotations.pop(names.TEMPLATE_HASH_ANNOTATION, None)
        obj["spec"]["template"]["metadata"]["annotations"].pop(names.RESTART_HASH_ANNOTATION)
    return obj


async def _children(kube: KubeClient, namespace: str, server: str) -> dict[tuple[str, str], Obj]:
    found = {}
    for resource in COMPARED:
        listing = await kube.request(
            "GET", resource.path(namespace), query={"labelSelector": f"{LABEL_INSTANCE}={server}"}
        )
        for item in listing.get("items") or ():  # list items carry no apiVersion and kind
            item.update(apiVersion=resource.api_version, kind=resource.kind)
            found[(resource.kind, item["metadata"]["name"])] = item
    return found


async def _play_percona(kube: KubeClient, namespace: str, cluster: str) -> None:
    """What the Percona operator does once its cluster serves: the user and CA Secrets, state
    ready (no pod runs here: no value is used)."""
    await wait_for(
        lambda: kube.get_or_none(PERCONA_PG_CLUSTERS, cluster, namespace),
        f"PerconaPGCluster {cluster}",
        90,
    )
    values = {"host": f"{cluster}-primary", "port": "5432", "user": "dittofs", "dbname": "x"}
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": names.percona_user_secret(cluster)},
        "stringData": {**values, "password": "test-only-password"},
    }
    await kube.create(SECRETS, secret, namespace)
    ca = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": percona.ca_secret_name(cluster)},
        "stringData": {percona.CA_KEY: "test-only-ca"},
    }
    await kube.create(SECRETS, ca, namespace)
    status = {"status": {"state": "ready"}}
    await kube.merge_patch(PERCONA_PG_CLUSTERS, cluster, status, namespace, subresource="status")


@pytest.mark.parametrize(
    ("manifest", "deletion_policy"),
    [
        (ROOT / "samples/memory-memory.yaml", None),
        (ROOT / "samples/badger-filesystem.yaml", None),
        (VALID / "network-policy.yaml", None),
        (ROOT / "samples/postgres-filesystem.yaml", "Delete"),
    ],
    ids=lambda value: value.stem if isinstance(value, Path) else str(value),
)
async def test_the_operator_creates_what_render_prints(
    dittoservers: KubeClient,
    namespace: str,
    start_operator: StartOperator,
    manifest: Path,
    deletion_policy: str | None,
) -> None:
    kube = dittoservers
    document = load_manifest(manifest, namespace)
    percona_cluster = "percona" in document["spec"].get("postgres", {})
    if percona_cluster:
        await percona.install_crd(kube)
    if deletion_policy:
        document["spec"]["deletionPolicy"] = deletion_policy
    operator = await start_operator()
    name = document["metadata"]["name"]
    await kube.create(DITTOSERVERS, document, namespace)
    live_server = await kube.get(DITTOSERVERS, name, namespace)
    operator_namespace = operator.manager.settings.leader_election.lease_namespace
    rendered = await render_cli(
        "-f", "-", "--operator-namespace", operator_namespace, stdin=yaml.safe_dump(live_server)
    )
    not_printed = dict(NOT_PRINTED.findall(rendered))
    assert f"{name}-digest-key" in not_printed
    wanted = {(obj["kind"], obj["metadata"]["name"]): obj for obj in documents(rendered)}
    assert {obj["metadata"]["ownerReferences"][0]["uid"] for obj in wanted.values()} == {
        live_server["metadata"]["uid"]
    }
    clusters = [key[1] for key in wanted if key[0] == PERCONA_PG_CLUSTERS.kind]
    assert len(clusters) == int(percona_cluster)
    try:
        for cluster in clusters:
            await _play_percona(kube, namespace, cluster)
        await _compare(kube, namespace, name, wanted, not_printed)
    finally:
        # No Percona operator will drop its finalizer: stop ours from re-adding it, then drop it
        # so the namespace can go.
        await operator.shutdown()
        for cluster in clusters:
            patch = {"metadata": {"finalizers": None}}
            await kube.merge_patch(PERCONA_PG_CLUSTERS, cluster, patch, namespace)


async def _compare(
    kube: KubeClient,
    namespace: str,
    name: str,
    wanted: dict[tuple[str, str], Obj],
    not_printed: dict[str, str],
) -> None:
    """`not_printed`: generated Secret name -> its key, as render's header names them."""
    secrets = {(SECRETS.kind, secret) for secret in not_printed}

    async def complete() -> dict[tuple[str, str], Obj] | None:
        found = await _children(kube, namespace, name)
        return found if set(found) >= set(wanted) | secrets else None

    live = await wait_for(
        complete, f"the operator to create every child of {ObjectKey(namespace, name)}", 90
    )
    assert set(live) == set(wanted) | secrets
    for secret, data_key in not_printed.items():
        assert set(live[(SECRETS.kind, secret)]["data"]) == {data_key}
    for key, obj in wanted.items():
        found = live[key]
        assert is_subset(_without_placeholders(obj), found), key
        # What a subset check cannot see: something render leaves out.
        assert found["metadata"]["labels"] == obj["metadata"]["labels"], key
        if obj["kind"] == PERCONA_PG_CLUSTERS.kind:  # no other manager adds finalizers here
            finalizers = obj["metadata"].get("finalizers", [])
            assert found["metadata"].get("finalizers", []) == finalizers, key
