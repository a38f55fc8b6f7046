"""The manager: supervises caches, leader election, controllers and the health server.

It runs whatever controllers its caller registers (see `run`'s `setup`) and knows nothing of
what they reconcile, so the runtime stays a library below the operator.

Lifecycle:
- Caches start on every replica (a standby keeps them warm for a fast takeover) and /readyz
  turns ready once they have synced.
- Controllers run only while this replica holds the lease, once their caches have synced
  (within `cache_sync_timeout`, or exit 1). Losing the lease cancels them at once and the
  process exits 1, so the pod restarts clean (as controller-runtime does).
- SIGTERM/SIGINT: controllers stop taking work, in-flight reconciles get `shutdown_grace`
  seconds to finish, the lease is released, and the process exits 0; a lease lost meanwhile
  cancels them at once (exit 1).
- A supervised task (a cache, a controller, leader election) that dies unexpectedly stops the
  whole process (exit 1, logging which and why) instead of leaving a half-working operator
  behind: a dead informer would freeze its cache while /readyz stayed green.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from typing import Any

import structlog
from kubernetes_asyncio import config as k8s_config

from dittofs_controller.kube.client import KubeClient, connect
from dittofs_controller.kube.resources import Resource
from dittofs_controller.runtime.controller import Controller
from dittofs_controller.runtime.health import HealthServer
from dittofs_controller.runtime.informer import ResourceCache
from dittofs_controller.runtime.leader import LeaderElector
from dittofs_controller.runtime.metrics import REGISTRY
from dittofs_controller.runtime.optional import OptionalCache
from dittofs_controller.settings import Settings

log = structlog.get_logger("dittofs_controller.runtime.manager")

EXIT_OK = 0
EXIT_FAILED = 1


class Manager:
    def __init__(self, client: KubeClient, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.controllers: list[Controller] = []
        self._caches: dict[tuple[Resource, str | None, bool], ResourceCache] = {}
        self._optional: dict[tuple[Resource, str | None], OptionalCache] = {}

    def cache(
        self, resource: Resource, label_selector: str | None = None, *, metadata_only: bool = False
    ) -> ResourceCache:
        """The shared cache of `resource` in the watched namespaces (created on first use)."""
        key = (resource, label_selector, metadata_only)
        if key not in self._caches:
            self._caches[key] = ResourceCache(
                self.client,
                resource,
                namespaces=self.settings.namespaces,
                label_selector=label_selector,
                metadata_only=metadata_only,
                watch_timeout=self.settings.watch_timeout,
            )
        return self._caches[key]

    def optional_cache(
        self, resource: Resource, label_selector: str | None = None
    ) -> OptionalCache:
        """The shared cache of a custom resource whose CRD may be missing (see OptionalCache):
        it never holds up readiness or a controller's start while the CRD is absent."""
        key = (resource, label_selector)
        if key not in self._optional:
            self._optional[key] = OptionalCache(
                self.client,
                resource,
                namespaces=self.settings.namespaces,
                label_selector=label_selector,
                watch_timeout=self.settings.watch_timeout,
            )
        return self._optional[key]

    def add(self, controller: Controller) -> Controller:
        self.controllers.append(controller)
        return controller

    def caches_synced(self) -> bool:
        return all(cache.has_synced for cache in self._all_caches())

    def _all_caches(self) -> list[ResourceCache | OptionalCache]:
        return [*self._caches.values(), *self._optional.values()]

    async def run(self, stop: asyncio.Event) -> int:
        """Run until `stop` is set (exit 0), or until leadership is lost or a cache, a
        controller or leader election fails (exit 1, with a log line naming the cause)."""
        caches = {
            asyncio.create_task(cache.run(), name=f"cache-{cache.resource.plural}"): cache
            for cache in self._all_caches()
        }
        stopped = asyncio.create_task(stop.wait(), name="stop-signal")
        lead = asyncio.create_task(self._lead(stopped), name="lead")
        try:
            await asyncio.wait([lead, *caches], return_when=asyncio.FIRST_COMPLETED)
            if lead.done():
                return lead.result()
            # A cache runs until cancelled: one that ended no longer follows the API server,
            # and reconciling on its frozen view would undo what others change.
            dead = next(task for task in caches if task.done())
            log.error(
                "a cache stopped unexpectedly",
                resource=caches[dead].resource.plural,
                error=_failure(dead),
            )
            return EXIT_FAILED
        finally:
            for task in (lead, stopped, *caches):
                task.cancel()
            await asyncio.gather(lead, stopped, *caches, return_exceptions=True)

    def _elector(self) -> LeaderElector | None:
        election = self.settings.leader_election
        if not election.enabled:
            return None
        return LeaderElector(
            self.client,
            name=election.lease_name,
            namespace=election.lease_namespace,
            identity=election.identity,
            lease_duration=election.lease_duration,
            renew_deadline=election.renew_deadline,
            retry_period=election.retry_period,
        )

    async def _lead(self, stopped: asyncio.Task[Any]) -> int:
        """Win the lease, then reconcile until `stopped` ends (drain, exit 0) or leadership is
        lost or a controller dies (exit 1)."""
        elector = self._elector()
        if elector is not None:
            try:
                if not await _unless(elector.acquire(), stopped):
                    return EXIT_OK
            except Exception:
                # acquire retries what it expects (API errors, timeouts); anything else (a
                # proxy's HTML answer to a Lease GET, say) is a bug or a broken setup.
                log.exception("leader election failed")
                return EXIT_FAILED
        renewer = asyncio.create_task(
            elector.keep_renewing() if elector else asyncio.Event().wait()
        )
        timeout = self.settings.cache_sync_timeout
        controllers = [asyncio.create_task(c.run(timeout), name=c.name) for c in self.controllers]
        tasks = [renewer, *controllers]
        try:
            await asyncio.wait([stopped, *tasks], return_when=asyncio.FIRST_COMPLETED)
            if stopped.done() and not renewer.done() and await _unless(self._drain(), renewer):
                return EXIT_OK
            if renewer.done():
                # Also during the drain: a standby may lead already, so the grace period ends
                # at once (controller-runtime drops it to 0).
                log.error(
                    "leadership lost: reconcilers stopped",
                    draining=stopped.done(),
                    error=_failure(renewer),
                )
                return EXIT_FAILED
            failed = next(task for task in controllers if task.done())
            log.error(
                "a controller stopped unexpectedly",
                controller=failed.get_name(),
                error=_failure(failed),
            )
            return EXIT_FAILED
        finally:
            still_leading = not renewer.done()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if elector is not None and still_leading:
                await elector.release()

    async def _drain(self) -> None:
        grace = self.settings.shutdown_grace
        log.info("shutting down: draining in-flight reconciles", grace_seconds=grace)
        drained = await asyncio.gather(*(c.shut_down(grace) for c in self.controllers))
        if not all(drained):
            log.warning("some reconciles did not finish within the grace period")


async def _unless(work: Coroutine[Any, Any, None], first: asyncio.Future[Any]) -> bool:
    """Run `work` unless `first` ends before it (a stop signal, a lost lease); True when `work`
    completed. An exception of `work` propagates."""
    task = asyncio.create_task(work)
    await asyncio.wait([task, first], return_when=asyncio.FIRST_COMPLETED)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        return False
    task.result()
    return True


def _failure(task: asyncio.Task[Any]) -> str | None:
    """Why a task that should have run on ended: its exception, if it raised one."""
    if task.cancelled():
        return "cancelled"
    error = task.exception()
    return None if error is None else repr(error)


Setup = Callable[[Manager], None]


def _install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def run(settings: Settings, setup: Setup) -> int:
    """Connect, let `setup` register its caches and controllers, serve health, and run."""
    stop = asyncio.Event()
    _install_signal_handlers(stop)
    try:
        client = await connect(settings.kubeconfig, settings.context)
    except (k8s_config.ConfigException, OSError) as error:
        log.error("cannot connect to Kubernetes", error=str(error), kubeconfig=settings.kubeconfig)
        return EXIT_FAILED
    manager = Manager(client, settings)
    setup(manager)
    health = HealthServer(
        host=settings.bind_address,
        metrics_host=settings.metrics_address,
        health_port=settings.health_port,
        metrics_port=settings.metrics_port,
        registry=REGISTRY,
    )
    health.add_readiness_check("caches-synced", manager.caches_synced)
    try:
        await health.start()
        log.info("operator started", namespaces=list(settings.namespaces) or "all")
        return await manager.run(stop)
    except Exception:
        log.exception("operator failed")
        return EXIT_FAILED
    finally:
        await health.stop()
        await client.close()
