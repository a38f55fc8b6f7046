"""Kubernetes Events (events.k8s.io/v1) for what users should notice without reading logs."""

from __future__ import annotations

import datetime
import secrets
from typing import Any, Literal

import aiohttp
import structlog

from dittofs_controller.kube.client import ApiError, KubeClient
from dittofs_controller.kube.resources import EVENTS

log = structlog.get_logger("dittofs_controller.events")

REPORTING_CONTROLLER = "dittofs.io/operator"
EventType = Literal["Normal", "Warning"]


class EventRecorder:
    """Records Events about objects; a failure to record is logged, never raised."""

    def __init__(self, client: KubeClient, instance: str) -> None:
        self.client = client
        self.instance = instance

    async def record(
        self, obj: dict[str, Any], event_type: EventType, reason: str, note: str, action: str
    ) -> None:
        meta = obj["metadata"]
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        event = {
            "apiVersion": EVENTS.api_version,
            "kind": "Event",
            "metadata": {
                "name": f"{meta['name']}.{secrets.token_hex(8)}",
                "namespace": meta["namespace"],
            },
            "eventTime": now,
            "reportingController": REPORTING_CONTROLLER,
            "reportingInstance": self.instance[:128],
            "action": action[:128],
            "reason": reason[:128],
            "note": note[:1024],
            "type": event_type,
            "regarding": {
                "apiVersion": obj.get("apiVersion"),
                "kind": obj.get("kind"),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
        }
        try:
            await self.client.create(EVENTS, event, meta["namespace"])
        except (ApiError, aiohttp.ClientError, TimeoutError) as error:
            log.warning("could not record an event", reason=reason, error=str(error))
