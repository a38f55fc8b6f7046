"""The end-to-end harness on its own: what the scenarios rely on, checked without the operator.

A pod (host programs) reaches the local S3 and, over TLS with the credentials the Percona
player wrote, the local PostgreSQL; the player provisions what a PerconaPGCluster asks for.
"""

from __future__ import annotations

import base64

from dittofs_controller.kube.client import KubeClient
from dittofs_controller.kube.resources import PERCONA_PG_CLUSTERS, PODS, SECRETS
from tests.integration.operator.conftest import wait_for
from tests.support.percona import PerconaPlayer
from tests.support.postgres import PostgresError, PostgresServer
from tests.support.s3 import S3Endpoint
from tests.testbed.node import HOST_IMAGE, Node

CLUSTER = {
    "apiVersion": "pgv2.percona.com/v2",
    "kind": "PerconaPGCluster",
    "metadata": {"name": "files-pg"},
    "spec": {
        "crVersion": "2.8.2",
        "postgresVersion": 17,
        "instances": [
            {
                "name": "instance1",
                "replicas": 1,
                "dataVolumeClaimSpec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            }
        ],
        "backups": {"enabled": False},
        "users": [
            {
                "name": "dittofs",
                "databases": ["dittofs", "dittofs_meta"],
                "grantPublicSchemaAccess": True,
            }
        ],
    },
}


async def test_percona_player_and_services_reachable_from_a_pod(
    kube: KubeClient,
    namespace: str,
    node: Node,
    s3: S3Endpoint,
    postgres: PostgresServer,
    percona: PerconaPlayer,
) -> None:
    await kube.create(PERCONA_PG_CLUSTERS, CLUSTER, namespace)

    async def ready() -> dict[str, str] | None:
        cluster = await kube.get(PERCONA_PG_CLUSTERS, "files-pg", namespace)
        secret = await kube.get_or_none(SECRETS, "files-pg-pguser-dittofs", namespace)
        if (cluster.get("status") or {}).get("state") != "ready" or secret is None:
            return None
        return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}

    values = await wait_for(ready, f"the cluster to be served; {percona.describe()}")
    assert values["host"] == node.address and values["port"] == str(postgres.port)
    assert values["user"] == "dittofs" and values["dbname"] == "dittofs"
    assert values["uri"].startswith("postgresql://dittofs:")

    # From a pod's network namespace: PostgreSQL over TLS as the Percona user (creating a
    # table in `public`, which PostgreSQL >= 15 forbids without the grant), and S3.
    conninfo = (
        f"host={values['host']} port={values['port']} user={values['user']} "
        f"password={values['password']} dbname=dittofs_meta sslmode=require"
    )
    script = (
        f"psql '{conninfo}' -v ON_ERROR_STOP=1 -Atc "
        "'CREATE TABLE probe (id int); SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()'"
        f" && python3 -c \"import urllib.request as u; print(u.urlopen('{s3.url}/{s3.bucket}')"
        '.status)"'
    )
    pod = {
        "metadata": {"name": "probe"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "c", "image": HOST_IMAGE, "command": ["sh", "-c", script]}],
        },
    }
    await kube.create(PODS, pod, namespace)

    async def finished() -> str | None:
        phase = ((await kube.get(PODS, "probe", namespace)).get("status") or {}).get("phase")
        return phase if phase in ("Succeeded", "Failed") else None

    phase = await wait_for(finished, "the probe pod to finish")
    output = node.logs(namespace, "probe")
    assert phase == "Succeeded", output
    assert output.split() == ["CREATE", "TABLE", "t", "200"], output  # TLS on; bucket answers
    assert await postgres.tables("dittofs_meta") == ["probe"]

    # A password the harness does not know is refused (the server really checks).
    try:
        await PostgresServer(
            postgres.host, postgres.port, "wrong", postgres.bin, postgres.log, "dittofs"
        ).sql("SELECT 1")
    except PostgresError as error:
        assert "password authentication failed" in str(error)
    else:
        raise AssertionError("a wrong password was accepted")
    assert s3.keys() == []
