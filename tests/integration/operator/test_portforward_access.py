"""Out of the cluster the operator reaches DittoFS through the API server's port-forward, with
nothing set up but its credentials: here a ServiceAccount token (a kubeconfig user), granted
the chart's rules (deploy/helm/dittofs-operator/rbac/rules.yaml) and, once the test says so,
pods/portforward, which the chart does not grant (in the cluster the operator uses the
Service). The path is real: operator -> kube-apiserver -> the testbed node's kubelet endpoint
-> the real `dfs` in its pod.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client as k8s_client

from dittofs_controller.kube.client import KubeClient
from dittofs_controller.kube.resources import CONFIGMAPS, DITTOSERVERS, SECRETS, ObjectKey, Resource
from dittofs_controller.operator import setup
from dittofs_controller.runtime.manager import Manager
from dittofs_controller.settings import LeaderElectionSettings, Settings
from tests.integration.operator.conftest import SAMPLES, RunningOperator, condition, wait_for
from tests.support.incluster import request_token
from tests.testbed.devserver import user_passwords
from tests.testbed.node import SERVICEACCOUNTS, Node

RULES = Path(__file__).resolve().parents[3] / "deploy/helm/dittofs-operator/rbac/rules.yaml"
RBAC = "rbac.authorization.k8s.io"
ROLES = Resource(RBAC, "v1", "roles", "Role")
ROLEBINDINGS = Resource(RBAC, "v1", "rolebindings", "RoleBinding")
CLUSTERROLES = Resource(RBAC, "v1", "clusterroles", "ClusterRole", namespaced=False)
CLUSTERROLEBINDINGS = Resource(
    RBAC, "v1", "clusterrolebindings", "ClusterRoleBinding", namespaced=False
)
PORT_FORWARD_RULE = {
    "apiGroups": [""],
    "resources": ["pods/portforward"],
    "verbs": ["get", "create"],
}
ACCOUNT = "operator"

pytestmark = pytest.mark.e2e


def binding(kind: str, name: str, role_kind: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{RBAC}/v1",
        "kind": kind,
        "metadata": {"name": name},
        "roleRef": {"apiGroup": RBAC, "kind": role_kind, "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": namespace}],
    }


@pytest.fixture
async def chart_rbac(kube: KubeClient, namespace: str) -> AsyncIterator[None]:
    """ServiceAccount `operator` with exactly the chart's rules in the test namespace."""
    rules = yaml.safe_load(RULES.read_text())
    cluster_name = f"{namespace}-operator"
    await kube.create(SERVICEACCOUNTS, {"metadata": {"name": ACCOUNT}}, namespace)
    role = {"metadata": {"name": ACCOUNT}, "rules": rules["namespaced"]}
    await kube.create(ROLES, role, namespace)
    await kube.create(ROLEBINDINGS, binding("RoleBinding", ACCOUNT, "Role", namespace), namespace)
    await kube.create(CLUSTERROLES, {"metadata": {"name": cluster_name}, "rules": rules["cluster"]})
    cluster_binding = binding("ClusterRoleBinding", cluster_name, "ClusterRole", namespace)
    await kube.create(CLUSTERROLEBINDINGS, cluster_binding)
    try:
        yield
    finally:
        await kube.delete(CLUSTERROLEBINDINGS, cluster_name)
        await kube.delete(CLUSTERROLES, cluster_name)


@pytest.fixture
async def token_kube(
    kube: KubeClient, namespace: str, chart_rbac: None, tmp_path: Path
) -> AsyncIterator[KubeClient]:
    """A client of the API server authenticated as the ServiceAccount, by bearer token."""
    root_ca = await kube.get(CONFIGMAPS, "kube-root-ca.crt", namespace)
    ca = tmp_path / "ca.crt"
    ca.write_text(root_ca["data"]["ca.crt"])
    configuration = k8s_client.Configuration()
    configuration.host = kube.host
    configuration.ssl_ca_cert = str(ca)
    token = await request_token(kube, namespace, ACCOUNT)
    configuration.api_key["BearerToken"] = f"Bearer {token}"
    client = KubeClient(k8s_client.ApiClient(configuration))
    yield client
    await client.close()


@pytest.fixture
async def operator_out_of_cluster(
    token_kube: KubeClient, dittoservers: KubeClient, namespace: str, monkeypatch: Any
) -> AsyncIterator[RunningOperator]:
    """The operator as `python -m dittofs_controller run --kubeconfig ...` on a laptop runs:
    `--dittofs-api-access auto` (the default) with no in-cluster environment."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    settings = Settings(
        kubeconfig=None,
        namespaces=(namespace,),
        reconcile_timeout=30.0,
        shutdown_grace=5.0,
        leader_election=LeaderElectionSettings(enabled=False),
    )
    assert settings.dittofs_api_access == "auto"
    manager = Manager(token_kube, settings)
    setup(manager)
    stop = asyncio.Event()
    operator = RunningOperator(manager, asyncio.create_task(manager.run(stop)), stop)
    yield operator
    with contextlib.suppress(TimeoutError):
        await operator.shutdown()


async def test_out_of_cluster_the_api_is_reached_through_a_port_forward(
    kube: KubeClient, namespace: str, node: Node, operator_out_of_cluster: RunningOperator
) -> None:
    server = yaml.safe_load((SAMPLES / "memory-memory.yaml").read_text())
    server["metadata"]["namespace"] = namespace
    for password in user_passwords([server]):
        await kube.create(SECRETS, password, namespace)
    await kube.create(DITTOSERVERS, server, namespace)
    key = ObjectKey(namespace, server["metadata"]["name"])

    async def configured(status: str, reason: str) -> dict[str, Any] | None:
        found = await condition(kube, key, "ServerConfigured")
        return found if found and (found["status"], found["reason"]) == (status, reason) else None

    # The chart's rules alone do not allow a port-forward: a specific reason says what to grant.
    forbidden = await wait_for(
        lambda: configured("False", "PortForwardForbidden"), "PortForwardForbidden", 120
    )
    assert 'cannot get resource "pods/portforward"' in forbidden["message"]  # the API server's
    assert "get and create on pods/portforward" in forbidden["message"]  # what to do

    role = await kube.get(ROLES, ACCOUNT, namespace)
    role["rules"].append(PORT_FORWARD_RULE)
    await kube.replace(ROLES, role)
    converged = await wait_for(lambda: configured("True", "Converged"), "Converged", 120)
    assert "1 share" in converged["message"]
