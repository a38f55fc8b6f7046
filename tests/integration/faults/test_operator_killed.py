"""SIGKILL the operator at random points while it creates 50 DittoServers' children.

A killed operator loses its caches, its queues and whatever request was in flight; the one
started in its place must finish the job from what the API server holds, without creating a
second copy of anything, leaving a child without its owner, or generating a Secret again.
"""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from dittofs_controller.kube.client import KubeClient
from dittofs_controller.kube.resources import DITTOSERVERS
from tests.integration.faults.conftest import (
    CONVERGE_TIMEOUT,
    LONG_TEST_TIMEOUT,
    NamespaceView,
    StartOperator,
    fresh_state,
    gather_limited,
    secrets_in_use,
    seeded,
    server_manifest,
)
from tests.support.process import OperatorProcess

TRIALS = 10
SERVERS = 50
# Each kill lands within this many seconds of its operator's start of work: while the creation
# burst is being reconciled.
KILL_WINDOW = 5.0


async def kill(operator: OperatorProcess) -> None:
    operator.signal(signal.SIGKILL)
    assert await asyncio.to_thread(operator.wait, 10) == -signal.SIGKILL


@pytest.mark.timeout(LONG_TEST_TIMEOUT)
@pytest.mark.parametrize("trial", range(TRIALS))
async def test_killed_while_creating_converges_without_duplicates_or_orphans(
    kube: KubeClient,
    namespace: str,
    view: NamespaceView,
    start_operator: StartOperator,
    trial: int,
) -> None:
    rng = seeded(f"killed-while-creating/{trial}")
    servers = [f"s{index:02d}" for index in range(SERVERS)]
    operator = start_operator()
    await operator.wait_for_log("starting workers", timeout=60)
    creating = asyncio.create_task(
        gather_limited(
            kube.create(DITTOSERVERS, server_manifest(namespace, name), namespace)
            for name in servers
        )
    )
    for kill_number in range(rng.randint(1, 2)):
        delay = rng.uniform(0.0, KILL_WINDOW)
        await asyncio.sleep(delay)  # the fault's random point, not a wait for an outcome
        await kill(operator)
        state = view.state()
        print(
            f"kill {kill_number + 1} after {delay:.2f} s: {len(state.servers)} DittoServers, "
            f"{sum(len(objs) for objs in state.children.values())} children, "
            f"{sum(not state.unreconciled(name) for name in state.servers)} reconciled"
        )
        operator = start_operator()
        await operator.wait_for_log("starting workers", timeout=60)
    await creating

    started = time.monotonic()
    await view.settle(lambda state: state.converged(servers), "convergence", CONVERGE_TIMEOUT)
    print(f"converged {time.monotonic() - started:.1f} s after the last restart")
    state = await fresh_state(kube, namespace)
    assert state.converged(servers) == []
    assert secrets_in_use(state) == []
    # Nothing was deleted and re-created on the way, and no Secret ever changed its value.
    assert view.deleted == []
    assert {
        name: len(values) for name, values in view.secret_values.items() if len(values) > 1
    } == {}
