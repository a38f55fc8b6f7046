"""Proof that the testbed is a real control plane, not a fake: each test exercises one component
(apiserver version, RBAC, admission, controller manager, etcd) the operator will rely on."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from tests.testbed import Cluster, ControlPlane, binaries

POLL_TIMEOUT = 30.0
T = TypeVar("T")


async def eventually(probe: Callable[[], Awaitable[T | None]], what: str) -> T:
    """Poll `probe` until it returns something truthy: controllers act asynchronously."""
    try:
        async with asyncio.timeout(POLL_TIMEOUT):
            while True:
                if result := await probe():
                    return result
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"timed out after {POLL_TIMEOUT:.0f} s waiting for {what}") from None


def configmap(name: str, **kwargs: Any) -> client.V1ConfigMap:
    return client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name, **kwargs), data={"k": "v"})


async def test_apiserver_reports_pinned_version(api: client.ApiClient) -> None:
    info = await client.VersionApi(api).get_code()
    assert info.git_version == binaries.version("kubernetes") == "v1.35.4"


async def test_namespace_gets_default_service_account_and_root_ca(
    api: client.ApiClient, namespace: str, control_plane: Cluster
) -> None:
    core = client.CoreV1Api(api)
    root_ca = await core.read_namespaced_config_map("kube-root-ca.crt", namespace)
    assert "BEGIN CERTIFICATE" in root_ca.data["ca.crt"]
    if isinstance(control_plane, ControlPlane):
        assert root_ca.data["ca.crt"] == control_plane.ca_path.read_text()


async def test_rbac_is_enforced_for_service_account_tokens(
    api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api)
    rbac = client.RbacAuthorizationV1Api(api)
    await core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="reader"))
    )
    token_request = await core.create_namespaced_service_account_token(
        "reader",
        namespace,
        client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[])),
    )
    sa_config = client.Configuration(host=api.configuration.host)
    sa_config.ssl_ca_cert = api.configuration.ssl_ca_cert
    sa_config.api_key = {"BearerToken": token_request.status.token}
    sa_config.api_key_prefix = {"BearerToken": "Bearer"}

    async with client.ApiClient(sa_config) as sa_api:
        review = await client.AuthenticationV1Api(sa_api).create_self_subject_review(
            client.V1SelfSubjectReview()
        )
        assert review.status.user_info.username == f"system:serviceaccount:{namespace}:reader"

        sa_core = client.CoreV1Api(sa_api)
        with pytest.raises(ApiException) as denied:
            await sa_core.list_namespaced_secret(namespace)
        assert denied.value.status == 403

        await rbac.create_namespaced_role(
            namespace,
            client.V1Role(
                metadata=client.V1ObjectMeta(name="secret-reader"),
                rules=[client.V1PolicyRule(api_groups=[""], resources=["secrets"], verbs=["list"])],
            ),
        )
        await rbac.create_namespaced_role_binding(
            namespace,
            client.V1RoleBinding(
                metadata=client.V1ObjectMeta(name="secret-reader"),
                role_ref=client.V1RoleRef(
                    api_group="rbac.authorization.k8s.io", kind="Role", name="secret-reader"
                ),
                subjects=[
                    client.RbacV1Subject(kind="ServiceAccount", name="reader", namespace=namespace)
                ],
            ),
        )

        async def can_list() -> bool:
            try:
                await sa_core.list_namespaced_secret(namespace)
            except ApiException as e:
                if e.status != 403:
                    raise
                return False
            return True

        await eventually(can_list, "the RoleBinding to take effect")
        # The Role grants exactly what it says: nothing cluster-wide.
        with pytest.raises(ApiException) as still_denied:
            await sa_core.list_secret_for_all_namespaces()
        assert still_denied.value.status == 403


async def test_garbage_collector_deletes_dependents(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    owner = await core.create_namespaced_config_map(namespace, configmap("owner"))
    await core.create_namespaced_config_map(
        namespace,
        configmap(
            "dependent",
            owner_references=[
                client.V1OwnerReference(
                    api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid
                )
            ],
        ),
    )
    await core.delete_namespaced_config_map("owner", namespace)

    async def dependent_gone() -> bool:
        try:
            await core.read_namespaced_config_map("dependent", namespace)
        except ApiException as e:
            if e.status == 404:
                return True
            raise
        return False

    await eventually(dependent_gone, "the garbage collector to delete the dependent")


async def test_deployment_gets_replicaset_and_pending_pods(
    api: client.ApiClient, namespace: str
) -> None:
    apps = client.AppsV1Api(api)
    core = client.CoreV1Api(api)
    labels = {"app": "web"}
    deployment = await apps.create_namespaced_deployment(
        namespace,
        client.V1Deployment(
            metadata=client.V1ObjectMeta(name="web"),
            spec=client.V1DeploymentSpec(
                replicas=2,
                selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=labels),
                    spec=client.V1PodSpec(
                        containers=[client.V1Container(name="web", image="example.invalid/web:1")]
                    ),
                ),
            ),
        ),
    )

    async def replicaset() -> client.V1ReplicaSet | None:
        rs_list = await apps.list_namespaced_replica_set(namespace)
        return next(iter(rs_list.items), None)

    rs = await eventually(replicaset, "the deployment controller to create a ReplicaSet")
    assert rs.metadata.owner_references[0].uid == deployment.metadata.uid

    async def two_pods() -> list[client.V1Pod] | None:
        pods = (await core.list_namespaced_pod(namespace, label_selector="app=web")).items
        return pods if len(pods) == 2 else None

    pods = await eventually(two_pods, "the replicaset controller to create 2 pods")
    for pod in pods:
        assert pod.metadata.owner_references[0].uid == rs.metadata.uid
        assert pod.status.phase == "Pending"  # no scheduler, no kubelet
        assert pod.spec.node_name is None
        # ServiceAccount admission mounted the projected API token, as on a real cluster.
        assert any(v.name.startswith("kube-api-access-") for v in pod.spec.volumes)


async def test_namespace_deletion_completes(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    name = f"doomed-{uuid.uuid4().hex[:8]}"
    await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    await core.create_namespaced_config_map(name, configmap("content"))
    await core.delete_namespace(name)

    async def gone() -> bool:
        try:
            await core.read_namespace(name)
        except ApiException as e:
            if e.status == 404:
                return True
            raise
        return False

    await eventually(gone, "the namespace controller to finish deleting the namespace")


async def test_restricted_pod_security_rejects_privileged_pod(
    api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api)
    await core.patch_namespace(
        namespace,
        {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}},
    )
    privileged = client.V1Pod(
        metadata=client.V1ObjectMeta(name="privileged"),
        spec=client.V1PodSpec(
            containers=[
                client.V1Container(
                    name="c",
                    image="example.invalid/c:1",
                    security_context=client.V1SecurityContext(privileged=True),
                )
            ]
        ),
    )
    with pytest.raises(ApiException) as rejected:
        await core.create_namespaced_pod(namespace, privileged)
    assert rejected.value.status == 403
    assert "violates PodSecurity" in str(rejected.value.body)

    compliant = client.V1Pod(
        metadata=client.V1ObjectMeta(name="compliant"),
        spec=client.V1PodSpec(
            security_context=client.V1PodSecurityContext(
                run_as_non_root=True,
                run_as_user=1000,
                seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault"),
            ),
            containers=[
                client.V1Container(
                    name="c",
                    image="example.invalid/c:1",
                    security_context=client.V1SecurityContext(
                        allow_privilege_escalation=False,
                        capabilities=client.V1Capabilities(drop=["ALL"]),
                    ),
                )
            ],
        ),
    )
    await core.create_namespaced_pod(namespace, compliant)  # the policy is not a blanket "no"


async def test_restart_apiserver_keeps_data_and_resets_watch_cache(
    local_control_plane: ControlPlane, namespace: str, api: client.ApiClient
) -> None:
    cp = local_control_plane
    core = client.CoreV1Api(api)
    before = await core.create_namespaced_config_map(namespace, configmap("survivor"))

    await asyncio.to_thread(cp.restart_apiserver)

    # A fresh client: the old one's keep-alive connections died with the old process.
    async with client.ApiClient(api.configuration) as fresh:
        core = client.CoreV1Api(fresh)
        after = await core.read_namespaced_config_map("survivor", namespace)
        assert after.metadata.uid == before.metadata.uid
        assert after.data == {"k": "v"}
        await core.create_namespaced_config_map(namespace, configmap("written-after-restart"))

        # The new watch cache starts at the current revision: an informer resuming from a
        # resourceVersion of before the restart gets 410 Gone and has to relist.
        with pytest.raises(ApiException) as gone:
            async with watch.Watch() as w:
                async for _ in w.stream(
                    core.list_namespaced_config_map,
                    namespace,
                    resource_version=before.metadata.resource_version,
                    timeout_seconds=5,
                ):
                    pass
        assert gone.value.status == 410


async def test_compact_etcd_expires_old_resource_versions(
    local_control_plane: ControlPlane, namespace: str, api: client.ApiClient
) -> None:
    cp = local_control_plane
    core = client.CoreV1Api(api)
    created = await core.create_namespaced_config_map(namespace, configmap("churn"))
    old_rv = created.metadata.resource_version
    for i in range(3):
        await core.patch_namespaced_config_map("churn", namespace, {"data": {"k": str(i)}})
    # Before compaction the old revision can still be listed exactly.
    await core.list_namespaced_config_map(
        namespace, resource_version=old_rv, resource_version_match="Exact"
    )

    revision = await asyncio.to_thread(cp.compact_etcd)
    assert revision > int(old_rv)
    # The watch cache learns of the compaction on its own 15 s timer, as after the apiserver's
    # own 5-minute compaction in a real cluster.
    await asyncio.to_thread(
        cp.wait_compaction_seen, revision, f"/api/v1/namespaces/{namespace}/configmaps"
    )
    with pytest.raises(ApiException) as expired:
        await core.list_namespaced_config_map(
            namespace, resource_version=old_rv, resource_version_match="Exact"
        )
    assert expired.value.status == 410
    # Data at the current revision is intact.
    current = await core.read_namespaced_config_map("churn", namespace)
    assert current.data == {"k": "2"}
