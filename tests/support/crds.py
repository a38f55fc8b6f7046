"""Install the operator's CRD into a cluster and wait until it is served."""

from __future__ import annotations

import asyncio
from typing import Any

from dittofs_controller.api import crd
from dittofs_controller.kube.client import APPLY_PATCH, ApiError, KubeClient
from dittofs_controller.kube.resources import CRDS, DITTOSERVERS

SERVICE_MONITOR_CRD_NAME = "servicemonitors.monitoring.coreos.com"
# No Prometheus Operator runs in the tests: a stand-in CRD (structural, spec kept as sent)
# makes ServiceMonitors servable.
SERVICE_MONITOR_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": SERVICE_MONITOR_CRD_NAME},
    "spec": {
        "group": "monitoring.coreos.com",
        "names": {
            "kind": "ServiceMonitor",
            "listKind": "ServiceMonitorList",
            "plural": "servicemonitors",
            "singular": "servicemonitor",
        },
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                        },
                    }
                },
            }
        ],
    },
}


async def install_crd(kube: KubeClient, timeout: float = 30) -> None:
    """Server-side apply the generated CRD (idempotent) and wait until DittoServers are served."""
    await kube.request(
        "PATCH",
        CRDS.path(name=crd.NAME),
        query={"fieldManager": "dittofs-tests", "force": "true"},
        body=crd.crd(),
        content_type=APPLY_PATCH,
    )
    async with asyncio.timeout(timeout):
        while True:
            status = (await kube.get(CRDS, crd.NAME)).get("status") or {}
            conditions = status.get("conditions") or []
            if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
                break
            await asyncio.sleep(0.1)
        while True:  # Established can precede the handler serving the resource by a moment
            try:
                await kube.request("GET", DITTOSERVERS.path("default"), query={"limit": 1})
                return
            except ApiError as error:
                if error.status != 404:
                    raise
            await asyncio.sleep(0.1)


async def install_service_monitor_crd(kube: KubeClient) -> None:
    """Server-side apply the stand-in ServiceMonitor CRD (the operator waits until it is served)."""
    await kube.request(
        "PATCH",
        CRDS.path(name=SERVICE_MONITOR_CRD_NAME),
        query={"fieldManager": "dittofs-tests", "force": "true"},
        body=SERVICE_MONITOR_CRD,
        content_type=APPLY_PATCH,
    )
