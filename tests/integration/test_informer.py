"""The informer against the real API server: ordering, outages and compaction."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp import web

from dittofs_controller.kube.client import KubeClient, connect
from dittofs_controller.kube.resources import CONFIGMAPS, ObjectKey
from dittofs_controller.runtime.informer import EventType, Informer, ResourceCache
from dittofs_controller.runtime.store import BY_CONTROLLER_UID, Obj
from tests.support.apiproxy import is_watch, running_proxy


class Recorder:
    """Collects (event, name) pairs and lets a test wait for a condition on them."""

    def __init__(self) -> None:
        self.events: list[tuple[EventType, str]] = []
        self.replaced: list[Obj | None] = []  # the object each event replaced
        self._changed = asyncio.Event()

    def __call__(self, kind: EventType, obj: Obj, old: Obj | None) -> None:
        self.events.append((kind, obj["metadata"]["name"]))
        self.replaced.append(old)
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
    # An update comes with the object it replaced, so a predicate can tell what changed.
    events = zip(recorder.events, recorder.replaced, strict=True)
    added, modified, deleted = (old for (_, name), old in events if name == "a")
    assert added is None and deleted is None
    assert modified is not None and modified["data"] == {"v": "1"}


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


class StallingProxy:
    """A TCP proxy to the API server whose open connections can be frozen: bytes stop flowing
    but the sockets stay open, like a half-dead connection through a broken load balancer."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.connections = 0
        self._frozen: list[asyncio.Event] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def freeze_open_connections(self) -> None:
        for gate in self._frozen:
            gate.clear()
        self._frozen.clear()

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        gate = asyncio.Event()
        gate.set()
        self._frozen.append(gate)
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    await gate.wait()
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def test_a_silent_watch_is_abandoned_and_resumed(
    kube: KubeClient, namespace: str, control_plane: object
) -> None:
    from urllib.parse import urlsplit

    from dittofs_controller.kube.client import connect

    server = urlsplit(control_plane.server_url)  # type: ignore[attr-defined]
    proxy = StallingProxy(server.hostname or "127.0.0.1", server.port or 443)
    await proxy.start()
    proxied = await connect(str(control_plane.kubeconfig_path), None)  # type: ignore[attr-defined]
    proxied._api.configuration.host = f"https://127.0.0.1:{proxy.port}"
    informer = Informer(
        proxied, CONFIGMAPS, namespace=namespace, inactivity_timeout=2, backoff_initial=0.1
    )
    recorder = Recorder()
    informer.add_handler(recorder)
    try:
        async with running(informer):
            await asyncio.wait_for(informer.synced.wait(), 10)
            # A change seen after the sync came over the watch: it is open, on a connection
            # the freeze below catches.
            await kube.create(CONFIGMAPS, configmap(namespace, "before-stall"), namespace)
            await recorder.wait_for(lambda: bool(recorder.of("before-stall")), timeout=10)
            before = proxy.connections
            proxy.freeze_open_connections()
            await kube.create(CONFIGMAPS, configmap(namespace, "during-stall"), namespace)
            # Without the watchdog the frozen watch would hang until the server-side timeout
            # (minutes); with it the informer reconnects and catches up within seconds.
            await recorder.wait_for(lambda: bool(recorder.of("during-stall")), timeout=15)
        assert proxy.connections > before
    finally:
        await proxied.close()
        await proxy.stop()


async def test_a_watch_that_ends_at_once_backs_off(
    kube: KubeClient, namespace: str, tmp_path: Path
) -> None:
    path = CONFIGMAPS.path(namespace)

    async def close_watches(request: web.Request) -> web.StreamResponse | None:
        return web.json_response(text="") if is_watch(request, path) else None

    async with running_proxy(kube, close_watches) as proxy:
        proxied = await connect(str(proxy.kubeconfig(tmp_path / "kubeconfig")), None)
        informer = Informer(proxied, CONFIGMAPS, namespace=namespace, backoff_initial=0.5)
        try:
            async with running(informer):
                await asyncio.wait_for(informer.synced.wait(), 10)
                await asyncio.sleep(4)
        finally:
            await proxied.close()
    # Backing off 0.5, 1, 2 s (+ up to 50 % jitter) leaves room for 4 watches at most; without
    # the backoff it reconnects hundreds of times.
    assert 1 <= proxy.watches(path) <= 4
