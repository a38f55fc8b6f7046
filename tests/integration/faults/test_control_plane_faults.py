"""The control plane misbehaves under the running operator: kube-apiserver restarts in the middle
of reconciliation, and etcd compaction makes the operator's watches answer 410 Gone."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import pytest
import yaml

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
from tests.integration.faults.conftest import (
    CONVERGE_TIMEOUT,
    LONG_TEST_TIMEOUT,
    NamespaceView,
    StartOperator,
    State,
    fresh_state,
    gather_limited,
    server_manifest,
)

# The garbage collector deletes the children of a deleted DittoServer; right after the CRD is
# installed it may need up to ~30 s to learn the kind.
GC_TIMEOUT = 90.0

# Versions of a DittoServer's spec, each visible in a different child.
LOG_LEVELS = ("INFO", "DEBUG", "WARN")
NFS_SERVICE_PORTS = (2049, 3049, 4049)


def version_patch(version: int) -> dict[str, Any]:
    return {
        "spec": {
            "controlPlane": {"logLevel": LOG_LEVELS[version]},
            "adapters": {"nfs": {"servicePort": NFS_SERVICE_PORTS[version]}},
            "pod": {"labels": {"faults.dittofs.io/version": str(version)}},
        }
    }


def stale_children(state: State, versions: dict[str, int]) -> list[str]:
    """Children that do not show their DittoServer's spec version yet (or are missing)."""
    found = []
    for name, version in versions.items():
        config_map = state.child(CONFIGMAPS, names.config_map(name))
        service = state.child(SERVICES, names.service(name, "nfs"))
        workload = state.child(STATEFULSETS, names.statefulset(name))
        if config_map is None or service is None or workload is None:
            found.append(f"{name}: children missing")
            continue
        config = yaml.safe_load(config_map["data"][names.CONFIG_KEY])
        if config["logging"]["level"] != LOG_LEVELS[version]:
            found.append(f"{name}: ConfigMap has log level {config['logging']['level']}")
        ports = [port["port"] for port in service["spec"]["ports"]]
        if ports != [NFS_SERVICE_PORTS[version]]:
            found.append(f"{name}: NFS Service ports {ports}")
        template = workload["spec"]["template"]["metadata"]
        if template["labels"].get("faults.dittofs.io/version", "0") != str(version):
            found.append(f"{name}: pod template labels {template['labels']}")
        digest = config_map["metadata"]["annotations"][names.RESTART_HASH_ANNOTATION]
        if template["annotations"].get(names.RESTART_HASH_ANNOTATION) != digest:
            found.append(f"{name}: pod template restart hash is not the ConfigMap's")
    return found


async def create_servers(kube: KubeClient, namespace: str, servers: list[str], **spec: Any) -> None:
    await gather_limited(
        kube.create(DITTOSERVERS, server_manifest(namespace, name, **spec), namespace)
        for name in servers
    )


async def patch_version(kube: KubeClient, namespace: str, servers: list[str], version: int) -> None:
    await gather_limited(
        kube.merge_patch(DITTOSERVERS, name, version_patch(version), namespace) for name in servers
    )


@pytest.mark.timeout(LONG_TEST_TIMEOUT)
async def test_no_spec_change_is_lost_across_an_apiserver_restart(
    kube: KubeClient,
    namespace: str,
    view: NamespaceView,
    start_operator: StartOperator,
    control_plane: Any,
) -> None:
    servers = [f"s{index}" for index in range(12)]
    before, both, after = servers[:4], servers[4:8], servers[8:]
    operator = start_operator()
    await operator.wait_for_log("starting workers", timeout=60)
    await create_servers(kube, namespace, servers)
    await view.settle(lambda state: state.converged(servers), "first convergence", CONVERGE_TIMEOUT)

    # Changes land right before the restart, so the operator is reconciling them when the
    # API server goes away; more land as soon as it is back, while the watches reconnect.
    await patch_version(kube, namespace, before + both, 1)
    await asyncio.to_thread(control_plane.restart_apiserver)
    await patch_version(kube, namespace, both, 2)
    await patch_version(kube, namespace, after, 1)

    versions = {**dict.fromkeys(before, 1), **dict.fromkeys(both, 2), **dict.fromkeys(after, 1)}

    def problems(state: State) -> list[str]:
        return state.converged(servers) + stale_children(state, versions)

    await view.settle(problems, "every change in the children", CONVERGE_TIMEOUT)
    assert problems(await fresh_state(kube, namespace)) == []
    assert operator.process.poll() is None, operator.tail()


@pytest.mark.timeout(LONG_TEST_TIMEOUT)
async def test_deletes_missed_while_the_watches_were_compacted_away_are_all_reflected(
    kube: KubeClient,
    namespace: str,
    view: NamespaceView,
    start_operator: StartOperator,
    control_plane: Any,
) -> None:
    retained = [f"retain-{index}" for index in range(4)]
    deleted = [f"delete-{index}" for index in range(4)]
    survivors = [f"s{index}" for index in range(6)]
    operator = start_operator(debug=True)
    await operator.wait_for_log("starting workers", timeout=60)
    await create_servers(kube, namespace, retained + survivors, deletionPolicy="Retain")
    await create_servers(kube, namespace, deleted, deletionPolicy="Delete")
    everything = retained + deleted + survivors
    await view.settle(lambda state: state.converged(everything), "convergence", CONVERGE_TIMEOUT)
    kept_secrets = {
        name: (await kube.get(SECRETS, name, namespace))["data"]
        for server in retained
        for name in (names.jwt_secret(server), names.admin_secret(server))
    }

    # Frozen, the operator watches nothing: every change below happens behind its back, then
    # compaction and an API server restart (its watch cache gone) make resuming impossible.
    operator.signal(signal.SIGSTOP)
    try:
        for server in retained + deleted:
            await kube.delete(DITTOSERVERS, server, namespace)
        children: list[tuple[Resource, str]] = [
            (CONFIGMAPS, names.config_map(survivors[0])),
            (SERVICES, names.service(survivors[1], "nfs")),
            (STATEFULSETS, names.statefulset(survivors[2])),
            (SECRETS, names.jwt_secret(survivors[3])),
            (SERVICES, names.service(survivors[4], "api")),
            (CONFIGMAPS, names.config_map(survivors[5])),
        ]
        for resource, name in children:
            await kube.delete(resource, name, namespace)
        await asyncio.to_thread(control_plane.compact_etcd)
        await asyncio.to_thread(control_plane.restart_apiserver)
    finally:
        operator.signal(signal.SIGCONT)

    def problems(state: State) -> list[str]:
        return (
            state.converged(survivors, gone=retained + deleted)
            + state.released(retained, "Retain")
            + state.released(deleted, "Delete")
        )

    await view.settle(problems, "every delete reflected", GC_TIMEOUT + CONVERGE_TIMEOUT)
    state = await fresh_state(kube, namespace)
    assert problems(state) == []
    # Retain kept the generated Secrets and the claims, unchanged and free for adoption.
    kept = {obj["metadata"]["name"]: obj for obj in state.children[SECRETS]}
    assert {name: kept[name]["data"] for name in kept_secrets if name in kept} == kept_secrets
    assert {c["metadata"]["name"] for c in state.children[PVCS]} >= {
        names.controlplane_claim(server) for server in retained
    }
    # The operator really lost its watches: each cache listed again after the 410.
    relists = [
        entry
        for entry in operator.logs()
        if entry.get("event") == "listed" and entry.get("resource") == DITTOSERVERS.plural
    ]
    print(f"DittoServers listed {len(relists)} times")
    assert len(relists) >= 2, operator.tail()
