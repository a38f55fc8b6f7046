"""The network reconciler: Services, the API Ingress, NetworkPolicies and the optional
ServiceMonitor -> NetworkReady.

It also owns status.endpoints (where clients reach NFS, SMB and the API), published in the same
status apply as its condition. Waiting for a load-balancer address costs nothing: no polling,
the Service watch brings the address.

The ServiceMonitor CRD (Prometheus Operator) may be missing: its cache is an OptionalCache, so
the operator starts and serves without it. A requested ServiceMonitor is then skipped, which
NetworkReady (still True: the server is reachable) says in its message, with a Warning Event
when the skip begins; the CRD watch re-queues the DittoServers when it appears (no polling).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable, Mapping

from dittofs_controller.kube.client import ApiError
from dittofs_controller.kube.resources import (
    DITTOSERVERS,
    INGRESSES,
    NETWORKPOLICIES,
    SERVICE_MONITORS,
    SERVICES,
    ObjectKey,
    Resource,
)
from dittofs_controller.operator import conditions, names
from dittofs_controller.operator.base import Context, ServerReconciler, Spec, Synced
from dittofs_controller.operator.children import Obj, adoption_problem
from dittofs_controller.operator.conditions import Outcome
from dittofs_controller.operator.network import build
from dittofs_controller.operator.problems import UNWATCHED_RECHECK, Problem, api_problem
from dittofs_controller.runtime.controller import KeyMapper
from dittofs_controller.runtime.informer import ResourceCache
from dittofs_controller.runtime.optional import OptionalCache
from dittofs_controller.runtime.store import controller_owner

# How long a pass waits for ServiceMonitors to be served after their CRD appeared.
SERVED_TIMEOUT = 10.0
SKIPPED_REASON = "ServiceMonitorSkipped"


def _controlled_by(obj: Obj, server: Obj) -> bool:
    owner = controller_owner(obj)
    return owner is not None and owner.get("uid") == server["metadata"]["uid"]


class NetworkReconciler(ServerReconciler):
    name = "network"
    condition = conditions.NETWORK_READY
    status_fields = ("endpoints",)

    def __init__(
        self, ctx: Context, caches: Mapping[Resource, ResourceCache], monitors: OptionalCache
    ) -> None:
        super().__init__(ctx)
        self.monitors = monitors
        self.caches: Mapping[Resource, ResourceCache | OptionalCache] = {
            **caches,
            SERVICE_MONITORS: monitors,
        }
        # The operator's namespace, which the API NetworkPolicy always admits: the operator
        # runs where its Lease is (the pod's namespace unless configured otherwise).
        self.operator_namespace = ctx.settings.leader_election.lease_namespace

    async def sync(self, server: Obj, spec: Spec) -> Synced:
        server_name = server["metadata"]["name"]
        services = build.services(server, spec)
        policies = build.network_policies(server, spec, self.operator_namespace)
        # The children do not depend on each other: converge them at once, so a pass costs
        # the latency of one round of requests rather than of one per child.
        converged = await _together(
            *(
                self._converge(server, SERVICES, names.service(server_name, purpose), desired)
                for purpose, desired in services.items()
            ),
            self._converge(
                server, INGRESSES, names.ingress(server_name), build.ingress(server, spec)
            ),
            *(
                self._converge(
                    server, NETWORKPOLICIES, names.network_policy(server_name, purpose), desired
                )
                for purpose, desired in policies.items()
            ),
        )
        live = {  # the Services come first in `converged`
            purpose: current
            for (purpose, desired), current in zip(
                services.items(), converged[: len(services)], strict=True
            )
            if desired is not None
        }
        skipped = await self._service_monitor(server, spec)
        found = build.endpoints(spec, live)
        outcome = build.judge(server, live, found)
        if skipped:
            outcome = Outcome(outcome.status, outcome.reason, f"{outcome.message}; {skipped}")
            await self._warn_skipped(server, skipped)
        return Synced(outcome, status={"endpoints": found})

    async def _service_monitor(self, server: Obj, spec: Spec) -> str | None:
        """Converge the ServiceMonitor; why it was skipped, if it was."""
        name = names.service_monitor(server["metadata"]["name"])
        desired = build.service_monitor(server, spec)
        if not self.monitors.installed:
            if desired is None:
                return None  # no CRD, so no ServiceMonitor to delete either
            return (
                f"ServiceMonitor {name} skipped: the Prometheus Operator CRD "
                f"{self.monitors.crd_name} is not installed (it is created once the CRD exists)"
            )
        if not await self.monitors.wait_listed(SERVED_TIMEOUT):
            raise Problem(
                "ServiceMonitorNotServed",
                f"the CRD {self.monitors.crd_name} exists but ServiceMonitors are not served yet",
                retry=True,
            )
        await self._converge(server, SERVICE_MONITORS, name, desired)
        return None

    async def _warn_skipped(self, server: Obj, skipped: str) -> None:
        """A Warning Event when the skip begins (the condition's reason does not change, so
        `publish` records none). The cached DittoServer may predate the last pass' status
        apply, so an apparent transition is checked against the API server before recording."""
        if self._says(server, skipped):
            return
        meta = server["metadata"]
        fresh = await self.client.get_or_none(DITTOSERVERS, meta["name"], meta["namespace"])
        if fresh is None or self._says(fresh, skipped):
            return
        await self.ctx.events.record(
            server, "Warning", SKIPPED_REASON, skipped, action=self.name.capitalize()
        )

    async def _converge(
        self, server: Obj, resource: Resource, name: str, desired: Obj | None
    ) -> Obj | None:
        """Make the child match `desired` (None: absent); the object as it now stands, or None
        while it is absent or being deleted."""
        namespace = server["metadata"]["namespace"]
        live = self.caches[resource].get(ObjectKey(namespace, name))
        with api_problem(f"{resource.kind}Rejected", f"{resource.kind} {name}"):
            if desired is None:
                if live is not None and _controlled_by(live, server):
                    await self.client.delete(resource, name, namespace)
                return None
            if live is None:  # not cached yet, deleted by hand, or not ours: ask the source
                live = await self.client.get_or_none(resource, name, namespace)
            # An object with this DittoServer's labels but no owner (orphaned by hand) is taken
            # back, as the other reconcilers do; anything else is someone's.
            if live is not None and (problem := adoption_problem(server, live)):
                raise Problem(
                    "NameConflict",
                    f"{resource.kind} {name} already exists and {problem}: delete or rename it",
                    requeue_after=UNWATCHED_RECHECK,
                )
            if live is not None and live["metadata"].get("deletionTimestamp"):
                return None  # recreated when the watch reports it gone
            if resource == SERVICES and live is not None and build.needs_recreate(desired, live):
                await self.client.delete(resource, name, namespace)
                return None
            try:
                if resource == SERVICES and live is not None and build.foreign_ports(desired, live):
                    ports = {"spec": {"ports": desired["spec"]["ports"]}}  # replaces the list
                    live = await self.client.merge_patch(resource, name, ports, namespace)
                return await self.ensure_child(resource, desired, live)
            except ApiError as error:
                if error.status == 422 and "already allocated" in error.message:
                    raise Problem(
                        "PortConflict",
                        f"{resource.kind} {name}: {error.message}; another Service holds the "
                        "port: free it, or choose another in spec.expose",
                        requeue_after=UNWATCHED_RECHECK,
                    ) from error
                raise

    def _says(self, server: Obj, note: str) -> bool:
        previous = conditions.find(server, self.condition)
        return previous is not None and note in previous.get("message", "")


async def _together(*steps: Awaitable[Obj | None]) -> list[Obj | None]:
    """Await independent steps concurrently. A failure is raised only once every step ended
    (the first in order, as a sequential pass would have raised), so no write outlives the pass."""
    results = await asyncio.gather(*steps, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [result for result in results if not isinstance(result, BaseException)]


def monitoring_servers(servers: ResourceCache) -> KeyMapper:
    """The ServiceMonitor CRD changed -> every DittoServer that asks for a ServiceMonitor."""

    def mapper(_: Obj) -> Iterable[ObjectKey]:
        return [ObjectKey.of(server) for server in servers.objects() if _wants_monitor(server)]

    return mapper


def _wants_monitor(server: Obj) -> bool:
    metrics = ((server.get("spec") or {}).get("controlPlane") or {}).get("metrics") or {}
    return bool((metrics.get("serviceMonitor") or {}).get("enabled"))
