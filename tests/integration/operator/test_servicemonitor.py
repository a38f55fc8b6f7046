"""The optional ServiceMonitor on the real API server, without and then with its CRD.

No Prometheus Operator runs here: a stand-in CRD (tests/support/crds.py) makes
ServiceMonitors servable. CRDs are cluster-wide and the control plane is shared
by the session, so the test removes the CRD before and after itself.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from dittofs_controller.kube.client import ApiError, KubeClient
from dittofs_controller.kube.resources import (
    CRDS,
    DITTOSERVERS,
    EVENTS,
    SERVICE_MONITORS,
    SERVICES,
    ObjectKey,
)
from tests.integration.operator.conftest import (
    StartOperator,
    condition,
    load_manifest,
    wait_for,
)
from tests.support.crds import SERVICE_MONITOR_CRD_NAME as CRD_NAME
from tests.support.crds import install_service_monitor_crd as install_crd

MINIMAL = Path(__file__).resolve().parents[2] / "unit" / "api" / "valid" / "minimal.yaml"
SKIPPED = f"ServiceMonitor files-metrics skipped: the Prometheus Operator CRD {CRD_NAME}"
Obj = dict[str, Any]


async def uninstall_crd(kube: KubeClient) -> None:
    try:
        await kube.delete(CRDS, CRD_NAME)
    except ApiError as error:
        if error.status != 404:
            raise

    async def absent() -> bool:
        return await kube.get_or_none(CRDS, CRD_NAME) is None

    await wait_for(absent, "the ServiceMonitor CRD to be deleted", timeout=120)


async def network_ready(kube: KubeClient, key: ObjectKey, check: Any, what: str) -> Obj:
    async def probe() -> Obj | None:
        found = await condition(kube, key, "NetworkReady")
        return found if found and check(found) else None

    result: Obj = await wait_for(probe, f"NetworkReady: {what}")
    return result


async def skipped_events(kube: KubeClient, namespace: str) -> list[Obj]:
    listed = await kube.request("GET", EVENTS.path(namespace))
    return [e for e in listed.get("items") or () if e.get("reason") == "ServiceMonitorSkipped"]


async def test_service_monitor_skipped_without_crd_then_created_and_deleted(
    kube: KubeClient, namespace: str, start_operator: StartOperator
) -> None:
    await uninstall_crd(kube)
    try:
        operator = await start_operator()
        await wait_for(
            lambda: asyncio.sleep(0, operator.manager.caches_synced()),
            "the operator to be ready without the ServiceMonitor CRD",
        )
        server = load_manifest(MINIMAL, namespace)
        server["metadata"]["name"] = "files"
        server["spec"]["controlPlane"] = {
            "metrics": {
                "serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"p": "x"}}
            }
        }
        cluster_ip = {"type": "ClusterIP"}  # no load balancer to wait for: NetworkReady True
        prometheus = {"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}
        server["spec"]["expose"] = {
            "nfs": cluster_ip,
            "smb": cluster_ip,
            "networkPolicy": {"apiFrom": [prometheus]},
        }
        await kube.create(DITTOSERVERS, server, namespace)
        key = ObjectKey(namespace, "files")

        # Absent CRD: the network is still ready, and says what it skipped, with one Warning.
        skipped = await network_ready(
            kube, key, lambda c: SKIPPED in c["message"], "the skipped ServiceMonitor"
        )
        assert skipped["status"] == "True"
        assert "is not installed" in skipped["message"]
        (event,) = await wait_for(lambda: skipped_events(kube, namespace), "the Warning Event")
        assert event["type"] == "Warning"
        assert CRD_NAME in event["note"]

        # The CRD appears: the ServiceMonitor is created without restarting the operator.
        await install_crd(kube)

        async def monitor() -> Obj | None:
            return await kube.get_or_none(SERVICE_MONITORS, "files-metrics", namespace)

        created = await wait_for(monitor, "the ServiceMonitor", timeout=60)
        api = await kube.get(SERVICES, "files-api", namespace)
        selector = created["spec"]["selector"]["matchLabels"]
        assert selector.items() <= api["metadata"]["labels"].items()
        nfs = await kube.get(SERVICES, "files-nfs", namespace)
        assert not selector.items() <= nfs["metadata"]["labels"].items()
        assert "metrics" in [port["name"] for port in api["spec"]["ports"]]
        assert created["spec"]["endpoints"] == [
            {"port": "metrics", "path": "/metrics", "interval": "15s"}
        ]
        assert created["metadata"]["labels"]["p"] == "x"
        (owner,) = created["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["controller"]) == ("DittoServer", "files", True)
        managers = {entry["manager"] for entry in created["metadata"]["managedFields"]}
        assert managers == {"dittofs-operator/network"}
        cleared = await network_ready(
            kube, key, lambda c: SKIPPED not in c["message"], "the skip note gone"
        )
        assert cleared["status"] == "True"
        assert len(await skipped_events(kube, namespace)) == 1

        # Deleted by hand: restored.
        await kube.delete(SERVICE_MONITORS, "files-metrics", namespace)

        async def restored() -> Obj | None:
            found = await monitor()
            return (
                found if found and found["metadata"]["uid"] != created["metadata"]["uid"] else None
            )

        await wait_for(restored, "the ServiceMonitor to be restored")

        # Disabled: deleted.
        patch = {"spec": {"controlPlane": {"metrics": {"serviceMonitor": {"enabled": False}}}}}
        await kube.merge_patch(DITTOSERVERS, "files", patch, namespace)

        async def gone() -> bool:
            return await monitor() is None

        await wait_for(gone, "the ServiceMonitor to be deleted")
    finally:
        await uninstall_crd(kube)
