"""The server reconciler: the StatefulSet running DittoFS, once its dependencies are ready.

Owns Available (through the base class) and Progressing (published here with a field manager
of its own: one server-side apply per manager carries all the entries it owns, so publishing
the two conditions separately under one manager would drop the other one).

Nothing of the StatefulSet changes until ConfigReady, StorageReady and DatabaseReady are True
for the current generation and the cached ConfigMap holds the config of the current spec, so
one spec change rolls the pod once, with the restart hash of the config it was rendered for.
A running pod keeps running meanwhile; only spec.replicas 0 is applied at once (stopping the
server must not depend on, say, a reachable database).
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING

from dittofs_controller.kube.resources import (
    CONFIGMAPS,
    DITTOSERVERS,
    STATEFULSETS,
    ObjectKey,
)
from dittofs_controller.operator import conditions, names
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
from dittofs_controller.operator.workload import build
from dittofs_controller.runtime.informer import ResourceCache

if TYPE_CHECKING:
    from dittofs_controller.runtime.manager import Manager


class WorkloadReconciler(ServerReconciler):
    name = "server"
    condition = conditions.AVAILABLE
    # ServerConfigured too: it turns StoresReopening when status.server.storesRevision moves.
    reads = (*build.DEPENDENCIES, conditions.SERVER_CONFIGURED)

    def __init__(
        self, ctx: Context, statefulsets: ResourceCache, config_maps: ResourceCache
    ) -> None:
        super().__init__(ctx)
        self.statefulsets = statefulsets
        self.config_maps = config_maps
        self.progressing_manager = f"{self.manager}-progressing"

    async def sync(self, server: Obj, spec: Spec) -> Synced:
        meta = server["metadata"]
        key = ObjectKey(meta["namespace"], names.statefulset(meta["name"]))
        live = self.statefulsets.get(key)
        restart_hash, waiting = self._restart_hash(server, spec)
        if restart_hash is not None:
            desired = build.statefulset(server, spec, restart_hash)
            with api_problem("ApplyFailed", f"could not apply StatefulSet {key.name}"):
                live = await self.ensure_child(STATEFULSETS, desired, live)
        elif live is not None and spec.replicas == 0 and live["spec"].get("replicas") != 0:
            with api_problem("ApplyFailed", f"could not stop StatefulSet {key.name}"):
                live = await self.client.merge_patch(
                    STATEFULSETS, key.name, {"spec": {"replicas": 0}}, key.namespace
                )
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
        await self._publish_progressing(server, progressing)
        if live is None or spec.replicas == 0 or available.status == "True":
            return Synced(available)
        # The pod's changes arrive through its watch; only the passing of time is not a change.
        return Synced(available, requeue_after=build.startup_deadline_seconds(pod, now))

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
    """The server controller: DittoServers, their StatefulSets and ConfigMaps (restart hash)."""
    statefulsets = owned_children(manager, STATEFULSETS)
    config_maps = owned_children(manager, CONFIGMAPS)
    controller = server_controller(manager, WorkloadReconciler(ctx, statefulsets, config_maps))
    controller.owns(statefulsets, DITTOSERVERS)
    controller.owns(config_maps, DITTOSERVERS)
    controller.watch(ctx.pods, pod_server)
