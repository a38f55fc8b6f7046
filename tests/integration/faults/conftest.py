"""Fixtures for the fault suite: the real operator as OS processes that a test can kill, and a
watch-fed view of the test namespace to wait on without polling.

The suite judges a namespace with `State.converged` (every DittoServer fully reconciled, with
exactly its expected children, each with exactly one controller ownerReference to that live
DittoServer, and no managed object beside them) and `State.released` (what deleted
DittoServers left behind is what their deletion policy keeps). Tests wait on the view's watches
until those find no problem, then assert the same on fresh LISTs from the API server.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import json
import os
import random
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from dittofs_controller.kube.client import KubeClient
from dittofs_controller.kube.resources import (
    CONFIGMAPS,
    DITTOSERVERS,
    INGRESSES,
    NETWORKPOLICIES,
    PODS,
    PVCS,
    SECRETS,
    SERVICES,
    STATEFULSETS,
    Resource,
)
from dittofs_controller.operator import names
from dittofs_controller.operator.children import (
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    MANAGED_BY,
    MANAGED_SELECTOR,
)
from dittofs_controller.operator.config import build
from dittofs_controller.operator.summary import summarise
from dittofs_controller.runtime.informer import EventType, ResourceCache
from tests.bench.operator_bench import dittoserver
from tests.support.crds import install_crd
from tests.support.process import OperatorProcess
from tests.testbed.provisioner import running_provisioner

Obj = dict[str, Any]
T = TypeVar("T")

# Every kind the operator creates for a memory-store DittoServer, plus those it could create
# by mistake: a stray object of any of them is an orphan or a duplicate.
CHILD_KINDS = (CONFIGMAPS, SECRETS, SERVICES, PVCS, STATEFULSETS, NETWORKPOLICIES, INGRESSES)
# The StatefulSet's pods are no children of the DittoServer, but must go with it too.
POD_SELECTOR = f"{LABEL_NAME}=dittofs"
# Retain keeps these (released, ownerless) when their DittoServer goes; nothing else survives.
RETAINED_KINDS = (SECRETS, PVCS)
REPORTED = (
    "ConfigReady",
    "StorageReady",
    "DatabaseReady",
    "NetworkReady",
    "Available",
    "Progressing",
    "ServerConfigured",
    "Ready",
)
MUST_BE_TRUE = ("ConfigReady", "StorageReady", "DatabaseReady", "NetworkReady")
# Where a DittoServer settles on this testbed (claims bound by the `volumes` provisioner, the
# pod made but Pending: no kubelet), and what the message then says.
STEADY = {
    "StorageReady": ("Bound", ""),
    "Available": ("Starting", "is Pending"),
    "Progressing": ("RollingOut", "to become ready"),
    "ServerConfigured": ("WaitingForServer", "see condition Available"),
}
FINALIZERS = {"dittofs.io/config", "dittofs.io/storage", "dittofs.io/database", "dittofs.io/server"}

# How long a namespace's DittoServers may take to converge: generous, since the machine may be
# shared (the time taken is printed or visible in the durations, never asserted).
CONVERGE_TIMEOUT = 240.0
# A test that waits for convergence more than once gets this much in all.
LONG_TEST_TIMEOUT = 600

LEASE_DURATION = 4.0
ELECTION_FLAGS = (
    f"--leader-elect-lease-duration={LEASE_DURATION}",
    "--leader-elect-renew-deadline=3",
    "--leader-elect-retry-period=0.5",
)


def expected_children(server: str) -> dict[Resource, set[str]]:
    """What the operator creates for one `dittoserver()` (memory stores, SQLite, ClusterIP)."""
    return {
        CONFIGMAPS: {names.config_map(server)},
        SECRETS: {
            names.jwt_secret(server),
            names.admin_secret(server),
            names.digest_key_secret(server),
        },
        SERVICES: {names.service(server, purpose) for purpose in ("nfs", "smb", "api")},
        PVCS: {names.controlplane_claim(server)},
        STATEFULSETS: {names.statefulset(server)},
        NETWORKPOLICIES: {names.network_policy(server, p) for p in ("api", "files")},
    }


def server_manifest(namespace: str, name: str, **spec: Any) -> Obj:
    manifest = dittoserver(namespace, name)
    manifest["spec"].update(spec)
    return manifest


class State:
    """DittoServers and managed children of one namespace, from a cache or a fresh LIST."""

    def __init__(
        self,
        servers: Iterable[Obj],
        children: dict[Resource, list[Obj]],
        verdicts: dict[tuple[str, str], list[str]] | None = None,
    ) -> None:
        self.servers = {s["metadata"]["name"]: s for s in servers}
        self.children = children
        # unreconciled() by (uid, resourceVersion): a view re-checks on every event, and most
        # events leave most DittoServers as they were.
        self._verdicts = {} if verdicts is None else verdicts

    def unreconciled(self, name: str) -> list[str]:
        meta = self.servers[name]["metadata"]
        key = (meta["uid"], meta["resourceVersion"])
        if key not in self._verdicts:
            self._verdicts[key] = unreconciled(self.servers[name])
        return self._verdicts[key]

    def child(self, resource: Resource, name: str) -> Obj | None:
        return next((c for c in self.children[resource] if c["metadata"]["name"] == name), None)

    def converged(self, expected: Iterable[str], gone: Iterable[str] = ()) -> list[str]:
        """Why the namespace is not exactly `expected` DittoServers, fully reconciled, with
        exactly their children; empty when it is. What DittoServers `gone` left behind is
        judged by `released`."""
        wanted = set(expected)
        found: list[str] = []
        if set(self.servers) != wanted:
            found.append(f"DittoServers {sorted(self.servers)} != {sorted(wanted)}")
        for name in sorted(wanted & set(self.servers)):
            found.extend(self.unreconciled(name))
            found.extend(rollout_pending(self.child(STATEFULSETS, names.statefulset(name))))
        owned = self._ownership(found, set(gone))
        for name in sorted(wanted & set(self.servers)):
            uid = self.servers[name]["metadata"]["uid"]
            for resource, expected_names in expected_children(name).items():
                have = owned.get((resource, uid), set())
                if have != expected_names:
                    found.append(
                        f"{name}: {resource.kind}s {sorted(have)} != {sorted(expected_names)}"
                    )
        return found

    def released(self, gone: Iterable[str], policy: str) -> list[str]:
        """Why deleted DittoServers `gone` did not leave exactly what `policy` keeps: nothing
        (Delete) or only ownerless Secrets and claims (Retain)."""
        found = [f"DittoServer {n} still exists" for n in sorted(set(gone) & set(self.servers))]
        gone_set = set(gone)
        for resource, objs in self.children.items():
            for obj in objs:
                meta = obj["metadata"]
                if (meta.get("labels") or {}).get(LABEL_INSTANCE) not in gone_set:
                    continue
                what = f"{resource.kind} {meta['name']}"
                if policy == "Delete" or resource not in RETAINED_KINDS:
                    found.append(f"{what} left behind")
                elif meta.get("ownerReferences"):
                    found.append(f"{what} kept with owners {meta['ownerReferences']}")
        return found

    def _ownership(self, found: list[str], gone: set[str]) -> dict[tuple[Resource, str], set[str]]:
        """Children by (kind, controller uid); orphans, duplicates and strays go to `found`."""
        live = {s["metadata"]["uid"] for s in self.servers.values()}
        owned: dict[tuple[Resource, str], set[str]] = {}
        for resource in CHILD_KINDS:
            for obj in self.children[resource]:
                meta = obj["metadata"]
                if (meta.get("labels") or {}).get(LABEL_INSTANCE) in gone:
                    continue
                what = f"{resource.kind} {meta['name']}"
                refs = meta.get("ownerReferences") or []
                if len(refs) != 1 or not refs[0].get("controller"):
                    found.append(f"{what} has ownerReferences {refs}, not one controller")
                    continue
                if refs[0]["uid"] not in live:
                    found.append(f"{what} is owned by a DittoServer that is gone")
                    continue
                owned.setdefault((resource, refs[0]["uid"]), set()).add(meta["name"])
        return owned


def rollout_pending(workload: Obj | None) -> list[str]:
    """Why the controller-manager may still replace a StatefulSet's pod (and Available would
    change once more): it has not seen the latest template, or not rolled it out yet."""
    if workload is None:
        return []  # reported as a missing child
    spec, status = workload["spec"], workload.get("status") or {}
    # Not currentRevision: it only catches up once the pods are ready, and none is here.
    done = status.get("observedGeneration") == workload["metadata"].get("generation") and (
        status.get("replicas", 0) == status.get("updatedReplicas", 0) == spec.get("replicas")
    )
    return [] if done else [f"{workload['metadata']['name']}: rollout not done ({status})"]


def unreconciled(server: Obj) -> list[str]:
    """Why a DittoServer's status is not the steady state of this testbed (the operator has
    work left): every condition reported for the current generation, the concerns it checks
    True, claims bound, the pod made, and the summary caught up with them."""
    meta = server["metadata"]
    name, generation = meta["name"], meta.get("generation")
    reported = {
        c["type"]: c
        for c in (server.get("status") or {}).get("conditions") or ()
        if c.get("observedGeneration") == generation
    }
    found = [f"{name}: {kind} not reported" for kind in REPORTED if kind not in reported]
    found += [
        f"{name}: {kind} is {reported[kind]['status']} ({reported[kind]['reason']})"
        for kind in MUST_BE_TRUE
        if kind in reported and reported[kind]["status"] != "True"
    ]
    found += [
        f"{name}: {kind} says {reported[kind]['reason']}: {reported[kind]['message']}"
        for kind, (reason, mentions) in STEADY.items()
        if kind in reported
        and (reported[kind]["reason"] != reason or mentions not in reported[kind]["message"])
    ]
    ready = summarise(server).outcome
    if "Ready" in reported and (
        reported["Ready"]["status"],
        reported["Ready"]["reason"],
        reported["Ready"]["message"],
    ) != (ready.status, ready.reason, ready.message):
        # Message too: Ready quotes the others, and some of their changes are message-only.
        found.append(f"{name}: Ready lags behind the other conditions")
    if set(meta.get("finalizers") or ()) != FINALIZERS:
        found.append(f"{name}: finalizers {meta.get('finalizers')}")
    return found


async def fresh_state(kube: KubeClient, namespace: str) -> State:
    """The namespace as the API server has it now (no cache). Children are listed without the
    operator's label selector, so one it made without its labels would show up too."""

    async def items(resource: Resource, selector: str | None = None) -> list[Obj]:
        listed = await kube.request(
            "GET", resource.path(namespace), query={"labelSelector": selector}
        )
        return list(listed.get("items") or ())

    children = {r: [obj for obj in await items(r) if _ours(obj)] for r in CHILD_KINDS}
    children[PODS] = await items(PODS, POD_SELECTOR)
    return State(await items(DITTOSERVERS), children)


def _ours(obj: Obj) -> bool:
    """Made by the operator: its managed label, or any ownerReference to a DittoServer."""
    meta = obj["metadata"]
    return (meta.get("labels") or {}).get(LABEL_MANAGED_BY) == MANAGED_BY or any(
        ref.get("kind") == DITTOSERVERS.kind for ref in meta.get("ownerReferences") or ()
    )


def secrets_in_use(state: State) -> list[str]:
    """Why the generated Secrets are not the ones the config and the pod template were made
    for: the restart hash covers the JWT secret, so a regenerated one would not match."""
    found = []
    for name in state.servers:
        config_map = state.child(CONFIGMAPS, names.config_map(name))
        workload = state.child(STATEFULSETS, names.statefulset(name))
        jwt_secret = state.child(SECRETS, names.jwt_secret(name))
        admin_secret = state.child(SECRETS, names.admin_secret(name))
        if None in (config_map, workload, jwt_secret, admin_secret):
            continue  # reported by `converged`
        jwt = secret_value(jwt_secret, names.GENERATED_JWT_KEY)
        admin = secret_value(admin_secret, names.GENERATED_ADMIN_KEY)
        digest = config_map["metadata"]["annotations"][names.RESTART_HASH_ANNOTATION]
        expected = build.restart_hash(
            config_map["data"][names.CONFIG_KEY],
            {(names.jwt_secret(name), names.GENERATED_JWT_KEY): jwt},
        )
        template = workload["spec"]["template"]["metadata"]["annotations"]
        if digest != expected:
            found.append(f"{name}: ConfigMap hashed another JWT secret than Secret's")
        if template.get(names.RESTART_HASH_ANNOTATION) != digest:
            found.append(f"{name}: pod template restart hash differs from the ConfigMap's")
        if len(jwt) < build.JWT_MIN_LENGTH or not admin:
            found.append(f"{name}: generated Secret values are unusable")
    return found


def secret_value(secret: Obj, key: str) -> str:
    return base64.b64decode((secret.get("data") or {}).get(key, "")).decode()


# After a change, gather the burst it belongs to before checking again (a status write of each
# of 50 DittoServers is 50 events).
COALESCE = 0.05


class NamespaceView:
    """The test namespace's DittoServers and managed children, kept current by watches.

    `until` re-evaluates its check after every change, so tests wait exactly as long as the
    operator takes, with no polling load on the API server.
    """

    def __init__(self, kube: KubeClient, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.servers = ResourceCache(kube, DITTOSERVERS, namespaces=[namespace])
        self.caches = {
            r: ResourceCache(kube, r, namespaces=[namespace], label_selector=MANAGED_SELECTOR)
            for r in CHILD_KINDS
        }
        self.caches[PODS] = ResourceCache(
            kube, PODS, namespaces=[namespace], label_selector=POD_SELECTOR
        )
        self._changed = asyncio.Event()
        self._verdicts: dict[tuple[str, str], list[str]] = {}
        # Every child deleted, and every distinct value seen per Secret, since the view started.
        self.deleted: list[str] = []
        self.secret_values: dict[str, set[str]] = {}
        # The view needs only the kind of change and the object, whatever else a handler gets.
        self.servers.add_handler(lambda *_: self._changed.set())
        for resource, cache in self.caches.items():
            cache.add_handler(functools.partial(self._on_child, resource))

    def _on_child(self, resource: Resource, kind: EventType, obj: Obj, *_: Any) -> None:
        name = obj["metadata"]["name"]
        if kind is EventType.DELETED:
            self.deleted.append(f"{resource.kind} {name}")
        elif resource is SECRETS:
            data = json.dumps(obj.get("data"), sort_keys=True)
            self.secret_values.setdefault(name, set()).add(
                hashlib.sha256(data.encode()).hexdigest()
            )
        self._changed.set()

    def state(self) -> State:
        children = {r: cache.objects() for r, cache in self.caches.items()}
        return State(self.servers.objects(), children, self._verdicts)

    async def until(self, check: Callable[[State], T], what: str, timeout: float) -> T:
        """Wait until `check(state)` is truthy and return it."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    self._changed.clear()
                    if result := check(self.state()):
                        return result
                    await self._changed.wait()
                    await asyncio.sleep(COALESCE)
        except TimeoutError:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}") from None

    async def settle(self, check: Callable[[State], list[str]], what: str, timeout: float) -> None:
        """Wait until `check` finds no problem; on timeout fail with those it still finds."""
        try:
            await self.until(lambda state: not check(state), what, timeout)
        except AssertionError as error:
            # A fresh read tells a lagging watch of this view from a stuck controller.
            fresh = check(await fresh_state(self.kube, self.namespace))
            raise AssertionError(
                f"{error}; still: {check(self.state())[:20]}; the API server now: {fresh[:20]}"
            ) from None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[NamespaceView]:
        caches = [self.servers, *self.caches.values()]
        tasks = [asyncio.create_task(cache.run()) for cache in caches]
        try:
            for cache in caches:
                await asyncio.wait_for(cache.wait_synced(), 30)
            yield self
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture
async def view(kube: KubeClient, namespace: str) -> AsyncIterator[NamespaceView]:
    await install_crd(kube)
    async with NamespaceView(kube, namespace).running() as running:
        yield running


@pytest.fixture
async def volumes(kube: KubeClient, namespace: str, tmp_path: Path) -> AsyncIterator[None]:
    """A PersistentVolume for every claim of the namespace, so claims bind: a claim left
    Pending would turn StorageReady False after the operator's grace period, in the middle of a
    long test."""
    async with running_provisioner(kube, tmp_path / "volumes", namespaces=[namespace]):
        yield


StartOperator = Callable[..., OperatorProcess]


@pytest.fixture
def start_operator(
    control_plane: Any, namespace: str, view: NamespaceView, volumes: None, tmp_path: Path
) -> Iterator[StartOperator]:
    """Start the real operator (`python -m dittofs_controller run`) for the test namespace.

    `identity` names the replica and its log; `leader_elect` turns on the Lease in the test
    namespace; `debug` logs at debug level. Every process started is killed after the test.
    """
    started: list[OperatorProcess] = []

    def start(
        identity: str = "operator", *, leader_elect: bool = False, debug: bool = False
    ) -> OperatorProcess:
        election = (
            [
                f"--leader-elect-namespace={namespace}",
                f"--leader-elect-identity={identity}",
                *ELECTION_FLAGS,
            ]
            if leader_elect
            else ["--no-leader-elect"]
        )
        process = OperatorProcess(
            "dittofs_controller",
            [
                "run",
                f"--kubeconfig={control_plane.kubeconfig_path}",
                f"--namespaces={namespace}",
                f"--log-level={'debug' if debug else 'info'}",
                *election,
            ],
            tmp_path / f"{identity}-{len(started)}.log",
        )
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
async def namespace(namespace: str, kube: KubeClient) -> AsyncIterator[str]:
    """The root fixture's namespace, with every DittoServer's finalizers dropped at the end:
    the operators are dead by then, and the namespace could not go otherwise."""
    yield namespace
    listed = await kube.request("GET", DITTOSERVERS.path(namespace))
    await gather_limited(
        kube.merge_patch(
            DITTOSERVERS, s["metadata"]["name"], {"metadata": {"finalizers": None}}, namespace
        )
        for s in listed.get("items") or ()
        if s["metadata"].get("finalizers")
    )


async def gather_limited(coroutines: Iterable[Any], limit: int = 10) -> list[Any]:
    """Await `coroutines` with at most `limit` in flight, as a client with a rate limit would."""
    gate = asyncio.Semaphore(limit)

    async def one(coroutine: Any) -> Any:
        async with gate:
            return await coroutine

    return await asyncio.gather(*(one(c) for c in coroutines))


# One seed per run: set DITTOFS_FAULTS_SEED to replay the random choices of a failed run.
SEED = os.environ.get("DITTOFS_FAULTS_SEED") or str(random.SystemRandom().randrange(2**32))


def seeded(name: str) -> random.Random:
    """An RNG for one test (or trial), from the run's seed and `name`; prints how to replay."""
    print(f"DITTOFS_FAULTS_SEED={SEED} ({name})")
    return random.Random(f"{SEED}/{name}")
