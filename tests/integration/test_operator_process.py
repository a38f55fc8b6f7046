"""The runtime as real processes: leader election, takeover and graceful shutdown."""

from __future__ import annotations

import asyncio
import datetime
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from dittofs_controller.kube.client import KubeClient
from dittofs_controller.kube.resources import CONFIGMAPS, LEASES
from tests.support.apiproxy import html_page, is_watch, running_proxy, token_kubeconfig
from tests.support.echo_operator import SOURCE_LABEL, WRITER_ANNOTATION
from tests.support.incluster import request_token
from tests.support.process import OperatorProcess, eventually
from tests.testbed import Cluster

LEASE_DURATION = 4.0
ELECTION_FLAGS = [
    f"--leader-elect-lease-duration={LEASE_DURATION}",
    "--leader-elect-renew-deadline=3",
    "--leader-elect-retry-period=0.5",
]


StartEcho = Callable[..., OperatorProcess]


@pytest.fixture
def start_echo(control_plane: object, namespace: str, tmp_path: Path) -> Iterator[StartEcho]:
    """Start echo operators watching the test namespace; all are killed after the test."""
    started: list[OperatorProcess] = []

    def start(identity: str, *extra: str) -> OperatorProcess:
        process = OperatorProcess(
            "tests.support.echo_operator",
            [
                f"--kubeconfig={control_plane.kubeconfig_path}",  # type: ignore[attr-defined]
                f"--namespaces={namespace}",
                f"--leader-elect-namespace={namespace}",
                f"--leader-elect-identity={identity}",
                *ELECTION_FLAGS,
                *extra,
            ],
            tmp_path / f"{identity}.log",
        )
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def _now() -> str:
    """A Lease's MicroTime for now."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def create_source(kube: KubeClient, namespace: str, name: str, **data: str) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": {SOURCE_LABEL: "true"}},
        "data": data,
    }
    await kube.create(CONFIGMAPS, body, namespace)


async def echo_writer(kube: KubeClient, namespace: str, name: str) -> str | None:
    echo = await kube.get_or_none(CONFIGMAPS, f"{name}-echo", namespace)
    return None if echo is None else echo["metadata"]["annotations"][WRITER_ANNOTATION]


async def test_only_the_leader_reconciles(
    kube: KubeClient,
    namespace: str,
    start_echo: StartEcho,
) -> None:
    first = start_echo("first")
    await first.wait_for_log("became leader")
    second = start_echo("second")
    await second.wait_for_log("waiting for leadership")
    for index in range(5):
        await create_source(kube, namespace, f"src-{index}", index=str(index))
    for index in range(5):
        await eventually(
            lambda i=index: echo_writer(kube, namespace, f"src-{i}"), 30, f"echo {index}", first
        )
        assert await echo_writer(kube, namespace, f"src-{index}") == "first"
    lease = await kube.get(LEASES, "dittofs-controller", namespace)
    assert lease["spec"]["holderIdentity"] == "first"
    assert not second.logged("became leader")
    assert not second.logged("starting workers")
    assert second.metric(
        "controller_runtime_reconcile_total", controller="echo", result="success"
    ) in (
        None,
        0.0,
    )
    assert first.metric("leader_election_master_status", name="dittofs-controller") == 1.0


@pytest.mark.parametrize("how", ["killed", "terminated"])
async def test_standby_takes_over_within_the_lease_duration(
    kube: KubeClient,
    namespace: str,
    start_echo: StartEcho,
    how: str,
) -> None:
    first = start_echo("first")
    await first.wait_for_log("became leader")
    second = start_echo("second")
    await second.wait_for_log("waiting for leadership")
    first.signal(signal.SIGKILL if how == "killed" else signal.SIGTERM)
    takeover = await second.wait_for_log("became leader", timeout=LEASE_DURATION + 10)
    # Killed: the standby waits out the lease (plus one retry period); terminated: the leader
    # released the lease, so the standby takes over on its next retry.
    bound = LEASE_DURATION + 2 if how == "killed" else LEASE_DURATION
    assert takeover <= bound, f"takeover took {takeover:.1f} s"
    await create_source(kube, namespace, "after-takeover")
    await eventually(lambda: echo_writer(kube, namespace, "after-takeover"), 30, "echo", second)
    assert await echo_writer(kube, namespace, "after-takeover") == "second"
    if how == "terminated":
        assert first.wait(10) == 0


async def reconciling_slowly(
    start_echo: StartEcho, kube: KubeClient, namespace: str, *, grace: int, delay: int
) -> OperatorProcess:
    """An echo operator with one reconcile of `delay` seconds in flight."""
    operator = start_echo("only", f"--shutdown-grace={grace}")
    await operator.wait_for_log("starting workers")
    await create_source(kube, namespace, "slow", delay=str(delay))
    await eventually(
        lambda: operator.metric("controller_runtime_active_workers", controller="echo") == 1.0,
        20,
        "a reconcile in flight",
        operator,
    )
    return operator


async def test_sigterm_lets_in_flight_reconciles_finish_then_exits_zero(
    kube: KubeClient,
    namespace: str,
    start_echo: StartEcho,
) -> None:
    operator = await reconciling_slowly(start_echo, kube, namespace, grace=20, delay=3)
    operator.signal(signal.SIGTERM)
    code = await asyncio.to_thread(operator.wait, 20)
    assert code == 0, operator.tail()
    assert await echo_writer(kube, namespace, "slow") == "only"


async def test_sigterm_while_waiting_for_leadership_exits_zero(
    kube: KubeClient,
    namespace: str,
    start_echo: StartEcho,
) -> None:
    leader = start_echo("leader")
    await leader.wait_for_log("became leader")
    standby = start_echo("standby")
    await standby.wait_for_log("waiting for leadership")
    standby.signal(signal.SIGTERM)
    assert await asyncio.to_thread(standby.wait, 10) == 0


async def test_a_holder_with_a_longer_lease_is_waited_out_on_its_own_duration(
    kube: KubeClient,
    namespace: str,
    start_echo: StartEcho,
) -> None:
    holder_duration = 4 * LEASE_DURATION
    lease = {
        "apiVersion": LEASES.api_version,
        "kind": "Lease",
        "metadata": {"name": "dittofs-controller", "namespace": namespace},
        "spec": {
            "holderIdentity": "old-replica",
            "leaseDurationSeconds": int(holder_duration),
            "renewTime": _now(),
        },
    }
    await kube.create(LEASES, lease, namespace)
    started = time.monotonic()
    candidate = start_echo("candidate")
    await candidate.wait_for_log("became leader", timeout=holder_duration + 15)
    # Judged on its own (shorter) duration, it took over after LEASE_DURATION: two leaders.
    assert time.monotonic() - started >= holder_duration


async def test_an_html_answer_to_leader_election_is_logged_and_exits_non_zero(
    kube: KubeClient,
    namespace: str,
    start_echo: StartEcho,
    tmp_path: Path,
) -> None:
    async def html_for_leases(request: web.Request) -> web.StreamResponse | None:
        return html_page() if request.path.startswith("/apis/coordination.k8s.io/") else None

    async with running_proxy(kube, html_for_leases) as proxy:
        kubeconfig = proxy.kubeconfig(tmp_path / "proxy.kubeconfig")
        operator = start_echo("only", f"--kubeconfig={kubeconfig}")
        code = await asyncio.to_thread(operator.wait, 30)
    assert code != 0, operator.tail()
    failures = [e for e in operator.logs() if e.get("event") == "leader election failed"]
    assert failures, operator.tail()
    assert "JSONDecodeError" in failures[0]["exception"]


async def test_a_lease_lost_during_the_drain_stops_reconciling_at_once_and_exits_non_zero(
    kube: KubeClient,
    namespace: str,
    start_echo: StartEcho,
) -> None:
    operator = await reconciling_slowly(start_echo, kube, namespace, grace=60, delay=30)
    operator.signal(signal.SIGTERM)
    await operator.wait_for_log("shutting down: draining in-flight reconciles")
    # Another replica takes the lease (as one would once ours ran out): ours can no longer renew.
    lease = await kube.get(LEASES, "dittofs-controller", namespace)
    lease["spec"].update(holderIdentity="thief", leaseDurationSeconds=60, renewTime=_now())
    await kube.replace(LEASES, lease)
    # It stops within the renew deadline (3 s), not once the 30 s reconcile is done.
    code = await asyncio.to_thread(operator.wait, 20)
    assert code != 0, operator.tail()
    assert any(
        e.get("event") == "leadership lost: reconcilers stopped" and e.get("draining")
        for e in operator.logs()
    ), operator.tail()
    assert await echo_writer(kube, namespace, "slow") is None


async def test_a_dead_informer_is_noticed_and_exits_non_zero(
    kube: KubeClient,
    namespace: str,
    start_echo: StartEcho,
    tmp_path: Path,
) -> None:
    path = CONFIGMAPS.path(namespace)

    async def malformed_watch(request: web.Request) -> web.StreamResponse | None:
        # An event without metadata: the informer has no way on from it, its task dies.
        if is_watch(request, path):
            return web.json_response({"type": "ADDED", "object": {}})
        return None

    async with running_proxy(kube, malformed_watch) as proxy:
        kubeconfig = proxy.kubeconfig(tmp_path / "proxy.kubeconfig")
        operator = start_echo("only", f"--kubeconfig={kubeconfig}")
        # Without supervision the cache stays frozen and synced, /readyz green, for ever.
        code = await asyncio.to_thread(operator.wait, 30)
    assert code != 0, operator.tail()
    deaths = [e for e in operator.logs() if e.get("event") == "a cache stopped unexpectedly"]
    assert deaths, operator.tail()
    assert deaths[0]["resource"] == "configmaps"
    assert "KeyError('metadata')" in deaths[0]["error"]


async def test_a_list_rbac_forbids_ends_the_cache_sync_wait_with_the_missing_permission(
    kube: KubeClient,
    namespace: str,
    start_echo: StartEcho,
    control_plane: Cluster,
    tmp_path: Path,
) -> None:
    # A ServiceAccount that may hold the Lease, but not list the ConfigMaps it must cache.
    await kube.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts",
        body={"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "limited"}},
    )
    rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
    await kube.request(
        "POST",
        f"{rbac}/roles",
        body={
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "leases-only"},
            "rules": [
                {
                    "apiGroups": ["coordination.k8s.io"],
                    "resources": ["leases"],
                    "verbs": ["get", "create", "update"],
                }
            ],
        },
    )
    await kube.request(
        "POST",
        f"{rbac}/rolebindings",
        body={
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "leases-only"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "leases-only",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "limited", "namespace": namespace}],
        },
    )
    kubeconfig = token_kubeconfig(
        tmp_path / "limited.kubeconfig",
        control_plane.server_url,
        await request_token(kube, namespace, "limited"),
    )
    operator = start_echo("limited", f"--kubeconfig={kubeconfig}", "--cache-sync-timeout=5")
    # Without the timeout it waits for the cache for ever, logging only retried warnings.
    code = await asyncio.to_thread(operator.wait, 30)
    assert code != 0, operator.tail()
    stopped = [e for e in operator.logs() if e.get("event") == "a controller stopped unexpectedly"]
    assert stopped, operator.tail()
    assert "CacheSyncTimeout" in stopped[0]["error"]
    assert 'cannot list resource "configmaps"' in stopped[0]["error"], stopped[0]["error"]
