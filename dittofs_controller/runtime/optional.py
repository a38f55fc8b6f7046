"""A cache of a custom resource whose CRD may be missing, installed or removed at run time.

A plain ResourceCache of a kind the API server does not serve never syncs: a controller watching
it would never start its workers and the manager would never turn ready. An OptionalCache
watches the CRD instead (metadata only, that one object by field selector, so RBAC can grant it
by resourceNames) and runs an ordinary ResourceCache of the kind only while the CRD exists.

Invariants:
- It counts as synced once it has decided: the CRD is absent (nothing to cache) or the inner
  cache has listed. Like an informer's, `synced` is never cleared afterwards.
- CRD created: a fresh inner cache starts with every handler and index registered so far; its
  first list reports the existing objects as ADDED, so watchers catch up by themselves.
- CRD deleted: the inner cache stops and is dropped (the API server deletes the custom objects
  before the CRD, so handlers have already seen them go).
- Reads answer from the inner cache, or nothing while there is none.
- Handlers of the CRD itself (`crd.add_handler`, or a controller watching `crd`) run after the
  cache has started or stopped its inner cache, so they see the new state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from dittofs_controller.kube.client import KubeClient
from dittofs_controller.kube.resources import CRDS, ObjectKey, Resource
from dittofs_controller.runtime.informer import EventType, Handler, ResourceCache
from dittofs_controller.runtime.store import IndexFunc, Obj


def crd_name(resource: Resource) -> str:
    """A CRD is always named <plural>.<group>."""
    return f"{resource.plural}.{resource.group}"


class OptionalCache:
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
        self.crd_name = crd_name(resource)
        self.crd = ResourceCache(
            client,
            CRDS,
            field_selector=f"metadata.name={self.crd_name}",
            metadata_only=True,
            **informer_options,
        )
        self.crd.add_handler(self._on_crd)
        self._inner_args: dict[str, Any] = {
            "namespaces": namespaces,
            "label_selector": label_selector,
            **informer_options,
        }
        self._client = client
        self._handlers: list[Handler] = []
        self._indexes: list[tuple[str, IndexFunc]] = []
        self._inner: ResourceCache | None = None
        self._task: asyncio.Task[None] | None = None
        self._group: asyncio.TaskGroup | None = None
        self._synced = asyncio.Event()

    @property
    def installed(self) -> bool:
        """The CRD exists and is not being deleted (the kind may take a moment to be served)."""
        crd = self.crd.get(ObjectKey("", self.crd_name))
        return crd is not None and not crd["metadata"].get("deletionTimestamp")

    @property
    def has_synced(self) -> bool:
        return self._synced.is_set()

    @property
    def last_error(self) -> str | None:
        inner = self._inner.last_error if self._inner is not None else None
        return self.crd.last_error or inner

    async def wait_synced(self) -> None:
        await self._synced.wait()

    async def wait_listed(self, timeout: float) -> bool:
        """Whether the kind is cached, waiting up to `timeout` s for the first list after the
        CRD appeared (it is served a moment after it is created). False while it is absent."""
        inner = self._inner
        if inner is None:
            return False
        try:
            await asyncio.wait_for(inner.wait_synced(), timeout)
        except TimeoutError:
            return False
        return True

    async def run(self) -> None:
        """Watch the CRD and run the inner cache while it exists, until cancelled. The inner
        cache runs in the same task group, so its failure ends this one (and is noticed)."""
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                group.create_task(self.crd.run(), name=f"informer-crd-{self.crd_name}")
                await self.crd.wait_synced()
                if self._inner is None:
                    self._synced.set()
        finally:
            self._group = None
            self._stop()

    def _on_crd(self, kind: EventType, _: Obj, __: Obj | None) -> None:
        if kind is EventType.DELETED:
            self._stop()
            if self.crd.has_synced:
                self._synced.set()
        elif self._inner is None:
            self._start()

    def _start(self) -> None:
        inner = ResourceCache(self._client, self.resource, **self._inner_args)
        for name, func in self._indexes:
            inner.add_index(name, func)
        for handler in self._handlers:
            inner.add_handler(handler)
        self._inner = inner
        assert self._group is not None, "the CRD's handlers run only inside run()"
        self._task = self._group.create_task(
            self._serve(inner), name=f"cache-{self.resource.plural}"
        )

    async def _serve(self, inner: ResourceCache) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(inner.run(), name=f"informer-{self.resource.plural}")
            await inner.wait_synced()
            self._synced.set()

    def _stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._inner = self._task = None

    # The ResourceCache interface, served by the inner cache.

    def add_handler(self, handler: Handler) -> None:
        self._handlers.append(handler)
        if self._inner is not None:
            self._inner.add_handler(handler)

    def add_index(self, name: str, func: IndexFunc) -> None:
        self._indexes.append((name, func))
        if self._inner is not None:
            self._inner.add_index(name, func)

    def get(self, key: ObjectKey) -> Obj | None:
        return self._inner.get(key) if self._inner is not None else None

    def objects(self, namespace: str | None = None) -> list[Obj]:
        return self._inner.objects(namespace) if self._inner is not None else []

    def by_index(self, index: str, value: str) -> list[Obj]:
        return self._inner.by_index(index, value) if self._inner is not None else []
