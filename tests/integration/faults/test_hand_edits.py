"""Children deleted or edited by hand, all at once, under the real operator process.

The per-reconciler tests restore one child kind at a time; here every kind is edited together,
in the ways people do it (merge patch, JSON patch, server-side apply by another manager), and
some edits take the child out of the operator's label-selected caches or off its owner.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import pytest

from dittofs_controller.kube.client import KubeClient
from dittofs_controller.kube.resources import (
    CONFIGMAPS,
    DITTOSERVERS,
    PVCS,
    SECRETS,
    SERVICES,
    STATEFULSETS,
    Resource,
)
from dittofs_controller.operator import names
from dittofs_controller.operator.children import LABEL_INSTANCE, LABEL_MANAGED_BY
from tests.integration.faults.conftest import (
    CONVERGE_TIMEOUT,
    LONG_TEST_TIMEOUT,
    NamespaceView,
    Obj,
    StartOperator,
    State,
    fresh_state,
    gather_limited,
    secrets_in_use,
    server_manifest,
)

JSON_PATCH = "application/json-patch+json"


@attrs.frozen
class Edit:
    """One hand edit of a child, and the parts of it that must come back as they were."""

    what: str
    resource: Resource
    name: str
    make: Callable[[KubeClient, str], Awaitable[Any]]
    compared: tuple[str, ...]


def merge(resource: Resource, name: str, patch: Obj) -> Callable[[KubeClient, str], Awaitable[Any]]:
    return lambda kube, ns: kube.merge_patch(resource, name, patch, ns)


def json_patch(
    resource: Resource, name: str, ops: list[Obj]
) -> Callable[[KubeClient, str], Awaitable[Any]]:
    return lambda kube, ns: kube.request(
        "PATCH", resource.path(ns, name), body=ops, content_type=JSON_PATCH
    )


def applied_by_someone(
    resource: Resource, body: Obj
) -> Callable[[KubeClient, str], Awaitable[Any]]:
    """A server-side apply by another field manager that forces ownership of the fields."""
    return lambda kube, ns: kube.apply(
        resource,
        {**body, "metadata": {**body["metadata"], "namespace": ns}},
        field_manager="someone-else",
    )


def delete(resource: Resource, name: str) -> Callable[[KubeClient, str], Awaitable[Any]]:
    return lambda kube, ns: kube.delete(resource, name, ns)


def edits() -> list[Edit]:
    # d gets one edit only, which no other event about d can cover for.
    a, b, c, d = "a", "b", "c", "d"
    sts = names.statefulset
    return [
        Edit(
            "ConfigMap data changed and a key added",
            CONFIGMAPS,
            names.config_map(a),
            merge(
                CONFIGMAPS,
                names.config_map(a),
                {"data": {names.CONFIG_KEY: "tampered", "added-by-hand": "x"}},
            ),
            ("data",),
        ),
        Edit(
            "ConfigMap labels, which take it out of the operator's cache",
            CONFIGMAPS,
            names.config_map(b),
            merge(CONFIGMAPS, names.config_map(b), {"metadata": {"labels": None}}),
            ("data", "metadata.labels"),
        ),
        Edit(
            "Service ports",
            SERVICES,
            names.service(a, "nfs"),
            merge(
                SERVICES,
                names.service(a, "nfs"),
                {"spec": {"ports": [{"name": "nfs", "port": 1111, "targetPort": 1111}]}},
            ),
            ("spec.ports",),
        ),
        Edit(
            "Service ownerReference",
            SERVICES,
            names.service(d, "smb"),
            merge(SERVICES, names.service(d, "smb"), {"metadata": {"ownerReferences": None}}),
            ("spec.ports", "metadata.ownerReferences"),
        ),
        Edit(
            "Service type, by another field manager",
            SERVICES,
            names.service(c, "smb"),
            applied_by_someone(
                SERVICES,
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": names.service(c, "smb")},
                    "spec": {"type": "NodePort"},
                },
            ),
            ("spec.type",),
        ),
        Edit(
            "StatefulSet args",
            STATEFULSETS,
            sts(a),
            json_patch(
                STATEFULSETS,
                sts(a),
                [
                    {
                        "op": "replace",
                        "path": "/spec/template/spec/containers/0/args",
                        "value": ["start", "--tampered"],
                    }
                ],
            ),
            ("spec.template",),
        ),
        Edit(
            "StatefulSet replicas",
            STATEFULSETS,
            sts(b),
            merge(STATEFULSETS, sts(b), {"spec": {"replicas": 0}}),
            ("spec.replicas",),
        ),
        Edit(
            "PersistentVolumeClaim labels",
            PVCS,
            names.controlplane_claim(a),
            merge(
                PVCS,
                names.controlplane_claim(a),
                {"metadata": {"labels": {LABEL_INSTANCE: "someone", LABEL_MANAGED_BY: None}}},
            ),
            ("metadata.labels", "metadata.ownerReferences"),
        ),
        Edit(
            "generated Secret deleted",
            SECRETS,
            names.jwt_secret(b),
            delete(SECRETS, names.jwt_secret(b)),
            ("metadata.labels", "metadata.ownerReferences"),
        ),
        Edit(
            "ConfigMap deleted",
            CONFIGMAPS,
            names.config_map(c),
            delete(CONFIGMAPS, names.config_map(c)),
            ("data", "metadata.labels", "metadata.ownerReferences"),
        ),
        Edit(
            "Service deleted",
            SERVICES,
            names.service(a, "api"),
            delete(SERVICES, names.service(a, "api")),
            ("spec.ports", "metadata.labels", "metadata.ownerReferences"),
        ),
        Edit(
            "StatefulSet deleted",
            STATEFULSETS,
            sts(c),
            delete(STATEFULSETS, sts(c)),
            ("spec.template", "metadata.labels", "metadata.ownerReferences"),
        ),
    ]


def part(obj: Obj | None, path: str) -> Any:
    for key in path.split("."):
        obj = (obj or {}).get(key)
    return obj


def unrestored(state: State, originals: dict[tuple[Resource, str], Obj]) -> list[str]:
    found = []
    for edit in edits():
        live = state.child(edit.resource, edit.name)
        original = originals[(edit.resource, edit.name)]
        for path in edit.compared:
            if part(live, path) != part(original, path):
                found.append(f"{edit.what}: {path} is {part(live, path)!r}")
    return found


@pytest.mark.timeout(LONG_TEST_TIMEOUT)
async def test_children_edited_or_deleted_by_hand_are_restored(
    kube: KubeClient,
    namespace: str,
    view: NamespaceView,
    start_operator: StartOperator,
) -> None:
    servers = ["a", "b", "c", "d"]
    operator = start_operator()
    await operator.wait_for_log("starting workers", timeout=60)
    await gather_limited(
        kube.create(DITTOSERVERS, server_manifest(namespace, name), namespace) for name in servers
    )
    await view.settle(lambda state: state.converged(servers), "convergence", CONVERGE_TIMEOUT)
    before = await fresh_state(kube, namespace)
    originals = {}
    for edit in edits():
        original = before.child(edit.resource, edit.name)
        assert original is not None, edit
        originals[(edit.resource, edit.name)] = original

    for edit in edits():
        await edit.make(kube, namespace)

    def problems(state: State) -> list[str]:
        return state.converged(servers) + unrestored(state, originals) + secrets_in_use(state)

    await view.settle(problems, "every child restored", CONVERGE_TIMEOUT)
    after = await fresh_state(kube, namespace)
    assert problems(after) == []
    # d's only edit reached the operator through the child's own event: nothing about the
    # DittoServer changed that could have woken it up.
    version = after.servers["d"]["metadata"]["resourceVersion"]
    assert version == before.servers["d"]["metadata"]["resourceVersion"]
