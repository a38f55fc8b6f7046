"""The chart's ClusterRoles for people (templates/user-roles.yaml) on the real control plane.

The two ClusterRoles are applied as rendered; the controller-manager's clusterrole-aggregation
controller folds them into the built-in `view`, `edit` and `admin` roles. Users are bound to
those built-in roles by RoleBindings in one namespace, then asked about with
SubjectAccessReviews (the API server's own authorizer) and, to be sure nothing else intervenes,
by real requests made as them (impersonation):

- `view` gets, lists and watches DittoServers and their status, and changes none of them;
- `edit` and `admin` do every verb on DittoServers, but neither writes their status (the
  operator's alone);
- nothing reaches another namespace;
- the chart's additions grant no Secret: `view` never reads Secrets, and a user bound to the
  editor ClusterRole alone reads none either (`edit` and `admin` read Secrets by Kubernetes'
  own design, not through the chart);
- deleting the chart's ClusterRoles takes the rights back out of the built-in roles.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config

from dittofs_controller.kube.client import ApiError, KubeClient
from dittofs_controller.kube.resources import DITTOSERVERS, SECRETS
from tests.support import incluster
from tests.support.crds import install_crd
from tests.support.incluster import KINDS, Doc, apply_rendered, find, operator_roles
from tests.support.process import eventually
from tests.testbed import Cluster, binaries

# The first render builds helm when it is missing (minutes on a cold Go cache).
pytestmark = (
    [] if binaries.is_built("helm") else [pytest.mark.timeout(incluster.HELM_BUILD_TIMEOUT)]
)

MINIMAL = Path(__file__).resolve().parents[1] / "unit" / "api" / "valid" / "minimal.yaml"
GROUP = "dittofs.io"
EDITOR_VERBS = ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]
READ_VERBS = ["get", "list", "watch"]
WRITE_VERBS = ["create", "update", "patch", "delete", "deletecollection"]
BUILT_IN = ("view", "edit", "admin")
AGGREGATION_TIMEOUT = 30


async def allowed(
    kube: KubeClient,
    user: str,
    namespace: str,
    verb: str,
    resource: str,
    group: str = GROUP,
    subresource: str = "",
) -> bool:
    """The API server's answer to "may `user` do `verb` on `resource` in `namespace`?"."""
    review = await kube.request(
        "POST",
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        body={
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": user,
                "groups": ["system:authenticated"],
                "resourceAttributes": {
                    "namespace": namespace,
                    "verb": verb,
                    "group": group,
                    "resource": resource,
                    "subresource": subresource,
                },
            },
        },
    )
    return bool(review["status"].get("allowed"))


async def bind(kube: KubeClient, namespace: str, user: str, cluster_role: str) -> None:
    """A RoleBinding: `cluster_role`'s rules for `user` in `namespace` only."""
    await kube.create(
        KINDS["RoleBinding"],
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": user, "namespace": namespace},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": cluster_role,
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        },
        namespace,
    )


async def dittoserver_rules(kube: KubeClient, cluster_role: str) -> set[tuple[str, str]]:
    """(resource, verb) pairs a ClusterRole grants on the dittofs.io group."""
    role = await kube.get(KINDS["ClusterRole"], cluster_role)
    return {
        (resource, verb)
        for rule in role.get("rules") or ()
        if GROUP in rule.get("apiGroups", ())
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


async def other_user_roles(kube: KubeClient, ours: set[str]) -> list[str]:
    """ClusterRoles that aggregate into the built-in ones and name dittofs.io, other than ours
    (another release left on a reused cluster): they would grant the same rights."""
    roles = await kube.request("GET", KINDS["ClusterRole"].path())
    return [
        role["metadata"]["name"]
        for role in roles["items"]
        if role["metadata"]["name"] not in ours
        and not role.get("aggregationRule")
        and any(
            key.startswith("rbac.authorization.k8s.io/aggregate-to-")
            for key in (role["metadata"].get("labels") or {})
        )
        and any(GROUP in rule.get("apiGroups", ()) for rule in role.get("rules") or ())
    ]


@contextlib.asynccontextmanager
async def as_user(cluster: Cluster, user: str) -> AsyncIterator[KubeClient]:
    """A client making its requests as `user` (the admin impersonating it)."""
    configuration = k8s_client.Configuration()
    await k8s_config.load_kube_config(
        config_file=str(cluster.kubeconfig_path), client_configuration=configuration
    )
    api = k8s_client.ApiClient(configuration)
    api.set_default_header("Impersonate-User", user)
    try:
        yield KubeClient(api)
    finally:
        await api.close()


async def forbidden(call: Any) -> bool:
    try:
        await call
    except ApiError as error:
        return error.status == 403
    return False


@pytest.fixture
async def user_roles(kube: KubeClient, namespace: str) -> AsyncIterator[list[Doc]]:
    """The chart's ClusterRoles for people, applied as rendered; deleted afterwards."""
    docs = incluster.render_chart(release=f"dfo-{uuid.uuid4().hex[:6]}", namespace=namespace)
    roles = [doc for doc in find(docs, "ClusterRole") if doc not in operator_roles(docs)]
    assert sorted(role["metadata"]["name"].rsplit("-", 1)[1] for role in roles) == [
        "editor",
        "viewer",
    ]
    await install_crd(kube)
    try:
        for role in roles:
            await apply_rendered(kube, role, dry_run=False)
        yield roles
    finally:
        for role in roles:
            await kube.delete(KINDS["ClusterRole"], role["metadata"]["name"])


async def test_admin_edit_and_view_get_the_dittoserver_rights_and_no_secret(
    kube: KubeClient, control_plane: Cluster, namespace: str, user_roles: list[Doc]
) -> None:
    names = {
        role["metadata"]["name"].rsplit("-", 1)[1]: role["metadata"]["name"] for role in user_roles
    }
    others = await other_user_roles(kube, set(names.values()))
    users = {role: f"{role}-{uuid.uuid4().hex[:6]}" for role in (*BUILT_IN, "direct-editor")}
    for role in BUILT_IN:
        await bind(kube, namespace, users[role], role)
    await bind(kube, namespace, users["direct-editor"], names["editor"])

    # The aggregation controller folds the chart's rules into the built-in roles.
    editor_rules = {(resource, verb) for resource in ["dittoservers"] for verb in EDITOR_VERBS}
    editor_rules.add(("dittoservers/status", "get"))
    viewer_rules = {(r, v) for r in ("dittoservers", "dittoservers/status") for v in READ_VERBS}
    expected = {"view": viewer_rules, "edit": editor_rules, "admin": editor_rules}
    for role, rules in expected.items():

        async def aggregated(role: str = role, rules: set[tuple[str, str]] = rules) -> bool:
            return rules <= await dittoserver_rules(kube, role)

        await eventually(aggregated, AGGREGATION_TIMEOUT, f"DittoServer rules in {role}")

    async def may(who: str, verb: str, resource: str, **attributes: str) -> bool:
        return await allowed(kube, users[who], namespace, verb, resource, **attributes)

    # view: reads DittoServers and their status, writes nothing.
    for verb in READ_VERBS:
        assert await may("view", verb, "dittoservers")
        assert await may("view", verb, "dittoservers", subresource="status")
    for verb in WRITE_VERBS:
        assert not await may("view", verb, "dittoservers"), verb
    # edit and admin, and the editor ClusterRole bound on its own: every verb on DittoServers,
    # never a write of their status.
    for who in ("edit", "admin", "direct-editor"):
        for verb in EDITOR_VERBS:
            assert await may(who, verb, "dittoservers"), (who, verb)
        assert await may(who, "get", "dittoservers", subresource="status")
        for verb in ("update", "patch"):
            assert not await may(who, verb, "dittoservers", subresource="status"), (who, verb)
    # Not a right outside the namespace of the RoleBinding.
    elsewhere = f"elsewhere-{uuid.uuid4().hex[:6]}"
    for who in users:
        assert not await allowed(kube, users[who], elsewhere, "get", "dittoservers"), who
    # Secrets: view never; the chart's editor role alone never; edit/admin by Kubernetes' design.
    for verb in READ_VERBS:
        for who in ("view", "direct-editor"):
            assert not await may(who, verb, "secrets", group=""), (who, verb)
        for who in ("edit", "admin"):
            assert await may(who, verb, "secrets", group=""), (who, verb)

    # The same answers on real requests.
    server = yaml.safe_load(MINIMAL.read_text())
    server["metadata"]["namespace"] = namespace
    async with (
        as_user(control_plane, users["view"]) as viewer,
        as_user(control_plane, users["direct-editor"]) as editor,
    ):
        assert await forbidden(viewer.create(DITTOSERVERS, server, namespace))
        await editor.create(DITTOSERVERS, server, namespace)
        name = server["metadata"]["name"]
        patch = {"metadata": {"labels": {"team": "storage"}}}
        await editor.merge_patch(DITTOSERVERS, name, patch, namespace)
        listed = await viewer.request("GET", DITTOSERVERS.path(namespace))
        assert [item["metadata"]["labels"]["team"] for item in listed["items"]] == ["storage"]
        await viewer.request("GET", DITTOSERVERS.path(namespace, name, "status"))
        assert await forbidden(viewer.merge_patch(DITTOSERVERS, name, patch, namespace))
        status = {"status": {"phase": "Running"}}
        assert await forbidden(
            editor.merge_patch(DITTOSERVERS, name, status, namespace, subresource="status")
        )
        for who in (viewer, editor):
            assert await forbidden(who.request("GET", SECRETS.path(namespace)))
        assert await forbidden(editor.request("GET", DITTOSERVERS.path(elsewhere)))
        await editor.request("DELETE", DITTOSERVERS.path(namespace))  # deletecollection

        async def gone() -> bool:
            return await kube.get_or_none(DITTOSERVERS, name, namespace) is None

        await eventually(gone, 10, "the DittoServer deleted (no operator, no finalizer)")

    # Without the chart's ClusterRoles the built-in roles lose the rights again.
    if others:
        return  # another release's roles would keep granting them
    for role in user_roles:
        await kube.delete(KINDS["ClusterRole"], role["metadata"]["name"])
    for role in BUILT_IN:

        async def withdrawn(role: str = role) -> bool:
            return not await dittoserver_rules(kube, role)

        await eventually(withdrawn, AGGREGATION_TIMEOUT, f"no DittoServer rule left in {role}")
    assert not await may("view", "get", "dittoservers")
    assert not await may("edit", "create", "dittoservers")
