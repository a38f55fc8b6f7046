"""The database concern's desired PerconaPGCluster and what DittoFS needs from PostgreSQL (pure).

Checked against the Percona Operator for PostgreSQL v2.8.2 (its CRD and controller source):
- Required: postgresVersion, instances (each with a dataVolumeClaimSpec) and backups; without
  backup repositories `backups: {enabled: false}` must be explicit (a CEL rule rejects an empty
  object), and an enabled pgBackRest needs its image.
- Percona adds a PgBouncer (one replica) to every cluster without `proxy`, and refuses to
  reconcile one whose image is unknown (MissingRequiredImage) unless its operator has
  RELATED_IMAGE_PGBOUNCER. DittoFS connects to the primary directly, so the cluster gets a
  PgBouncer with zero replicas and an explicit image.
- `users` makes Percona write the Secret `<cluster>-pguser-<user>` (host, port, user, password,
  dbname, uri...), before the database is ready. grantPublicSchemaAccess (PostgreSQL >= 15
  only: a CEL rule) lets the user create tables in `public`.
"""

from __future__ import annotations

from typing import Any

from dittofs_controller.api import v1alpha1
from dittofs_controller.kube.resources import PERCONA_PG_CLUSTERS
from dittofs_controller.operator import names
from dittofs_controller.operator.children import Obj, child_metadata, object_for, stamped

COMPONENT = "database"
INSTANCE_SET = "instance1"
# Makes the Percona operator delete the cluster's data PVCs and user Secrets with it.
DELETE_PVC_FINALIZER = "percona.com/delete-pvc"
READY_STATE = "ready"
# Keys of the `<cluster>-pguser-<user>` Secret that DittoFS's connection needs.
USER_SECRET_KEYS = ("host", "port", "user", "password", "dbname")
# The images deploy/cr.yaml of Percona v2.8.2 uses (crVersion 2.8.2, the default here).
PGBOUNCER_IMAGE = "docker.io/percona/percona-pgbouncer:1.25.0-1"
PGBACKREST_IMAGE = "docker.io/percona/percona-pgbackrest:2.57.0-1"


def uses_percona(spec: v1alpha1.DittoServerSpec) -> bool:
    return spec.needs_postgres() and spec.postgres is not None and spec.postgres.percona is not None


def databases(spec: v1alpha1.DittoServerSpec) -> list[str]:
    """The PostgreSQL databases DittoFS uses, each once (Percona's list is a set)."""
    wanted = []
    if spec.control_plane.database.type == "postgres":
        wanted.append(names.PERCONA_CONTROLPLANE_DATABASE)
    wanted += [names.metadata_database(s) for s in spec.metadata_stores if s.type == "postgres"]
    return list(dict.fromkeys(wanted))


def _volume_claim_spec(storage: v1alpha1.Storage) -> Obj:
    claim: Obj = {
        "accessModes": list(storage.access_modes),
        "resources": {"requests": {"storage": storage.size}},
    }
    if storage.storage_class_name:
        claim["storageClassName"] = storage.storage_class_name
    return claim


def _backups(backups: v1alpha1.PerconaBackups) -> Obj:
    if not backups.enabled:
        return {"enabled": False}
    pgbackrest: dict[str, Any] = {"image": PGBACKREST_IMAGE, **(backups.pgbackrest or {})}
    return {"enabled": True, "pgbackrest": pgbackrest}


def percona_cluster(server: Obj, spec: v1alpha1.DittoServerSpec, percona: v1alpha1.Percona) -> Obj:
    """The PerconaPGCluster, without finalizers (see `finalizer_patch`); stamped, so a field
    the spec no longer sets (a pgBackRest option...) is removed, not left behind."""
    name = names.percona_cluster(server["metadata"]["name"], spec)
    user: Obj = {"name": names.PERCONA_USER, "databases": databases(spec)}
    if percona.postgres_version >= 15:
        user["grantPublicSchemaAccess"] = True
    body = {
        "crVersion": percona.cr_version,
        "image": percona.image,
        "postgresVersion": percona.postgres_version,
        "instances": [
            {
                "name": INSTANCE_SET,
                "replicas": percona.instances,
                "dataVolumeClaimSpec": _volume_claim_spec(percona.storage),
            }
        ],
        "proxy": {"pgBouncer": {"replicas": 0, "image": PGBOUNCER_IMAGE}},
        "backups": _backups(percona.backups),
        "users": [user],
    }
    metadata = child_metadata(server, name, COMPONENT)
    return stamped(
        object_for(PERCONA_PG_CLUSTERS.api_version, PERCONA_PG_CLUSTERS.kind, metadata, spec=body)
    )


def wants_delete_pvc(spec: v1alpha1.DittoServerSpec) -> bool:
    return spec.deletion_policy == "Delete"


def has_delete_pvc(live: Obj) -> bool:
    return DELETE_PVC_FINALIZER in (live["metadata"].get("finalizers") or ())


def finalizer_patch(live: Obj, present: bool) -> Obj:
    """A server-side apply body owning just our finalizer (under its own field manager).

    The Percona operator adds finalizers of its own, so the list is never compared whole:
    only whether ours is on it, and applying `[]` drops only the entry this manager owns.
    """
    meta = live["metadata"]
    return object_for(
        PERCONA_PG_CLUSTERS.api_version,
        PERCONA_PG_CLUSTERS.kind,
        {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "finalizers": [DELETE_PVC_FINALIZER] if present else [],
        },
    )


def state(live: Obj) -> str | None:
    """Percona's status.state: initializing, paused, stopping or ready (None: not reported)."""
    found = (live.get("status") or {}).get("state")
    return str(found) if found else None
