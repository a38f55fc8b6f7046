"""Plays the Percona Operator for PostgreSQL for end-to-end tests, on a local PostgreSQL.

No Percona operator (nor a PostgreSQL pod image) runs on the testbed. For every
PerconaPGCluster in the test namespace this does what Percona's does, as far as DittoFS can
tell: creates each `spec.users[]` role and its `databases` (with grantPublicSchemaAccess'
grant) in the local server, writes the `<cluster>-pguser-<user>` Secret (keys host, port,
user, password, dbname, uri) pointing at it and the cluster's root CA Secret
`<cluster>-cluster-ca-cert` (key root.crt) that signed the server's certificate, and reports
`status.state: ready` through the status subresource. A cluster being deleted with the
`percona.com/delete-pvc` finalizer loses its user Secrets and then the finalizer, as Percona
does; without the finalizer nothing goes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from dittofs_controller.kube.client import ApiError, KubeClient
from dittofs_controller.kube.resources import PERCONA_PG_CLUSTERS, SECRETS
from tests.support.crds import apply_crd
from tests.support.postgres import PostgresServer
from tests.testbed.provisioner import list_watch

log = logging.getLogger("e2e.percona")

Obj = dict[str, Any]

CRD_FILE = Path(__file__).resolve().parents[1] / "integration/operator/percona-crd-minimal.yaml"
CRD_NAME = "perconapgclusters.pgv2.percona.com"
DELETE_PVC_FINALIZER = "percona.com/delete-pvc"
CLUSTER_LABEL = "postgres-operator.crunchydata.com/cluster"
USER_LABEL = "postgres-operator.crunchydata.com/pguser"
CA_KEY = "root.crt"  # beside root.key, which no client needs


async def install_crd(kube: KubeClient, timeout: float = 30) -> None:
    """The stand-in PerconaPGCluster CRD, served."""
    await apply_crd(kube, yaml.safe_load(CRD_FILE.read_text()), PERCONA_PG_CLUSTERS, timeout)


def ca_secret_name(cluster: str) -> str:
    return f"{cluster}-cluster-ca-cert"


def user_secret_name(cluster: str, user: str) -> str:
    return f"{cluster}-pguser-{user}"


class PerconaPlayer:
    """Reacts to the namespace's PerconaPGClusters (see module doc)."""

    def __init__(self, kube: KubeClient, namespace: str, postgres: PostgresServer) -> None:
        self.kube = kube
        self.namespace = namespace
        self.postgres = postgres
        self.errors: list[str] = []  # what went wrong, for failure messages
        self.served: set[str] = set()  # clusters made ready
        self._done: set[tuple[str, int]] = set()  # (uid, generation) already provisioned

    async def on_event(self, kind: str, cluster: Obj) -> None:
        if kind not in ("ADDED", "MODIFIED"):
            return
        try:
            if cluster["metadata"].get("deletionTimestamp"):
                await self._delete(cluster)
            else:
                await self._provision(cluster)
        except Exception as error:  # list_watch relists (retries) after any failure
            self.errors.append(f"{cluster['metadata']['name']}: {error!r}")
            raise

    async def _provision(self, cluster: Obj) -> None:
        meta = cluster["metadata"]
        key = (meta["uid"], meta.get("generation", 0))
        if key not in self._done:
            await self._ca(meta["name"])
            for user in (cluster.get("spec") or {}).get("users") or ():
                await self._user(meta["name"], user)
            self._done.add(key)
        if (cluster.get("status") or {}).get("state") != "ready":
            status = {"state": "ready", "host": f"{meta['name']}-primary.{self.namespace}.svc"}
            await self.kube.merge_patch(
                PERCONA_PG_CLUSTERS,
                meta["name"],
                {"status": status},
                self.namespace,
                subresource="status",
            )
        self.served.add(meta["name"])

    async def _ca(self, cluster: str) -> None:
        """The cluster's root CA Secret (Percona 2.5+): what verifies the server's certificate."""
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": ca_secret_name(cluster), "namespace": self.namespace},
            "type": "Opaque",
            "stringData": {CA_KEY: self.postgres.ca.decode()},
        }
        await self.kube.apply(SECRETS, body, field_manager="percona-player")

    async def _user(self, cluster: str, user: Obj) -> None:
        name: str = user["name"]
        databases: list[str] = list(user.get("databases") or ())
        secret_name = user_secret_name(cluster, name)
        live = await self.kube.get_or_none(SECRETS, secret_name, self.namespace)
        data = {
            k: base64.b64decode(v).decode() for k, v in ((live or {}).get("data") or {}).items()
        }
        password = data.get("password") or secrets.token_urlsafe(18)  # kept, as Percona does
        await self.postgres.ensure_user(name, password)
        for database in databases:
            await self.postgres.ensure_database(database, name)
        host, port = self.postgres.host, str(self.postgres.port)
        values = {"host": host, "port": port, "user": name, "password": password}
        if databases:
            values["dbname"] = databases[0]
        target = f"/{quote(databases[0])}" if databases else ""
        values["uri"] = (
            f"postgresql://{quote(name)}:{quote(password, safe='')}@{host}:{port}{target}"
        )
        if data == values:
            return
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": secret_name,
                "namespace": self.namespace,
                "labels": {CLUSTER_LABEL: cluster, USER_LABEL: name},
            },
            "type": "Opaque",
            "stringData": values,
        }
        if live is None:
            await self.kube.create(SECRETS, body, self.namespace)
        else:
            await self.kube.merge_patch(
                SECRETS, secret_name, {"stringData": values}, self.namespace
            )

    async def _delete(self, cluster: Obj) -> None:
        meta = cluster["metadata"]
        finalizers = list(meta.get("finalizers") or ())
        if DELETE_PVC_FINALIZER not in finalizers:
            return
        for user in (cluster.get("spec") or {}).get("users") or ():
            await self.kube.delete(
                SECRETS, user_secret_name(meta["name"], user["name"]), self.namespace
            )
        finalizers.remove(DELETE_PVC_FINALIZER)
        with contextlib.suppress(ApiError):  # gone meanwhile
            await self.kube.merge_patch(
                PERCONA_PG_CLUSTERS,
                meta["name"],
                {
                    "metadata": {
                        "finalizers": finalizers or None,
                        "resourceVersion": meta["resourceVersion"],
                    }
                },
                self.namespace,
            )

    def describe(self) -> str:
        return f"Percona player: served {sorted(self.served)}; errors: {self.errors[-5:]}"


@contextlib.asynccontextmanager
async def playing_percona(
    kube: KubeClient, namespace: str, postgres: PostgresServer
) -> AsyncIterator[PerconaPlayer]:
    """Install the CRD and play the Percona operator for `namespace` until the block ends."""
    await install_crd(kube)
    player = PerconaPlayer(kube, namespace, postgres)
    synced = asyncio.Event()
    task = asyncio.create_task(
        list_watch(kube, PERCONA_PG_CLUSTERS, player.on_event, namespace=namespace, synced=synced),
        name=f"percona-player-{namespace}",
    )
    try:
        await asyncio.wait_for(synced.wait(), 30)
        yield player
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
