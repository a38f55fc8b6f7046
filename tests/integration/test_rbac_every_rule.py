"""Every permission the chart grants is needed: without any one of them something breaks.

For every (API group, resource, verb) the rendered chart grants (rbac/rules.yaml and the Lease
rules), one operator runs exactly as in its pod (tests/support/incluster.py) under the chart's
RBAC minus that one verb, and a baseline operator runs under the full RBAC. Each operator is in
namespace-scoped mode in a namespace of its own (its release namespace too, so its Lease, Roles
and ClusterRole are its own), so many run at once: in waves of WAVE, each wave with a
baseline of its own on a fresh control plane. Each namespace plays the same scenario, which
walks every code path that makes a request:

  ready      the caches sync (/readyz) and the Lease is won
  created    a DittoServer (Percona control plane, Badger and filesystem stores on a named
             StorageClass, NFS+SMB, Ingress, NetworkPolicies, a ServiceMonitor while its CRD is
             missing, deletionPolicy Retain, an admin password from a referenced Secret) gets
             its finalizers, conditions, children, Events and a StatefulSet whose pod is read
  monitored  the ServiceMonitor CRD appears: the ServiceMonitor is created
  changed    SMB, Ingress, NetworkPolicies and ServiceMonitor turned off (deleted), log level
             changed (ConfigMap and StatefulSet patched), replicas 0 (stopped)
  drifted    the StatefulSet's, PerconaPGCluster's and a claim's labels edited by hand: restored
  retained   the DittoServer deleted: its finalizers go, claims, generated Secret and Percona
             cluster survive without its ownerReference, the rest is garbage collected

The baseline must pass every step with no permission denied. Each other case must fail a step
(the table printed says which) and its log must show the API server refusing exactly the
removed verb on that resource. A verb no code path needs (say one added to rules.yaml "just in
case") fails this test: nothing is denied and nothing breaks.

The control planes are this test's own, with the OwnerReferencesPermissionEnforcement admission
plugin on (as on OpenShift and hardened clusters): only there are update on
dittoservers/finalizers (blockOwnerDeletion on children) and delete on the children whose
ownerReferences the operator changes (Retain, adoption) needed, and the chart grants them with
rbac.ownerReferencesPermissionEnforcement, which every case sets. One more case runs the
chart's default (the value unset) on that plugin: it must break, with a condition that says
OwnerReferencesForbidden and names the value.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import pytest
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config

from dittofs_controller.kube.client import ApiError, KubeClient
from dittofs_controller.kube.resources import (
    CONFIGMAPS,
    DITTOSERVERS,
    EVENTS,
    INGRESSES,
    NAMESPACES,
    NETWORKPOLICIES,
    PERCONA_PG_CLUSTERS,
    PVCS,
    SECRETS,
    SERVICE_MONITORS,
    SERVICES,
    STATEFULSETS,
    Resource,
)
from dittofs_controller.operator import names
from dittofs_controller.operator.children import LABEL_COMPONENT
from dittofs_controller.operator.database.build import READY_STATE, USER_SECRET_KEYS
from tests.support import incluster, percona
from tests.support.crds import (
    install_crd,
    install_service_monitor_crd,
)
from tests.support.incluster import InClusterOperator, find
from tests.support.process import free_ports
from tests.testbed import ControlPlane, binaries
from tests.testbed.provisioner import STORAGECLASSES

pytestmark = pytest.mark.timeout(
    1800 if binaries.is_built("helm") else incluster.HELM_BUILD_TIMEOUT
)

Obj = dict[str, Any]
Permission = tuple[str, str, str]  # (apiGroup, resource, verb)

PLUGIN = "OwnerReferencesPermissionEnforcement"
SERVER = "files"
ADMIN_SECRET = "files-admin"
RELEASE = "dfo"
# How long the baseline may wait for one thing; how much longer than the baseline another case
# may take for the same thing (a case that breaks costs this once).
MAX_WAIT = 240.0
AFTER_BASELINE = 90.0
BASELINE_BROKE = "the baseline broke"
START_TIMEOUT = 120.0
STAGGER = 1.0
# Operators run at once (plus a baseline each time): every case at once would take half the
# time on an idle machine, but starve each other (Leases lost, requests timing out) on a busy
# one. DITTOFS_RBAC_WAVE changes it.
WAVE = int(os.environ.get("DITTOFS_RBAC_WAVE", "22"))
# To investigate: only the removals whose label ("watch apps/statefulsets") contains one of
# these comma-separated words.
ONLY = [word for word in os.environ.get("DITTOFS_RBAC_ONLY", "").split(",") if word]
POLL = 2.0
SETTLE = 12.0
FINALIZERS = {"dittofs.io/config", "dittofs.io/storage", "dittofs.io/database", "dittofs.io/server"}

# Claims of this class stay Pending (no pod is ever scheduled), and only the class says that is
# fine: StorageReady reads it on every pass.
STORAGE_CLASS = "wait-for-first-consumer"
STORAGE_CLASS_BODY: Obj = {
    "apiVersion": "storage.k8s.io/v1",
    "kind": "StorageClass",
    "metadata": {"name": STORAGE_CLASS},
    "provisioner": "testbed.dittofs.io/none",
    "volumeBindingMode": "WaitForFirstConsumer",
}
MANIFEST: Obj = {
    "apiVersion": "dittofs.io/v1alpha1",
    "kind": "DittoServer",
    "metadata": {"name": SERVER},
    "spec": {
        "deletionPolicy": "Retain",
        "controlPlane": {
            "database": {"type": "postgres"},
            "adminPasswordSecretRef": {"name": ADMIN_SECRET, "key": "password"},
            "metrics": {"serviceMonitor": {"enabled": True}},
        },
        "postgres": {"percona": {"instances": 1, "storage": {"size": "1Gi"}}},
        "metadataStores": [
            {
                "name": "meta",
                "type": "badger",
                "badger": {"storage": {"size": "1Gi", "storageClassName": STORAGE_CLASS}},
            }
        ],
        "localBlockStores": [
            {
                "name": "blocks",
                "type": "filesystem",
                "filesystem": {"storage": {"size": "1Gi", "storageClassName": STORAGE_CLASS}},
            }
        ],
        "shares": [{"name": "/export", "metadataStore": "meta", "localBlockStore": "blocks"}],
        "expose": {
            # No load balancer here: ClusterIP, so NetworkReady need not wait for an address.
            "nfs": {"type": "ClusterIP"},
            "smb": {"type": "ClusterIP"},
            "ingress": {"enabled": True, "host": "files.example.com", "tlsSecretName": "tls"},
            "networkPolicy": {
                "enabled": True,
                "apiFrom": [{"namespaceSelector": {"matchLabels": {"name": "ingress"}}}],
            },
        },
    },
}
# Everything the `changed` step turns off or changes.
CHANGE: Obj = {
    "spec": {
        "replicas": 0,
        "adapters": {"smb": {"enabled": False}},
        "controlPlane": {"logLevel": "DEBUG", "metrics": {"serviceMonitor": {"enabled": False}}},
        "expose": {"ingress": {"enabled": False}, "networkPolicy": {"enabled": False}},
    }
}


# What an API server swamped by ~65 operators on a loaded machine answers now and then.
TRANSIENT = (aiohttp.ClientError, TimeoutError)


async def retried(action: Callable[[], Awaitable[Any]]) -> Any:
    """Run one write of the test itself, again after a transient failure (it is idempotent
    or its repetition fails with 409, which counts as done)."""
    for attempt in range(5):
        try:
            return await action()
        except ApiError as error:
            if error.conflict and attempt:
                return None
            if attempt == 4 or (error.status < 500 and error.status != 429):
                raise
        except TRANSIENT:
            if attempt == 4:
                raise
        await asyncio.sleep(2)
    raise AssertionError("unreachable")


class Broke(Exception):
    """A step of the scenario did not happen in time."""


@attrs.define
class Case:
    """One operator: the full RBAC (`removed` None) or the RBAC without one verb."""

    removed: Permission | None
    namespace: str
    # The chart value rbac.ownerReferencesPermissionEnforcement.
    owner_reference_grants: bool = True
    operator: InClusterOperator | None = None
    broke: str | None = None
    # The DittoServer's conditions (type, reason, message) when a step broke.
    conditions: list[tuple[str, str, str]] = attrs.Factory(list)

    @property
    def baseline(self) -> bool:
        return self.removed is None and self.owner_reference_grants

    @property
    def label(self) -> str:
        if not self.owner_reference_grants:
            return "(none, but rbac.ownerReferencesPermissionEnforcement unset)"
        if self.removed is None:
            return "(none: the shipped RBAC)"
        group, resource, verb = self.removed
        return f"{verb} {group or 'core'}/{resource}"


@contextlib.asynccontextmanager
async def hardened_plane() -> AsyncIterator[KubeClient]:
    """A control plane of its own, with OwnerReferencesPermissionEnforcement on, the CRDs and
    the StorageClass installed; its admin client."""
    plane = ControlPlane(admission_plugins=(PLUGIN,), verbose=False)
    await asyncio.to_thread(plane.start)
    try:
        configuration = k8s_client.Configuration()
        await k8s_config.load_kube_config(
            config_file=str(plane.kubeconfig_path), client_configuration=configuration
        )
        async with k8s_client.ApiClient(configuration) as api:
            kube = KubeClient(api)
            await install_crd(kube)
            await percona.install_crd(kube)
            await kube.create(STORAGECLASSES, STORAGE_CLASS_BODY)
            yield kube
    finally:
        await asyncio.to_thread(plane.stop)


def render(namespace: str, owner_reference_grants: bool = True) -> list[Obj]:
    """The chart in namespace-scoped mode for `namespace`, released into it."""
    health, metrics = free_ports(2)  # the chart refuses one port for both
    values = {
        "healthPort": health,
        "metrics": {"port": metrics},
        "watchNamespaces": [namespace],
        "rbac": {"ownerReferencesPermissionEnforcement": owner_reference_grants},
    }
    return incluster.render_chart(values, release=RELEASE, namespace=namespace)


async def create_namespace(kube: KubeClient, name: str) -> None:
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    await retried(lambda: kube.create(NAMESPACES, body))
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:  # the ServiceAccount token and CA need these
        with contextlib.suppress(*TRANSIENT):
            if await kube.get_or_none(CONFIGMAPS, "kube-root-ca.crt", name) is not None:
                return
        await asyncio.sleep(0.5)
    raise AssertionError(f"namespace {name} never got its kube-root-ca.crt")


async def install_case(kube: KubeClient, case: Case, scratch: Path) -> Callable[[Path], None]:
    """Apply the (reduced) chart into the case's namespace; return what starts its operator."""
    docs = render(case.namespace, case.owner_reference_grants)
    if case.removed is not None:
        docs = incluster.without_verb(docs, *case.removed)
    await create_namespace(kube, case.namespace)
    for doc in docs:
        await retried(lambda d=doc: incluster.apply_rendered(kube, d, dry_run=False))
    (account,) = find(docs, "ServiceAccount")
    name = account["metadata"]["name"]
    files = await retried(lambda: incluster.serviceaccount_files(kube, case.namespace, name))
    sa_dir = incluster.write_files(scratch / f"sa-{case.namespace}", files)

    def start(python: Path) -> None:
        # Rendered again now: the ports it picks are free at this moment (a pod has its own IP).
        (deployment,) = find(render(case.namespace, case.owner_reference_grants), "Deployment")
        case.operator = InClusterOperator(
            python=python,
            deployment=deployment,
            serviceaccount_files=sa_dir,
            apiserver_url=kube.host,
            namespace=case.namespace,
            log_path=scratch / f"{case.namespace}.log",
            pod_name=f"{RELEASE}-{case.namespace}",
        )

    return start


# -- the scenario ---------------------------------------------------------------------------


class Scenario:
    """The steps of one namespace, each checked through the admin client."""

    def __init__(self, kube: KubeClient, case: Case, pace: dict[str, float]) -> None:
        self.kube = kube
        self.case = case
        # When the wave's baseline saw each thing it waited for (see `until`).
        self.pace = pace
        self.ns = case.namespace
        self.uid = ""
        self.seen: dict[str | None, float] = {}

    async def until(self, check: Callable[[], Awaitable[Any]], what: str) -> Any:
        """Poll `check` until it holds; Broke(what) when it does not in time.

        In time: the baseline gets MAX_WAIT; another case gets AFTER_BASELINE seconds more
        than the baseline took to see the same thing, so a loaded machine slows the verdicts
        down instead of faking breakage.
        """
        baseline = self.case.baseline
        start = time.monotonic()
        while True:
            with contextlib.suppress(*TRANSIENT):  # an overloaded apiserver: ask again
                found = await check()
                if found:
                    if baseline:
                        self.pace.setdefault(what, time.monotonic())
                    return found
            now = time.monotonic()
            reference = self.pace.get(what)
            if (
                now - start > MAX_WAIT
                or (not baseline and self.pace.get(BASELINE_BROKE) is not None)
                or (reference is not None and now - max(start, reference) > AFTER_BASELINE)
            ):
                if baseline:
                    self.pace[BASELINE_BROKE] = now
                raise Broke(what)
            await asyncio.sleep(POLL)

    async def step(self, name: str, body: Callable[[], Awaitable[None]]) -> None:
        """Run one step unless an earlier one broke; remember which broke."""
        if self.case.broke is not None:
            return
        try:
            await body()
        except Broke as broke:
            self.case.broke = f"{name}: {broke}"
            server = await retried(self.server) or {}
            self.case.conditions = [
                (c["type"], c.get("reason", ""), c.get("message", ""))
                for c in (server.get("status") or {}).get("conditions") or ()
            ]

    async def server(self) -> Obj | None:
        return await self.kube.get_or_none(DITTOSERVERS, SERVER, self.ns)

    async def condition(self, kind: str) -> Obj:
        server = await self.server() or {}
        for found in (server.get("status") or {}).get("conditions") or ():
            if found["type"] == kind:
                return dict(found)
        return {}

    async def until_true(self, kind: str) -> None:
        """Wait for condition `kind` True; a failure quotes it as last seen."""

        async def true() -> bool:
            return (await self.condition(kind)).get("status") == "True"

        try:
            await self.until(true, kind)
        except Broke:
            found = await retried(lambda: self.condition(kind))
            raise Broke(
                f"{kind} never True ({found.get('reason')}: {found.get('message')})"
            ) from None

    async def exists(self, resource: Resource, name: str) -> Obj | None:
        return await self.kube.get_or_none(resource, name, self.ns)

    async def gone(self, resource: Resource, name: str) -> bool:
        return await self.exists(resource, name) is None

    async def only(self, resource: Resource) -> Obj | None:
        items = (await self.kube.request("GET", resource.path(self.ns)))["items"]
        return items[0] if len(items) == 1 else None

    # The steps.

    async def ready(self) -> None:
        operator = self.case.operator
        assert operator is not None

        async def probe() -> bool:
            return operator.probe("/readyz") == 200

        await self.until(probe, "/readyz never turned 200")

        async def leads() -> bool:
            return operator.logged("became leader")

        await self.until(leads, "never became leader")

    async def created(self) -> None:
        password = base64.b64encode(b"admin-password").decode()
        admin = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": ADMIN_SECRET, "namespace": self.ns},
            "data": {"password": password},
        }
        await retried(lambda: self.kube.create(SECRETS, admin, self.ns))
        manifest = {**MANIFEST, "metadata": {"name": SERVER, "namespace": self.ns}}
        await retried(lambda: self.kube.create(DITTOSERVERS, manifest, self.ns))
        server = await self.until(self.server, "the DittoServer was not created")
        self.uid = server["metadata"]["uid"]

        async def finalized() -> bool:
            meta = (await self.server() or {}).get("metadata") or {}
            return set(meta.get("finalizers") or ()) >= FINALIZERS

        await self.until(finalized, "the finalizers never appeared")
        await self.until_true("ConfigReady")
        await self.until(
            lambda: self.exists(SECRETS, names.jwt_secret(SERVER)), "no generated JWT Secret"
        )
        await self.until_true("StorageReady")
        cluster = await self.until(
            lambda: self.only(PERCONA_PG_CLUSTERS), "no PerconaPGCluster created"
        )
        await self.play_percona(cluster["metadata"]["name"])
        await self.until_true("DatabaseReady")
        await self.until_true("NetworkReady")
        for purpose in ("api", "nfs", "smb"):
            name = names.service(SERVER, purpose)
            await self.until(lambda n=name: self.exists(SERVICES, n), f"no Service {name}")
        await self.until(lambda: self.exists(INGRESSES, names.ingress(SERVER)), "no Ingress")
        for purpose in ("api", "files"):
            name = names.network_policy(SERVER, purpose)
            await self.until(
                lambda n=name: self.exists(NETWORKPOLICIES, n), f"no NetworkPolicy {name}"
            )
        await self.until(self.skip_event, "no ServiceMonitorSkipped Event")

        async def pod_read() -> bool:
            available = await self.condition("Available")
            return available.get("reason") == "Starting" and "is Pending" in available["message"]

        await self.until(
            lambda: self.exists(STATEFULSETS, names.statefulset(SERVER)), "no StatefulSet"
        )
        await self.until(pod_read, "Available never said why the pod is not ready")

    async def play_percona(self, cluster: str) -> None:
        """What the Percona operator would do: the user and CA Secrets, then status ready."""
        data = {key: base64.b64encode(key.encode()).decode() for key in USER_SECRET_KEYS}
        for name, values in (
            (names.percona_user_secret(cluster), data),
            (names.percona_ca_secret(cluster), {names.PERCONA_CA_KEY: "Y2E="}),
        ):
            secret = {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name, "namespace": self.ns},
                "data": values,
            }
            await retried(lambda secret=secret: self.kube.create(SECRETS, secret, self.ns))
        status = {"status": {"state": READY_STATE}}
        await retried(
            lambda: self.kube.merge_patch(
                PERCONA_PG_CLUSTERS, cluster, status, self.ns, subresource="status"
            )
        )

    async def skip_event(self) -> bool:
        events = await self.kube.request("GET", EVENTS.path(self.ns))
        return any(e.get("reason") == "ServiceMonitorSkipped" for e in events["items"])

    async def monitored(self) -> None:
        name = names.service_monitor(SERVER)
        await self.until(lambda: self.exists(SERVICE_MONITORS, name), "no ServiceMonitor")

        async def not_skipped() -> bool:
            found = await self.condition("NetworkReady")
            return found.get("status") == "True" and "skipped" not in found.get("message", "")

        await self.until(not_skipped, "NetworkReady still says the ServiceMonitor is skipped")

    async def changed(self) -> None:
        config_map = await retried(lambda: self.exists(CONFIGMAPS, names.config_map(SERVER)))
        before = (config_map or {}).get("data")
        await retried(lambda: self.kube.merge_patch(DITTOSERVERS, SERVER, CHANGE, self.ns))
        for resource, name in (
            (SERVICES, names.service(SERVER, "smb")),
            (INGRESSES, names.ingress(SERVER)),
            (NETWORKPOLICIES, names.network_policy(SERVER, "api")),
            (NETWORKPOLICIES, names.network_policy(SERVER, "files")),
            (SERVICE_MONITORS, names.service_monitor(SERVER)),
        ):
            await self.until(
                lambda r=resource, n=name: self.gone(r, n), f"{resource.kind} {name} not deleted"
            )

        async def rewritten() -> bool:
            live = await self.exists(CONFIGMAPS, names.config_map(SERVER)) or {}
            return live.get("data") not in (None, before)

        await self.until(rewritten, "the ConfigMap never got the new log level")

        async def stopped() -> bool:
            return (await self.condition("Progressing")).get("reason") == "Stopped"

        await self.until(stopped, "the server never stopped (Progressing Stopped)")

    async def drifted(self) -> None:
        """Hand edits of children no poll revisits: only their watch brings them back.

        Made once the DittoServer has not changed for SETTLE seconds: every change of it runs
        every sub-reconciler, and a pass re-applies children it does not find in its cache, as
        does the one pending pod poll of the server reconciler (10 s after a pass that saw the
        pod starting). Either would repair the edit without the watch.
        """
        await self.until(self.settled, "the DittoServer never stopped changing")
        cluster = await retried(lambda: self.only(PERCONA_PG_CLUSTERS)) or {}
        edited = [
            (STATEFULSETS, names.statefulset(SERVER)),
            (PERCONA_PG_CLUSTERS, cluster.get("metadata", {}).get("name", "")),
            # Retain's release lists claims from the API, so this is where the claim watch shows.
            (PVCS, names.metadata_claim(SERVER, "meta")),
        ]
        drift = {"metadata": {"labels": {LABEL_COMPONENT: "drifted"}}}
        for resource, name in edited:
            await retried(lambda r=resource, n=name: self.kube.merge_patch(r, n, drift, self.ns))
        for resource, name in edited:

            async def restored(r: Resource = resource, n: str = name) -> bool:
                labels = ((await self.exists(r, n) or {}).get("metadata") or {}).get("labels")
                return (labels or {}).get(LABEL_COMPONENT) not in (None, "drifted")

            await self.until(restored, f"{resource.kind} {name} not restored after a hand edit")

    async def settled(self) -> bool:
        version = ((await self.server() or {}).get("metadata") or {}).get("resourceVersion")
        since = self.seen.get(version)
        if since is None:
            self.seen = {version: time.monotonic()}
            return False
        return time.monotonic() - since >= SETTLE

    async def retained(self) -> None:
        await retried(lambda: self.kube.delete(DITTOSERVERS, SERVER, self.ns))
        await self.until(lambda: self.gone(DITTOSERVERS, SERVER), "the DittoServer never went")
        name = names.config_map(SERVER)
        await self.until(
            lambda: self.gone(CONFIGMAPS, name), "its ConfigMap was not garbage collected"
        )
        kept: list[tuple[Resource, str]] = [
            (PVCS, names.metadata_claim(SERVER, "meta")),
            (PVCS, names.blocks_claim(SERVER, "blocks")),
            (SECRETS, names.jwt_secret(SERVER)),
        ]
        cluster = await retried(lambda: self.only(PERCONA_PG_CLUSTERS))
        if cluster is None:
            raise Broke("the PerconaPGCluster was not kept")
        kept.append((PERCONA_PG_CLUSTERS, cluster["metadata"]["name"]))
        for resource, name in kept:
            live = await retried(lambda r=resource, n=name: self.exists(r, n))
            meta = (live or {}).get("metadata") or {}
            owners = [ref.get("uid") for ref in meta.get("ownerReferences") or ()]
            if live is None or meta.get("deletionTimestamp") or self.uid in owners:
                raise Broke(f"{resource.kind} {name} not kept (Retain)")


# -- the test -------------------------------------------------------------------------------


async def test_every_permission_is_needed(runtime_python: Path, tmp_path: Path) -> None:
    granted = incluster.granted_verbs(render("probe"))
    removals = [
        case
        for index, permission in enumerate(granted)
        if (case := Case(permission, f"rbac-{index:02d}"))
        and (not ONLY or any(word in case.label for word in ONLY))
    ]
    waves = [
        [Case(None, f"rbac-baseline-{start // WAVE}"), *removals[start : start + WAVE]]
        for start in range(0, len(removals), WAVE)
    ]
    waves[0].append(Case(None, "rbac-no-owner-grants", owner_reference_grants=False))
    for wave in waves:
        await run_wave(wave, runtime_python, tmp_path)
    report([case for wave in waves for case in wave])


async def run_wave(cases: list[Case], python: Path, scratch: Path) -> None:
    """Every case of the wave at once on a fresh control plane (the ServiceMonitor CRD, which
    appears half-way, is cluster-wide)."""
    async with hardened_plane() as kube:
        setting_up = asyncio.Semaphore(4)

        async def install(case: Case) -> Callable[[Path], None]:
            async with setting_up:
                return await install_case(kube, case, scratch)

        try:
            for start in await asyncio.gather(*(install(case) for case in cases)):
                start(python)
                await asyncio.sleep(STAGGER)  # ~1 s of CPU each to start: pace them
            pace: dict[str, float] = {}
            scenarios = [Scenario(kube, case, pace) for case in cases]

            async def first(s: Scenario) -> None:
                await s.step("ready", s.ready)
                await s.step("created", s.created)

            async def rest(s: Scenario) -> None:
                await s.step("monitored", s.monitored)
                await s.step("changed", s.changed)
                await s.step("drifted", s.drifted)
                await s.step("retained", s.retained)

            await asyncio.gather(*(first(s) for s in scenarios))
            await retried(lambda: install_service_monitor_crd(kube))  # after every `created`
            await asyncio.gather(*(rest(s) for s in scenarios))
        finally:
            for case in cases:
                if case.operator is not None:
                    case.operator.stop()


def report(cases: list[Case]) -> None:
    """Print the table; fail for a baseline that broke or a permission shown not needed."""
    failures = []
    rows = []
    for case in cases:
        assert case.operator is not None
        denied = incluster.denials(case.operator)
        if not case.owner_reference_grants:
            named = [
                f"{kind}: {message}"
                for kind, reason, message in case.conditions
                if reason == "OwnerReferencesForbidden"
                and "rbac.ownerReferencesPermissionEnforcement=true" in message
            ]
            verdict = f"{case.broke or 'NOTHING BROKE'}; said why: {'yes' if named else 'NO'}"
            if not case.broke or not named:
                failures.append(
                    f"{case.label}: broke at {case.broke}, conditions {case.conditions}\n"
                    + case.operator.tail(10)
                )
        elif case.removed is None:
            verdict = case.broke or "every step passed"
            if case.broke or denied:
                failures.append(f"the shipped RBAC: broke at {case.broke}; denied {denied}")
        else:
            _, resource, verb = case.removed
            shown = (verb, resource) in denied
            verdict = f"{case.broke or 'NOTHING BROKE'}; denied: {'yes' if shown else 'NO'}"
            if not case.broke or not shown:
                failures.append(
                    f"{case.label}: not shown needed (broke: {case.broke}; denied {denied})\n"
                    + case.operator.tail(10)
                )
        rows.append((case.label, verdict))
    width = max(len(label) for label, _ in rows)
    print(f"\n{'permission removed'.ljust(width)} | what broke (first failed step; denial seen)")
    for label, verdict in rows:
        print(f"{label.ljust(width)} | {verdict}")
    assert not failures, "\n\n".join(failures)
