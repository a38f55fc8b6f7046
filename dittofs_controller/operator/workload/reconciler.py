"""The server reconciler: the StatefulSet running DittoFS, once its dependencies are ready.

Owns Available (through the base class) and Progressing (published here with a field manager
of its own: one server-side apply per manager carries all the entries it owns, so publishing
the two conditions separately under one manager would drop the other one).

Nothing of the StatefulSet changes until ConfigReady, StorageReady and DatabaseReady are True
for the current generation and the cached ConfigMap holds the config of the current spec, so
one spec change rolls the pod once, with the restart hash of the config it was rendered for.
A running pod keeps running meanwhile; only spec.replicas 0 is applied at once (stopping the
server must not depend on, say, a reachable database).

Before a change that stops a serving pod with remote block stores (spec.replicas 0, another pod
template, the DittoServer's deletion, under its finalizer) the uploads are drained first
(drain.py): Progressing says DrainingUploads meanwhile, status.uploadDrain how it ended, and a
Warning Event UploadsNotDrained when it did not end well. The pod stops then in every case.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from dittofs_controller.kube.resources import (
    CONFIGMAPS,
    DITTOSERVERS,
    STATEFULSETS,
    ObjectKey,
)
from dittofs_controller.operator import conditions, names, serverapi
from dittofs_controller.operator.base import (
    Context,
    ServerReconciler,
    Spec,
    Synced,
    owned_children,
    pod_server,
    server_controller,
    server_pod,
    write_condition,
)
from dittofs_controller.operator.children import Obj
from dittofs_controller.operator.conditions import Outcome
from dittofs_controller.operator.config import build as config
from dittofs_controller.operator.problems import api_problem
from dittofs_controller.operator.workload import build, drain
from dittofs_controller.operator.workload.build import StopCause
from dittofs_controller.operator.workload.drain import Drain, Drains, UploadDrainer
from dittofs_controller.runtime.controller import Controller, Result
from dittofs_controller.runtime.informer import ResourceCache

if TYPE_CHECKING:
    from dittofs_controller.runtime.manager import Manager


class WorkloadReconciler(ServerReconciler):
    name = "server"
    condition = conditions.AVAILABLE
    finalizer = "dittofs.io/server"  # held while a deleted server's uploads drain
    status_fields = ("uploadDrain",)
    # ServerConfigured too: it turns StoresReopening when status.server.storesRevision moves.
    reads = (*build.DEPENDENCIES, conditions.SERVER_CONFIGURED)

    def __init__(
        self,
        ctx: Context,
        statefulsets: ResourceCache,
        config_maps: ResourceCache,
        drains: Drains,
        request_drain: Callable[[ObjectKey], None],
    ) -> None:
        super().__init__(ctx)
        self.statefulsets = statefulsets
        self.config_maps = config_maps
        self.drains = drains
        self.request_drain = request_drain
        # The status.uploadDrain each server was last given, by uid: every pass applies it
        # again, since one judged from a cache without it yet would remove it.
        self.reports: dict[ObjectKey, tuple[str, Obj]] = {}
        self.progressing_manager = f"{self.manager}-progressing"

    async def reconcile(self, key: ObjectKey) -> Result:
        if self.ctx.servers.get(key) is None:  # gone: so is what was kept for it
            self.reports.pop(key, None)
            self.drains.forget(key)
        return await super().reconcile(key)

    async def sync(self, server: Obj, spec: Spec) -> Synced:
        meta = server["metadata"]
        key = ObjectKey(meta["namespace"], names.statefulset(meta["name"]))
        live = self.statefulsets.get(key)
        restart_hash, waiting = self._restart_hash(server, spec)
        desired = None if restart_hash is None else build.statefulset(server, spec, restart_hash)
        scale_down = live is not None and spec.replicas == 0 and live["spec"].get("replicas") != 0
        cause: StopCause | None = (
            build.stopping(live, desired) if desired is not None else "Stop" if scale_down else None
        )
        drained, draining = self._before_stop(server, spec, cause)
        if draining is not None:
            pass  # the pod keeps serving until its uploads are drained
        elif desired is not None:
            with api_problem("ApplyFailed", f"could not apply StatefulSet {key.name}"):
                live = await self.ensure_child(STATEFULSETS, desired, live)
        elif scale_down:
            with api_problem("ApplyFailed", f"could not stop StatefulSet {key.name}"):
                live = await self.client.merge_patch(
                    STATEFULSETS, key.name, {"spec": {"replicas": 0}}, key.namespace
                )
        if drained is not None:
            self.reports[ObjectKey.of(server)] = (meta["uid"], drained.status())
            await self._stopped_after(server, spec, drained)
        status = self._report(server)
        waiting_message = "waiting for " + "; ".join(waiting)
        now = datetime.datetime.now(datetime.UTC)
        pod: Obj | None = None
        if live is None:
            available = (
                Outcome.false("Stopped", "spec.replicas is 0: the server is stopped")
                if spec.replicas == 0
                else Outcome.false("WaitingForDependencies", waiting_message)
            )
            progressing = Outcome.true("WaitingForDependencies", waiting_message)
        else:
            pod = self._pod(server, live)
            available, progressing = build.rollout(live, spec.replicas, pod, now)
            if waiting:
                progressing = Outcome.true("WaitingForDependencies", waiting_message)
        if draining is not None:
            progressing = draining
        await self._publish_progressing(server, progressing)
        if draining is not None:  # the drainer queues the server when it is done
            return Synced(available, requeue_after=self._drain_recheck(server), status=status)
        if live is None or spec.replicas == 0 or available.status == "True":
            return Synced(available, status=status)
        # The pod's changes arrive through its watch; only the passing of time is not a change.
        return Synced(
            available, requeue_after=build.startup_deadline_seconds(pod, now), status=status
        )

    async def release(self, server: Obj, spec: Spec | None) -> Result | None:
        """A deleted DittoServer goes once its pod's uploads are drained (when they are due)."""
        if spec is None:
            return None
        drained, draining = self._before_stop(server, spec, "Deletion")
        if draining is not None:
            await self._publish_progressing(server, draining)
            return Result(self._drain_recheck(server))
        if drained is not None:
            await self._stopped_after(server, spec, drained)
        return None

    def _before_stop(
        self, server: Obj, spec: Spec, cause: StopCause | None
    ) -> tuple[Drain | None, Outcome | None]:
        """Before a stop: (the finished drain to report, None) once the pod may stop, or
        (None, Progressing DrainingUploads) while its uploads drain. (None, None) when no
        drain is due: no stop, no remote block store, no serving pod, or no wait allowed."""
        key = ObjectKey.of(server)
        pod = server_pod(self.ctx.pods, server)
        if cause is None or not build.drain_wanted(server, spec, pod):
            self.drains.forget(key)
            return None, None
        current = self.drains.get(key)
        if current is not None and self.drains.overdue(current):
            current.finish("TimedOut", "the drain got no answer in time", None, self.drains.clock())
        if current is None or (current.done and not self.drains.usable(current)):
            current = self.drains.start(key, cause, spec.control_plane.upload_drain_timeout)
            self.request_drain(key)
        if not current.done:
            return None, build.draining(spec, cause, names.pod(key.name))
        self.drains.forget(key)
        current.cause = cause  # what the stop is for now, which a drain begun earlier may not be
        return current, None

    def _report(self, server: Obj) -> Obj | None:
        """status.uploadDrain: the latest of what this process gave and what the cache shows
        (another process may have led since)."""
        cached = (server.get("status") or {}).get("uploadDrain")
        uid, given = self.reports.get(ObjectKey.of(server), ("", None))
        if uid != server["metadata"]["uid"]:
            given = None
        reports = [report for report in (given, cached) if report]
        if not reports:
            return None
        return {"uploadDrain": max(reports, key=lambda report: report["startedAt"])}

    def _drain_recheck(self, server: Obj) -> float:
        """When to look at a drain again should the drainer's answer never come."""
        current = self.drains.get(ObjectKey.of(server))
        remaining = current.deadline - self.drains.clock() if current is not None else 0.0
        return max(remaining, 0.0) + drain.ANSWER_GRACE + 1.0

    async def _stopped_after(self, server: Obj, spec: Spec, drained: Drain) -> None:
        """Say so when a pod stops with uploads not drained: a Warning Event."""
        if drained.outcome == "Drained":
            return
        pod = names.pod(server["metadata"]["name"])
        await self.ctx.events.record(
            server,
            "Warning",
            "UploadsNotDrained",
            drained.warning(pod, spec.deletion_policy),
            action=self.name.capitalize(),
        )

    def _restart_hash(self, server: Obj, spec: Spec) -> tuple[str | None, list[str]]:
        """The restart hash to roll out, or None and what is still awaited."""
        waiting = build.waiting_for(server)
        if waiting:
            return None, waiting
        name = names.config_map(server["metadata"]["name"])
        config_map = self.config_maps.get(ObjectKey(server["metadata"]["namespace"], name)) or {}
        restart_hash = (config_map.get("metadata", {}).get("annotations") or {}).get(
            names.RESTART_HASH_ANNOTATION
        )
        rendered = (config_map.get("data") or {}).get(names.CONFIG_KEY)
        if not restart_hash or rendered != config.render(spec):
            # ConfigReady can arrive before the ConfigMap's own watch event does.
            return None, [f"ConfigMap {name!r} to hold the config of this generation"]
        return restart_hash, []

    def _pod(self, server: Obj, live: Obj) -> Obj | None:
        """The server's pod when it is not ready, to say why; None when there is nothing to say."""
        status = live.get("status") or {}
        if not status.get("replicas") or status.get("readyReplicas"):
            return None
        return server_pod(self.ctx.pods, server)

    async def _publish_progressing(self, server: Obj, outcome: Outcome) -> None:
        """Apply Progressing when it changed. No Event: it flips with every rollout, and the
        Available transitions already tell that story."""
        await write_condition(
            self.ctx, server, conditions.PROGRESSING, outcome, self.progressing_manager
        )


def setup(manager: Manager, ctx: Context) -> None:
    """The server controller: DittoServers, their StatefulSets and ConfigMaps (restart hash);
    and the upload-drain controller, which it asks for drains (queued by it alone)."""
    settings = manager.settings
    access = serverapi.resolve_access(settings.dittofs_api_access, settings.kubeconfig, os.environ)
    drains = Drains()
    drainer = UploadDrainer(ctx, drains, access)
    drain_controller = manager.add(
        Controller(
            drainer.name,
            drainer,
            workers=settings.workers,
            reconcile_timeout=drain.RECONCILE_TIMEOUT,
        )
    )
    statefulsets = owned_children(manager, STATEFULSETS)
    config_maps = owned_children(manager, CONFIGMAPS)
    reconciler = WorkloadReconciler(
        ctx, statefulsets, config_maps, drains, drain_controller.queue.add
    )
    controller = server_controller(manager, reconciler)
    drainer.wake = controller.queue.add
    controller.owns(statefulsets, DITTOSERVERS)
    controller.owns(config_maps, DITTOSERVERS)
    controller.watch(ctx.pods, pod_server)
