"""Shared fixtures: a real local Kubernetes control plane for integration tests.

Tests under tests/integration (and any test using `control_plane`) are marked `integration`
automatically; only they start the control plane, once per session. Set
DITTOFS_TEST_KUBECONFIG to reuse a running one (`python -m tests.testbed up`) instead.
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from tests.testbed import Cluster, ControlPlane, ExternalCluster, binaries, netns
from tests.testbed.loadbalancer import LoadBalancerController

REUSE_ENV = "DITTOFS_TEST_KUBECONFIG"
INTEGRATION_DIR = Path(__file__).parent / "integration"
TEST_NAMESPACE_LABEL = "testbed.dittofs.io/test"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests that need the control plane, so `-m "not integration"` never starts it."""
    for item in items:
        if item.path.is_relative_to(INTEGRATION_DIR) or "control_plane" in getattr(
            item, "fixturenames", ()
        ):
            item.add_marker(pytest.mark.integration)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build missing binaries before any test runs.

    A cold build of every component takes about half an hour: done here it is outside the
    per-test timeout, happens only when an integration test was selected, and its progress shows
    live. A failed build raises, so CI fails loudly instead of skipping.
    """
    if os.environ.get(REUSE_ENV) or session.config.option.collectonly:
        return
    if not any(item.get_closest_marker("integration") for item in session.items):
        return
    components = ["etcd", "kubernetes", "helm", "dfs", "coredns"]
    if any("load_balancer" in getattr(item, "fixturenames", ()) for item in session.items):
        components.append("metallb")
    with _capture_disabled(session.config):
        for component in components:
            binaries.ensure(component)


@pytest.fixture(scope="session")
def control_plane(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """etcd + kube-apiserver + kube-controller-manager, started once per session."""
    if reuse := os.environ.get(REUSE_ENV):
        yield ExternalCluster.from_kubeconfig(Path(reuse))
        return
    cp = ControlPlane()
    with _capture_disabled(request.config):  # show the start-up time and any failure live
        cp.start()
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture
def local_control_plane(control_plane: Cluster) -> ControlPlane:
    """The testbed's own processes, for tests that restart or pause them; such a test is
    skipped on a reused cluster, whose processes are not ours."""
    if not isinstance(control_plane, ControlPlane):
        pytest.skip("needs the testbed's own processes (not a reused kubeconfig)")
    return control_plane


@pytest.fixture(scope="session")
def load_balancer(
    control_plane: Cluster, request: pytest.FixtureRequest
) -> Iterator[LoadBalancerController]:
    """MetalLB's controller assigning LoadBalancer addresses from the testbed's pool (which
    the node's kube-proxy routes).

    One per session: two controllers on one cluster would hand out the same addresses.
    """
    lb = LoadBalancerController(control_plane.kubeconfig_path, str(netns.LOAD_BALANCER_POOL))
    with _capture_disabled(request.config):
        lb.start()
    try:
        yield lb
    finally:
        lb.stop()


@pytest.fixture
async def api(control_plane: Cluster) -> AsyncIterator[client.ApiClient]:
    """A kubernetes_asyncio ApiClient authenticated as cluster admin (system:masters)."""
    configuration = client.Configuration()
    await config.load_kube_config(
        config_file=str(control_plane.kubeconfig_path), client_configuration=configuration
    )
    async with client.ApiClient(configuration) as api_client:
        yield api_client


@pytest.fixture
def kube(api: client.ApiClient) -> Any:
    """The operator's own KubeClient over the admin ApiClient (closed with `api`).

    Imported lazily so that a broken operator package cannot stop unit tests from collecting.
    """
    from dittofs_controller.kube.client import KubeClient

    return KubeClient(api)


@pytest.fixture
async def namespace(api: client.ApiClient, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A fresh namespace for one test, deleted afterwards (without waiting for it to go).

    While the test runs, the operator's logging is configured as in production and captured;
    when it ends, no Secret value of the namespace may appear in its published objects or logs.

        It is handed over only once its "default" ServiceAccount and kube-root-ca.crt exist, as on
        a real cluster a moment after creation: Pods are rejected without that ServiceAccount.
    """
    from tests.support import leaks  # lazily, like `kube`

    core = client.CoreV1Api(api)
    name = _namespace_name(request.node.name)
    await core.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(name=name, labels={TEST_NAMESPACE_LABEL: "true"})
        )
    )
    try:
        await _wait_for_namespace_defaults(core, name)
        with leaks.capturing_logs() as captured:
            yield name
        await _no_secret_leaks(api, name, captured.lines)
    finally:
        try:
            await core.delete_namespace(name)
        except ApiException as e:
            if e.status != 404:
                raise


async def _no_secret_leaks(api: client.ApiClient, namespace: str, lines: list[str]) -> None:
    """Fail the test when a Secret value of its namespace shows up where it must not
    (tests/support/leaks.py says where it looks)."""
    from dittofs_controller.kube.client import KubeClient  # lazily, like `kube`
    from tests.support import leaks

    found = await leaks.check_namespace(KubeClient(api), namespace, lines)
    if found:
        listed = "\n".join(f"- {leak}" for leak in found[:20])
        pytest.fail(f"{len(found)} Secret value leak(s) in namespace {namespace}:\n{listed}")


def _namespace_name(test_name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", test_name.lower()).strip("-")[:48].strip("-")
    return f"{slug or 'test'}-{uuid.uuid4().hex[:6]}"


async def _wait_for_namespace_defaults(core: client.CoreV1Api, name: str) -> None:
    async with asyncio.timeout(30):
        while True:
            try:
                await core.read_namespaced_service_account("default", name)
                await core.read_namespaced_config_map("kube-root-ca.crt", name)
                return
            except ApiException as e:
                if e.status != 404:
                    raise
            await asyncio.sleep(0.05)


def _capture_disabled(pytest_config: pytest.Config) -> AbstractContextManager[None]:
    capman = pytest_config.pluginmanager.getplugin("capturemanager")
    return capman.global_and_fixture_disabled() if capman else nullcontext()


@pytest.fixture
async def node(
    kube: Any, namespace: str, tmp_path: Path, control_plane: Cluster
) -> AsyncIterator[Any]:
    """A kubelet + PV provisioner for this test's namespace, running the real dfs, with the
    real kube-proxy, so Services route from the host and from pods.

    Pods of other namespaces stay Pending, so tests that do not ask for a node see none.
    """
    from tests.testbed.node import running_node  # lazily, like `kube`

    dfs = binaries.executable("dfs", "dfs")
    async with running_node(
        kube,
        tmp_path / "node",
        dfs,
        namespaces=[namespace],
        kubeconfig=control_plane.kubeconfig_path,
    ) as running:
        yield running
