"""List-then-watch informers that keep a Store in sync with the API server.

We own the list/watch loop instead of using kubernetes-asyncio's `Watch`, which retries a 410
with the same (useless) resourceVersion and hangs silently without a client timeout.

Invariants:
- Handlers see every change exactly as the store applies it: ADDED for a key new to the store,
  MODIFIED for a key whose resourceVersion changed (with the object it replaced, so a handler
  can tell what changed), DELETED for a key that left the store (including the synthetic
  deletes a relist finds for objects removed while we were not watching).
- After a relist the store holds exactly what the list returned.
- `synced` is set once the first list has been applied and is never cleared.
- A watch resumes from the last resourceVersion seen (event or bookmark); only 410 Gone, or an
  error the watch cannot resume from, costs a full relist.
- A watch that ends at once with no event counts as a failure: the next one waits out the
  backoff (client-go's "very short watch"), so a proxy closing every watch cannot make a
  reconnect storm.
- A watch silent for longer than `inactivity_timeout` (no event, no bookmark) is abandoned and
  resumed, so a half-dead connection cannot freeze the cache.
"""

from __future__ import annotations

import asyncio
import enum
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp
import structlog

from dittofs_controller.kube.client import (
    JSON_ACCEPT,
    METADATA_ACCEPT,
    METADATA_WATCH_ACCEPT,
    ApiError,
    KubeClient,
)
from dittofs_controller.kube.resources import ObjectKey, Resource
from dittofs_controller.runtime.store import BY_NAMESPACE, IndexFunc, Obj, Store

log = structlog.get_logger("dittofs_controller.informer")

LIST_PAGE_SIZE = 500
# client-go's bound: a watch that ends sooner, with no event, is "very short".
SHORT_WATCH_SECONDS = 1.0


class EventType(enum.Enum):
    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"


# (event, object, the object it replaced: set for MODIFIED only)
Handler = Callable[[EventType, Obj, Obj | None], None]


class _Relist(Exception):
    """The watch cannot resume from its resourceVersion: list again."""


class _ShortWatch(Exception):
    """A watch ended at once without an event (a proxy closing it, say): back off before the
    next one, as client-go does, instead of reconnecting in a tight loop."""


class Informer:
    """Caches one resource (optionally one namespace and a label selector) and fans out events.

    Handlers run synchronously on the informer's task: they must only enqueue work.
    """

    def __init__(
        self,
        client: KubeClient,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        metadata_only: bool = False,
        watch_timeout: float = 300.0,
        inactivity_timeout: float = 150.0,
        backoff_initial: float = 0.8,
        backoff_max: float = 30.0,
    ) -> None:
        self.client = client
        self.resource = resource
        self.namespace = namespace
        self.label_selector = label_selector
        # e.g. metadata.name=<name>: watch one object, which RBAC can grant by resourceNames.
        self.field_selector = field_selector
        self.metadata_only = metadata_only
        self.store = Store()
        self.synced = asyncio.Event()
        self._watch_timeout = watch_timeout
        self._inactivity_timeout = inactivity_timeout
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._handlers: list[Handler] = []
        self._resource_version = ""
        # Why the last list or watch failed (None since a list worked): why it is not synced.
        self.last_error: str | None = None
        self._log = log.bind(
            resource=resource.plural, namespace=namespace or "*", selector=label_selector or ""
        )

    def add_handler(self, handler: Handler) -> None:
        """Subscribe to changes; a handler added after sync is replayed the current contents."""
        self._handlers.append(handler)
        if self.synced.is_set():
            for obj in self.store:
                handler(EventType.ADDED, obj, None)

    async def run(self) -> None:
        """List and watch until cancelled; errors back off and retry, they never escape."""
        backoff = self._backoff_initial
        need_list = True
        while True:
            try:
                if need_list:
                    await self._list()
                    need_list = False
                await self._watch()
                backoff = self._backoff_initial
                continue
            except _Relist:
                need_list = True
                continue
            except asyncio.CancelledError:
                raise
            except (ApiError, aiohttp.ClientError, TimeoutError, ValueError, _ShortWatch) as error:
                self.last_error = str(error)
            delay = backoff * (1 + random.random() * 0.5)
            self._log.warning("list/watch failed; retrying", error=self.last_error, delay=delay)
            await asyncio.sleep(delay)
            backoff = min(backoff * 2, self._backoff_max)

    def _selector_query(self) -> dict[str, Any]:
        return {"labelSelector": self.label_selector, "fieldSelector": self.field_selector}

    async def _list(self) -> None:
        """Consistent, paginated list; replaces the store and emits the differences."""
        items: list[Obj] = []
        token: str | None = None
        path = self.resource.path(self.namespace)
        while True:
            page = await self.client.request(
                "GET",
                path,
                accept=METADATA_ACCEPT if self.metadata_only else JSON_ACCEPT,
                query={**self._selector_query(), "limit": LIST_PAGE_SIZE, "continue": token},
            )
            for item in page.get("items") or ():
                item.setdefault("apiVersion", self.resource.api_version)
                item.setdefault("kind", self.resource.kind)
                items.append(item)
            token = page["metadata"].get("continue") or None
            if not token:
                self._resource_version = page["metadata"]["resourceVersion"]
                break
        self._replace(items)
        self.last_error = None
        self._log.debug("listed", count=len(items), resource_version=self._resource_version)
        self.synced.set()

    def _replace(self, items: list[Obj]) -> None:
        listed = {ObjectKey.of(item) for item in items}
        for key in self.store.list_keys():
            if key not in listed:
                self._apply(EventType.DELETED, self.store.get(key) or {})
        for item in items:
            self._apply(EventType.MODIFIED, item)

    async def _watch(self) -> None:
        timeout_seconds = int(self._watch_timeout * (1 + random.random()))
        query = {
            **self._selector_query(),
            "watch": "true",
            "allowWatchBookmarks": "true",
            "resourceVersion": self._resource_version,
            "timeoutSeconds": timeout_seconds,
        }
        client_timeout = aiohttp.ClientTimeout(
            total=timeout_seconds + 30, sock_connect=10, sock_read=self._inactivity_timeout
        )
        started = time.monotonic()
        events = 0
        try:
            async for event in self.client.stream_lines(
                self.resource.path(self.namespace),
                query=query,
                timeout=client_timeout,
                accept=METADATA_WATCH_ACCEPT if self.metadata_only else JSON_ACCEPT,
            ):
                events += 1
                self._on_watch_event(event)
        except ApiError as error:
            if error.gone:
                raise _Relist from error
            raise
        lasted = time.monotonic() - started
        if not events and lasted < SHORT_WATCH_SECONDS:
            raise _ShortWatch(f"very short watch: it ended after {lasted:.3f} s with no event")

    def _on_watch_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            error = ApiError(
                int(obj.get("code") or 500), obj.get("reason", ""), obj.get("message", "")
            )
            self._log.info("watch ended with an error event", error=str(error))
            if error.gone:
                raise _Relist
            raise error
        self._resource_version = obj["metadata"]["resourceVersion"]
        if kind == "BOOKMARK":
            return
        obj.setdefault("apiVersion", self.resource.api_version)
        obj.setdefault("kind", self.resource.kind)
        self._apply(EventType.DELETED if kind == "DELETED" else EventType.MODIFIED, obj)

    def _apply(self, kind: EventType, obj: Obj) -> None:
        """Apply one change to the store and tell the handlers what it really was."""
        if kind is EventType.DELETED:
            old = self.store.remove(ObjectKey.of(obj))
            if old is None:
                return
            self._emit(EventType.DELETED, obj)
            return
        obj, old = self.store.upsert(obj)
        if old is None:
            self._emit(EventType.ADDED, obj)
        elif old["metadata"].get("resourceVersion") != obj["metadata"].get("resourceVersion"):
            self._emit(EventType.MODIFIED, obj, old)

    def _emit(self, kind: EventType, obj: Obj, old: Obj | None = None) -> None:
        for handler in self._handlers:
            try:
                handler(kind, obj, old)
            except Exception:
                self._log.exception("event handler failed", event=kind.value)


class ResourceCache:
    """One resource cached across the watched namespaces (one informer each, or one for all).

    Controllers read and subscribe here, never to a single informer, so the namespace scoping
    of the whole operator is decided in one place.
    """

    def __init__(
        self,
        client: KubeClient,
        resource: Resource,
        *,
        namespaces: Sequence[str] = (),
        label_selector: str | None = None,
        **informer_options: Any,
    ) -> None:
        self.resource = resource
        scopes: Sequence[str | None] = namespaces if resource.namespaced and namespaces else [None]
        self.informers = [
            Informer(
                client, resource, namespace=ns, label_selector=label_selector, **informer_options
            )
            for ns in scopes
        ]
        self._by_namespace = {informer.namespace: informer for informer in self.informers}

    @property
    def has_synced(self) -> bool:
        return all(informer.synced.is_set() for informer in self.informers)

    @property
    def last_error(self) -> str | None:
        """Why a list or watch of one of its informers last failed, if one did."""
        return next((i.last_error for i in self.informers if i.last_error), None)

    async def wait_synced(self) -> None:
        for informer in self.informers:
            await informer.synced.wait()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for informer in self.informers:
                group.create_task(informer.run(), name=f"informer-{self.resource.plural}")

    def add_handler(self, handler: Handler) -> None:
        for informer in self.informers:
            informer.add_handler(handler)

    def add_index(self, name: str, func: IndexFunc) -> None:
        for informer in self.informers:
            informer.store.add_index(name, func)

    def _informer_for(self, namespace: str) -> Informer | None:
        return self._by_namespace.get(namespace) or self._by_namespace.get(None)

    def get(self, key: ObjectKey) -> Obj | None:
        informer = self._informer_for(key.namespace)
        return informer.store.get(key) if informer else None

    def objects(self, namespace: str | None = None) -> list[Obj]:
        """Every cached object, or those of one namespace."""
        if namespace is None:
            return [obj for informer in self.informers for obj in informer.store]
        return self.by_index(BY_NAMESPACE, namespace)

    def by_index(self, index: str, value: str) -> list[Obj]:
        return [obj for informer in self.informers for obj in informer.store.by_index(index, value)]
