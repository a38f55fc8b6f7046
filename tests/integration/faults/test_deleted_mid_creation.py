"""DittoServers deleted while the operator is still creating their children.

Whatever the operator had written by then, and whatever it writes from a stale view afterwards,
must end as the deletion policy says: nothing left under Delete; under Retain only the generated
Secrets and the claims, released from their owner, with their data, and nothing else.
"""

from __future__ import annotations

import asyncio

import pytest

from dittofs_controller.kube.client import KubeClient
from dittofs_controller.kube.resources import DITTOSERVERS, PVCS, SECRETS, Resource
from dittofs_controller.operator import names
from dittofs_controller.operator.children import LABEL_INSTANCE
from tests.integration.faults.conftest import (
    CHILD_KINDS,
    NamespaceView,
    Obj,
    StartOperator,
    State,
    expected_children,
    fresh_state,
    seeded,
    server_manifest,
)

SERVERS = 12
CHILDREN = sum(len(names) for names in expected_children("s").values())
# The garbage collector removes what the DittoServer owned; right after the CRD is installed it
# may need ~30 s to learn the kind.
GC_TIMEOUT = 120.0


def retained(name: str) -> list[tuple[Resource, str]]:
    return [
        (SECRETS, names.jwt_secret(name)),
        (SECRETS, names.admin_secret(name)),
        (PVCS, names.controlplane_claim(name)),
    ]


def made(state: State, server: str) -> int:
    """How many of its children the operator has made for `server` so far."""
    return sum(
        (obj["metadata"].get("labels") or {}).get(LABEL_INSTANCE) == server
        for kind in CHILD_KINDS
        for obj in state.children[kind]
    )


async def create_then_delete(
    kube: KubeClient, view: NamespaceView, name: str, policy: str, children: int
) -> dict[tuple[Resource, str], Obj]:
    """Create a DittoServer and delete it once `children` of its children exist; return the
    objects Retain must keep: those that existed when the deletion was asked for."""
    namespace = view.namespace
    await kube.create(
        DITTOSERVERS, server_manifest(namespace, name, deletionPolicy=policy), namespace
    )
    await view.until(lambda state: made(state, name) >= children, f"{name}'s children", 120)
    existing = {}
    for resource, child in retained(name):
        live = await kube.get_or_none(resource, child, namespace)
        if live is not None:
            existing[(resource, child)] = live
    await kube.delete(DITTOSERVERS, name, namespace)
    return existing


@pytest.mark.parametrize("policy", ["Retain", "Delete"])
async def test_a_server_deleted_mid_creation_leaves_only_what_its_policy_keeps(
    kube: KubeClient,
    namespace: str,
    view: NamespaceView,
    start_operator: StartOperator,
    policy: str,
) -> None:
    rng = seeded(f"deleted-mid-creation/{policy}")
    operator = start_operator()
    await operator.wait_for_log("starting workers", timeout=60)
    servers = [f"s{index:02d}" for index in range(SERVERS)]
    # Each DittoServer is deleted at a random point of its creation: once a random number of
    # its children exist (0: at once; all: while its status still settles).
    progress = {name: rng.randint(0, CHILDREN) for name in servers}
    kept = await asyncio.gather(
        *(create_then_delete(kube, view, name, policy, progress[name]) for name in servers)
    )
    must_keep = {key: obj for found in kept for key, obj in found.items()}
    print(f"{len(must_keep)} Secrets and claims existed when their DittoServer was deleted")

    await view.settle(lambda state: state.released(servers, policy), "the deletions", GC_TIMEOUT)
    state = await fresh_state(kube, namespace)
    assert state.released(servers, policy) == []
    if policy == "Retain":
        lost = []
        for (resource, name), before in must_keep.items():
            live = state.child(resource, name)
            if live is None or live["metadata"]["uid"] != before["metadata"]["uid"]:
                lost.append(f"{resource.kind} {name}")
            elif resource is SECRETS and live["data"] != before["data"]:
                lost.append(f"{resource.kind} {name} (its value changed)")
        assert lost == [], f"Retain lost what existed at deletion ({progress} children made)"
    assert operator.process.poll() is None, operator.tail()
