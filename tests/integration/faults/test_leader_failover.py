"""Two replicas of the real operator: only the Lease holder writes, and when it is killed in the
middle of its work the standby takes over within the lease duration and finishes the job."""

from __future__ import annotations

import signal

import pytest

from dittofs_controller.kube.client import KubeClient
from dittofs_controller.kube.resources import DITTOSERVERS, EVENTS, LEASES, SECRETS
from dittofs_controller.operator.events import REPORTING_CONTROLLER
from tests.bench.operator_bench import WRITE_VERBS, requests_by_verb
from tests.integration.faults.conftest import (
    CHILD_KINDS,
    CONVERGE_TIMEOUT,
    LEASE_DURATION,
    LONG_TEST_TIMEOUT,
    NamespaceView,
    StartOperator,
    expected_children,
    fresh_state,
    gather_limited,
    seeded,
    server_manifest,
)
from tests.support.process import OperatorProcess, eventually

SERVERS = 20
# Its API's TLS Secret is created only once the standby leads: the first leader records the
# SecretNotFound Warning, the second the Event of its end (the steps of a normal start record
# none). The config reconciler checks that Secret; others wait for a running pod.
WAITING = "waiting"
TLS_SECRET = "waiting-api-tls"
CHILDREN_PER_SERVER = sum(len(names) for names in expected_children("s").values())


def writes(operator: OperatorProcess) -> float:
    """API writes the process made (rest_client_requests_total, any status code)."""
    requests = requests_by_verb(operator)
    return sum(requests.get(verb, 0.0) for verb in WRITE_VERBS)


def applied_children(operator: OperatorProcess) -> int:
    return sum(entry.get("event") == "applied child" for entry in operator.logs())


async def recorded(kube: KubeClient, namespace: str) -> set[tuple[str, str, str]]:
    """(replica, object, reason) of each of the operator's Events in the namespace."""
    listed = await kube.request("GET", EVENTS.path(namespace))
    return {
        (event["reportingInstance"], event["regarding"]["name"], event["reason"])
        for event in listed["items"]
        if event.get("reportingController") == REPORTING_CONTROLLER
    }


async def reporting_instances(kube: KubeClient, namespace: str) -> set[str]:
    """The replicas that recorded the operator's Events in the namespace."""
    return {instance for instance, _, _ in await recorded(kube, namespace)}


@pytest.mark.timeout(LONG_TEST_TIMEOUT)
async def test_only_the_leader_writes_and_a_killed_leader_is_replaced_within_the_lease(
    kube: KubeClient,
    namespace: str,
    view: NamespaceView,
    start_operator: StartOperator,
) -> None:
    rng = seeded("leader-failover")
    first = start_operator("first", leader_elect=True)
    await first.wait_for_log("became leader", timeout=60)
    second = start_operator("second", leader_elect=True)
    await second.wait_for_log("waiting for leadership", timeout=60)
    servers = [f"s{index:02d}" for index in range(SERVERS)]
    control_plane = {
        "database": {"type": "sqlite"},
        "tls": {"secretName": TLS_SECRET},
    }
    manifests = [server_manifest(namespace, name) for name in servers]
    manifests.append(server_manifest(namespace, WAITING, controlPlane=control_plane))
    await gather_limited(kube.create(DITTOSERVERS, m, namespace) for m in manifests)
    servers.append(WAITING)
    # Kill the leader at a random point of its work: once it made some of the children.
    threshold = rng.randint(1, SERVERS * CHILDREN_PER_SERVER // 2)
    await view.until(
        lambda state: sum(len(state.children[kind]) for kind in CHILD_KINDS) >= threshold,
        f"{threshold} children",
        CONVERGE_TIMEOUT,
    )

    # The leader may reach the waiting server after the children counted above: wait for its
    # Warning, without which the Secret's arrival would be a normal start with no Event.
    async def waiting_warned() -> bool:
        return ("first", WAITING, "SecretNotFound") in await recorded(kube, namespace)

    await eventually(waiting_warned, CONVERGE_TIMEOUT, "the waiting server's Warning", first)
    assert writes(first) > 0, first.tail()
    assert writes(second) == 0.0, second.tail()
    assert applied_children(second) == 0
    assert await reporting_instances(kube, namespace) == {"first"}
    assert first.metric("leader_election_master_status", name="dittofs-controller") == 1.0
    assert second.metric("leader_election_master_status", name="dittofs-controller") == 0.0

    first.signal(signal.SIGKILL)
    takeover = await second.wait_for_log("became leader", timeout=LEASE_DURATION + 20)
    print(f"the standby took over {takeover:.1f} s after the leader was killed")
    # The standby waits out the lease from the last renewal it saw, plus one retry period.
    assert takeover <= LEASE_DURATION + 2, f"takeover took {takeover:.1f} s"

    await kube.create(
        SECRETS,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": TLS_SECRET},
            # The operator checks the keys; only DittoFS, never started here, reads the PEM.
            "stringData": {"tls.crt": "certificate", "tls.key": "key"},
        },
        namespace,
    )
    await view.settle(lambda state: state.converged(servers), "convergence", CONVERGE_TIMEOUT)
    assert (await fresh_state(kube, namespace)).converged(servers) == []
    lease = await kube.get(LEASES, "dittofs-controller", namespace)
    assert lease["spec"]["holderIdentity"] == "second"
    assert applied_children(second) > 0, second.tail()

    # The Event of the Secret's arrival follows the ConfigReady write the convergence saw.
    async def both_recorded() -> bool:
        return await reporting_instances(kube, namespace) == {"first", "second"}

    await eventually(both_recorded, CONVERGE_TIMEOUT, "an Event by the new leader", second)
