"""Fixtures for testing the DittoServer operator against the real control plane.

`operator` runs the real Manager with the real `setup` in-process, scoped to the test's
namespace, with leader election off; `dittoservers` makes sure the current CRD is installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from dittofs_controller.kube.client import KubeClient
from dittofs_controller.kube.resources import DITTOSERVERS, SERVICES, ObjectKey
from dittofs_controller.operator import setup
from dittofs_controller.runtime.manager import Manager
from dittofs_controller.settings import LeaderElectionSettings, Settings

SAMPLES = Path(__file__).resolve().parents[3] / "samples"


class RunningOperator:
    def __init__(self, manager: Manager, task: asyncio.Task[int], stop: asyncio.Event) -> None:
        self.manager = manager
        self.task = task
        self.stop = stop

    async def shutdown(self) -> int:
        self.stop.set()
        return await asyncio.wait_for(self.task, 30)


StartOperator = Callable[..., Awaitable[RunningOperator]]


@pytest.fixture
async def start_operator(dittoservers: KubeClient, namespace: str) -> AsyncIterator[StartOperator]:
    """Start the real operator in-process for the test namespace; stopped after the test."""
    running: list[RunningOperator] = []

    async def start(client: KubeClient | None = None, **overrides: Any) -> RunningOperator:
        """`client`: the operator's own (default: the tests' admin client); `overrides`:
        Settings fields."""
        settings = Settings(
            kubeconfig=None,
            namespaces=(namespace,),
            reconcile_timeout=30.0,
            shutdown_grace=5.0,
            leader_election=LeaderElectionSettings(enabled=False),
            **overrides,
        )
        manager = Manager(client or dittoservers, settings)
        setup(manager)
        stop = asyncio.Event()
        task = asyncio.create_task(manager.run(stop))
        operator = RunningOperator(manager, task, stop)
        running.append(operator)
        return operator

    yield start
    for operator in running:
        if not operator.task.done():
            with contextlib.suppress(TimeoutError):
                await operator.shutdown()


@pytest.fixture
async def operator(start_operator: StartOperator) -> RunningOperator:
    return await start_operator()


def load_manifest(path: Path, namespace: str) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict)
    document["metadata"]["namespace"] = namespace
    return document


async def unused_node_port(kube: KubeClient) -> int:
    """A node port no Service of the shared control plane holds yet, so a test's Service is
    never refused for a port an earlier test left allocated."""
    listed = await kube.request("GET", SERVICES.path())
    taken = {
        port.get("nodePort")
        for service in listed["items"]
        for port in service["spec"].get("ports", [])
    }
    return random.choice([port for port in range(30100, 32700) if port not in taken])


async def wait_for(check: Callable[[], Awaitable[Any]], what: str, timeout: float = 30.0) -> Any:
    """Poll `check` until it returns something truthy, and return that."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                result = await check()
                if result:
                    return result
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}") from None


async def condition(kube: KubeClient, key: ObjectKey, condition_type: str) -> dict[str, Any] | None:
    server = await kube.get(DITTOSERVERS, key.name, key.namespace)
    for cond in (server.get("status") or {}).get("conditions") or ():
        if cond["type"] == condition_type:
            return dict(cond)
    return None
