"""A controller: informer events -> keys on a rate-limited queue -> N reconcile workers.

Invariants:
- One key is never reconciled by two workers at once (the queue guarantees it).
- A reconcile returns a Result (done, or requeue after a delay) or raises: TerminalError means
  the input is invalid and retrying cannot help (the reconciler reports it in status), any other
  exception is retried with per-key exponential backoff; success forgets the failure count.
- Every reconcile runs under a timeout, with a reconcile ID bound into the log context and an
  OpenTelemetry span around it.
- Workers start only after every informer the controller reads has synced.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Protocol

import aiohttp
import attrs
import structlog
from opentelemetry import trace

from dittofs_controller.kube.client import ApiError
from dittofs_controller.kube.resources import ObjectKey, Resource
from dittofs_controller.runtime import metrics
from dittofs_controller.runtime.informer import EventType, Handler
from dittofs_controller.runtime.store import Obj, controller_owner
from dittofs_controller.runtime.workqueue import ShutDown, WorkQueue

log = structlog.get_logger("dittofs_controller.controller")
tracer = trace.get_tracer("dittofs_controller")


@attrs.frozen
class Result:
    """What a reconcile asks for next: nothing, or another pass after `requeue_after` seconds."""

    requeue_after: float | None = None


DONE = Result()


class ExpectedError(Exception):
    """A failure the reconciler anticipated: retried with backoff, logged without a traceback."""


# Failures whose traceback says nothing the message does not: API answers, timeouts, network.
_QUIET_ERRORS = (ExpectedError, ApiError, TimeoutError, aiohttp.ClientError)


class TerminalError(Exception):
    """The object's spec is invalid: retrying cannot help until the user changes it."""


class Reconciler(Protocol):
    async def reconcile(self, key: ObjectKey) -> Result: ...


KeyMapper = Callable[[Obj], Iterable[ObjectKey]]
# (old, new) -> whether an update is worth a pass (controller-runtime's update predicates).
# Creates and deletes always are.
Predicate = Callable[[Obj, Obj], bool]


class Source(Protocol):
    """What a controller watches: a ResourceCache, or an OptionalCache of a CRD that may be
    missing (its wait_synced returns once it knows the CRD is absent)."""

    resource: Resource

    @property
    def has_synced(self) -> bool: ...

    @property
    def last_error(self) -> str | None: ...

    def add_handler(self, handler: Handler) -> None: ...

    async def wait_synced(self) -> None: ...


class CacheSyncTimeout(Exception):
    """A cache did not sync in time: a list RBAC forbids, say, would otherwise hang for ever."""


def owner_mapper(owner: Resource) -> KeyMapper:
    """Map an owned object to its controller owner's key, when the owner is of kind `owner`."""

    def mapper(obj: Obj) -> Iterable[ObjectKey]:
        ref = controller_owner(obj)
        if ref and ref.get("kind") == owner.kind and ref.get("apiVersion") == owner.api_version:
            return (ObjectKey(obj["metadata"].get("namespace") or "", ref["name"]),)
        return ()

    return mapper


def _self_key(obj: Obj) -> Iterable[ObjectKey]:
    return (ObjectKey.of(obj),)


class Controller:
    def __init__(
        self,
        name: str,
        reconciler: Reconciler,
        *,
        workers: int = 2,
        reconcile_timeout: float = 60.0,
        queue: WorkQueue[ObjectKey] | None = None,
    ) -> None:
        self.name = name
        self.reconciler = reconciler
        self.workers = workers
        self.reconcile_timeout = reconcile_timeout
        self.queue: WorkQueue[ObjectKey] = queue or WorkQueue(name)
        self._caches: list[Source] = []
        self._log = log.bind(controller=name)

    def watch(
        self,
        cache: Source,
        mapper: KeyMapper = _self_key,
        *,
        predicate: Predicate | None = None,
        delay: float = 0.0,
    ) -> Controller:
        """Enqueue the keys `mapper` derives from every change `cache` sees; an update only
        when `predicate(old, new)` holds, if one is given. With a `delay`, a key is queued that
        long after the first change, so the changes of a burst make one pass."""

        def handler(_: EventType, obj: Obj, old: Obj | None) -> None:
            if predicate is not None and old is not None and not predicate(old, obj):
                return
            for key in mapper(obj):
                self.queue.add_after(key, delay, retry=False)

        cache.add_handler(handler)
        self._caches.append(cache)
        return self

    def owns(self, cache: Source, owner: Resource) -> Controller:
        """Enqueue the owner of every changed child, so edited or deleted children are restored.

        The owner a child had before an update is enqueued too (as client-go maps both the old
        and the new object): a child whose ownerReference was removed or replaced by hand still
        reaches the owner that lost it.
        """
        mapper = owner_mapper(owner)

        def handler(kind: EventType, obj: Obj, old: Obj | None) -> None:
            previous = mapper(old) if old is not None else []
            for key in dict.fromkeys((*previous, *mapper(obj))):
                self.queue.add(key)

        cache.add_handler(handler)
        self._caches.append(cache)
        return self

    async def run(self, cache_sync_timeout: float | None = None) -> None:
        """Wait for the caches, then reconcile until cancelled or the queue shuts down.

        Raises CacheSyncTimeout, naming each unsynced resource and why its list fails (the API
        server's answer names a missing permission), when they take over `cache_sync_timeout`.
        """
        try:
            async with asyncio.timeout(cache_sync_timeout):
                for cache in self._caches:
                    await cache.wait_synced()
        except TimeoutError:
            unsynced = [
                f"{cache.resource.plural} ({cache.last_error or 'no error yet'})"
                for cache in self._caches
                if not cache.has_synced
            ]
            raise CacheSyncTimeout(
                f"caches not synced after {cache_sync_timeout:g} s: {', '.join(unsynced)}"
            ) from None
        metrics.init_controller_metrics(self.name, self.workers)
        self._log.info("starting workers", workers=self.workers)
        async with asyncio.TaskGroup() as group:
            for index in range(self.workers):
                group.create_task(self._worker(), name=f"{self.name}-worker-{index}")

    async def _worker(self) -> None:
        while True:
            try:
                key = await self.queue.get()
            except ShutDown:
                return
            try:
                await self._process(key)
            finally:
                self.queue.done(key)

    async def _process(self, key: ObjectKey) -> None:
        reconcile_id = uuid.uuid4().hex[:12]
        started = time.monotonic()
        active = metrics.ACTIVE_WORKERS.labels(self.name)
        active.inc()
        with (
            structlog.contextvars.bound_contextvars(
                controller=self.name, key=str(key), reconcile_id=reconcile_id
            ),
            tracer.start_as_current_span(
                f"reconcile {self.name}",
                attributes={"controller": self.name, "key": str(key), "reconcile_id": reconcile_id},
            ) as span,
        ):
            try:
                async with asyncio.timeout(self.reconcile_timeout):
                    result = await self.reconciler.reconcile(key)
            except TerminalError as error:
                self.queue.forget(key)
                metrics.RECONCILE_TOTAL.labels(self.name, "error").inc()
                metrics.RECONCILE_ERRORS.labels(self.name).inc()
                metrics.TERMINAL_RECONCILE_ERRORS.labels(self.name).inc()
                span.record_exception(error)
                self._log.warning("reconcile failed permanently", error=str(error))
            except Exception as error:
                self.queue.add_rate_limited(key)
                metrics.RECONCILE_TOTAL.labels(self.name, "error").inc()
                metrics.RECONCILE_ERRORS.labels(self.name).inc()
                span.record_exception(error)
                span.set_status(trace.StatusCode.ERROR, str(error))
                self._log.warning(
                    "reconcile failed; will retry",
                    error=str(error) or type(error).__name__,
                    retries=self.queue.num_requeues(key),
                    exc_info=not isinstance(error, _QUIET_ERRORS),
                )
            else:
                self.queue.forget(key)
                if result.requeue_after is not None:
                    self.queue.add_after(key, result.requeue_after)
                    metrics.RECONCILE_TOTAL.labels(self.name, "requeue_after").inc()
                else:
                    metrics.RECONCILE_TOTAL.labels(self.name, "success").inc()
            finally:
                active.dec()
                metrics.RECONCILE_TIME.labels(self.name).observe(time.monotonic() - started)

    async def shut_down(self, timeout: float) -> bool:
        """Stop taking keys and let in-flight reconciles finish; True when they all did."""
        return await self.queue.shut_down_with_drain(timeout)
