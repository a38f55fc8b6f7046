"""The install artefacts against the real control plane: the chart, its RBAC, the image runtime.

- The rendered chart (default, namespace-scoped, two replicas with the Grafana dashboard) is
  accepted by the API server: server-side dry run first, then applied for real; the
  ReplicaSet's pods pass the restricted Pod Security admission.
- The operator runs exactly as in the chart's pod (tests/support/incluster.py): the wheel
  installed as the Containerfile does, the Deployment's args and env, the ServiceAccount's
  token, read-only root filesystem. Under the chart's RBAC it turns ready, wins the Lease and
  reconciles a DittoServer without a single denied request.
- An RBAC mistake is visible: each case removes one permission and checks the operator says so
  (a 403 naming the verb and resource in its log, and readiness or reconciling failing).
  tests/integration/test_rbac_every_rule.py removes every permission in turn.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import dittofs_controller
from dittofs_controller.kube.client import ApiError, KubeClient
from dittofs_controller.kube.resources import (
    CONFIGMAPS,
    CRDS,
    DEPLOYMENTS,
    DITTOSERVERS,
    NAMESPACES,
    NETWORKPOLICIES,
    PODS,
    ObjectKey,
)
from dittofs_controller.runtime.manager import Manager
from dittofs_controller.settings import LeaderElectionSettings, Settings
from tests.support import incluster
from tests.support.crds import install_crd
from tests.support.incluster import (
    KINDS,
    Doc,
    InClusterOperator,
    apply_rendered,
    denials,
    find,
    granted_verbs,
    without_verb,
)
from tests.support.process import eventually, free_ports
from tests.testbed import binaries

# The first render builds helm when it is missing (minutes on a cold Go cache).
pytestmark = (
    [] if binaries.is_built("helm") else [pytest.mark.timeout(incluster.HELM_BUILD_TIMEOUT)]
)

MINIMAL = Path(__file__).resolve().parents[1] / "unit" / "api" / "valid" / "minimal.yaml"


# -- the chart applied ----------------------------------------------------------------------


class Chart:
    """Renders and applies the chart for one test; deletes its cluster-scoped objects after."""

    def __init__(self, kube: KubeClient, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.release = f"dfo-{uuid.uuid4().hex[:6]}"
        self._cluster_scoped: list[Doc] = []

    def render(self, values: dict[str, Any] | None = None) -> list[Doc]:
        return incluster.render_chart(
            values, release=self.release, namespace=self.namespace, include_crds=True
        )

    async def install(self, docs: list[Doc]) -> None:
        """Dry-run everything, then apply everything but the CRD for real.

        The CRD is installed from its source (tests/support/crds.py), so that a stale chart
        copy never replaces it for the rest of the session; the unit tests keep them equal.
        """
        for doc in docs:
            await apply_rendered(self.kube, doc, dry_run=True)
        await install_crd(self.kube)
        for doc in docs:
            if doc["kind"] == "CustomResourceDefinition":
                continue
            if not KINDS[doc["kind"]].namespaced:
                self._cluster_scoped.append(doc)
            await apply_rendered(self.kube, doc, dry_run=False)

    async def cleanup(self) -> None:
        for doc in self._cluster_scoped:
            await self.kube.delete(KINDS[doc["kind"]], doc["metadata"]["name"])


@pytest.fixture
async def chart(kube: KubeClient, namespace: str) -> AsyncIterator[Chart]:
    installed = Chart(kube, namespace)
    yield installed
    await installed.cleanup()


@pytest.fixture
async def other_namespace(kube: KubeClient) -> AsyncIterator[str]:
    name = f"deploy-watched-{uuid.uuid4().hex[:6]}"
    await kube.create(
        NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    yield name
    await kube.delete(NAMESPACES, name)


async def enforce_restricted(kube: KubeClient, namespace: str) -> None:
    labels = {"pod-security.kubernetes.io/enforce": "restricted"}
    await kube.merge_patch(NAMESPACES, namespace, {"metadata": {"labels": labels}})


@pytest.mark.parametrize("case", ["default", "namespace-scoped", "two-replicas"])
async def test_the_rendered_chart_is_accepted_and_its_pods_are_admitted(
    kube: KubeClient, namespace: str, other_namespace: str, chart: Chart, case: str
) -> None:
    values: dict[str, Any] = {
        "default": {},
        "namespace-scoped": {"watchNamespaces": [namespace, other_namespace]},
        # With the Grafana dashboard's ConfigMap (the optional object that needs no CRD).
        "two-replicas": {"replicaCount": 2, "grafanaDashboard": {"enabled": True}},
    }[case]
    docs = chart.render(values)
    await enforce_restricted(kube, namespace)
    await chart.install(docs)

    for doc in docs:
        if doc["kind"] != "CustomResourceDefinition":
            meta = doc["metadata"]
            await kube.get(KINDS[doc["kind"]], meta["name"], meta.get("namespace"))
    # The operator pod's NetworkPolicy, stored as rendered (no field dropped or defaulted away).
    (policy,) = find(docs, "NetworkPolicy")
    stored = await kube.get(NETWORKPOLICIES, policy["metadata"]["name"], namespace)
    assert stored["spec"] == policy["spec"]
    if case == "namespace-scoped":
        for watched in (namespace, other_namespace):
            for kind in ("Role", "RoleBinding"):
                await kube.get(KINDS[kind], f"{chart.release}-dittofs-operator", watched)
    # The ReplicaSet's pods got past the restricted Pod Security admission.
    replicas = find(docs, "Deployment")[0]["spec"]["replicas"]

    async def admitted() -> bool:
        pods = await kube.request(
            "GET",
            PODS.path(namespace),
            query={"labelSelector": f"app.kubernetes.io/instance={chart.release}"},
        )
        return len(pods["items"]) == replicas

    try:
        await eventually(admitted, 30, f"{replicas} operator pod(s) created")
    except AssertionError:
        sets = await kube.request("GET", f"/apis/apps/v1/namespaces/{namespace}/replicasets")
        raise AssertionError(
            json.dumps([s.get("status") for s in sets["items"]], indent=1)
        ) from None


async def test_helm_installs_upgrades_and_uninstalls_the_chart(
    kube: KubeClient, control_plane: Any, namespace: str, tmp_path: Path
) -> None:
    """Helm itself (not only `helm template`): install, upgrade to two replicas, uninstall
    leaving no cluster-scoped object behind (the ClusterRoles for people included)."""
    release = f"dfo-{uuid.uuid4().hex[:6]}"
    env = {
        "KUBECONFIG": str(control_plane.kubeconfig_path),
        "HOME": str(tmp_path),
        "PATH": incluster.SYSTEM_PATH,
    }
    await install_crd(kube)  # present, so Helm leaves it alone (as on any upgrade)

    def helm(*args: str) -> str:
        command = [str(incluster.helm()), *args, "--namespace", namespace]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return result.stdout

    name = f"{release}-dittofs-operator"
    cluster_name = f"{name}-{namespace}"
    user_roles = [f"{cluster_name}-dittoserver-{role}" for role in ("editor", "viewer")]
    notes = helm("install", release, str(incluster.CHART))
    assert "kubectl apply --server-side --force-conflicts -f CHART/crds/" in notes
    for cluster_role in (cluster_name, *user_roles):
        await kube.get(KINDS["ClusterRole"], cluster_role)
    await kube.get(NETWORKPOLICIES, name, namespace)
    helm("upgrade", release, str(incluster.CHART), "--set", "replicaCount=2")
    assert (await kube.get(DEPLOYMENTS, name, namespace))["spec"]["replicas"] == 2
    helm("uninstall", release, "--wait")
    for kind in ("ClusterRole", "ClusterRoleBinding"):
        assert await kube.get_or_none(KINDS[kind], cluster_name) is None
    for cluster_role in user_roles:
        assert await kube.get_or_none(KINDS["ClusterRole"], cluster_role) is None


# -- the operator in its pod ----------------------------------------------------------------


def test_the_image_runtime_runs_read_only(runtime_python: Path) -> None:
    """`version`, `--help` and a `run` without a cluster, from the installed wheel, with the
    image's environment on a read-only root filesystem, as the image's user."""
    env = incluster.image_env(runtime_python)

    def python(*args: str) -> subprocess.CompletedProcess[str]:
        command = incluster.sandboxed(["python", *args])
        return subprocess.run(command, env=env, cwd="/", capture_output=True, text=True, timeout=60)

    def entrypoint(*args: str) -> subprocess.CompletedProcess[str]:
        return python("-m", "dittofs_controller", *args)

    # The sandbox really is read-only, so a write anywhere below would fail the entrypoint.
    write = python("-c", f"open({str(runtime_python.parent / 'probe')!r}, 'w')")
    assert write.returncode == 1 and "Read-only file system" in write.stderr
    if os.geteuid() == 0:  # only root can switch users (the sandbox says why)
        ids = python("-c", "import os; print(os.getuid(), os.getgid())")
        assert tuple(map(int, ids.stdout.split())) == incluster.image_user(), ids.stderr

    version = entrypoint("version")
    assert (version.returncode, version.stdout.strip()) == (0, dittofs_controller.__version__)
    assert version.stderr == ""
    usage = entrypoint("--help")
    assert usage.returncode == 0 and "DITTOFS_CONTROLLER_NAMESPACES" in usage.stdout
    # In-cluster config without a service host: a clean error and exit 1, no traceback.
    run = entrypoint("run", "--kubeconfig=")
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert run.returncode == 1, run.stdout + run.stderr
    assert lines[-1]["event"] == "cannot connect to Kubernetes"
    assert run.stderr == ""
    # The wheel carries every module of the source tree (a package without __init__.py is
    # silently left out by find_packages).
    site = next(runtime_python.parent.parent.glob("lib/python3*/site-packages"))
    source = Path(dittofs_controller.__file__).parent
    shipped = {
        p.relative_to(site / "dittofs_controller") for p in site.glob("dittofs_controller/**/*.py")
    }
    expected = {p.relative_to(source) for p in source.glob("**/*.py")}
    assert expected <= shipped, f"missing from the wheel: {sorted(map(str, expected - shipped))}"


def registered_controllers() -> set[str]:
    """The controllers the operator's setup registers today (sub-reconcilers land one by one)."""
    from dittofs_controller.operator import setup

    settings = Settings(kubeconfig=None, leader_election=LeaderElectionSettings(enabled=False))
    manager = Manager(None, settings)  # type: ignore[arg-type]  # setup makes no request
    setup(manager)
    return {controller.name for controller in manager.controllers}


StartInPod = Callable[..., InClusterOperator]


@pytest.fixture
def start_in_pod(
    kube: KubeClient, namespace: str, runtime_python: Path, tmp_path: Path
) -> Iterator[StartInPod]:
    """Start the operator as the Deployment in `docs` would run, once its RBAC is applied."""
    started: list[InClusterOperator] = []

    def start(docs: list[Doc], files: dict[str, str]) -> InClusterOperator:
        (deployment,) = find(docs, "Deployment")
        name = deployment["metadata"]["name"]
        sa_dir = incluster.write_files(tmp_path / f"sa-{len(started)}", files)
        operator = InClusterOperator(
            python=runtime_python,
            deployment=deployment,
            serviceaccount_files=sa_dir,
            apiserver_url=kube.host,
            namespace=namespace,
            log_path=tmp_path / f"operator-{len(started)}.log",
            pod_name=f"{name}-{len(started)}",
        )
        started.append(operator)
        return operator

    yield start
    for operator in started:
        operator.stop()


def pod_values(**values: Any) -> dict[str, Any]:
    """Chart values for a pod on this host: its own free ports (pods would each have an IP)."""
    health, metrics = free_ports(2)  # the chart refuses one port for both
    return {"healthPort": health, "metrics": {"port": metrics}, **values}


async def identity(kube: KubeClient, docs: list[Doc], namespace: str) -> dict[str, str]:
    (account,) = find(docs, "ServiceAccount")
    return await incluster.serviceaccount_files(kube, namespace, account["metadata"]["name"])


async def create_server(kube: KubeClient, namespace: str) -> ObjectKey:
    server = yaml.safe_load(MINIMAL.read_text())
    server["metadata"]["namespace"] = namespace
    await kube.create(DITTOSERVERS, server, namespace)
    return ObjectKey(namespace, server["metadata"]["name"])


async def status_of(kube: KubeClient, key: ObjectKey) -> dict[str, Any]:
    server = await kube.get(DITTOSERVERS, key.name, key.namespace)
    return dict(server.get("status") or {})


def has_ready(status: dict[str, Any]) -> bool:
    return bool(status.get("phase")) and any(
        c["type"] == "Ready" for c in status.get("conditions") or ()
    )


@pytest.mark.parametrize("scope", ["all-namespaces", "namespace-scoped"])
async def test_the_operator_reconciles_under_the_charts_rbac(
    kube: KubeClient, namespace: str, chart: Chart, start_in_pod: StartInPod, scope: str
) -> None:
    values = pod_values(watchNamespaces=[namespace] if scope == "namespace-scoped" else [])
    docs = chart.render(values)
    await chart.install(docs)
    operator = start_in_pod(docs, await identity(kube, docs, namespace))

    await eventually(lambda: operator.probe("/readyz") == 200, 30, "/readyz 200", operator)
    assert operator.probe("/healthz") == 200
    if os.geteuid() == 0:  # only root can switch users (incluster.sandboxed says why)
        assert operator.ids() == incluster.image_user()
    await operator.wait_for_log("became leader")
    key = await create_server(kube, namespace)

    async def reconciled() -> bool:
        return has_ready(await status_of(kube, key))

    await eventually(reconciled, 30, "Ready and phase in the DittoServer's status", operator)
    if "config" in registered_controllers():
        config_map = f"{key.name}-config"

        async def configured() -> bool:
            return await kube.get_or_none(CONFIGMAPS, config_map, namespace) is not None

        await eventually(configured, 30, f"ConfigMap {config_map}", operator)

    async def recorded() -> bool:
        events = await kube.request("GET", f"/apis/events.k8s.io/v1/namespaces/{namespace}/events")
        return any(e["regarding"].get("name") == key.name for e in events["items"])

    await eventually(recorded, 30, "an Event about the DittoServer", operator)
    assert not denials(operator), operator.tail()
    assert not operator.logged("could not record an event")

    operator.signal(signal.SIGTERM)
    assert operator.wait(30) == 0, operator.tail()
    assert operator.logged("released leadership"), operator.tail()


# -- RBAC mistakes are visible --------------------------------------------------------------


@pytest.mark.parametrize(
    ("group", "resource", "verb", "symptom"),
    [
        # A cache cannot list: it never syncs, so the pod never turns ready.
        ("", "secrets", "list", "not-ready"),
        # Status cannot be written: ready, but no DittoServer ever shows a condition.
        ("dittofs.io", "dittoservers/status", "patch", "no-status"),
        # The Lease cannot be created: no replica ever leads, nothing is reconciled.
        ("coordination.k8s.io", "leases", "create", "never-leads"),
    ],
)
async def test_a_missing_permission_shows_as_a_denial(
    kube: KubeClient,
    namespace: str,
    chart: Chart,
    start_in_pod: StartInPod,
    group: str,
    resource: str,
    verb: str,
    symptom: str,
) -> None:
    full = chart.render(pod_values(watchNamespaces=[namespace]))
    assert (group, resource, verb) in granted_verbs(full)
    docs = without_verb(full, group, resource, verb)
    await chart.install(docs)
    operator = start_in_pod(docs, await identity(kube, docs, namespace))
    key = await create_server(kube, namespace)

    await eventually(
        lambda: (verb, resource) in denials(operator),
        30,
        f"a denial of {verb} {resource}",
        operator,
    )
    if symptom == "not-ready":
        assert operator.probe("/readyz") == 503
    else:
        await eventually(lambda: operator.probe("/readyz") == 200, 30, "/readyz 200", operator)
    if symptom == "never-leads":
        assert not operator.logged("became leader")
    if symptom in ("no-status", "never-leads"):
        assert not has_ready(await status_of(kube, key))


async def test_crds_are_readable_only_by_name(
    kube: KubeClient, namespace: str, chart: Chart, tmp_path: Path
) -> None:
    """The CRD rule names its CRDs: runtime/optional.py's field-selected list and watch pass,
    listing every CRD does not."""
    docs = chart.render(pod_values(watchNamespaces=[namespace]))
    await chart.install(docs)
    client = token_client(kube, await identity(kube, docs, namespace), tmp_path)
    try:
        for name in ("perconapgclusters.pgv2.percona.com", "servicemonitors.monitoring.coreos.com"):
            selected = {"fieldSelector": f"metadata.name={name}"}
            await client.request("GET", CRDS.path(), query=selected)
            watch = {**selected, "watch": "true", "timeoutSeconds": 1}
            await client.request("GET", CRDS.path(), query=watch)
        with pytest.raises(ApiError) as denied:
            await client.request("GET", CRDS.path())
        assert denied.value.status == 403
    finally:
        await client.close()


def token_client(kube: KubeClient, files: dict[str, str], scratch: Path) -> KubeClient:
    """A client authenticated with the ServiceAccount's token, as the pod's would be."""
    from kubernetes_asyncio import client as k8s_client

    ca = scratch / "token-client-ca.crt"
    ca.write_text(files["ca.crt"])
    configuration = k8s_client.Configuration()
    configuration.host = kube.host
    configuration.ssl_ca_cert = str(ca)
    configuration.api_key["BearerToken"] = f"Bearer {files['token']}"
    return KubeClient(k8s_client.ApiClient(configuration))
