"""Deleting DittoServers on the real API server: the finalizers come and go without a conflict,
and the passes that come too late (from a cache that has not seen the deletion yet) write
nothing and log no error."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import cast

import pytest

from dittofs_controller.kube.client import REQUESTS, KubeClient
from dittofs_controller.kube.resources import DITTOSERVERS
from dittofs_controller.operator.base import Context, write_condition
from dittofs_controller.operator.conditions import Outcome
from dittofs_controller.operator.unseen import UnseenWrites
from tests.bench.operator_bench import dittoserver
from tests.integration.operator.conftest import RunningOperator, wait_for

FINALIZERS = {"dittofs.io/config", "dittofs.io/storage", "dittofs.io/database", "dittofs.io/server"}
SERVERS = [f"server-{index}" for index in range(3)]


def refused_patches() -> dict[str, float]:
    """PATCHes refused so far: 409 (a write on a stale copy, or an apply for an object gone)
    and 422 (an invalid one, or an apply that tried to create a deleted DittoServer again)."""
    return {code: REQUESTS.labels("PATCH", code)._value.get() for code in ("409", "422")}


async def test_deletion_removes_the_finalizers_without_recreating_or_errors(
    kube: KubeClient,
    namespace: str,
    operator: RunningOperator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Three reconcilers add and remove their finalizers at the same moments, while the others
    write status: applies of their own entries of the set never conflict (merge patches of the
    list under a resourceVersion met thousands of 409s in the soak)."""
    refused = refused_patches()
    for name in SERVERS:
        manifest = dittoserver(namespace, name)
        manifest["spec"]["deletionPolicy"] = "Delete"
        await kube.create(DITTOSERVERS, manifest, namespace)
    await wait_for(lambda: finalized(kube, namespace), "every finalizer on every DittoServer")
    assert refused_patches() == refused
    caplog.clear()
    for name in SERVERS:
        await kube.delete(DITTOSERVERS, name, namespace)
    await wait_for(lambda: all_gone(kube, namespace), "the DittoServers to go")
    # Passes queued from a cache that still shows a finalizer run after the object went (an
    # apply of the finalizer list then tried to create the DittoServer again: 422, no spec).
    # The summary's coalescing and the per-key backoff take well under this to run them.
    await asyncio.sleep(3)
    # A late pass's apply for a DittoServer gone meanwhile is refused as a 409 (uid mismatch).
    assert refused_patches()["422"] == refused["422"]
    assert warnings(caplog) == []


async def test_finalizers_an_older_version_added_by_merge_patch_still_go(
    kube: KubeClient,
    namespace: str,
    operator: RunningOperator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Entries written by a merge patch (as releases before the applies did) belong to no
    reconciler's field manager, so no apply removes them; they go by a tested JSON patch, and
    a finalizer of someone else's stays until its owner removes it."""
    manifest = dittoserver(namespace, "legacy")
    manifest["metadata"]["finalizers"] = [*sorted(FINALIZERS), "example.com/keep"]
    await kube.create(DITTOSERVERS, manifest, namespace)

    async def reconciled() -> bool:
        live = await kube.get(DITTOSERVERS, "legacy", namespace)
        return len((live.get("status") or {}).get("conditions") or ()) >= 4

    await wait_for(reconciled, "the DittoServer reconciled")
    caplog.clear()
    await kube.delete(DITTOSERVERS, "legacy", namespace)

    async def only_foreign_left() -> bool:
        live = await kube.get(DITTOSERVERS, "legacy", namespace)
        return live["metadata"].get("finalizers") == ["example.com/keep"]

    await wait_for(only_foreign_left, "the operator's finalizers removed")
    await kube.json_patch(
        DITTOSERVERS, "legacy", [{"op": "remove", "path": "/metadata/finalizers"}], namespace
    )
    await wait_for(lambda: all_gone(kube, namespace), "the DittoServer to go")
    assert warnings(caplog) == []


async def finalized(kube: KubeClient, namespace: str) -> bool:
    listed = await kube.request("GET", DITTOSERVERS.path(namespace))
    return len(listed["items"]) == len(SERVERS) and all(
        set(item["metadata"].get("finalizers") or ()) == FINALIZERS for item in listed["items"]
    )


async def all_gone(kube: KubeClient, namespace: str) -> bool:
    listed = await kube.request("GET", DITTOSERVERS.path(namespace))
    return not listed["items"]


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.levelno >= logging.WARNING and record.name.startswith("dittofs_controller")
    ]


async def test_a_condition_for_a_dittoserver_gone_meanwhile_is_dropped(
    dittoservers: KubeClient, namespace: str
) -> None:
    await dittoservers.create(DITTOSERVERS, dittoserver(namespace, "gone"), namespace)
    cached = await dittoservers.get(DITTOSERVERS, "gone", namespace)
    await dittoservers.delete(DITTOSERVERS, "gone", namespace)
    # Only the client and the unseen-writes record take part in a condition write.
    ctx = SimpleNamespace(client=dittoservers, unseen=UnseenWrites())
    outcome = Outcome.true("Rendered", "config rendered")
    written = await write_condition(
        cast(Context, ctx), cached, "ConfigReady", outcome, "dittofs-config"
    )
    assert written is None


async def test_a_condition_put_back_before_the_cache_showed_its_change_is_written(
    dittoservers: KubeClient, namespace: str
) -> None:
    """A pass judging from a stale copy that already shows the condition it wants must still
    write it when its own last write, not yet in the cache, said otherwise: nothing would queue
    the reconciler again (the soak's servers stuck on a Progressing that had been put back)."""
    await dittoservers.create(DITTOSERVERS, dittoserver(namespace, "back"), namespace)
    ctx = cast(Context, SimpleNamespace(client=dittoservers, unseen=UnseenWrites()))
    stopped = Outcome.false("Stopped", "no pod runs")
    fresh = await dittoservers.get(DITTOSERVERS, "back", namespace)
    assert await write_condition(ctx, fresh, "Progressing", stopped, "dittofs-server") is not None
    cached = await dittoservers.get(DITTOSERVERS, "back", namespace)  # shows Stopped

    waiting = Outcome.true("WaitingForDependencies", "waiting for the ConfigMap")
    assert await write_condition(ctx, cached, "Progressing", waiting, "dittofs-server")
    # The next pass, from the same cached copy (the write above is not in the cache yet).
    assert await write_condition(ctx, cached, "Progressing", stopped, "dittofs-server")
    # Or from a copy another manager's write moved on, still without ours.
    assert await write_condition(ctx, cached, "Progressing", waiting, "dittofs-server")
    other = Outcome.true("Rendered", "config rendered")
    moved = await write_condition(ctx, cached, "ConfigReady", other, "dittofs-config")
    assert moved is not None
    stale = await dittoservers.get(DITTOSERVERS, "back", namespace)
    stale["status"]["conditions"] = [  # as if the cache had the other write but not ours
        c for c in stale["status"]["conditions"] if c["type"] != "Progressing"
    ] + [c for c in cached["status"]["conditions"] if c["type"] == "Progressing"]
    assert await write_condition(ctx, stale, "Progressing", stopped, "dittofs-server")
    live = await dittoservers.get(DITTOSERVERS, "back", namespace)
    (progressing,) = [c for c in live["status"]["conditions"] if c["type"] == "Progressing"]
    assert (progressing["status"], progressing["reason"]) == ("False", "Stopped")
