"""End-to-end fixtures: the real operator, real DittoFS pods, real NFS/SMB clients, local S3,
PostgreSQL and a stand-in for the Percona operator.

Per test: a namespace, the operator (in-process, scoped to it), a testbed node running its pods
(the real `dfs` from the exact pod spec the operator writes) and, when asked for, a moto S3
endpoint and a PostgreSQL server bound to the node's bridge address (where pods reach the host),
a Percona player. MetalLB's controller gives LoadBalancer Services their addresses, the node's
kube-proxy routes them, and clients dial what status.endpoints publishes, as users do.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from dittofs_controller.api import v1alpha1
from dittofs_controller.api.schema import parse
from dittofs_controller.kube.client import KubeClient
from dittofs_controller.kube.resources import DITTOSERVERS, PODS, SECRETS
from dittofs_controller.operator import names
from dittofs_controller.operator.network import build as network_build
from tests.integration.conftest import dittoservers  # noqa: F401 (a fixture used by the tests)
from tests.integration.operator.conftest import (  # noqa: F401 (fixtures used by the tests)
    operator,
    start_operator,
)
from tests.support import clients
from tests.support.percona import PerconaPlayer, playing_percona
from tests.support.postgres import PostgresServer, bin_dir, running_postgres
from tests.support.s3 import S3Endpoint, running_s3
from tests.testbed.devserver import local_clients, user_passwords
from tests.testbed.kubeproxy import wait_connectable
from tests.testbed.node import Node

Obj = dict[str, Any]

E2E_DIR = Path(__file__).parent
SAMPLES_DIR = Path(__file__).resolve().parents[2] / "samples"
SAMPLES = sorted(SAMPLES_DIR.glob("*.yaml"))
STRICT = {"fieldValidation": "Strict"}
KINDS = {"DittoServer": DITTOSERVERS, "Secret": SECRETS}
READY_TIMEOUT = 150.0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test here is end to end (and, through `kube`, integration too)."""
    for item in items:
        if item.path.is_relative_to(E2E_DIR):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(autouse=True)
def _prerequisites() -> None:
    """Fail (never skip) when the machine cannot run the suite: CI must notice."""
    problems = []
    if os.geteuid() != 0:
        problems.append("root is needed (pod network namespaces, mounts, postgres' OS user)")
    if missing := clients.missing_tools():
        problems.append(f"missing {missing}: apt-get install -y libnfs-utils smbclient")
    try:
        bin_dir()
    except AssertionError as error:
        problems.append(str(error))
    if problems:
        pytest.fail("; ".join(problems))


# -- local services --------------------------------------------------------------------------


@pytest.fixture
def s3(node: Node) -> Iterator[S3Endpoint]:
    """moto S3 on the node's address, with an empty bucket."""
    with running_s3(node.address) as endpoint:
        yield endpoint


@pytest.fixture
async def postgres(node: Node) -> AsyncIterator[PostgresServer]:
    """A fresh PostgreSQL serving this test's pods (TLS) and the harness (127.0.0.1)."""
    async with running_postgres(node.address, pod_network(node)) as server:
        yield server


def pod_network(node: Node) -> str:
    """The CIDR pods of the node come from (its bridge's network)."""
    assert node.bridge is not None, "the node is not started"
    return str(node.bridge.network)


@pytest.fixture
async def percona(
    kube: KubeClient, namespace: str, postgres: PostgresServer
) -> AsyncIterator[PerconaPlayer]:
    async with playing_percona(kube, namespace, postgres) as player:
        yield player


# -- samples ---------------------------------------------------------------------------------


def documents(path: Path) -> list[Obj]:
    """The sample as its reader applies it: its documents, then the password Secrets of its
    users that it says to create (random passwords)."""
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs + user_passwords(docs)


def sample_server(path: Path) -> Obj:
    (server,) = [doc for doc in documents(path) if doc["kind"] == "DittoServer"]
    return server


def needs(path: Path) -> set[str]:
    """Which local services a sample needs: s3, postgres (external) and/or percona."""
    spec = sample_server(path)["spec"]
    wanted = set()
    if any(store.get("type") == "s3" for store in spec.get("remoteBlockStores") or ()):
        wanted.add("s3")
    postgres = spec.get("postgres") or {}
    if "percona" in postgres:
        wanted.add("percona")
    if "external" in postgres:
        wanted.add("postgres")
    return wanted


async def localize(
    docs: list[Obj], s3: S3Endpoint | None, postgres: PostgresServer | None
) -> list[Obj]:
    """The sample's documents pointed at the local services; everything else as written.

    S3 stores get the local endpoint, bucket and region, and allowPrivateEndpoint (the node's
    address is private); their credentials Secret gets the local keys. An external PostgreSQL
    Secret gets the local server's address and a user made for it, which owns the database
    the Secret names and every database the spec's postgres metadata stores use. The
    placeholder client network of load balancers becomes the testbed's, where clients dial from.
    """
    docs = local_clients(docs)
    server = next(doc for doc in docs if doc["kind"] == "DittoServer")
    spec = server["spec"]
    secrets: dict[str, Obj] = {
        doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == "Secret"
    }
    for store in spec.get("remoteBlockStores") or ():
        if store.get("type") != "s3":
            continue
        assert s3 is not None, "a sample with an S3 store needs the s3 fixture"
        settings = store["s3"]
        settings.update(
            endpoint=s3.url, bucket=s3.bucket, region=s3.region, allowPrivateEndpoint=True
        )
        ref = settings["credentialsSecretRef"]
        secret = secrets[ref["name"]]
        secret["stringData"] = {
            ref.get("accessKeyIdKey", "accessKeyId"): s3.access_key_id,
            ref.get("secretAccessKeyKey", "secretAccessKey"): s3.secret_access_key,
        }
    external = (spec.get("postgres") or {}).get("external")
    if external is not None:
        assert postgres is not None, "a sample with an external PostgreSQL needs postgres"
        secret = secrets[external["secretName"]]
        values = secret["stringData"]
        user, password = values[external.get("userKey", "user")], "e2e-" + os.urandom(9).hex()
        dbname = values[external.get("databaseKey", "dbname")]
        await postgres.ensure_user(user, password)
        parsed = parse(v1alpha1.DittoServerSpec, spec)
        wanted = [dbname] + [
            names.metadata_database(store)
            for store in parsed.metadata_stores
            if store.type == "postgres"
        ]
        for database in dict.fromkeys(wanted):
            await postgres.ensure_database(database, user)
        values[external.get("hostKey", "host")] = postgres.host
        values[external.get("portKey", "port")] = str(postgres.port)
        values[external.get("passwordKey", "password")] = password
    return docs


async def eventually(what: str, check: Callable[[], Awaitable[str | None]], timeout: float) -> None:
    """Wait until `check` returns None (it returns why not, kept for the failure message)."""
    deadline = time.monotonic() + timeout
    while (why := await check()) is not None:
        assert time.monotonic() < deadline, f"{what} after {timeout} s: {why}"
        await asyncio.sleep(0.5)


# -- a deployed DittoServer ------------------------------------------------------------------


@dataclass
class Deployment:
    """Drives DittoServers of the test namespace and reaches their pods."""

    kube: KubeClient
    namespace: str
    node: Node
    scratch: Path
    diagnostics: list[Any] = field(default_factory=list)  # objects with describe()

    async def create(self, docs: list[Obj]) -> str:
        """Create the documents (strict field validation); the DittoServer's name."""
        name: str | None = None
        for doc in docs:
            doc = copy.deepcopy(doc)
            doc["metadata"]["namespace"] = self.namespace
            resource = KINDS[doc["kind"]]
            await self.kube.request("POST", resource.path(self.namespace), query=STRICT, body=doc)
            if doc["kind"] == "DittoServer":
                name = str(doc["metadata"]["name"])
        assert name is not None, "no DittoServer among the documents"
        return name

    async def server(self, name: str) -> Obj:
        return await self.kube.get(DITTOSERVERS, name, self.namespace)

    async def wait_ready(self, name: str, timeout: float = READY_TIMEOUT) -> Obj:
        """Wait until Ready is True for the current generation and the pod is ready."""
        deadline = time.monotonic() + timeout
        server: Obj = {}
        while time.monotonic() < deadline:
            server = await self.server(name)
            status = server.get("status") or {}
            ready = next((c for c in status.get("conditions") or () if c["type"] == "Ready"), None)
            generation = server["metadata"]["generation"]
            if (
                ready is not None
                and ready["status"] == "True"
                and ready.get("observedGeneration") == generation
                and status.get("observedGeneration") == generation
            ):
                await self.node.wait_ready(self.namespace, f"{name}-0", timeout=30)
                return server
            await asyncio.sleep(0.5)
        raise AssertionError(
            f"DittoServer {name} not Ready after {timeout} s\n{await self.describe(name, server)}"
        )

    async def wait_condition(
        self, name: str, kind: str, status: str, reason: str | None = None, timeout: float = 60
    ) -> Obj:
        """Wait for a condition of the current generation in `status` (and `reason`)."""
        deadline = time.monotonic() + timeout
        server: Obj = {}
        while time.monotonic() < deadline:
            server = await self.server(name)
            generation = server["metadata"]["generation"]
            for cond in (server.get("status") or {}).get("conditions") or ():
                if (
                    cond["type"] == kind
                    and cond["status"] == status
                    and cond.get("observedGeneration") == generation
                    and (reason is None or cond["reason"] == reason)
                ):
                    return dict(cond)
            await asyncio.sleep(0.5)
        raise AssertionError(
            f"{kind}={status} ({reason}) not reached on {name} after {timeout} s\n"
            f"{await self.describe(name, server)}"
        )

    async def describe(self, name: str, server: Obj | None = None) -> str:
        """Conditions, pod status and log tail, and the stand-ins' state, for failures."""
        server = server or await self.kube.get_or_none(DITTOSERVERS, name, self.namespace) or {}
        conditions = [
            f"  {c['type']}={c['status']} {c['reason']} (gen {c.get('observedGeneration')}): "
            f"{c['message']}"
            for c in (server.get("status") or {}).get("conditions") or ()
        ]
        pod_name = f"{name}-0"
        pod = await self.kube.get_or_none(PODS, pod_name, self.namespace)
        parts = [
            f"generation {server.get('metadata', {}).get('generation')}, status.observedGeneration "
            f"{(server.get('status') or {}).get('observedGeneration')}",
            "conditions:",
            *conditions,
            self.node.describe(self.namespace, pod_name, pod),
            *(d.describe() for d in self.diagnostics),
        ]
        return "\n".join(parts)

    async def pod(self, name: str, not_uid: str | None = None, timeout: float = 90) -> Obj:
        """The ready pod of the DittoServer (a new one if not_uid is the old one's uid)."""
        return await self.node.wait_ready(
            self.namespace, f"{name}-0", timeout=timeout, not_uid=not_uid
        )

    async def secret_value(self, secret: str, key: str) -> str:
        live = await self.kube.get(SECRETS, secret, self.namespace)
        return base64.b64decode(live["data"][key]).decode()

    async def admin_password(self, name: str) -> str:
        return await self.secret_value(names.admin_secret(name), names.GENERATED_ADMIN_KEY)

    async def endpoint(self, name: str, protocol: str) -> tuple[str, int]:
        """Where users reach the protocol: the (host, port) of status.endpoints, as published.

        A NodePort endpoint names no node (`<node-ip>`): any node's address serves it, here the
        testbed node's. Nothing else is rewritten: the client dials what a user would.
        """
        server = await self.server(name)
        published = ((server.get("status") or {}).get("endpoints") or {}).get(protocol)
        assert published, f"{name} publishes no {protocol} endpoint: {server.get('status')}"
        host, port = str(published).rsplit(":", 1)
        if host == network_build.NODE_IP:
            host = self.node.address
        address = (host.strip("[]"), int(port))
        await wait_connectable(*address)
        return address

    async def owner(self, name: str, share: str) -> v1alpha1.User | None:
        """The spec's user owning `share` (who the samples let in), or None."""
        spec = parse(v1alpha1.DittoServerSpec, (await self.server(name))["spec"])
        found = next((item for item in spec.shares if item.name == share), None)
        return next((user for user in spec.users if found and user.name == found.owner), None)

    async def nfs(self, name: str, share: str = "/export") -> clients.Nfs:
        """The export at status.endpoints, as its owner's UID/GID (root when it has none)."""
        await self.pod(name)
        host, port = await self.endpoint(name, "nfs")
        owner = await self.owner(name, share)
        uid, gid = (owner.uid or 0, owner.gid or 0) if owner else (0, 0)
        return clients.Nfs(host, share, port, uid=uid, gid=gid)

    async def smb(
        self, name: str, share: str = "/export", user: str | None = None, password: str = ""
    ) -> clients.Smb:
        """The share at status.endpoints as `user`; by default its owner (else `admin`) with
        the password its Secret holds."""
        await self.pod(name)
        if user is None:
            owner = await self.owner(name, share)
            if owner is None:
                user, password = "admin", await self.admin_password(name)
            else:
                ref = owner.password_secret_ref
                user, password = owner.name, await self.secret_value(ref.name, ref.key)
        host, port = await self.endpoint(name, "smb")
        return clients.Smb(host, share.lstrip("/"), user, password, port)

    async def patch(self, name: str, spec: Obj) -> Obj:
        """Merge-patch the DittoServer's spec; the patched object."""
        return await self.kube.merge_patch(DITTOSERVERS, name, {"spec": spec}, self.namespace)

    def server_log(self, name: str, instance: int = -1) -> str:
        return self.node.logs(self.namespace, f"{name}-0", instance=instance)


@pytest.fixture
def deployment(
    kube: KubeClient,
    namespace: str,
    node: Node,
    operator: Any,  # noqa: F811 (the imported fixture)
    load_balancer: Any,  # MetalLB (tests/conftest.py) gives the Services their addresses
    tmp_path: Path,
) -> Deployment:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    return Deployment(kube, namespace, node, scratch)


class Timings:
    """Seconds since the test started, per step; printed at the end (pytest -s shows them)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.start = time.monotonic()
        self.steps: dict[str, float] = {}

    def mark(self, step: str) -> None:
        self.steps[step] = round(time.monotonic() - self.start, 1)

    def report(self) -> str:
        return f"e2e timings {self.name}: {json.dumps(self.steps)}"


@pytest.fixture
def timings(request: pytest.FixtureRequest) -> Iterator[Timings]:
    """Step timings of the test, listed in the terminal summary."""
    found = Timings(request.node.name)
    yield found
    found.mark("total")
    request.node.user_properties.append(("e2e-timings", found.report()))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    lines = [
        value
        for reports in terminalreporter.stats.values()
        for report in reports
        if getattr(report, "when", "") == "teardown"
        for key, value in getattr(report, "user_properties", ())
        if key == "e2e-timings"
    ]
    if lines:
        terminalreporter.section("e2e timings (seconds since the test started)")
        for line in dict.fromkeys(lines):
            terminalreporter.write_line(line)
