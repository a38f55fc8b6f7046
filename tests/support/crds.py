"""Install the operator's CRD into a cluster and wait until it is served."""

from __future__ import annotations

import asyncio
from typing import Any

from dittofs_controller.api import crd
from dittofs_controller.kube.client import APPLY_PATCH, ApiError, KubeClient
from dittofs_controller.kube.resources import CRDS, DITTOSERVERS, SERVICE_MONITORS, Resource

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


async def apply_crd(
    kube: KubeClient, body: dict[str, Any], served: Resource, timeout: float = 30
) -> None:
    """Server-side apply a CRD (idempotent) and wait until its resource is served.

    A CRD's Established condition can precede its handler serving the resource by a moment, and
    a CRD deleted a moment ago can still answer 404: only a list that answers proves a create
    (even a dry run) will not fail.
    """
    await kube.request(
        "PATCH",
        CRDS.path(name=body["metadata"]["name"]),
        query={"fieldManager": "dittofs-tests", "force": "true"},
        body=body,
        content_type=APPLY_PATCH,
    )
    async with asyncio.timeout(timeout):
        while True:
            try:
                await kube.request("GET", served.path("default"), query={"limit": 1})
                return
            except ApiError as error:
                if error.status != 404:
                    raise
            await asyncio.sleep(0.1)


async def install_crd(kube: KubeClient, timeout: float = 30) -> None:
    """The operator's CRD, served."""
    await apply_crd(kube, crd.crd(), DITTOSERVERS, timeout)


async def install_service_monitor_crd(kube: KubeClient) -> None:
    """The stand-in ServiceMonitor CRD, served."""
    await apply_crd(kube, SERVICE_MONITOR_CRD, SERVICE_MONITORS)
