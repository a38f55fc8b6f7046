"""Runtime faults of the cluster around a DittoServer (tests/support/faults.py says what each
is checked for): Secrets missing or wrong, names and ports taken by others, volumes never
bound, an admission policy refusing a child.

While they are broken no node runs: no pod starts and no claim binds. The fixes come with a
testbed node (kubelet and volume provisioner), so recovery means Ready: the real `dfs` runs
from the pod spec the operator wrote and answers its REST API.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from dittofs_controller.kube.client import ApiError, KubeClient
from dittofs_controller.kube.resources import INGRESSES, PVCS, SECRETS, SERVICES, Resource
from dittofs_controller.operator import names
from dittofs_controller.operator.storage import reconciler as storage_reconciler
from tests.integration.operator.conftest import StartOperator, unused_node_port, wait_for
from tests.support.faults import CountingKubeClient, Fault, Observed, run_table, secret
from tests.support.faults import memory_server as server
from tests.testbed import binaries
from tests.testbed.node import running_node
from tests.testbed.provisioner import STORAGECLASSES
from tests.unit.test_dittofs_client import self_signed

Obj = dict[str, Any]
POLICIES = Resource(
    "admissionregistration.k8s.io",
    "v1",
    "validatingadmissionpolicies",
    "ValidatingAdmissionPolicy",
    namespaced=False,
)
BINDINGS = Resource(
    "admissionregistration.k8s.io",
    "v1",
    "validatingadmissionpolicybindings",
    "ValidatingAdmissionPolicyBinding",
    namespaced=False,
)
PROBE_INGRESS = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "Ingress",
    "metadata": {"name": "probe"},
    "spec": {"defaultBackend": {"service": {"name": "x", "port": {"number": 1}}}},
}
JWT = "a-signing-secret-long-enough-for-dittofs-0123456789"
ADMIN = "Admin-Passw0rd-for-the-fault-suite"


def faults(kube: KubeClient, namespace: str, node_port: int) -> list[Fault]:
    async def create(resource: Resource, body: Obj) -> None:
        await kube.create(resource, body, namespace)

    async def delete(resource: Resource, name: str) -> None:
        await kube.delete(resource, name, namespace)

    async def put(name: str, **data: str) -> None:
        await kube.apply(
            SECRETS,
            {**secret(name, **data), "metadata": {"name": name, "namespace": namespace}},
            field_manager="fault-tests",
        )

    cert, key = self_signed("tls-key-missing-api")
    storage_class = late_class(namespace)
    foreign_claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": names.controlplane_claim("claim-name-taken")},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    foreign_service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": names.service("service-name-taken", "nfs")},
        "spec": {"ports": [{"port": 1}]},
    }
    port_holder = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "port-holder"},
        "spec": {"type": "NodePort", "ports": [{"port": 2049, "nodePort": node_port}]},
    }

    policy = f"no-ingress-{namespace}"[:63]

    async def refuse_ingresses() -> None:
        """An admission policy (as Kyverno or Gatekeeper would add) forbids Ingresses here;
        wait until the API server enforces it."""
        await kube.create(POLICIES, refusing_policy(policy))
        await kube.create(BINDINGS, policy_binding(policy, namespace))

        async def enforced() -> bool:
            try:
                await kube.request(
                    "POST", INGRESSES.path(namespace), query={"dryRun": "All"}, body=PROBE_INGRESS
                )
            except ApiError as error:
                return error.status == 403
            return False

        await wait_for(enforced, "the admission policy to be enforced")

    async def allow_ingresses() -> None:
        await kube.delete(BINDINGS, policy)
        await kube.delete(POLICIES, policy)

    jwt_ref = {"jwtSecretRef": {"name": "jwt", "key": "secret"}}
    admin_ref = {"adminPasswordSecretRef": {"name": "admin", "key": "password"}}
    return [
        Fault(
            "secret-missing",
            "ConfigReady",
            "SecretNotFound",
            server(controlPlane={"jwtSecretRef": {"name": "absent-jwt", "key": "secret"}}),
            fix=lambda: put("absent-jwt", secret=JWT),
            message="absent-jwt",
        ),
        Fault(
            "secret-key-missing",
            "ConfigReady",
            "SecretKeyNotFound",
            server(controlPlane=admin_ref),
            before=lambda: put("admin", other=ADMIN),
            fix=lambda: put("admin", password=ADMIN),
            message="'password'",
        ),
        Fault(
            "secret-value-invalid",
            "ConfigReady",
            "SecretValueInvalid",
            server(controlPlane=jwt_ref),
            before=lambda: put("jwt", secret="too-short"),
            fix=lambda: put("jwt", secret=JWT),
            message="at least",
        ),
        Fault(
            "tls-key-missing",
            "ConfigReady",
            "SecretKeyNotFound",
            server(controlPlane={"tls": {"secretName": "api-tls"}}),
            before=lambda: put("api-tls", **{"tls.crt": cert}),
            fix=lambda: put("api-tls", **{"tls.crt": cert, "tls.key": key}),
            message="'tls.key'",
        ),
        Fault(
            "generated-secret-taken",
            "ConfigReady",
            "NameConflict",
            server(),
            before=lambda: put(names.jwt_secret("generated-secret-taken"), secret=JWT),
            fix=lambda: delete(SECRETS, names.jwt_secret("generated-secret-taken")),
        ),
        Fault(
            "claim-never-bound",
            "StorageReady",
            "ClaimPending",
            server(),
            fix=_nothing,  # the provisioner starts with the node
            message="has been Pending since",
        ),
        Fault(
            "storage-class-missing",
            "StorageReady",
            "ClaimPending",
            server(
                controlPlane={
                    "database": {
                        "type": "sqlite",
                        "sqlite": {"storage": {"storageClassName": storage_class}},
                    }
                }
            ),
            fix=lambda: kube.create(
                STORAGECLASSES,
                {
                    "apiVersion": "storage.k8s.io/v1",
                    "kind": "StorageClass",
                    "metadata": {"name": storage_class},
                    "provisioner": "testbed.dittofs.io/hostpath",
                },
            ),
            message=f"its StorageClass {storage_class} does not exist",
        ),
        Fault(
            "claim-name-taken",
            "StorageReady",
            "NameConflict",
            server(),
            before=lambda: create(PVCS, foreign_claim),
            fix=lambda: delete(PVCS, foreign_claim["metadata"]["name"]),
        ),
        Fault(
            "service-name-taken",
            "NetworkReady",
            "NameConflict",
            server(),
            before=lambda: create(SERVICES, foreign_service),
            fix=lambda: delete(SERVICES, foreign_service["metadata"]["name"]),
        ),
        Fault(
            "node-port-taken",
            "NetworkReady",
            "PortConflict",
            server(
                expose={
                    "nfs": {"type": "NodePort", "nodePort": node_port, "allowAllSources": True},
                    "smb": {"type": "ClusterIP"},
                }
            ),
            before=lambda: create(SERVICES, port_holder),
            fix=lambda: delete(SERVICES, "port-holder"),
            message=str(node_port),
        ),
        Fault(
            "ingress-refused",
            "NetworkReady",
            "IngressRejected",
            server(
                expose={
                    "nfs": {"type": "ClusterIP"},
                    "smb": {"type": "ClusterIP"},
                    "ingress": {
                        "enabled": True,
                        "host": "files.example.com",
                        "tlsSecretName": "files-tls",
                    },
                    "networkPolicy": {
                        "apiFrom": [{"namespaceSelector": {"matchLabels": {"name": "ingress"}}}]
                    },
                }
            ),
            before=refuse_ingresses,
            fix=allow_ingresses,
            message="not allowed here",
        ),
    ]


async def _nothing() -> None:
    return None


def refusing_policy(name: str) -> Obj:
    """Forbid creating Ingresses (a 403, as policy engines answer)."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": ["networking.k8s.io"],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["ingresses"],
                    }
                ]
            },
            "validations": [
                {
                    "expression": "false",
                    "message": "Ingresses are not allowed here",
                    "reason": "Forbidden",
                }
            ],
        },
    }


def policy_binding(name: str, namespace: str) -> Obj:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
            },
        },
    }


def late_class(namespace: str) -> str:
    """A StorageClass made only as a fix (cluster-wide: named after the namespace)."""
    return f"late-{namespace}"[:63]


# Break, a minute of observation, recovery of many servers at once on a loaded machine.
@pytest.mark.timeout(1200)
async def test_cluster_faults_are_reported_cheap_while_broken_and_recover(
    api: client.ApiClient,
    kube: KubeClient,
    namespace: str,
    start_operator: StartOperator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # A claim counts as provisioning for 2 minutes in production; 5 s keeps the test short.
    monkeypatch.setattr(storage_reconciler, "PENDING_GRACE", 5.0)
    counting = CountingKubeClient(api)
    await start_operator(client=counting)
    table = faults(kube, namespace, await unused_node_port(kube))
    dfs = binaries.executable("dfs", "dfs")
    observed = Observed(kube, namespace, counting)
    async with contextlib.AsyncExitStack() as stack:

        async def start_node() -> None:
            node = running_node(kube, tmp_path / "node", dfs, namespaces=[namespace])
            await stack.enter_async_context(node)

        try:
            await run_table(observed, table, before_fixes=start_node, recover_timeout=400)
        finally:
            await kube.delete(STORAGECLASSES, late_class(namespace))
            await kube.delete(BINDINGS, f"no-ingress-{namespace}"[:63])
            await kube.delete(POLICIES, f"no-ingress-{namespace}"[:63])
