"""Every sample in samples/ is accepted by the real API server and taken up by the operator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from dittofs_controller.kube.client import KubeClient
from dittofs_controller.kube.resources import DITTOSERVERS, SECRETS, ObjectKey, Resource
from tests.integration.operator.conftest import RunningOperator, condition, wait_for

SAMPLES = sorted((Path(__file__).resolve().parents[3] / "samples").glob("*.yaml"))
KINDS = {"DittoServer": DITTOSERVERS, "Secret": SECRETS}
STRICT = {"fieldValidation": "Strict"}


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_there_is_a_sample_per_store_combination() -> None:
    names = {path.stem for path in SAMPLES}
    for metadata in ("memory", "badger", "postgres"):
        for payload in ("memory", "filesystem", "s3"):
            assert f"{metadata}-{payload}" in names
    assert "percona-controlplane" in names


@pytest.mark.parametrize("sample", SAMPLES, ids=[path.stem for path in SAMPLES])
async def test_sample_is_accepted_and_configured(
    kube: KubeClient, namespace: str, operator: RunningOperator, sample: Path
) -> None:
    server: dict[str, Any] | None = None
    for doc in documents(sample):
        resource: Resource = KINDS[doc["kind"]]
        doc["metadata"]["namespace"] = namespace
        await kube.request("POST", resource.path(namespace), query=STRICT, body=doc)
        if doc["kind"] == "DittoServer":
            server = doc
    assert server is not None
    key = ObjectKey(namespace, server["metadata"]["name"])
    ready = await wait_for(
        lambda: _true(kube, key, "ConfigReady"), f"ConfigReady of {sample.name}", timeout=60
    )
    assert ready["reason"] == "Rendered"


async def _true(kube: KubeClient, key: ObjectKey, kind: str) -> dict[str, Any] | None:
    found = await condition(kube, key, kind)
    return found if found and found["status"] == "True" else None
