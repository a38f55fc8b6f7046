"""Runtime faults that need a running DittoFS (tests/support/faults.py says what each is
checked for): a wrong admin password, the REST API not answering, S3 stores the server
refuses or cannot reach, a user's password Secret missing, an external PostgreSQL whose
Secret is missing or points nowhere, a Percona cluster that never becomes ready.

All run at once on one testbed node, with moto S3 and a local PostgreSQL; the DittoFS calls
each server receives while broken are counted from its pod's log.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes_asyncio import client

from dittofs_controller.kube.client import KubeClient
from dittofs_controller.kube.resources import DITTOSERVERS, SECRETS
from dittofs_controller.operator import names
from tests.integration.operator.conftest import StartOperator
from tests.integration.operator.test_database import uninstall_percona_crd
from tests.support import percona
from tests.support.faults import CountingKubeClient, Fault, Observed, run_table, secret
from tests.support.faults import memory_server as server
from tests.support.postgres import PostgresServer
from tests.support.process import free_port
from tests.support.s3 import S3Endpoint
from tests.testbed.node import Node

Obj = dict[str, Any]
ADMIN = "Admin-Passw0rd-first-boot-e2e"
ALICE = "Alice-Passw0rd-fault-e2e"
PRIVATE = "http://10.0.0.5:9000"


def remote(endpoint: str, bucket: str, *, private: bool, keys: str) -> Obj:
    return {
        "name": "s3",
        "type": "s3",
        "s3": {
            "endpoint": endpoint,
            "bucket": bucket,
            "region": "us-east-1",
            "allowPrivateEndpoint": private,
            "credentialsSecretRef": {"name": keys},
        },
    }


def with_s3(store: Obj) -> Obj:
    """The S3 store and a share writing through it."""
    share = {"name": "/export", "metadataStore": "mem", "localBlockStore": "mem"}
    return {"remoteBlockStores": [store], "shares": [{**share, "remoteBlockStore": "s3"}]}


def external(secret_name: str) -> Obj:
    """The control plane in an external PostgreSQL, reached with TLS (the local one's)."""
    return {
        "controlPlane": {"database": {"type": "postgres"}},
        "postgres": {"external": {"secretName": secret_name, "sslMode": "require"}},
    }


class Process:
    """Freezes and thaws the process group of a pod's container (the node runs it in one)."""

    def __init__(self, node: Node, namespace: str, pod: str) -> None:
        self.node, self.namespace, self.pod = node, namespace, pod
        self.group: int | None = None

    def stop(self) -> None:
        (worker,) = [
            w
            for w in self.node.workers.values()
            if (w.namespace, w.name) == (self.namespace, self.pod)
        ]
        proc = worker.containers[0].proc
        assert proc is not None
        self.group = proc.pid
        os.killpg(self.group, signal.SIGSTOP)

    def resume(self) -> None:
        # The liveness probe may have had the node kill and restart it meanwhile.
        assert self.group is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.group, signal.SIGCONT)


@pytest.fixture
async def database(postgres: PostgresServer) -> AsyncIterator[tuple[str, str]]:
    """A user and database of the local PostgreSQL for the external-PostgreSQL faults."""
    user, password = "faults", "Pg-Passw0rd-" + os.urandom(6).hex()
    await postgres.ensure_user(user, password)
    await postgres.ensure_database("faults_db", user)
    await postgres.ensure_database("faults_db2", user)
    yield user, password


# Break, a minute of observation, recovery of many servers at once on a loaded machine.
@pytest.mark.timeout(1200)
async def test_server_faults_are_reported_cheap_while_broken_and_recover(
    api: client.ApiClient,
    kube: KubeClient,
    namespace: str,
    node: Node,
    start_operator: StartOperator,
    s3: S3Endpoint,
    postgres: PostgresServer,
    database: tuple[str, str],
) -> None:
    counting = CountingKubeClient(api)
    await start_operator(client=counting)

    async def put(name: str, **data: str) -> None:
        body = {**secret(name, **data), "metadata": {"name": name, "namespace": namespace}}
        await kube.apply(SECRETS, body, field_manager="fault-tests")

    async def set_spec(name: str, spec: Obj) -> None:
        await kube.merge_patch(DITTOSERVERS, name, {"spec": spec}, namespace)

    keys = {"accessKeyId": s3.access_key_id, "secretAccessKey": s3.secret_access_key}
    working = with_s3(remote(s3.url, s3.bucket, private=True, keys="s3-keys"))
    closed = f"http://{node.address}:{free_port()}"
    frozen = Process(node, namespace, names.pod("api-down"))
    user, password = database
    connection = {"host": postgres.host, "port": str(postgres.port), "user": user}
    players: contextlib.AsyncExitStack = contextlib.AsyncExitStack()

    async def play_percona() -> None:
        await players.enter_async_context(percona.playing_percona(kube, namespace, postgres))

    await put("s3-keys", **keys)
    faults = [
        Fault(
            "wrong-admin-password",
            "ServerConfigured",
            "AuthenticationFailed",
            server(controlPlane={"adminPasswordSecretRef": {"name": "admin", "key": "password"}}),
            before=lambda: put("admin", password=ADMIN),
            after=lambda: put("admin", password=ADMIN + "-changed-later"),
            fix=lambda: put("admin", password=ADMIN),
            message="first boot",
        ),
        Fault(
            "api-down",
            "Available",
            "PodNotReady",
            server(),
            after=_sync(frozen.stop),
            fix=_sync(frozen.resume),
        ),
        Fault(
            "store-rejected",
            "ServerConfigured",
            "StoreRejected",
            # A private address without allowPrivateEndpoint: DittoFS's SSRF guard refuses it.
            server(
                **with_s3(remote("http://10.0.0.5:9000", s3.bucket, private=False, keys="s3-keys"))
            ),
            fix=lambda: set_spec("store-rejected", working),
            message="private",
        ),
        Fault(
            "s3-unreachable",
            "ServerConfigured",
            "StoreUnhealthy",
            server(**with_s3(remote(closed, s3.bucket, private=True, keys="s3-keys"))),
            fix=lambda: set_spec("s3-unreachable", working),
        ),
        Fault(
            "user-secret-missing",
            "ServerConfigured",
            "SecretNotFound",
            server(
                users=[
                    {
                        "name": "alice",
                        "uid": 1001,
                        "gid": 1001,
                        "passwordSecretRef": {"name": "alice-password", "key": "password"},
                    }
                ]
            ),
            fix=lambda: put("alice-password", password=ALICE),
            message="alice-password",
        ),
        Fault(
            "postgres-secret-missing",
            "DatabaseReady",
            "SecretNotFound",
            server(**external("pg-connection")),
            fix=lambda: put("pg-connection", **connection, password=password, dbname="faults_db"),
            message="pg-connection",
        ),
        Fault(
            "postgres-unreachable",
            "Available",
            "PodNotReady",
            server(**external("pg-nowhere")),
            before=lambda: put(
                "pg-nowhere",
                **{**connection, "port": str(free_port())},
                password=password,
                dbname="faults_db2",
            ),
            fix=lambda: put("pg-nowhere", **connection, password=password, dbname="faults_db2"),
        ),
        Fault(
            "percona-never-ready",
            "DatabaseReady",
            "PerconaClusterNotReady",
            server(
                controlPlane={"database": {"type": "postgres"}},
                postgres={"percona": {"instances": 1}},
            ),
            before=lambda: percona.install_crd(kube),
            fix=play_percona,
            message="not reporting a state yet",
        ),
    ]
    observed = Observed(
        kube,
        namespace,
        counting,
        dittofs_calls=lambda name: _api_calls(node, namespace, names.pod(name)),
    )
    async with players:
        await run_table(observed, faults, report_timeout=180, recover_timeout=400)


def _sync(step: Any) -> Any:
    async def run() -> None:
        step()

    return run


def _api_calls(node: Node, namespace: str, pod: str) -> int:
    """Requests the server's REST API logged (probes included), in its current run."""
    try:
        return node.logs(namespace, pod).count("API request completed")
    except FileNotFoundError:
        return 0


@pytest.mark.timeout(900)
async def test_percona_operator_missing_is_reported_cheap_and_recovers_once_installed(
    api: client.ApiClient,
    kube: KubeClient,
    namespace: str,
    node: Node,
    start_operator: StartOperator,
    postgres: PostgresServer,
) -> None:
    """Alone: the Percona CRD is cluster-wide, and the table above needs it installed."""
    await uninstall_percona_crd(kube)
    counting = CountingKubeClient(api)
    await start_operator(client=counting)
    players = contextlib.AsyncExitStack()

    async def install_and_play() -> None:
        await players.enter_async_context(percona.playing_percona(kube, namespace, postgres))

    fault = Fault(
        "percona-not-installed",
        "DatabaseReady",
        "PerconaOperatorNotInstalled",
        server(
            controlPlane={"database": {"type": "postgres"}},
            postgres={"percona": {"instances": 1}},
        ),
        fix=install_and_play,
        message="is not installed",
    )
    async with players:
        await run_table(Observed(kube, namespace, counting), [fault], recover_timeout=300)
