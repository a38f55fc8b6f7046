"""The network reconciler: Services, the API Ingress and NetworkPolicies -> NetworkReady.

It also owns status.endpoints (where clients reach NFS, SMB and the API), published in the same
status apply as its condition. Waiting for a load-balancer address costs nothing: no polling,
the Service watch brings the address.
"""

from __future__ import annotations

from collections.abc import Mapping

from dittofs_controller.kube.resources import (
    INGRESSES,
    NETWORKPOLICIES,
    SERVICES,
    ObjectKey,
    Resource,
)
from dittofs_controller.operator import conditions, names
from dittofs_controller.operator.base import Context, ServerReconciler, Spec, Synced
from dittofs_controller.operator.children import Obj
from dittofs_controller.operator.network import build
from dittofs_controller.operator.problems import Problem, api_problem
from dittofs_controller.runtime.informer import ResourceCache
from dittofs_controller.runtime.store import controller_owner


def _controlled_by(obj: Obj, server: Obj) -> bool:
    owner = controller_owner(obj)
    return owner is not None and owner.get("uid") == server["metadata"]["uid"]


class NetworkReconciler(ServerReconciler):
    name = "network"
    condition = conditions.NETWORK_READY
    status_fields = ("endpoints",)

    def __init__(self, ctx: Context, caches: Mapping[Resource, ResourceCache]) -> None:
        super().__init__(ctx)
        self.caches = caches
        # The operator's namespace, which the API NetworkPolicy always admits: the operator
        # runs where its Lease is (the pod's namespace unless configured otherwise).
        self.operator_namespace = ctx.settings.leader_election.lease_namespace

    async def sync(self, server: Obj, spec: Spec) -> Synced:
        server_name = server["metadata"]["name"]
        live: dict[str, Obj | None] = {}
        for purpose, desired in build.services(server, spec).items():
            current = await self._converge(
                server, SERVICES, names.service(server_name, purpose), desired
            )
            if desired is not None:
                live[purpose] = current
        await self._converge(
            server, INGRESSES, names.ingress(server_name), build.ingress(server, spec)
        )
        policies = build.network_policies(server, spec, self.operator_namespace)
        for purpose, desired in policies.items():
            await self._converge(
                server, NETWORKPOLICIES, names.network_policy(server_name, purpose), desired
            )
        found = build.endpoints(spec, live)
        return Synced(build.judge(server, live, found), status={"endpoints": found})

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
            if live is not None and not _controlled_by(live, server):
                raise Problem(
                    "NameConflict",
                    f"{resource.kind} {name} already exists and does not belong to this "
                    "DittoServer: delete or rename it",
                )
            if live is not None and live["metadata"].get("deletionTimestamp"):
                return None  # recreated when the watch reports it gone
            if resource == SERVICES and live is not None and build.needs_recreate(desired, live):
                await self.client.delete(resource, name, namespace)
                return None
            return await self.ensure_child(resource, desired, live)
