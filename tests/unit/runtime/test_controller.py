"""The controller's result handling, timeouts and metrics, with an in-memory reconciler."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from dittofs_controller.kube.resources import CONFIGMAPS, ObjectKey
from dittofs_controller.runtime import metrics
from dittofs_controller.runtime.controller import (
    DONE,
    CacheSyncTimeout,
    Controller,
    Result,
    TerminalError,
)
from dittofs_controller.runtime.informer import EventType, Handler
from dittofs_controller.runtime.ratelimit import ItemExponentialFailureRateLimiter
from dittofs_controller.runtime.store import Obj
from dittofs_controller.runtime.workqueue import WorkQueue

KEY = ObjectKey("ns", "server")


class Scripted:
    """A reconciler whose behaviour per call is given by a list of callables."""

    def __init__(self, *steps: Callable[[], Awaitable[Result]]) -> None:
        self.steps = list(steps)
        self.calls = 0
        self.called = asyncio.Event()

    async def reconcile(self, key: ObjectKey) -> Result:
        step = self.steps[min(self.calls, len(self.steps) - 1)]
        self.calls += 1
        self.called.set()
        return await step()


async def done() -> Result:
    return DONE


async def fail() -> Result:
    raise RuntimeError("boom")


async def terminal() -> Result:
    raise TerminalError("invalid spec")


async def hang() -> Result:
    await asyncio.sleep(3600)
    return DONE


def requeue_after(delay: float) -> Callable[[], Awaitable[Result]]:
    async def step() -> Result:
        return Result(requeue_after=delay)

    return step


@contextlib.asynccontextmanager
async def running(controller: Controller) -> AsyncIterator[None]:
    task = asyncio.create_task(controller.run())
    try:
        yield
    finally:
        await controller.shut_down(1)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def make(name: str, reconciler: Scripted, timeout: float = 5.0) -> Controller:
    queue: WorkQueue[ObjectKey] = WorkQueue(
        name, ItemExponentialFailureRateLimiter(base=0.01, max_delay=0.05)
    )
    return Controller(name, reconciler, workers=2, reconcile_timeout=timeout, queue=queue)


async def wait_calls(reconciler: Scripted, count: int) -> None:
    async with asyncio.timeout(5):
        while reconciler.calls < count:
            reconciler.called.clear()
            await reconciler.called.wait()


def sample(name: str, controller: str, **labels: str) -> float:
    value = metrics.REGISTRY.get_sample_value(name, {"controller": controller, **labels})
    return value or 0.0


async def test_errors_are_retried_with_backoff_until_success() -> None:
    reconciler = Scripted(fail, fail, done)
    controller = make("retry", reconciler)
    async with running(controller):
        controller.queue.add(KEY)
        await wait_calls(reconciler, 3)
        await asyncio.sleep(0.05)
    assert reconciler.calls == 3
    assert controller.queue.num_requeues(KEY) == 0  # success forgot the failures
    assert sample("controller_runtime_reconcile_errors_total", "retry") == 2
    assert sample("controller_runtime_reconcile_total", "retry", result="success") == 1


async def test_terminal_errors_are_not_retried() -> None:
    reconciler = Scripted(terminal)
    controller = make("terminal", reconciler)
    async with running(controller):
        controller.queue.add(KEY)
        await wait_calls(reconciler, 1)
        await asyncio.sleep(0.2)
    assert reconciler.calls == 1
    assert sample("controller_runtime_terminal_reconcile_errors_total", "terminal") == 1
    # As in controller-runtime, a terminal error is an error too: alerts on errors_total see it.
    assert sample("controller_runtime_reconcile_errors_total", "terminal") == 1


async def test_requeue_after_runs_the_key_again_later() -> None:
    reconciler = Scripted(requeue_after(0.05), done)
    controller = make("requeue", reconciler)
    async with running(controller):
        controller.queue.add(KEY)
        await wait_calls(reconciler, 2)
    assert sample("controller_runtime_reconcile_total", "requeue", result="requeue_after") == 1


async def test_a_reconcile_over_its_timeout_is_cancelled_and_retried() -> None:
    reconciler = Scripted(hang, done)
    controller = make("timeout", reconciler, timeout=0.05)
    async with running(controller):
        controller.queue.add(KEY)
        await wait_calls(reconciler, 2)
    assert sample("controller_runtime_reconcile_errors_total", "timeout") == 1


async def test_shutdown_waits_for_the_reconcile_in_flight() -> None:
    finished = asyncio.Event()

    async def slow() -> Result:
        await asyncio.sleep(0.1)
        finished.set()
        return DONE

    reconciler = Scripted(slow)
    controller = make("drain", reconciler)
    task = asyncio.create_task(controller.run())
    controller.queue.add(KEY)
    await reconciler.called.wait()
    assert await controller.shut_down(2) is True
    assert finished.is_set()
    await asyncio.wait_for(task, 1)


@pytest.mark.parametrize("workers", [1, 3])
async def test_one_key_is_never_reconciled_concurrently(workers: int) -> None:
    active = 0
    overlap = False

    async def watched() -> Result:
        nonlocal active, overlap
        active += 1
        overlap = overlap or active > 1
        await asyncio.sleep(0.01)
        active -= 1
        return DONE

    reconciler = Scripted(watched)
    controller = Controller(f"serial-{workers}", reconciler, workers=workers)
    async with running(controller):
        for _ in range(20):
            controller.queue.add(KEY)
            await asyncio.sleep(0.002)
        await asyncio.sleep(0.1)
    assert reconciler.calls >= 2
    assert not overlap


class Source:
    """Hands a controller's handlers the events a test makes up (an informer stand-in); one
    with a `last_error` never syncs."""

    resource = CONFIGMAPS

    def __init__(self, last_error: str | None = None) -> None:
        self.handlers: list[Handler] = []
        self.last_error = last_error
        self.has_synced = last_error is None

    def add_handler(self, handler: Handler) -> None:
        self.handlers.append(handler)

    async def wait_synced(self) -> None:
        if not self.has_synced:
            await asyncio.Event().wait()

    def emit(self, kind: EventType, obj: Obj, old: Obj | None = None) -> None:
        for handler in self.handlers:
            handler(kind, obj, old)


def child(*owners: str) -> Obj:
    refs = [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": name, "uid": name, "controller": True}
        for name in owners
    ]
    return {"metadata": {"name": "child", "namespace": "ns", "ownerReferences": refs}}


async def drained(queue: WorkQueue[ObjectKey]) -> list[str]:
    keys = []
    while len(queue):
        key = await queue.get()
        keys.append(key.name)
        queue.done(key)
    return keys


async def test_a_child_reaches_its_owner_and_the_owner_it_just_lost() -> None:
    source = Source()
    controller = Controller("c", Scripted(done)).owns(source, CONFIGMAPS)
    source.emit(EventType.ADDED, child("first"))
    assert await drained(controller.queue) == ["first"]
    source.emit(EventType.MODIFIED, child(), child("first"))  # ownerReference removed by hand
    assert await drained(controller.queue) == ["first"]
    source.emit(EventType.MODIFIED, child("second"), child())
    assert await drained(controller.queue) == ["second"]
    source.emit(EventType.DELETED, child("second"))
    assert await drained(controller.queue) == ["second"]
    source.emit(EventType.ADDED, child())  # a new child of that name: nobody lost it
    assert await drained(controller.queue) == []


def test_a_predicate_filters_updates_but_never_creates_or_deletes() -> None:
    source = Source()
    controller = make("predicate", Scripted(done))
    controller.watch(source, predicate=lambda old, new: old["spec"] != new["spec"])
    old = {"metadata": {"name": "server", "namespace": "ns"}, "spec": 1}
    touched = {**old, "status": "new"}
    source.emit(EventType.MODIFIED, touched, old)
    assert len(controller.queue) == 0
    source.emit(EventType.MODIFIED, {**old, "spec": 2}, old)
    assert len(controller.queue) == 1
    unwatched = make("predicate-create", Scripted(done))
    unwatched.watch(source, predicate=lambda old, new: False)
    source.emit(EventType.ADDED, old)
    source.emit(EventType.DELETED, old)
    assert len(unwatched.queue) == 1  # the delete found the key still waiting


async def test_a_delayed_watch_makes_one_pass_of_a_burst_of_changes() -> None:
    reconciler = Scripted(done)
    source = Source()
    controller = make("coalesce", reconciler)
    controller.watch(source, delay=0.2)
    server = {"metadata": {"name": "server", "namespace": "ns"}}
    async with running(controller):
        for _ in range(5):
            source.emit(EventType.MODIFIED, server, server)
            await asyncio.sleep(0.02)
        assert reconciler.calls == 0  # nothing before the delay
        await wait_calls(reconciler, 1)
        await asyncio.sleep(0.3)
    assert reconciler.calls == 1
    retries = metrics.REGISTRY.get_sample_value("workqueue_retries_total", {"name": "coalesce"})
    assert not retries  # waiting for the burst to end is not a retry


async def test_caches_that_never_sync_fail_the_start_naming_the_resource_and_the_error() -> None:
    forbidden = '403 Forbidden: User "x" cannot list resource "configmaps"'
    controller = make("unsynced", Scripted(done)).watch(Source()).watch(Source(forbidden))
    with pytest.raises(CacheSyncTimeout) as raised:
        await controller.run(cache_sync_timeout=0.05)
    assert str(raised.value) == f"caches not synced after 0.05 s: configmaps ({forbidden})"
