"""The shape every DittoServer sub-reconciler shares (cert-manager style).

Each sub-reconciler owns one concern (config, storage, database, network, server), its
children, one status condition and, when its children outlive the DittoServer under the Retain
policy, one finalizer. They never call each other: they coordinate only through the conditions
they publish on the DittoServer, which the others read from the shared cache.

A DittoServer update queues a reconciler only when it changed something that reconciler acts
on: its spec (metadata.generation), deletion, finalizers, labels, annotations, or one of the
conditions it `reads`. Without that filter every status write (each reconciler's own
condition included) queued all seven reconcilers again.

A pass goes: read the DittoServer from the cache -> parse its spec -> `sync` (build the desired
children, apply what differs, judge the result) -> publish the condition (only if it changed)
and record an Event when the condition's status or reason changes.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any, ClassVar

import attrs
import structlog
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random

from dittofs_controller.api import v1alpha1
from dittofs_controller.api.schema import ParseError
from dittofs_controller.kube.client import ApiError, KubeClient
from dittofs_controller.kube.resources import DITTOSERVERS, ObjectKey, Resource
from dittofs_controller.operator import conditions, names
from dittofs_controller.operator.children import (
    LABEL_INSTANCE,
    MANAGED_SELECTOR,
    Obj,
    field_manager,
    needs_apply,
)
from dittofs_controller.operator.conditions import Outcome
from dittofs_controller.operator.events import EventRecorder
from dittofs_controller.operator.problems import Problem, owner_references_explained
from dittofs_controller.operator.references import SecretReader
from dittofs_controller.operator.specs import server_spec
from dittofs_controller.operator.unseen import UnseenWrites
from dittofs_controller.runtime.controller import (
    DONE,
    Controller,
    Predicate,
    Result,
    TerminalError,
)
from dittofs_controller.runtime.informer import ResourceCache
from dittofs_controller.runtime.store import controller_owner
from dittofs_controller.settings import Settings

if TYPE_CHECKING:
    from dittofs_controller.runtime.manager import Manager

log = structlog.get_logger("dittofs_controller.operator")

Spec = v1alpha1.DittoServerSpec

# A finalizer an older version added is removed under a test of the list: a few rereads do.
FINALIZER_ATTEMPTS = 5


@attrs.frozen
class Synced:
    """What `sync` concluded: the condition to show, and when to look again (if ever)."""

    outcome: Outcome
    requeue_after: float | None = None
    # Values of the reconciler's `status_fields`, published in one apply with the condition;
    # None keeps what it published before.
    status: Obj | None = None


@attrs.define
class Context:
    """What every sub-reconciler gets: the client, shared caches, events, Secret values."""

    client: KubeClient
    servers: ResourceCache
    secrets: ResourceCache  # metadata only
    pods: ResourceCache  # the DittoFS pods (POD_SELECTOR): watched, never polled
    secret_values: SecretReader
    events: EventRecorder
    settings: Settings
    unseen: UnseenWrites = attrs.field(factory=UnseenWrites)


class ServerReconciler(abc.ABC):
    name: ClassVar[str]
    condition: ClassVar[str]
    finalizer: ClassVar[str | None] = None
    # Top-level status fields besides the condition that this reconciler owns (e.g. endpoints).
    status_fields: ClassVar[tuple[str, ...]] = ()
    # The other reconcilers' conditions this one acts on: a change of one queues a pass.
    reads: ClassVar[tuple[str, ...]] = ()
    # How long a DittoServer change waits in the queue for the next ones (see Controller.watch).
    coalesce_seconds: ClassVar[float] = 0.0

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.client = ctx.client
        self.manager = field_manager(self.name)

    @abc.abstractmethod
    async def sync(self, server: Obj, spec: Spec) -> Synced:
        """Converge this concern's children; return the verdict or raise Problem."""

    async def release(self, server: Obj, spec: Spec | None) -> Result | None:
        """Run while the DittoServer is being deleted, before this reconciler's finalizer goes.

        `spec` is None if it cannot be parsed: release must then keep (Retain) everything.
        Only reconcilers that declare a `finalizer` are called; the default keeps everything.
        A Result instead of None means "not yet": the finalizer stays, and the pass ends with it.
        """
        return None

    async def reconcile(self, key: ObjectKey) -> Result:
        server = self.ctx.servers.get(key)
        if server is None:
            self.ctx.unseen.forget(key)
            return DONE  # deleted: garbage collection takes the owned children
        try:
            spec: Spec | None = server_spec(server)
        except ParseError as error:
            spec, invalid = None, error
        finalizers = server["metadata"].get("finalizers") or ()
        if server["metadata"].get("deletionTimestamp"):
            if self.finalizer in finalizers:
                try:
                    with owner_references_explained():
                        pending = await self.release(server, spec)
                except Problem as problem:  # said, and retried: the finalizer stays meanwhile
                    await self.publish(server, Outcome.false(problem.reason, problem.message))
                    raise
                if pending is not None:
                    return pending
                await self._set_finalizer(server, present=False)
            return DONE
        if spec is None:
            await self.publish(server, Outcome.false("InvalidSpec", str(invalid)))
            raise TerminalError(str(invalid))
        if self.finalizer and self.finalizer not in finalizers:
            await self._set_finalizer(server, present=True)
        try:
            with owner_references_explained():
                synced = await self.sync(server, spec)
        except Problem as problem:
            await self.publish(server, Outcome.false(problem.reason, problem.message))
            if problem.retry:
                raise
            return Result(problem.requeue_after)
        await self.publish(server, synced.outcome, synced.status)
        return Result(synced.requeue_after)

    async def publish(self, server: Obj, outcome: Outcome, fields: Obj | None = None) -> None:
        """Apply this reconciler's condition if it changed; record an Event for a problem or
        its end (`conditions.announced`).

        `fields` (values of `status_fields`) travel in the same apply. None keeps the values
        published before: an apply that omitted them would remove them.
        """
        if fields is None:
            current = server.get("status") or {}
            fields = {key: current[key] for key in self.status_fields if current.get(key)}
        written = await write_condition(
            self.ctx, server, self.condition, outcome, self.manager, fields, self.status_fields
        )
        if written is None:
            return
        entry, previous = written
        if conditions.announced(entry, previous):
            await self.ctx.events.record(
                server,
                conditions.event_type(entry),
                entry["reason"],
                f"{self.condition}={entry['status']}: {entry['message']}",
                action=self.name.capitalize(),
            )

    async def apply_child(self, resource: Resource, desired: Obj, live: Obj | None) -> bool:
        """Server-side apply `desired` unless `live` already matches it; True when written."""
        return await self.ensure_child(resource, desired, live) is not live

    async def ensure_child(self, resource: Resource, desired: Obj, live: Obj | None) -> Obj:
        """Like `apply_child`, but return the object as it now stands (`live` if unchanged),
        for reconcilers that judge fields the API server fills in (allocated ports...)."""
        if live is not None and not needs_apply(desired, live):
            return live
        applied = await self.client.apply(resource, desired, field_manager=self.manager)
        log.info(
            "applied child",
            controller=self.name,
            kind=desired["kind"],
            name=desired["metadata"]["name"],
            created=live is None,
        )
        return applied

    async def children_from_api(self, resource: Resource, server: Obj) -> list[Obj]:
        """The children of one kind the DittoServer controls, as the API server has them now.

        For `release`, not the cache: a child created a moment before the deletion may not be
        cached yet, and one left out would be garbage collected with the DittoServer.
        """
        meta = server["metadata"]
        selector = f"{MANAGED_SELECTOR},{LABEL_INSTANCE}={meta['name']}"
        listed = await self.client.request(
            "GET", resource.path(meta["namespace"]), query={"labelSelector": selector}
        )
        return [
            child
            for child in listed["items"]
            if (controller_owner(child) or {}).get("uid") == meta["uid"]
        ]

    async def disown(self, resource: Resource, live: Obj, server: Obj) -> None:
        """Drop the DittoServer's ownerReference from a child, so the garbage collector keeps it
        when the DittoServer goes (deletionPolicy Retain). The resourceVersion precondition
        never overwrites owners someone changed since the cache saw them (409: retried)."""
        meta = live["metadata"]
        refs = [
            ref
            for ref in meta.get("ownerReferences") or ()
            if ref.get("uid") != server["metadata"]["uid"]
        ]
        if len(refs) == len(meta.get("ownerReferences") or ()):
            return
        patch = {
            "metadata": {
                "ownerReferences": refs or None,
                "resourceVersion": meta["resourceVersion"],
            }
        }
        try:
            await self.client.merge_patch(resource, meta["name"], patch, meta.get("namespace"))
        except ApiError as error:
            if error.not_found:
                return
            raise
        log.info("released child", controller=self.name, kind=resource.kind, name=meta["name"])

    async def _set_finalizer(self, server: Obj, *, present: bool) -> None:
        """Add or remove this reconciler's finalizer with an apply of that one entry.

        `metadata.finalizers` is a set: each reconciler's field manager owns its own entry, so
        their writes never conflict with each other or with status writes (no resourceVersion).
        The uid makes the apply conditional: for a DittoServer gone meanwhile (its last
        finalizer removed by another reconciler) it fails, 409 "uid mismatch", instead of
        creating the object again.
        """
        meta = server["metadata"]
        body: Obj = {
            "apiVersion": v1alpha1.API_VERSION,
            "kind": v1alpha1.KIND,
            "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
        }
        if present:
            body["metadata"]["finalizers"] = [self.finalizer]
        try:
            live = await self.client.apply(DITTOSERVERS, body, field_manager=self.manager)
        except ApiError as error:
            if error.conflict or error.not_found:
                return  # gone, or a new object of the same name: not ours to finalize
            if present and error.invalid and "finalizers" in error.message:
                return  # deleted meanwhile: no new finalizer may come; the deletion pass follows
            raise
        if not present and self.finalizer in (live["metadata"].get("finalizers") or ()):
            await self._remove_unowned_finalizer(live)

    async def _remove_unowned_finalizer(self, server: Obj) -> None:
        """Remove the finalizer an older version added with a merge patch, which an apply does
        not own and so cannot remove: a JSON patch of the list, tested against the list it was
        read as (a 422 means it changed since: read it again)."""
        current: Obj | None = server
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(lambda error: isinstance(error, ApiError) and error.invalid),
            stop=stop_after_attempt(FINALIZER_ATTEMPTS),
            wait=wait_random(0, 0.1),
            reraise=True,
        ):
            with attempt:
                if attempt.retry_state.attempt_number > 1:
                    current = await self._reread(server)
                if current is None:
                    return
                meta = current["metadata"]
                finalizers = list(meta.get("finalizers") or ())
                if self.finalizer not in finalizers:
                    return
                operations = [
                    {"op": "test", "path": "/metadata/uid", "value": meta["uid"]},
                    {"op": "test", "path": "/metadata/finalizers", "value": finalizers},
                    {
                        "op": "replace",
                        "path": "/metadata/finalizers",
                        "value": [name for name in finalizers if name != self.finalizer],
                    },
                ]
                try:
                    await self.client.json_patch(
                        DITTOSERVERS, meta["name"], operations, meta["namespace"]
                    )
                except ApiError as error:
                    if not error.not_found:
                        raise

    async def _reread(self, server: Obj) -> Obj | None:
        """The DittoServer as it stands now, or None if it is gone (or is a new one)."""
        meta = server["metadata"]
        live = await self.client.get_or_none(DITTOSERVERS, meta["name"], meta["namespace"])
        if live is None or live["metadata"]["uid"] != meta["uid"]:
            return None
        return live


async def write_condition(
    ctx: Context,
    server: Obj,
    condition_type: str,
    outcome: Outcome,
    manager: str,
    fields: Obj | None = None,
    owned: tuple[str, ...] = (),
) -> tuple[Obj, Obj | None] | None:
    """Apply one condition, with the top-level status `fields` its writer owns, in one status
    apply, only when the condition or one of the `owned` fields changed (an owned field missing
    from `fields` is removed) and this very apply is not still on its way to the cache.
    Returns (the entry written, the previous entry) or None (nothing written, or the DittoServer
    is gone)."""
    fields = fields or {}
    entry = conditions.desired_condition(server, condition_type, outcome)
    current = server.get("status") or {}
    stale = any((current.get(key) or None) != (fields.get(key) or None) for key in owned)
    patch = status_patch(server, {**fields, "conditions": [entry]})
    # Unchanged, unless our own last write said otherwise (UnseenWrites.wrote_otherwise).
    changed = conditions.differs(server, entry) or stale
    if not changed and not ctx.unseen.wrote_otherwise(server, manager, patch):
        return None
    if ctx.unseen.already_applied(server, manager, patch):
        return None
    previous = conditions.find(server, condition_type)
    try:
        await ctx.client.apply(DITTOSERVERS, patch, field_manager=manager, subresource="status")
    except ApiError as error:
        if error.not_found:  # deleted since the cache saw it: no status left to report on
            return None
        raise
    ctx.unseen.record(server, manager, patch)
    return entry, previous


def status_patch(server: Obj, status: dict[str, Any]) -> Obj:
    meta = server["metadata"]
    return {
        "apiVersion": v1alpha1.API_VERSION,
        "kind": v1alpha1.KIND,
        "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
        "status": status,
    }


# What of a DittoServer's metadata the reconcilers act on (the spec changes the generation).
WATCHED_METADATA = ("generation", "deletionTimestamp", "finalizers", "labels", "annotations")


def concerns(reads: tuple[str, ...]) -> Predicate:
    """An update predicate: whether a DittoServer update changed something a reconciler acts
    on, for one that reads the conditions `reads` (its own writes and others' do not count)."""

    def predicate(old: Obj, new: Obj) -> bool:
        before, after = old["metadata"], new["metadata"]
        if any(before.get(field) != after.get(field) for field in WATCHED_METADATA):
            return True
        return any(conditions.find(old, kind) != conditions.find(new, kind) for kind in reads)

    return predicate


def server_controller(manager: Manager, reconciler: ServerReconciler | Any) -> Controller:
    """A controller for one sub-reconciler, fed by the DittoServer updates it is concerned
    with (see `concerns`)."""
    settings = manager.settings
    controller = Controller(
        reconciler.name,
        reconciler,
        workers=settings.workers,
        reconcile_timeout=settings.reconcile_timeout,
    )
    controller.watch(
        reconciler.ctx.servers,
        predicate=concerns(reconciler.reads),
        delay=reconciler.coalesce_seconds,
    )
    return manager.add(controller)


def owned_children(manager: Manager, resource: Resource) -> ResourceCache:
    """The shared cache of the operator's children of one kind (selected by the managed label)."""
    return manager.cache(resource, MANAGED_SELECTOR)


def server_pod(pods: ResourceCache, server: Obj) -> Obj | None:
    """The server's pod as the cache holds it: `<statefulset>-0`, controlled by the server's
    StatefulSet (a pod of that name made otherwise is not the server's)."""
    meta = server["metadata"]
    pod = pods.get(ObjectKey(meta["namespace"], names.pod(meta["name"])))
    owner = controller_owner(pod) if pod is not None else None
    if owner is None or (owner.get("kind"), owner.get("name")) != (
        "StatefulSet",
        names.statefulset(meta["name"]),
    ):
        return None
    return pod


def pod_server(pod: Obj) -> list[ObjectKey]:
    """A pod's change -> its DittoServer (named by the pod's instance label)."""
    server = (pod["metadata"].get("labels") or {}).get(LABEL_INSTANCE)
    return [ObjectKey(pod["metadata"]["namespace"], server)] if server else []
