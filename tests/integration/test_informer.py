"""The informer against the real API server: ordering, outages and compaction."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest

from dittofs_controller.kube.client import KubeClient
from dittofs_controller.kube.resources import CONFIGMAPS, ObjectKey
from dittofs_controller.runtime.informer import EventType, Informer, ResourceCache
from dittofs_controller.runtime.store import BY_CONTROLLER_UID, Obj


class Recorder:
    """Collects (event, name) pairs and lets a test wait for a condition on them."""

    def __init__(self) -> None:
        self.events: list[tuple[EventType, str]] = []
        self._changed = asyncio.Event()

    def __call__(self, kind: EventType, obj: Obj) -> None:
        self.events.append((kind, obj["metadata"]["name"]))
        self._changed.set()

    def of(self, name: str) -> list[EventType]:
        return [kind for kind, seen in self.events if seen == name]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 30) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()


@contextlib.asynccontextmanager
async def running(runnable: Informer | ResourceCache) -> AsyncIterator[None]:
    task = asyncio.create_task(runnable.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def names(informer: Informer) -> set[str]:
    """Cached ConfigMap names, minus the one kube-controller-manager puts in every namespace."""
    return {key.name for key in informer.store.list_keys()} - {"kube-root-ca.crt"}


def configmap(namespace: str, name: str, **data: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": data,
    }


async def test_sees_creates_updates_and_deletes_in_order(kube: KubeClient, namespace: str) -> None:
    cache = ResourceCache(kube, CONFIGMAPS, namespaces=[namespace])
    recorder = Recorder()
    cache.add_handler(recorder)
    async with running(cache):
        await asyncio.wait_for(cache.wait_synced(), 10)
        await kube.create(CONFIGMAPS, configmap(namespace, "a", v="1"), namespace)
        await kube.merge_patch(CONFIGMAPS, "a", {"data": {"v": "2"}}, namespace)
        await kube.delete(CONFIGMAPS, "a", namespace)
        await recorder.wait_for(lambda: EventType.DELETED in recorder.of("a"))
    assert recorder.of("a") == [EventType.ADDED, EventType.MODIFIED, EventType.DELETED]
    assert cache.get(ObjectKey(namespace, "a")) is None


async def test_cache_is_scoped_by_namespace_and_label(kube: KubeClient, namespace: str) -> None:
    labelled = configmap(namespace, "mine")
    labelled["metadata"]["labels"] = {"app": "dittofs"}
    await kube.create(CONFIGMAPS, labelled, namespace)
    await kube.create(CONFIGMAPS, configmap(namespace, "other"), namespace)
    cache = ResourceCache(kube, CONFIGMAPS, namespaces=[namespace], label_selector="app=dittofs")
    async with running(cache):
        await asyncio.wait_for(cache.wait_synced(), 10)
        assert [obj["metadata"]["name"] for obj in cache.objects(namespace)] == ["mine"]
        assert "managedFields" not in cache.objects()[0]["metadata"]


async def test_owner_index_follows_changes(kube: KubeClient, namespace: str) -> None:
    owner = await kube.create(CONFIGMAPS, configmap(namespace, "owner"), namespace)
    child = configmap(namespace, "child")
    child["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "name": "owner",
            "uid": owner["metadata"]["uid"],
            "controller": True,
        }
    ]
    cache = ResourceCache(kube, CONFIGMAPS, namespaces=[namespace])
    recorder = Recorder()
    cache.add_handler(recorder)
    async with running(cache):
        await asyncio.wait_for(cache.wait_synced(), 10)
        await kube.create(CONFIGMAPS, child, namespace)
        await recorder.wait_for(lambda: bool(recorder.of("child")))
        owned = cache.by_index(BY_CONTROLLER_UID, owner["metadata"]["uid"])
        assert [obj["metadata"]["name"] for obj in owned] == ["child"]
        await kube.merge_patch(
            CONFIGMAPS, "child", {"metadata": {"ownerReferences": None}}, namespace
        )
        await recorder.wait_for(lambda: len(recorder.of("child")) == 2)
        assert cache.by_index(BY_CONTROLLER_UID, owner["metadata"]["uid"]) == []


async def test_no_change_is_missed_across_an_apiserver_restart(
    kube: KubeClient, namespace: str, control_plane: object
) -> None:
    await kube.create(CONFIGMAPS, configmap(namespace, "before"), namespace)
    informer = Informer(kube, CONFIGMAPS, namespace=namespace, backoff_initial=0.2, backoff_max=1)
    recorder = Recorder()
    informer.add_handler(recorder)
    async with running(informer):
        await asyncio.wait_for(informer.synced.wait(), 10)
        await asyncio.to_thread(control_plane.restart_apiserver)  # type: ignore[attr-defined]
        # The watch broke while the server was down; these changes land before it resumes.
        await kube.create(CONFIGMAPS, configmap(namespace, "after"), namespace)
        await kube.delete(CONFIGMAPS, "before", namespace)
        await recorder.wait_for(
            lambda: (
                recorder.of("after") == [EventType.ADDED]
                and recorder.of("before") == [EventType.ADDED, EventType.DELETED]
            )
        )
    assert names(informer) == {"after"}


async def test_relists_after_compaction_and_reports_the_delete_it_missed(
    kube: KubeClient, namespace: str, control_plane: object
) -> None:
    for name in ("kept", "doomed"):
        await kube.create(CONFIGMAPS, configmap(namespace, name), namespace)
    informer = Informer(kube, CONFIGMAPS, namespace=namespace, backoff_initial=0.2, backoff_max=1)
    recorder = Recorder()
    informer.add_handler(recorder)
    async with running(informer):
        await asyncio.wait_for(informer.synced.wait(), 10)
    # While the informer is not watching: a delete, a compaction past its resourceVersion, and
    # a restart so the API server's watch cache cannot replay the gap either.
    await kube.delete(CONFIGMAPS, "doomed", namespace)
    await kube.create(CONFIGMAPS, configmap(namespace, "newcomer"), namespace)
    await asyncio.to_thread(control_plane.compact_etcd)  # type: ignore[attr-defined]
    await asyncio.to_thread(control_plane.restart_apiserver)  # type: ignore[attr-defined]
    async with running(informer):
        await recorder.wait_for(
            lambda: EventType.DELETED in recorder.of("doomed") and bool(recorder.of("newcomer"))
        )
    assert recorder.of("doomed") == [EventType.ADDED, EventType.DELETED]
    assert recorder.of("kept") == [EventType.ADDED]
    assert names(informer) == {"kept", "newcomer"}


@pytest.mark.parametrize("late", [False, True])
async def test_handler_added_after_sync_is_replayed_the_cache(
    kube: KubeClient, namespace: str, late: bool
) -> None:
    await kube.create(CONFIGMAPS, configmap(namespace, "existing"), namespace)
    cache = ResourceCache(kube, CONFIGMAPS, namespaces=[namespace])
    recorder = Recorder()
    if not late:
        cache.add_handler(recorder)
    async with running(cache):
        await asyncio.wait_for(cache.wait_synced(), 10)
        if late:
            cache.add_handler(recorder)
        assert recorder.of("existing") == [EventType.ADDED]
