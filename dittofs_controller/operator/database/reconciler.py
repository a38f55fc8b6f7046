"""The database reconciler: PostgreSQL for DittoFS -> DatabaseReady.

- Not needed (SQLite control plane, no postgres metadata store): True, NotRequired.
- External: the referenced Secret must hold every connection key; the Secret watch brings its
  creation or edit at once. The server itself is not probed: DittoFS reports an unreachable
  database when it starts.
- Percona: the operator creates a PerconaPGCluster and waits for `status.state` ready and the
  user Secret the Percona operator writes (it appears before the database is ready).

The Percona CRD may be missing: its cache is an OptionalCache, so an operator installed without
it starts and turns ready; the affected DittoServers show PerconaOperatorNotInstalled and
recover by themselves when the CRD appears (the CRD watch re-queues them; no polling).

Deletion: under deletionPolicy Delete the cluster carries `percona.com/delete-pvc`, so when the
garbage collector deletes it with the DittoServer the Percona operator deletes its data PVCs and
user Secrets too. Under Retain (or an unparseable spec) `release` drops the DittoServer's
ownerReference: the cluster survives and keeps running, with its pods, PVCs and Secrets
(Percona gives those no ownerReference to the cluster's owner). Delete it by hand when it is no
longer wanted: without the finalizer its data PVCs survive even that. A DittoServer created
again with the same name adopts it.
"""

from __future__ import annotations

from collections.abc import Iterable

from dittofs_controller.api import v1alpha1
from dittofs_controller.api.schema import ParseError
from dittofs_controller.kube.resources import PERCONA_PG_CLUSTERS, ObjectKey
from dittofs_controller.operator import conditions, names
from dittofs_controller.operator.base import Context, ServerReconciler, Spec, Synced
from dittofs_controller.operator.children import Obj, adoption_problem
from dittofs_controller.operator.conditions import Outcome
from dittofs_controller.operator.database import build
from dittofs_controller.operator.problems import UNWATCHED_RECHECK, Problem, api_problem
from dittofs_controller.operator.references import servers_referencing
from dittofs_controller.operator.specs import server_spec
from dittofs_controller.runtime.controller import KeyMapper
from dittofs_controller.runtime.informer import ResourceCache
from dittofs_controller.runtime.optional import OptionalCache
from dittofs_controller.runtime.store import BY_CONTROLLER_UID

# How long a pass waits for the PerconaPGCluster kind to be served after its CRD appeared.
SERVED_TIMEOUT = 10.0
BY_PERCONA_SECRET = "percona-secrets"


class DatabaseReconciler(ServerReconciler):
    name = "database"
    condition = conditions.DATABASE_READY
    finalizer = "dittofs.io/database"

    def __init__(self, ctx: Context, clusters: OptionalCache) -> None:
        super().__init__(ctx)
        self.clusters = clusters

    async def sync(self, server: Obj, spec: Spec) -> Synced:
        outcome = await self._judge(server, spec)
        # A cluster the spec no longer uses (another clusterName, or no Percona any more) is
        # never deleted while the DittoServer lives: its data may still be wanted.
        current = names.percona_cluster(server["metadata"]["name"], spec)
        unused = sorted(
            live["metadata"]["name"]
            for live in self.clusters.by_index(BY_CONTROLLER_UID, server["metadata"]["uid"])
            if live["metadata"]["name"] != current or not build.uses_percona(spec)
        )
        if unused:
            outcome = Outcome.true(
                outcome.reason,
                f"{outcome.message}. Kept PerconaPGClusters no longer in the spec, still "
                f"running: {', '.join(unused)} (delete them by hand when their data is not "
                "wanted)",
            )
        return Synced(outcome)

    async def _judge(self, server: Obj, spec: Spec) -> Outcome:
        if not spec.needs_postgres():
            return Outcome.true(
                "NotRequired",
                "no PostgreSQL needed: the control plane uses SQLite and no metadata store is of "
                "type postgres",
            )
        postgres = spec.postgres
        if postgres is not None and postgres.external is not None:
            return await self._external(server, postgres.external)
        if postgres is not None and postgres.percona is not None:
            return await self._percona(server, spec, postgres.percona)
        # The CRD's CEL rules make this unreachable unless validation was bypassed.
        raise Problem("PostgresNotConfigured", "spec.postgres must set percona or external")

    async def _external(self, server: Obj, external: v1alpha1.ExternalPostgres) -> Outcome:
        namespace = server["metadata"]["namespace"]
        reader = self.ctx.secret_values
        keys = (
            external.host_key,
            external.port_key,
            external.user_key,
            external.password_key,
            external.database_key,
        )
        await reader.require_keys(
            namespace, external.secret_name, keys, what="spec.postgres.external"
        )
        ca = external.ssl_root_cert_secret_ref
        if ca is not None:
            await reader.require_keys(
                namespace, ca.name, (ca.key,), what="spec.postgres.external.sslRootCertSecretRef"
            )
        return Outcome.true(
            "ExternalSecretReady",
            f"Secret {external.secret_name} holds the connection settings of the external "
            f"PostgreSQL (sslmode {external.ssl_mode})",
        )

    async def _percona(self, server: Obj, spec: Spec, percona: v1alpha1.Percona) -> Outcome:
        namespace = server["metadata"]["namespace"]
        name = names.percona_cluster(server["metadata"]["name"], spec)
        await self._require_percona()
        live = self.clusters.get(ObjectKey(namespace, name))
        if live is None:  # new, deleted, not cached yet, or not the operator's
            with api_problem("PerconaClusterRejected", f"PerconaPGCluster {name}"):
                live = await self.client.get_or_none(PERCONA_PG_CLUSTERS, name, namespace)
        if live is not None:
            if problem := adoption_problem(server, live):
                raise Problem(
                    "NameConflict",
                    f"PerconaPGCluster {name} {problem}: set spec.postgres.percona.clusterName "
                    "to another name, or use that cluster through spec.postgres.external with "
                    f"its Secret {names.percona_user_secret(name)}",
                    requeue_after=UNWATCHED_RECHECK,
                )
            if live["metadata"].get("deletionTimestamp"):
                raise Problem(
                    "PerconaClusterNotReady",
                    f"PerconaPGCluster {name} is being deleted; it is created again once gone",
                )
        with api_problem("PerconaClusterRejected", f"PerconaPGCluster {name}"):
            live = await self.ensure_child(
                PERCONA_PG_CLUSTERS, build.percona_cluster(server, spec, percona), live
            )
            wanted = build.wants_delete_pvc(spec)
            if build.has_delete_pvc(live) != wanted:
                live = await self.client.apply(
                    PERCONA_PG_CLUSTERS,
                    build.finalizer_patch(live, wanted),
                    field_manager=f"{self.manager}-finalizer",
                )
        state = build.state(live)
        if state != build.READY_STATE:
            raise Problem(
                "PerconaClusterNotReady",
                f"PerconaPGCluster {name} is {state or 'not reporting a state yet'} (the Percona "
                f"operator sets status.state ready once PostgreSQL serves); see kubectl describe "
                f"perconapgcluster {name} -n {namespace}",
            )
        secret, ca = names.percona_user_secret(name), names.percona_ca_secret(name)
        reader = self.ctx.secret_values
        written = f"written by Percona for cluster {name}"
        await reader.require_keys(namespace, secret, build.USER_SECRET_KEYS, what=written)
        # DittoFS verifies the server's certificate (verify-full) against the cluster's root CA.
        await reader.require_keys(namespace, ca, (names.PERCONA_CA_KEY,), what=written)
        return Outcome.true(
            "PerconaClusterReady",
            f"PerconaPGCluster {name} is ready; Secret {secret} holds the connection settings, "
            f"Secret {ca} the CA that verifies the server",
        )

    async def _require_percona(self) -> None:
        if not self.clusters.installed:
            raise Problem(
                "PerconaOperatorNotInstalled",
                f"the CRD {self.clusters.crd_name} is not installed: install the Percona "
                "Operator for PostgreSQL (2.8 or later) in the cluster, or use "
                "spec.postgres.external; this resumes by itself once the CRD exists",
            )
        if not await self.clusters.wait_listed(SERVED_TIMEOUT):
            raise Problem(
                "PerconaOperatorNotInstalled",
                f"the CRD {self.clusters.crd_name} exists but PerconaPGClusters are not served yet",
                retry=True,
            )

    async def release(self, server: Obj, spec: Spec | None) -> None:
        """Retain (or an unparseable spec): keep the cluster, releasing it from the DittoServer."""
        if spec is not None and spec.deletion_policy == "Delete":
            return
        if not self.clusters.installed:
            return  # no CRD, so no cluster to keep
        for live in await self.children_from_api(PERCONA_PG_CLUSTERS, server):
            await self.disown(PERCONA_PG_CLUSTERS, live, server)


def percona_secret_index(server: Obj) -> Iterable[str]:
    """Index DittoServers by `<namespace>/<name>` of the Percona Secrets they wait for: the
    user's and the cluster's root CA."""
    try:
        spec = server_spec(server)
    except ParseError:
        return ()
    if spec.postgres is None or spec.postgres.percona is None:
        return ()
    cluster = names.percona_cluster(server["metadata"]["name"], spec)
    namespace = server["metadata"]["namespace"]
    return (
        f"{namespace}/{names.percona_user_secret(cluster)}",
        f"{namespace}/{names.percona_ca_secret(cluster)}",
    )


def secret_mapper(servers: ResourceCache) -> KeyMapper:
    """Secret -> the DittoServers that reference it or wait for it as a Percona Secret."""
    referencing = servers_referencing(servers)

    def mapper(secret: Obj) -> Iterable[ObjectKey]:
        meta = secret["metadata"]
        waiting = servers.by_index(BY_PERCONA_SECRET, f"{meta['namespace']}/{meta['name']}")
        return {*referencing(secret), *(ObjectKey.of(server) for server in waiting)}

    return mapper


def percona_servers(servers: ResourceCache) -> KeyMapper:
    """The Percona CRD changed -> every DittoServer that asks for a Percona cluster."""

    def mapper(_: Obj) -> Iterable[ObjectKey]:
        return [
            ObjectKey.of(server)
            for server in servers.objects()
            if ((server.get("spec") or {}).get("postgres") or {}).get("percona") is not None
        ]

    return mapper
