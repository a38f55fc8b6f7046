"""The storage reconciler: the DittoServer's PersistentVolumeClaims -> StorageReady.

Data safety comes first:
- A claim is never deleted or re-created by the operator: not when its store leaves the spec
  (it is kept and mentioned in the condition until the DittoServer goes), not when the spec asks
  for something a claim cannot change (StorageReady False, ClaimImmutableFieldChanged).
- deletionPolicy Retain (and an unparseable spec): `release` drops the DittoServer's
  ownerReference from every claim it controls, so the garbage collector keeps them; a DittoServer
  created again with the same name adopts them and finds its data. Delete: the garbage
  collector removes them with the DittoServer. A foreground cascading delete
  (`kubectl delete --cascade=foreground`) makes the collector delete the claims before the
  finalizer has run, so Retain only holds for the default background (or orphan) deletion.

A claim's status changes (Pending -> Bound, resize progress) arrive through the claim watch;
only the grace period of a Pending claim and a StorageClass that forbids expansion are polled.
"""

from __future__ import annotations

import datetime

from dittofs_controller.kube.resources import PVCS, STORAGECLASSES, ObjectKey
from dittofs_controller.operator import conditions
from dittofs_controller.operator.base import Context, ServerReconciler, Spec, Synced
from dittofs_controller.operator.children import Obj, adoption_problem
from dittofs_controller.operator.problems import UNWATCHED_RECHECK, Problem, api_problem
from dittofs_controller.operator.storage import build
from dittofs_controller.operator.storage.build import Claim, Verdict
from dittofs_controller.runtime.informer import ResourceCache
from dittofs_controller.runtime.store import BY_CONTROLLER_UID

# How long a claim may stay Pending (other than waiting for its first consumer) before
# StorageReady turns False: provisioning usually takes seconds.
PENDING_GRACE = 120.0

StorageClasses = dict[str, Obj | None]


class StorageReconciler(ServerReconciler):
    name = "storage"
    condition = conditions.STORAGE_READY
    finalizer = "dittofs.io/storage"

    def __init__(self, ctx: Context, claims: ResourceCache) -> None:
        super().__init__(ctx)
        self.claims = claims

    async def sync(self, server: Obj, spec: Spec) -> Synced:
        wanted = build.claims(server["metadata"]["name"], spec)
        classes: StorageClasses = {}
        verdicts: list[Verdict] = []
        transient = False
        for claim in wanted:
            try:
                verdicts.append(await self._converge(server, claim, classes))
            except Problem as problem:
                verdicts.append(Verdict(claim.name, problem.reason, False, problem.message))
                transient = transient or problem.retry
        names = {claim.name for claim in wanted}
        kept = [
            live["metadata"]["name"]
            for live in self.claims.by_index(BY_CONTROLLER_UID, server["metadata"]["uid"])
            if live["metadata"]["name"] not in names
        ]
        outcome, requeue = build.summarise(verdicts, kept)
        if transient:  # published False, then retried with backoff
            raise Problem(outcome.reason, outcome.message, retry=True)
        return Synced(outcome, requeue)

    async def _converge(self, server: Obj, claim: Claim, classes: StorageClasses) -> Verdict:
        """Create or update one claim (never delete it) and judge it."""
        namespace = server["metadata"]["namespace"]
        live = self.claims.get(ObjectKey(namespace, claim.name))
        if live is None:  # new, deleted by hand, not cached yet, or not the operator's
            with api_problem("ClaimUnreadable", f"PersistentVolumeClaim {claim.name}"):
                live = await self.client.get_or_none(PVCS, claim.name, namespace)
        if live is not None:
            if problem := adoption_problem(server, live):
                return Verdict(
                    claim.name,
                    "NameConflict",
                    False,
                    f"PersistentVolumeClaim {claim.name} {problem}: the operator does not take "
                    "over volumes it did not create for this DittoServer; rename or delete it",
                    recheck_after=UNWATCHED_RECHECK,
                )
            if live["metadata"].get("deletionTimestamp"):
                return Verdict(
                    claim.name,
                    "ClaimTerminating",
                    False,
                    f"PersistentVolumeClaim {claim.name} is being deleted (it stays while a pod "
                    "uses it); the operator then creates it again, empty",
                )
            if changes := build.immutable_changes(
                claim, live, class_was_set=await self._class_was_set(claim, live)
            ):
                return Verdict(
                    claim.name,
                    "ClaimImmutableFieldChanged",
                    False,
                    f"PersistentVolumeClaim {claim.name} ({claim.purpose}) cannot change "
                    f"{'; '.join(changes)}: Kubernetes does not allow it and the operator never "
                    "deletes a claim. Set the spec back, or delete the claim yourself (its data "
                    "is lost) to have it created again.",
                )
        storage_class = None
        if live is not None and build.larger(claim.storage.size, build.requested(live)):
            storage_class = await self._storage_class(build.storage_class_name(live), classes)
        desired = build.claim_manifest(server, claim, live, storage_class)
        with api_problem("ClaimRejected", f"PersistentVolumeClaim {claim.name}"):
            live = await self.ensure_child(PVCS, desired, live)
        if build.phase(live) == "Pending":
            storage_class = await self._storage_class(build.storage_class_name(live), classes)
        now = datetime.datetime.now(datetime.UTC)
        return build.judge(claim, live, storage_class, now=now, grace=PENDING_GRACE)

    async def _class_was_set(self, claim: Claim, live: Obj) -> bool:
        """Whether the operator set the live claim's class (read only when the spec's differs)."""
        if not build.class_differs(claim, live):
            return False
        meta = live["metadata"]
        with api_problem("ClaimUnreadable", f"PersistentVolumeClaim {claim.name}"):
            full = await self.client.get_or_none(PVCS, meta["name"], meta["namespace"])
        return full is not None and build.manages_class(full, self.manager)

    async def _storage_class(self, name: str | None, classes: StorageClasses) -> Obj | None:
        """The StorageClass (None: none or missing), read at most once per pass."""
        if name is None:
            return None
        if name not in classes:
            with api_problem("StorageClassUnreadable", f"StorageClass {name}"):
                classes[name] = await self.client.get_or_none(STORAGECLASSES, name)
        return classes[name]

    async def release(self, server: Obj, spec: Spec | None) -> None:
        """Retain (or an unparseable spec): keep every claim this DittoServer controls."""
        if spec is not None and spec.deletion_policy == "Delete":
            return
        for live in await self.children_from_api(PVCS, server):
            await self.disown(PVCS, live, server)
