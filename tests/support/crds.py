"""Install the operator's CRD into a cluster and wait until it is served."""

from __future__ import annotations

import asyncio

from dittofs_controller.api import crd
from dittofs_controller.kube.client import APPLY_PATCH, ApiError, KubeClient
from dittofs_controller.kube.resources import CRDS, DITTOSERVERS


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
