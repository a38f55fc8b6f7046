"""The readiness summariser on the real API server."""

from __future__ import annotations

from pathlib import Path

from dittofs_controller.kube.client import KubeClient
from dittofs_controller.kube.resources import DITTOSERVERS, ObjectKey
from tests.integration.operator.conftest import (
    RunningOperator,
    condition,
    load_manifest,
    wait_for,
)

MINIMAL = Path(__file__).resolve().parents[2] / "unit" / "api" / "valid" / "minimal.yaml"


async def test_a_new_server_is_reported_progressing_until_every_concern_reports(
    kube: KubeClient, namespace: str, operator: RunningOperator
) -> None:
    server = load_manifest(MINIMAL, namespace)
    await kube.create(DITTOSERVERS, server, namespace)
    key = ObjectKey(namespace, server["metadata"]["name"])
    ready = await wait_for(lambda: condition(kube, key, "Ready"), "the Ready condition")
    assert ready["status"] in ("Unknown", "False")
    stored = await kube.get(DITTOSERVERS, key.name, namespace)
    assert stored["status"]["phase"] in ("Progressing", "Pending")
    assert ready["observedGeneration"] == stored["metadata"]["generation"]
