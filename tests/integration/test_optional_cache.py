"""OptionalCache on the real API server: a CRD absent, installed, removed and installed again."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from dittofs_controller.kube.client import APPLY_PATCH, ApiError, KubeClient, connect
from dittofs_controller.kube.resources import CRDS, ObjectKey, Resource
from dittofs_controller.runtime.informer import EventType
from dittofs_controller.runtime.optional import OptionalCache
from dittofs_controller.runtime.store import Obj
from tests.integration.test_informer import Recorder
from tests.support.apiproxy import is_watch, running_proxy


def widgets() -> Resource:
    """A kind of its own per test: CRDs are cluster-wide and the control plane is shared."""
    return Resource(f"t{uuid.uuid4().hex[:8]}.optional.dittofs.io", "v1", "widgets", "Widget")


def widget_crd(resource: Resource) -> Obj:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{resource.plural}.{resource.group}"},
        "spec": {
            "group": resource.group,
            "names": {"plural": resource.plural, "kind": resource.kind, "singular": "widget"},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": resource.version,
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }


async def install(kube: KubeClient, resource: Resource) -> None:
    crd = widget_crd(resource)
    await kube.request(
        "PATCH",
        CRDS.path(name=crd["metadata"]["name"]),
        query={"fieldManager": "dittofs-tests", "force": "true"},
        body=crd,
        content_type=APPLY_PATCH,
    )


async def uninstall(kube: KubeClient, resource: Resource) -> None:
    name = f"{resource.plural}.{resource.group}"
    await kube.delete(CRDS, name)
    async with asyncio.timeout(60):
        while True:
            if await kube.get_or_none(CRDS, name) is None:
                return
            await asyncio.sleep(0.1)


async def create_widget(kube: KubeClient, resource: Resource, namespace: str, name: str) -> None:
    """Create a widget, retrying while the freshly installed CRD is not served yet."""
    body = {
        "apiVersion": resource.api_version,
        "kind": resource.kind,
        "metadata": {"name": name, "namespace": namespace},
    }
    async with asyncio.timeout(30):
        while True:
            try:
                await kube.create(resource, body, namespace)
                return
            except ApiError as error:
                if error.status != 404:
                    raise
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def running(cache: OptionalCache) -> AsyncIterator[None]:
    task = asyncio.create_task(cache.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_an_absent_crd_does_not_hold_up_sync_and_is_picked_up_when_installed(
    kube: KubeClient, namespace: str
) -> None:
    resource = widgets()
    cache = OptionalCache(kube, resource, namespaces=[namespace])
    recorder = Recorder()
    cache.add_handler(recorder)
    crd_events = Recorder()
    cache.crd.add_handler(crd_events)
    async with running(cache):
        await asyncio.wait_for(cache.wait_synced(), 10)
        assert not cache.installed
        assert not await cache.wait_listed(0.1)
        assert cache.objects() == []

        try:
            await install(kube, resource)
            await crd_events.wait_for(lambda: bool(crd_events.events))
            assert cache.installed
            assert await cache.wait_listed(30)
            await create_widget(kube, resource, namespace, "first")
            await recorder.wait_for(lambda: EventType.ADDED in recorder.of("first"))
            assert cache.get(ObjectKey(namespace, "first")) is not None
            # Only the one CRD is watched (field selector), not every CRD of the cluster.
            assert [crd["metadata"]["name"] for crd in cache.crd.objects()] == [cache.crd_name]

            await uninstall(kube, resource)
            await crd_events.wait_for(lambda: EventType.DELETED in crd_events.of(cache.crd_name))
            assert not cache.installed
            assert cache.get(ObjectKey(namespace, "first")) is None
            assert not await cache.wait_listed(0.1)

            await install(kube, resource)  # reinstalled: a fresh inner cache starts
            await create_widget(kube, resource, namespace, "second")
            await recorder.wait_for(lambda: EventType.ADDED in recorder.of("second"))
            assert await cache.wait_listed(30)
            assert cache.get(ObjectKey(namespace, "second")) is not None
        finally:
            await uninstall(kube, resource)


async def test_a_present_crd_syncs_only_after_its_objects_are_listed(
    kube: KubeClient, namespace: str
) -> None:
    resource = widgets()
    await install(kube, resource)
    try:
        await create_widget(kube, resource, namespace, "existing")
        cache = OptionalCache(kube, resource, namespaces=[namespace])
        cache.add_index("by-name", lambda obj: [obj["metadata"]["name"]])
        async with running(cache):
            await asyncio.wait_for(cache.wait_synced(), 10)
            assert cache.installed
            assert [w["metadata"]["name"] for w in cache.by_index("by-name", "existing")] == [
                "existing"
            ]
    finally:
        await uninstall(kube, resource)


async def test_a_dead_inner_informer_ends_the_cache(
    kube: KubeClient, namespace: str, tmp_path: Path
) -> None:
    resource = widgets()
    path = resource.path(namespace)

    async def malformed_watch(request: web.Request) -> web.StreamResponse | None:
        if is_watch(request, path):  # an event without metadata: the inner informer dies
            return web.json_response({"type": "ADDED", "object": {}})
        return None

    await install(kube, resource)
    try:
        async with running_proxy(kube, malformed_watch) as proxy:
            proxied = await connect(str(proxy.kubeconfig(tmp_path / "kubeconfig")), None)
            try:
                cache = OptionalCache(proxied, resource, namespaces=[namespace])
                # Its run() ends, so the manager sees it (it ran on, cache frozen, before).
                with pytest.raises(ExceptionGroup) as raised:
                    await asyncio.wait_for(cache.run(), 30)
            finally:
                await proxied.close()
        assert raised.group_contains(KeyError)
    finally:
        await uninstall(kube, resource)
