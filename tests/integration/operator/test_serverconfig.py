"""The serverconfig reconciler against the real DittoFS: the operator runs in-process, the testbed
node runs the pods it writes (the real `dfs` v0.29.0), real NFS and SMB clients use the shares.

The operator runs out of the cluster here, so it reaches each REST API through a port-forward
(`--dittofs-api-access auto`: kube-apiserver -> the testbed node's kubelet endpoint -> the pod);
the clients use the pod IP (there is no kube-proxy). Services are
ClusterIP so NetworkReady turns True without a load balancer.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from dittofs_controller.dittofs import (
    ClientCertificate,
    DittoFSClient,
    DittoFSError,
    DittoFSUnreachable,
    pinned_ssl_context,
)
from dittofs_controller.kube.client import KubeClient
from dittofs_controller.kube.resources import (
    CONFIGMAPS,
    DITTOSERVERS,
    EVENTS,
    PODS,
    SECRETS,
    ObjectKey,
)
from dittofs_controller.operator import names
from dittofs_controller.operator.metrics import HEALTH_VALUES
from dittofs_controller.operator.serverconfig import credentials, report
from dittofs_controller.runtime.metrics import REGISTRY
from tests.integration.operator.conftest import (
    SAMPLES,
    RunningOperator,
    StartOperator,
    condition,
    load_manifest,
    wait_for,
)
from tests.support import kerberos as kerberos_files
from tests.support.clients import ClientError, Nfs, Smb, missing_tools
from tests.support.dfsctl import Dfsctl
from tests.support.ldap import running_ldap
from tests.support.s3 import running_s3
from tests.testbed.node import Node
from tests.unit.test_dittofs_client import issued, self_signed

Obj = dict[str, Any]
READY_TIMEOUT = 120.0
ALICE_OLD = "Alice-Passw0rd-one"
ALICE_NEW = "Alice-Passw0rd-two"

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def _clients() -> None:
    if missing := missing_tools():
        pytest.fail(f"missing {missing}: apt-get install -y libnfs-utils smbclient")


def secret(name: str, **data: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data}


def sample(namespace: str, **spec: Any) -> Obj:
    """samples/badger-filesystem.yaml, exposed through ClusterIP Services, with user alice
    (uid 1001) and its share open to root as these tests were written for: no owner (one is
    given later, at a re-creation), read-write for everyone, no root squash."""
    server = load_manifest(SAMPLES / "badger-filesystem.yaml", namespace)
    server["metadata"]["name"] = "files"
    server["spec"]["expose"] = {"nfs": {"type": "ClusterIP"}, "smb": {"type": "ClusterIP"}}
    (export,) = server["spec"]["shares"]
    del export["owner"], export["permissions"]
    export.update(defaultPermission="read-write", nfs={"squash": "none"})
    server["spec"]["users"] = [
        {
            "name": "alice",
            "uid": 1001,
            "gid": 1001,
            "passwordSecretRef": {"name": "alice-password", "key": "password"},
        }
    ]
    server["spec"].update(spec)
    return server


async def create(kube: KubeClient, namespace: str, server: Obj, *secrets: Obj) -> ObjectKey:
    for item in secrets:
        await kube.create(SECRETS, item, namespace)
    await kube.create(DITTOSERVERS, server, namespace)
    return ObjectKey(namespace, server["metadata"]["name"])


async def current(kube: KubeClient, key: ObjectKey, kind: str) -> Obj | None:
    """The condition if computed for the DittoServer's current generation."""
    server = await kube.get(DITTOSERVERS, key.name, key.namespace)
    found = await condition(kube, key, kind)
    generation = server["metadata"]["generation"]
    return found if found and found.get("observedGeneration") == generation else None


async def until(
    kube: KubeClient, key: ObjectKey, kind: str, status: str, reason: str, timeout: float = 60
) -> Obj:
    async def check() -> Obj | None:
        found = await current(kube, key, kind)
        return found if found and (found["status"], found["reason"]) == (status, reason) else None

    result: Obj = await wait_for(check, f"{kind} {status}/{reason}", timeout)
    return result


def server_sample(key: ObjectKey, metric: str, **labels: str) -> float | None:
    """A per-server sample of the operator's registry (the operator runs in this process)."""
    return REGISTRY.get_sample_value(
        metric, {"namespace": key.namespace, "name": key.name, **labels}
    )


def converged_count() -> float:
    return REGISTRY.get_sample_value("dittofs_server_convergence_seconds_count") or 0.0


async def ready(kube: KubeClient, key: ObjectKey, node: Node) -> Obj:
    """Wait for Ready; on timeout the message has every condition and the pod's log."""
    try:
        await until(kube, key, "Ready", "True", "Ready", READY_TIMEOUT)
    except AssertionError:
        server = await kube.get(DITTOSERVERS, key.name, key.namespace)
        pod = await kube.get_or_none(PODS, names.pod(key.name), key.namespace)
        conditions = json.dumps((server.get("status") or {}).get("conditions"), indent=1)
        raise AssertionError(
            f"not Ready: {conditions}\n{node.describe(key.namespace, names.pod(key.name), pod)}"
        ) from None
    return await kube.get(DITTOSERVERS, key.name, key.namespace)


async def server_status(kube: KubeClient, key: ObjectKey) -> Obj:
    server = await kube.get(DITTOSERVERS, key.name, key.namespace)
    return dict((server.get("status") or {}).get("server") or {})


async def pod_ip(kube: KubeClient, key: ObjectKey) -> str:
    pod = await kube.get(PODS, names.pod(key.name), key.namespace)
    return str(pod["status"]["podIP"])


async def set_spec(kube: KubeClient, key: ObjectKey, **spec: Any) -> None:
    await kube.merge_patch(DITTOSERVERS, key.name, {"spec": spec}, key.namespace)


async def share_names(kube: KubeClient, key: ObjectKey) -> list[str]:
    return [share["name"] for share in (await server_status(kube, key)).get("shares") or ()]


async def secret_value(kube: KubeClient, namespace: str, name: str, key: str) -> str:
    found = await kube.get(SECRETS, name, namespace)
    return base64.b64decode(found["data"][key]).decode()


async def event_reasons(kube: KubeClient, key: ObjectKey) -> set[str]:
    """The reasons of the Events recorded about the DittoServer (events.k8s.io: `regarding`)."""
    events = await kube.request("GET", EVENTS.path(key.namespace))
    return {
        str(event.get("reason"))
        for event in events["items"]
        if (event.get("regarding") or {}).get("name") == key.name
    }


async def everything_published(kube: KubeClient, key: ObjectKey) -> str:
    """The DittoServer and every Event of its namespace, as text (to look for leaks)."""
    server = await kube.get(DITTOSERVERS, key.name, key.namespace)
    events = await kube.request("GET", EVENTS.path(key.namespace))
    return json.dumps(server) + json.dumps(events)


async def test_sample_is_configured_and_serves_nfs_and_smb(
    kube: KubeClient,
    namespace: str,
    node: Node,
    operator: RunningOperator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Compare a converged server every 2 s instead of 5 min, to see drift repaired.
    monkeypatch.setattr(report, "DRIFT_INTERVAL", 2.0)
    converged_before = converged_count()
    key = await create(
        kube,
        namespace,
        sample(namespace),
        secret("alice-password", password=ALICE_OLD),
    )
    await ready(kube, key, node)
    configured = await until(kube, key, "ServerConfigured", "True", "Converged")

    # What Prometheus reads from the operator (it runs in this process), once its cache has
    # the Ready status the API server has.
    async def reported_running() -> bool:
        return (
            server_sample(key, "dittofs_server_condition", condition="Ready", status="True")
            == server_sample(key, "dittofs_server_phase", phase="Running")
            == 1.0
        )

    await wait_for(reported_running, "the server's metrics to say Ready and Running")
    assert server_sample(key, "dittofs_server_condition", condition="Ready", status="False") == 0
    assert server_sample(key, "dittofs_server_generation_pending") == 0
    share_health = {
        value: server_sample(
            key, "dittofs_server_health", kind="shares", item="/export", health=value
        )
        for value in HEALTH_VALUES
    }
    assert sorted(share_health.values()) == [0, 0, 0, 1], share_health
    assert converged_count() == converged_before + 1
    assert "2 stores, 1 share, 1 user and 0 groups" in configured["message"]
    status = await server_status(kube, key)
    assert status["adapters"] == {
        "nfs": {
            "enabled": True,
            "running": True,
            "port": 12049,
            "leaseSeconds": 90,
            "gracePeriodSeconds": 90,
        },
        "smb": {
            "enabled": True,
            "running": True,
            "port": 12445,  # DittoFS starts it on 1445
            "signing": "required",  # no guests
            "minDialect": "2.0.2",
            "maxDialect": "3.1.1",
        },
    }
    (share,) = status["shares"]
    assert share.pop("health") in ("healthy", "degraded", "unknown")
    assert share == {
        "name": "/export",
        "enabled": True,
        "readOnly": False,
        "metadataStore": "meta",
        "localBlockStore": "blocks",
    }
    assert [(s["name"], s["type"]) for s in status["metadataStores"]] == [("meta", "badger")]
    assert [(s["name"], s["type"]) for s in status["localBlockStores"]] == [("blocks", "fs")]
    assert "alice" in status["users"]
    assert status["managed"] == {
        "shares": ["/export"],
        "users": ["alice"],
        "metadataStores": ["meta"],
        "localBlockStores": ["blocks"],
    }
    first_digest = status["applied"]["user/alice"]

    # Real clients: NFSv3 as root (squash none), SMB3 as alice with the Secret's password.
    ip = await pod_ip(kube, key)
    nfs = Nfs(ip, "/export")
    await nfs.write("/hello.txt", "hello over nfs\n", tmp_path)
    assert await nfs.read("/hello.txt") == "hello over nfs\n"
    alice = Smb(ip, "export", "alice", ALICE_OLD)
    await alice.put("from-smb.txt", "hello over smb\n", tmp_path)
    assert await alice.read("from-smb.txt", tmp_path) == "hello over smb\n"
    assert "hello.txt" in await alice.listing()  # root's file, written over NFS
    assert await nfs.read("/from-smb.txt") == "hello over smb\n"

    # A rotated password Secret changes alice's SMB login.
    await kube.merge_patch(
        SECRETS, "alice-password", {"stringData": {"password": ALICE_NEW}}, namespace
    )
    rotated = Smb(ip, "export", "alice", ALICE_NEW)

    async def new_password_works() -> bool:
        return await rotated.login_error() is None

    await wait_for(new_password_works, "alice's new password to work over SMB")
    assert await alice.login_error() == "NT_STATUS_LOGON_FAILURE"

    async def rotation_recorded() -> bool:
        # The server takes the password before the status records it: the digest follows.
        return (await server_status(kube, key))["applied"]["user/alice"] != first_digest

    await wait_for(rotation_recorded, "alice's new password digest in status.applied")

    # A share added to the spec appears; removed, it disappears from the server.
    extra = {**sample(namespace)["spec"]["shares"][0], "name": "/extra"}
    export = sample(namespace)["spec"]["shares"][0]
    await set_spec(kube, key, shares=[export, extra])

    async def shares_are(wanted: list[str]) -> bool:
        found = await current(kube, key, "ServerConfigured")
        converged = found is not None and found["reason"] == "Converged"
        return converged and await share_names(kube, key) == wanted

    await wait_for(lambda: shares_are(["/export", "/extra"]), "share /extra on the server")
    assert await Nfs(ip, "/extra").reachable() is None
    await set_spec(kube, key, shares=[export])
    await wait_for(lambda: shares_are(["/export"]), "share /extra gone from the server")

    async def extra_unmountable() -> bool:
        # The REST API no longer lists it; the NFS adapter need not have dropped it yet.
        return await Nfs(ip, "/extra").reachable() is not None

    await wait_for(extra_unmountable, "share /extra to be unmountable")
    assert (await server_status(kube, key))["managed"]["shares"] == ["/export"]
    assert await nfs.read("/hello.txt") == "hello over nfs\n"

    admin = await secret_value(kube, namespace, names.admin_secret(key.name), "password")
    async with aiohttp.ClientSession() as http:
        api = DittoFSClient(http, f"http://{ip}:8080", admin)

        # An owner can only be given at creation: the share is created again, files kept.
        await set_spec(kube, key, shares=[{**export, "owner": "alice"}])

        async def owned_by_alice() -> bool:
            try:
                share = await api.get("/shares/export")
            except DittoFSError as error:  # between the share's deletion and its re-creation
                if error.status == 404:
                    return False
                raise
            return bool((share.get("owner_uid"), share.get("owner_gid")) == (1001, 1001))

        await wait_for(owned_by_alice, "share /export owned by alice (uid 1001)")
        # The re-created share gets its squash and permissions later in the same pass.
        await until(kube, key, "ServerConfigured", "True", "Converged")
        assert await nfs.read("/hello.txt") == "hello over nfs\n"

        # Drift made through the REST API by hand is put back at the next comparison.
        await api.put("/adapters/smb", {"enabled": True, "port": 1445})

        async def smb_port_restored() -> bool:
            return bool((await api.get("/adapters/smb"))["port"] == 12445)

        await wait_for(smb_port_restored, "the SMB port put back to 12445", timeout=30)
    await wait_for(new_password_works, "SMB logins on the restored port")

    # A user removed from the spec is deleted from the server (with the share it owned back
    # to root).
    await set_spec(kube, key, users=[], shares=[export])

    async def alice_gone() -> bool:
        status = await server_status(kube, key)
        return "alice" not in status["users"] and "users" not in status["managed"]

    await wait_for(alice_gone, "user alice deleted from the server")
    assert await rotated.login_error() == "NT_STATUS_LOGON_FAILURE"

    published = await everything_published(kube, key)
    for value in (ALICE_OLD, ALICE_NEW, admin):
        assert value not in published


async def test_rejections_and_a_wrong_admin_password_are_reported(
    kube: KubeClient, namespace: str, node: Node, operator: RunningOperator
) -> None:
    s3_secret = "s3-secret-access-key-never-shown"
    cold = {
        "name": "cold",
        "type": "s3",
        "s3": {
            # A private address without allowPrivateEndpoint: DittoFS's SSRF guard refuses it.
            "endpoint": "http://10.0.0.5:9000",
            "bucket": "cold-data",
            "credentialsSecretRef": {"name": "s3-keys"},
        },
    }
    export = sample(namespace)["spec"]["shares"][0]
    cold_share = {**export, "name": "/cold", "remoteBlockStore": "cold"}
    server = sample(
        namespace,
        controlPlane={"adminPasswordSecretRef": {"name": "admin-secret", "key": "password"}},
        remoteBlockStores=[cold],
        shares=[export, cold_share],
    )
    key = await create(
        kube,
        namespace,
        server,
        secret("alice-password", password=ALICE_OLD),
        secret("admin-secret", password="Admin-Passw0rd-first-boot"),
        secret("s3-keys", accessKeyId="AKIA-TEST", secretAccessKey=s3_secret),
    )
    rejected = await until(
        kube, key, "ServerConfigured", "False", "StoreRejected", timeout=READY_TIMEOUT
    )
    message = rejected["message"]
    assert "remote block store cold: DittoFS answered 400" in message
    assert "10.0.0.5" in message and "private" in message
    assert "share /cold waits for remote block store cold" in message
    assert s3_secret not in message
    ready_condition = await until(kube, key, "Ready", "False", "StoreRejected")
    assert "ServerConfigured" in ready_condition["message"]
    assert await share_names(kube, key) == ["/export"]  # the rest of the pass went on

    await set_spec(kube, key, remoteBlockStores=[], shares=[export])
    await until(kube, key, "ServerConfigured", "True", "Converged")
    await until(kube, key, "Ready", "True", "Ready")

    # DittoFS read the admin password at its first boot only: a new one in the Secret is wrong.
    changed = "Admin-Passw0rd-changed-later"
    await kube.merge_patch(
        SECRETS, "admin-secret", {"stringData": {"password": changed}}, namespace
    )
    refused = await until(kube, key, "ServerConfigured", "False", "AuthenticationFailed")
    assert server_sample(key, "dittofs_server_api_errors_total", kind="authentication")
    assert "Secret 'admin-secret'" in refused["message"]
    assert "first boot" in refused["message"]

    async def event_recorded() -> bool:  # recorded just after the condition is published
        events = await kube.request("GET", EVENTS.path(namespace))
        return any(event.get("reason") == "AuthenticationFailed" for event in events["items"])

    await wait_for(event_recorded, "an AuthenticationFailed Event")
    await kube.merge_patch(
        SECRETS,
        "admin-secret",
        {"stringData": {"password": "Admin-Passw0rd-first-boot"}},
        namespace,
    )
    await until(kube, key, "ServerConfigured", "True", "Converged")
    published = await everything_published(kube, key)
    assert changed not in published and s3_secret not in published

    # Converged, nothing changing: no further calls to the server (it logs each at INFO).
    await until(kube, key, "Ready", "True", "Ready")
    calls = api_calls(node, key)
    assert calls > 0
    await asyncio.sleep(3)
    assert api_calls(node, key) == calls


async def test_s3_keys_are_sent_again_when_their_secret_changes(
    kube: KubeClient, namespace: str, node: Node, operator: RunningOperator, tmp_path: Path
) -> None:
    with running_s3(node.address) as s3:
        remote = {
            "name": "s3",
            "type": "s3",
            "s3": {
                "endpoint": s3.url,
                "region": s3.region,
                "bucket": s3.bucket,
                "prefix": "files/",
                "allowPrivateEndpoint": True,  # the node's bridge address is private
                "credentialsSecretRef": {"name": "s3-keys"},
            },
        }
        export = {**sample(namespace)["spec"]["shares"][0], "remoteBlockStore": "s3"}
        keys = secret("s3-keys", accessKeyId=s3.access_key_id, secretAccessKey=s3.secret_access_key)
        server = sample(namespace, remoteBlockStores=[remote], shares=[export])
        key = await create(
            kube, namespace, server, keys, secret("alice-password", password=ALICE_OLD)
        )
        await ready(kube, key, node)
        status = await server_status(kube, key)
        assert [(s["name"], s["type"]) for s in status["remoteBlockStores"]] == [("s3", "s3")]
        assert status["shares"][0]["remoteBlockStore"] == "s3"
        applied = status["applied"]["remote/s3"]
        ip = await pod_ip(kube, key)
        await Nfs(ip, "/export").write("/to-s3.txt", "kept in the bucket\n", tmp_path)
        first = await kube.get(PODS, names.pod(key.name), namespace)
        assert "storesRevision" not in status  # created, never changed: no restart owed

        # moto takes any keys here (tests/e2e proves the new keys in use against an endpoint
        # that checks them): what matters is that they reach DittoFS and a new pod opens them.
        rotated = {"accessKeyId": "AKIA-ROTATED", "secretAccessKey": "rotated-secret-key-1"}
        await kube.merge_patch(SECRETS, "s3-keys", {"stringData": rotated}, namespace)

        async def reopened() -> str | None:
            """The stores revision, once the new keys were sent and the server converged again
            (one read: a condition and a digest from two reads may be of different passes)."""
            server = await kube.get(DITTOSERVERS, key.name, namespace)
            status = server.get("status") or {}
            found = next(
                (c for c in status.get("conditions") or () if c["type"] == "ServerConfigured"),
                None,
            )
            published = status.get("server") or {}
            if found is None or found["reason"] != "Converged":
                return None
            if (published.get("applied") or {}).get("remote/s3") == applied:
                return None
            return str(published["storesRevision"])

        revision = await wait_for(reopened, "the rotated S3 keys applied", timeout=180)
        second = await kube.get(PODS, names.pod(key.name), namespace)
        assert second["metadata"]["uid"] != first["metadata"]["uid"], "the store was not reopened"
        assert second["metadata"]["annotations"][names.STORES_REVISION_ANNOTATION] == revision
        reasons = await event_reasons(kube, key)
        assert "StoresReopening" in reasons, reasons
        ip = await pod_ip(kube, key)
        admin = await secret_value(kube, namespace, names.admin_secret(key.name), "password")
        async with aiohttp.ClientSession() as http:
            api = DittoFSClient(http, f"http://{ip}:8080", admin)
            stored = (await api.get("/store/block/remote/s3"))["config"]
        assert stored["access_key_id"] == "AKIA-ROTATED"
        assert stored["secret_access_key"] == "********"  # never read back
        assert await Nfs(ip, "/export").read("/to-s3.txt") == "kept in the bucket\n"
        published = await everything_published(kube, key)
        for value in (s3.secret_access_key, "rotated-secret-key-1"):
            assert value not in published


async def test_https_api_is_reached_with_the_certificate_of_its_secret(
    kube: KubeClient, namespace: str, node: Node, operator: RunningOperator
) -> None:
    # Made for the Service name; the operator dials 127.0.0.1 (its port-forward) and trusts
    # exactly this certificate.
    cert, key_pem = self_signed(f"files-api.{namespace}.svc")
    tls = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "api-tls"},
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": cert, "tls.key": key_pem},
    }
    server = sample(namespace, controlPlane={"tls": {"secretName": "api-tls"}})
    key = await create(kube, namespace, server, tls, secret("alice-password", password=ALICE_OLD))
    await ready(kube, key, node)
    ip = await pod_ip(kube, key)
    admin = await secret_value(kube, namespace, names.admin_secret(key.name), "password")
    pinned = aiohttp.TCPConnector(ssl=pinned_ssl_context(cert))
    async with aiohttp.ClientSession(connector=pinned) as http:
        api = DittoFSClient(http, f"https://{ip}:8080", admin)
        assert {user["username"] for user in await api.get("/users")} >= {"admin", "alice"}


async def test_mutual_tls_lets_in_the_operator_and_its_renewed_certificate_only(
    kube: KubeClient, namespace: str, node: Node, operator: RunningOperator, tmp_path: Path
) -> None:
    cert, key_pem = self_signed(f"files-api.{namespace}.svc")
    ca = issued("dittofs-clients", ca=True)

    def client_secret(name: str, certificate: str, key: str) -> Obj:
        return {
            **secret(name, **{"tls.crt": certificate, "tls.key": key}),
            "type": "kubernetes.io/tls",
        }

    tls = {
        "secretName": "api-tls",
        "clientCA": {"secretName": "clients-ca"},
        "operatorCertificate": {"secretName": "operator-client"},
    }
    key = await create(
        kube,
        namespace,
        sample(namespace, controlPlane={"tls": tls}),
        client_secret("api-tls", cert, key_pem),
        secret("clients-ca", **{"ca.crt": ca[0]}),
        client_secret("operator-client", *issued("dittofs-operator", ca, client=True)),
        secret("alice-password", password=ALICE_OLD),
    )
    await ready(kube, key, node)  # ServerConfigured True: alice was created over mutual TLS
    ip = await pod_ip(kube, key)
    admin = await secret_value(kube, namespace, names.admin_secret(key.name), "password")

    async def users(client: ClientCertificate | None, ip: str = ip) -> set[str]:
        connector = aiohttp.TCPConnector(ssl=pinned_ssl_context(cert, client))
        async with aiohttp.ClientSession(connector=connector) as http:
            api = DittoFSClient(http, f"https://{ip}:8080", admin)
            return {user["username"] for user in await api.get("/users")}

    other_ca = issued("other-ca", ca=True)
    stranger = ClientCertificate(*issued("stranger", other_ca, client=True))
    assert await users(ClientCertificate(*issued("someone", ca, client=True))) >= {"alice"}
    with pytest.raises(DittoFSUnreachable):
        await users(None)  # the real server refuses a client without a certificate
    with pytest.raises(DittoFSUnreachable):
        await users(stranger)
    # A person with dfsctl, as docs/ingress.md shows (the pod IP is not in the server's
    # certificate, so dfsctl does not verify it here).
    alice_cert, alice_key = tmp_path / "alice.crt", tmp_path / "alice.key"
    for path, text in zip((alice_cert, alice_key), issued("alice", ca, client=True), strict=True):
        path.write_text(text)
    dfsctl = Dfsctl(tmp_path / "dfsctl")
    login = ("login", "--server", f"https://{ip}:8080", "--tls-skip-verify", "-u", "admin")
    # TLS 1.3 refuses a missing certificate after the handshake, so Go reports the server's
    # alert, a failed HTTP/2 setup or a reset connection, depending on timing: the login
    # fails without the certificate and succeeds with it, the line after.
    with pytest.raises(AssertionError, match="login failed"):
        await dfsctl(*login, "--password", admin)
    certificate = ("--client-cert", str(alice_cert), "--client-key", str(alice_key))
    await dfsctl(*login, *certificate, "--password", admin)
    assert "alice" in await dfsctl("user", "list")

    # Each change of the operator's Secret is used at its next pass: a key that is not the
    # certificate's, a certificate of another CA (refused by DittoFS), then a renewal.
    async def rotate(certificate: str, key: str) -> None:
        data = {"stringData": {"tls.crt": certificate, "tls.key": key}}
        await kube.merge_patch(SECRETS, "operator-client", data, namespace)

    renewed = issued("dittofs-operator", ca, client=True)
    await rotate(renewed[0], issued("dittofs-operator", ca, client=True)[1])
    invalid = await until(kube, key, "ServerConfigured", "False", "ClientCertificateInvalid")
    assert "operator-client" in invalid["message"]

    async def announced() -> bool:  # the Event follows the condition
        return "ClientCertificateInvalid" in await event_reasons(kube, key)

    await wait_for(announced, "a ClientCertificateInvalid Event")
    await rotate(*issued("dittofs-operator", other_ca, client=True))
    await until(kube, key, "ServerConfigured", "False", "ServerUnreachable", timeout=90)
    await rotate(*renewed)
    await until(kube, key, "ServerConfigured", "True", "Converged", timeout=90)
    assert renewed[1] not in await everything_published(kube, key)

    # DittoFS reads the CA bundle only when it starts: a bundle with a second CA restarts the
    # pod, and the new one admits that CA's clients.
    before = (await kube.get(PODS, names.pod(key.name), namespace))["metadata"]["uid"]
    bundle = {"stringData": {"ca.crt": ca[0] + other_ca[0]}}
    await kube.merge_patch(SECRETS, "clients-ca", bundle, namespace)

    async def admitted() -> bool:
        pod = await kube.get_or_none(PODS, names.pod(key.name), namespace)
        if not pod or pod["metadata"]["uid"] == before or not pod["status"].get("podIP"):
            return False
        with contextlib.suppress(DittoFSUnreachable):
            return "alice" in await users(stranger, pod["status"]["podIP"])
        return False

    await wait_for(admitted, "a restarted pod that admits the second CA's clients", READY_TIMEOUT)


async def test_credential_digests_are_keyed_and_unkeyed_ones_are_replaced_once(
    kube: KubeClient, namespace: str, node: Node, start_operator: StartOperator
) -> None:
    operator = await start_operator()
    key = await create(
        kube, namespace, sample(namespace), secret("alice-password", password=ALICE_OLD)
    )
    await ready(kube, key, node)
    await until(kube, key, "ServerConfigured", "True", "Converged")
    server = await kube.get(DITTOSERVERS, key.name, namespace)
    uid = server["metadata"]["uid"]
    key_secret = await kube.get(SECRETS, names.digest_key_secret(key.name), namespace)
    assert [owner["uid"] for owner in key_secret["metadata"]["ownerReferences"]] == [uid]
    digest_key = await secret_value(kube, namespace, key_secret["metadata"]["name"], "key")
    applied = (await server_status(kube, key))["applied"]
    assert applied == {"user/alice": credentials.digest(digest_key, "user/alice", [ALICE_OLD])}
    unkeyed = unkeyed_digest(uid, "user/alice", ALICE_OLD)
    assert not applied["user/alice"].startswith(unkeyed)

    # A status written by an operator of the former scheme: the next one sends the password
    # once, records the keyed digest, and then leaves the server alone.
    await operator.shutdown()
    old = {"status": {"server": {"applied": {"user/alice": unkeyed}}}}
    await kube.merge_patch(DITTOSERVERS, key.name, old, namespace, subresource="status")
    sent = password_calls(node, key)
    operator = await start_operator()

    async def keyed_again() -> bool:
        return (await server_status(kube, key))["applied"] == applied

    await wait_for(keyed_again, "the keyed digest back in status.server.applied")
    await until(kube, key, "ServerConfigured", "True", "Converged")
    assert password_calls(node, key) == sent + 1
    assert await Smb(await pod_ip(kube, key), "export", "alice", ALICE_OLD).login_error() is None

    # A restart with nothing changed sends nothing and writes nothing.
    await operator.shutdown()
    version = (await kube.get(DITTOSERVERS, key.name, namespace))["metadata"]["resourceVersion"]
    calls = api_calls(node, key)
    await start_operator()
    await wait_for(lambda: settled(node, key, calls), "the restarted operator's pass")
    assert password_calls(node, key) == sent + 1
    server = await kube.get(DITTOSERVERS, key.name, namespace)
    assert server["metadata"]["resourceVersion"] == version


def unkeyed_digest(uid: str, item: str, value: str) -> str:
    """The former scheme: anyone who reads the DittoServer can test guesses against it."""
    return hashlib.sha256("\0".join([uid, item, value]).encode()).hexdigest()[:16]


async def settled(node: Node, key: ObjectKey, before: int) -> bool:
    """The server was called since `before` and then not for 3 s."""
    calls = api_calls(node, key)
    if calls == before:
        return False
    await asyncio.sleep(3)
    return api_calls(node, key) == calls


def api_calls(node: Node, key: ObjectKey) -> int:
    return node.logs(key.namespace, names.pod(key.name)).count("API request completed")


def password_calls(node: Node, key: ObjectKey) -> int:
    return node.logs(key.namespace, names.pod(key.name)).count("/users/alice/password")


async def test_snapshot_policy_is_applied_kept_and_prunes_what_it_took(
    kube: KubeClient,
    namespace: str,
    node: Node,
    operator: RunningOperator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(report, "DRIFT_INTERVAL", 2.0)
    export = sample(namespace)["spec"]["shares"][0]
    every_2s = {"interval": "2s", "keepLast": 2, "namePrefix": "auto"}
    server = sample(
        namespace,
        controlPlane={"snapshotCheckInterval": 1},
        shares=[{**export, "snapshots": every_2s}],
    )
    key = await create(kube, namespace, server, secret("alice-password", password=ALICE_OLD))
    await ready(kube, key, node)
    await until(kube, key, "ServerConfigured", "True", "Converged")
    (share,) = (await server_status(kube, key))["shares"]
    assert share["snapshots"] == {
        "enabled": True,
        "interval": "2s",
        "keepLast": 2,
        "namePrefix": "auto",
    }
    ip = await pod_ip(kube, key)
    await Nfs(ip, "/export").write("/kept.txt", "in every snapshot\n", tmp_path)
    admin = await secret_value(kube, namespace, names.admin_secret(key.name), "password")
    async with aiohttp.ClientSession() as http:
        api = DittoFSClient(http, f"http://{ip}:8080", admin)

        # DittoFS takes a snapshot every 2 s and keeps the newest 2 of those it took. It prunes
        # as it starts a new one, which is not ready yet: for a while there are 3.
        seen: list[str] = []
        most = 0

        async def ready_snapshots() -> list[Obj]:
            nonlocal most
            found = await api.get("/shares/export/snapshots") or []
            for snapshot in found:
                if snapshot["id"] not in seen:
                    seen.append(snapshot["id"])
            scheduled = [s for s in found if s["state"] == "ready" and s["scheduled"]]
            most = max(most, len(scheduled))
            return scheduled

        async def pruned() -> bool:
            current = await ready_snapshots()
            return len(seen) >= 4 and seen[0] not in {s["id"] for s in current}

        await wait_for(pruned, "4 scheduled snapshots taken and the oldest pruned", timeout=90)
        current = await ready_snapshots()
        assert 2 <= most <= 3, (most, current)
        assert all(s["name"].startswith("auto-") for s in current), current

        # A snapshot taken by hand is never pruned by the policy.
        manual = await api.post("/shares/export/snapshots", {"name": "by-hand"})

        # A policy changed by hand is put back at the next comparison.
        await api.put("/shares/export/snapshot-policy", {"interval": "@weekly", "keep_last": 9})

        async def policy_restored() -> bool:
            found = await api.get("/shares/export/snapshot-policy")
            return bool((found["interval"], found["keep_last"]) == ("2s", 2))

        await wait_for(policy_restored, "the snapshot policy put back", timeout=30)
        await wait_for(pruned, "scheduled snapshots taken again after the restore")
        ids = {s["id"] for s in await api.get("/shares/export/snapshots")}
        assert manual["snapshot_id"] in ids

        # Dropped from the spec, the policy is deleted from the server; snapshots stay.
        await set_spec(kube, key, shares=[export])

        async def policy_gone() -> bool:
            try:
                await api.get("/shares/export/snapshot-policy")
            except DittoFSError as error:
                if error.status == 404:
                    return True
                raise
            return False

        await wait_for(policy_gone, "the snapshot policy deleted", timeout=30)
        await until(kube, key, "ServerConfigured", "True", "Converged")
        (share,) = (await server_status(kube, key))["shares"]
        assert "snapshots" not in share
        assert manual["snapshot_id"] in {s["id"] for s in await api.get("/shares/export/snapshots")}

    # An on-demand snapshot and a restore, with dfsctl as docs/snapshots.md shows them.
    nfs = Nfs(ip, "/export")
    dfsctl = Dfsctl(tmp_path / "dfsctl")
    await dfsctl.login(f"http://{ip}:8080", admin)
    await dfsctl("share", "snapshot", "create", "/export", "--name", "before-change")
    await nfs.write("/later.txt", "written after the snapshot\n", tmp_path)
    assert "later.txt" in await nfs.listing()

    async def share_enabled(wanted: bool) -> bool:
        await until(kube, key, "ServerConfigured", "True", "Converged")
        (share,) = (await server_status(kube, key))["shares"]
        return bool(share["enabled"] is wanted)

    await set_spec(kube, key, shares=[{**export, "enabled": False}])
    await wait_for(lambda: share_enabled(False), "share /export disabled")
    assert await nfs.reachable() is not None, "a disabled share is still served"
    listed = json.loads(await dfsctl("share", "snapshot", "list", "/export", "-o", "json"))
    (before,) = [s["id"] for s in listed if s.get("name") == "before-change"]
    # --force: the share has no remote store, so no snapshot of it is remotely durable.
    await dfsctl("share", "snapshot", "restore", "/export", before, "--yes", "--force")
    await set_spec(kube, key, shares=[export])
    await wait_for(lambda: share_enabled(True), "share /export enabled again")
    await wait_for(lambda: _reachable(nfs), "share /export served again")
    assert await nfs.read("/kept.txt") == "in every snapshot\n"
    assert "later.txt" not in await nfs.listing()


async def _reachable(nfs: Nfs) -> bool:
    return await nfs.reachable() is None


async def test_quotas_refuse_writes_over_nfs_and_smb_and_are_put_back(
    kube: KubeClient,
    namespace: str,
    node: Node,
    operator: RunningOperator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(report, "DRIFT_INTERVAL", 2.0)
    export = sample(namespace)["spec"]["shares"][0]
    quotas = {
        "defaultUser": {"hardBytes": "2M"},  # above the share's limit: never the one hit
        "users": [{"name": "alice", "hardBytes": "100k"}],
        "groups": [{"name": "staff", "hardFiles": 100}],
    }
    limited = {**export, "quota": "1M", "quotas": quotas}
    server = sample(namespace, groups=[{"name": "staff", "gid": 1001}], shares=[limited])
    key = await create(kube, namespace, server, secret("alice-password", password=ALICE_OLD))
    await ready(kube, key, node)
    await until(kube, key, "ServerConfigured", "True", "Converged")
    (share,) = (await server_status(kube, key))["shares"]
    declared = [
        {"scope": "default-user", "hardBytes": "1.91MiB"},
        {"scope": "group", "id": 1001, "name": "staff", "hardFiles": 100},
        {"scope": "user", "id": 1001, "name": "alice", "hardBytes": "97.66KiB"},
    ]
    assert (share["quota"], share["quotas"]) == ("976.56KiB", declared)
    # DittoFS prints sizes rounded ("976.56KiB" for 1M): compared that way, a converged
    # share's limits are not sent again at each comparison (every 2 s here).
    puts = logged_requests(node, key, "PUT", SHARE_CHANGE)
    listed = logged_requests(node, key, "GET", QUOTA_LIST)
    assert puts >= 3, "the quotas' first PUTs are not in the server's log"

    # alice (uid 1001) may own 100 000 bytes of the share: 60 000 + 30 000 fit, 60 000 or
    # 30 000 more do not. DittoFS charges a file to its owner and checks each write.
    ip = await pod_ip(kube, key)
    alice_nfs = Nfs(ip, "/export", uid=1001, gid=1001)
    alice_smb = Smb(ip, "export", "alice", ALICE_OLD)
    assert await alice_nfs.write_error("/alice-1", "a" * 60_000) is None
    refused = await alice_nfs.write_error("/alice-2", "a" * 60_000)
    assert refused is not None and "NFS3ERR_DQUOT" in refused, refused
    assert await alice_smb.put_error("alice-3", "a" * 30_000, tmp_path) is None
    assert await alice_smb.put_error("alice-4", "a" * 30_000, tmp_path) == (
        "NT_STATUS_QUOTA_EXCEEDED"
    )
    assert await alice_nfs.read("/alice-1") == "a" * 60_000
    size, _ = await alice_smb.space()  # her limit is the size of the share she sees
    assert 100_000 - 4096 < size <= 100_000, size

    # The share holds 1 000 000 bytes whoever owns them: root fills it to 995 000 (alice has
    # 90 000), then 10 000 more are refused as on a full disk, over NFS and over SMB (alice's
    # 8 000 would fit her own quota).
    root = Nfs(ip, "/export")
    assert await root.write_error("/root-1", "r" * 905_000) is None
    refused = await root.write_error("/root-2", "r" * 10_000)
    assert refused is not None and "NFS3ERR_NOSPC" in refused, refused
    assert await alice_smb.put_error("alice-5", "a" * 8_000, tmp_path) == "NT_STATUS_DISK_FULL"

    async def compared_twice() -> bool:
        return logged_requests(node, key, "GET", QUOTA_LIST) >= listed + 2

    await wait_for(compared_twice, "two more comparisons of the quotas", timeout=30)
    assert logged_requests(node, key, "PUT", SHARE_CHANGE) == puts

    admin = await secret_value(kube, namespace, names.admin_secret(key.name), "password")
    async with aiohttp.ClientSession() as http:
        api = DittoFSClient(http, f"http://{ip}:8080", admin)

        # Quotas changed, added and removed by hand, and the share's limit lifted, are put
        # back at the next comparison.
        await api.put("/shares/export/quotas/user/1001", {"limit_bytes": "1GiB"})
        await api.put("/shares/export/quotas/group/5000", {"limit_files": 1})
        await api.delete("/shares/export/quotas/group/1001")
        await api.put("/shares/export", {"quota_bytes": "0"})

        async def quotas_restored() -> bool:
            found = await api.get("/shares/export/quotas")
            limits = {(q["scope"], q.get("identity_id")): q.get("limit_bytes") for q in found}
            share = await api.get("/shares/export")
            return share.get("quota_bytes") == "976.56KiB" and limits == {
                ("default-user", None): "1.91MiB",
                ("group", 1001): None,
                ("user", 1001): "97.66KiB",
            }

        await wait_for(quotas_restored, "the quotas put back", timeout=30)
        refused = await alice_nfs.write_error("/alice-6", "a" * 20_000)
        assert refused is not None and "NFS3ERR_NOSPC" in refused, refused

        # Dropped from the spec, the quotas are deleted and the limits go with them.
        await set_spec(kube, key, shares=[export])

        async def quotas_gone() -> bool:
            share = await api.get("/shares/export")
            return not share.get("quota_bytes") and not await api.get("/shares/export/quotas")

        await wait_for(quotas_gone, "the quotas deleted", timeout=30)
    await until(kube, key, "ServerConfigured", "True", "Converged")
    (share,) = (await server_status(kube, key))["shares"]
    assert "quota" not in share and "quotas" not in share
    assert await alice_nfs.write_error("/alice-7", "a" * 60_000) is None
    assert await alice_smb.put_error("alice-8", "a" * 30_000, tmp_path) is None


SHARE_CHANGE = r"/api/v1/shares/export(/quotas/.+)?"  # the share /export or one of its quotas
QUOTA_LIST = r"/api/v1/shares/export/quotas"


def logged_requests(node: Node, key: ObjectKey, method: str, path: str) -> int:
    """Requests of `method` to a path matching `path` in the server's log (JSON lines)."""
    count = 0
    for line in node.logs(key.namespace, names.pod(key.name)).splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not isinstance(entry, dict) or entry.get("method") != method:
            continue
        if re.fullmatch(path, str(entry.get("path"))):
            count += 1
    return count


async def test_protocol_security_is_what_real_clients_meet(
    kube: KubeClient,
    namespace: str,
    node: Node,
    operator: RunningOperator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SMB encryption required, signing required (no guests) and SMB 3.0 at least, then guests
    with signing enabled and SMB 3.0.2 at most, as smbclient and smbprotocol meet them; NFS
    lease and grace times; drift made by hand put back."""
    monkeypatch.setattr(report, "DRIFT_INTERVAL", 2.0)
    nfs_times = {"leaseSeconds": 30, "gracePeriodSeconds": 45}
    strict = {"smb": {"encryption": "required", "minDialect": "3.0"}, "nfs": nfs_times}
    server = sample(namespace, adapters=strict)
    key = await create(kube, namespace, server, secret("alice-password", password=ALICE_OLD))
    await ready(kube, key, node)
    await until(kube, key, "ServerConfigured", "True", "Converged")
    status = await server_status(kube, key)
    smb_status = {k: status["adapters"]["smb"][k] for k in ("signing", "minDialect", "maxDialect")}
    assert smb_status == {"signing": "required", "minDialect": "3.0", "maxDialect": "3.1.1"}
    nfs_status = status["adapters"]["nfs"]
    assert (nfs_status["leaseSeconds"], nfs_status["gracePeriodSeconds"]) == (30, 45)
    assert status["shares"][0]["encryptData"] is True

    ip = await pod_ip(kube, key)
    alice = Smb(ip, "export", "alice", ALICE_OLD)
    sealed = replace(alice, options=("--option=client smb encrypt=required",))
    await sealed.put("sealed.txt", "encrypted on the wire\n", tmp_path)
    assert await sealed.read("sealed.txt", tmp_path) == "encrypted on the wire\n"
    # A client that neither signs nor encrypts logs in, but no share serves it.
    assert await replace(alice, options=("--client-protection=off",)).login_error() == (
        "NT_STATUS_ACCESS_DENIED"
    )
    smb2_only = replace(sealed, options=("--option=client max protocol=SMB2_10",))
    assert await smb2_only.login_error() == "NT_STATUS_NOT_SUPPORTED"
    # smbclient signs whatever it is told when the server requires it: smbprotocol does not.
    assert await alice.unsigned_tree_connect("3.0") is not None
    anonymous = replace(sealed, user="", password="")
    assert await anonymous.login_error() == "NT_STATUS_LOGON_FAILURE"

    admin = await secret_value(kube, namespace, names.admin_secret(key.name), "password")
    async with aiohttp.ClientSession() as http:
        api = DittoFSClient(http, f"http://{ip}:8080", admin)
        await api.patch("/adapters/smb/settings", {"signing": "enabled", "min_dialect": "SMB2.0"})
        await api.patch("/adapters/nfs/settings", {"lease_time": 90})

        async def settings_restored() -> bool:
            smb = await api.get("/adapters/smb/settings")
            nfs = await api.get("/adapters/nfs/settings")
            return bool(
                (smb["signing"], smb["min_dialect"], nfs["lease_time"])
                == ("required", "SMB3.0", 30)
            )

        await wait_for(settings_restored, "SMB signing, dialect and NFS lease put back", 30)

    # Guests, signing enabled, encryption preferred, SMB 3.0 to 3.0.2 (a merge patch: minDialect
    # stays). DittoFS reads a share's encryption when it starts: the pod is replaced for it.
    pod_uid = (await kube.get(PODS, names.pod(key.name), namespace))["metadata"]["uid"]
    smb = {"guest": True, "encryption": "preferred", "maxDialect": "3.0.2"}
    relaxed = {"smb": smb, "nfs": nfs_times}
    await set_spec(kube, key, adapters=relaxed)
    await until(kube, key, "ServerConfigured", "True", "Converged", timeout=READY_TIMEOUT)
    assert (await kube.get(PODS, names.pod(key.name), namespace))["metadata"]["uid"] != pod_uid
    status = await server_status(kube, key)
    assert "encryptData" not in status["shares"][0]
    assert (status["adapters"]["smb"]["signing"], status["adapters"]["smb"]["maxDialect"]) == (
        "enabled",
        "3.0.2",
    )
    ip = await pod_ip(kube, key)
    alice, anonymous = replace(alice, host=ip), replace(anonymous, host=ip, options=())
    plain = replace(alice, options=("--client-protection=off",))
    assert await plain.read("sealed.txt", tmp_path) == "encrypted on the wire\n"
    assert await alice.unsigned_tree_connect("3.0") is None
    smb311_only = replace(alice, options=("--option=client min protocol=SMB3_11",))
    assert await smb311_only.login_error() == "NT_STATUS_NOT_SUPPORTED"
    assert await anonymous.login_error() is None


async def test_nfs_over_tls_serves_the_certificate_of_its_secret(
    kube: KubeClient, namespace: str, node: Node, operator: RunningOperator
) -> None:
    """NFS over TLS with a kubernetes.io/tls Secret mounted as files: TLS 1.3 after the
    AUTH_TLS probe with exactly that certificate; mode require refuses clear-text clients
    (libnfs), opportunistic serves them."""
    cert, key_pem = self_signed("files-nfs.example")
    tls = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "nfs-tls"},
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": cert, "tls.key": key_pem},
    }
    adapters = {"nfs": {"tls": {"secretName": "nfs-tls"}}}
    server = sample(namespace, adapters=adapters)
    key = await create(kube, namespace, server, tls, secret("alice-password", password=ALICE_OLD))
    await ready(kube, key, node)
    await until(kube, key, "ServerConfigured", "True", "Converged")
    assert (await server_status(kube, key))["adapters"]["nfs"]["tls"] == {"mode": "require"}
    nfs = Nfs(await pod_ip(kube, key), "/export")
    assert await nfs.null_over_tls(cert) == "TLSv1.3"
    other, _ = self_signed("someone-else.example")
    with pytest.raises(ClientError, match="certificate verify failed"):
        await nfs.null_over_tls(other)
    assert await nfs.reachable() is not None  # libnfs speaks no TLS

    await set_spec(kube, key, adapters={"nfs": {"tls": {"mode": "opportunistic"}}})
    await until(kube, key, "ServerConfigured", "True", "Converged")
    assert await nfs.reachable() is None
    assert await nfs.null_over_tls(cert) == "TLSv1.3"


LDAP_PATH = "/identity-providers/ldap/config"


async def test_ldap_directory_maps_owners_to_its_accounts_and_is_disabled_when_removed(
    kube: KubeClient,
    namespace: str,
    node: Node,
    operator: RunningOperator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DittoFS 0.29 uses a directory for domain identities (Kerberos principals, NETLOGON and
    SMB security descriptors); without Kerberos, what shows is the descriptor: a file written
    over NFS by uid 7001/gid 7100, who exist only in the directory, is owned by their directory
    SIDs over SMB, found by DittoFS through its uidNumber/gidNumber lookups."""
    monkeypatch.setattr(report, "DRIFT_INTERVAL", 2.0)
    with running_ldap(node.address) as directory:
        ldap = {
            "url": directory.url,  # ldaps://, verified with the CA of a Secret
            "tls": {"caSecretRef": {"name": "directory-ca", "key": "ca.crt"}},
            "baseDN": directory.base_dn,
            "bindDN": directory.bind_dn,
            "bindPasswordSecretRef": {"name": "ldap-bind", "key": "password"},
            "userAttribute": "uid",
            "timeout": "5s",
        }
        server = sample(namespace, identity={"ldap": ldap})
        bind = secret("ldap-bind", password=directory.bind_password)
        ca = secret("directory-ca", **{"ca.crt": directory.certificate})
        alice = secret("alice-password", password=ALICE_OLD)
        key = await create(kube, namespace, server, alice, bind, ca)
        await ready(kube, key, node)
        converged = await until(kube, key, "ServerConfigured", "True", "Converged")
        assert converged["message"].endswith(f"; LDAP directory {directory.url}")
        status = await server_status(kube, key)
        assert status["identity"] == {
            "ldap": {
                "enabled": True,
                "url": directory.url,
                "baseDN": directory.base_dn,
                "bindDN": directory.bind_dn,
                "userAttribute": "uid",
                "idmap": "rfc2307",
                "startTLS": False,
                "nestedGroups": False,
            }
        }
        assert status["managed"]["identityProviders"] == ["ldap"]
        assert "identity/ldap" in status["applied"]

        ip = await pod_ip(kube, key)
        carol, engineers = directory.user, directory.group
        await Nfs(ip, "/export", uid=carol.uid, gid=carol.gid).write(
            "/carol.txt", "from the directory\n", tmp_path
        )
        smb = Smb(ip, "export", "alice", ALICE_OLD)
        assert await smb.owner_and_group("carol.txt") == (carol.sid, engineers.sid)

        admin = await secret_value(kube, namespace, names.admin_secret(key.name), "password")
        async with aiohttp.ClientSession() as http:
            api = DittoFSClient(http, f"http://{ip}:8080", admin)

            # Changed by hand, the directory is put back at the next comparison.
            stored = await api.get(LDAP_PATH)
            await api.put(LDAP_PATH, {**stored, "base_dn": "dc=elsewhere"})

            async def base_dn_restored() -> bool:
                return bool((await api.get(LDAP_PATH))["base_dn"] == directory.base_dn)

            await wait_for(base_dn_restored, "the directory's base DN put back", timeout=30)

            # A wrong bind password is accepted by DittoFS; its own test of the directory is
            # not, and says why. The right one is sent again once the Secret has it.
            await kube.merge_patch(
                SECRETS, "ldap-bind", {"stringData": {"password": "Wrong-Passw0rd"}}, namespace
            )
            refused = await until(
                kube, key, "ServerConfigured", "False", "IdentityProviderUnreachable"
            )
            assert "Invalid Credentials" in refused["message"], refused
            await kube.merge_patch(
                SECRETS,
                "ldap-bind",
                {"stringData": {"password": directory.bind_password}},
                namespace,
            )
            await until(kube, key, "ServerConfigured", "True", "Converged")

        # Removed from the spec, the directory is turned off (its settings kept), and DittoFS
        # shows the file with its own SIDs for uid 7001 and gid 7100 again. The CA's volume
        # goes with it, so a new pod serves by then.
        await set_spec(kube, key, identity=None)
        await ready(kube, key, node)
        await until(kube, key, "ServerConfigured", "True", "Converged")
        ip = await pod_ip(kube, key)
        async with aiohttp.ClientSession() as http:
            stored = await DittoFSClient(http, f"http://{ip}:8080", admin).get(LDAP_PATH)
        assert (stored["enabled"], stored["url"]) == (False, directory.url)
        smb = Smb(ip, "export", "alice", ALICE_OLD)
        status = await server_status(kube, key)
        assert status["identity"]["ldap"]["enabled"] is False
        assert "identityProviders" not in status["managed"]
        assert "identity/ldap" not in status["applied"]
        owner, group = await smb.owner_and_group("carol.txt")
        domain = carol.sid.rsplit("-", 1)[0]
        assert not owner.startswith(domain) and not group.startswith(domain), (owner, group)
        published = await everything_published(kube, key)
        assert directory.bind_password not in published and "Wrong-Passw0rd" not in published


KERBEROS_PATH = "/identity-providers/kerberos/config"
PRINCIPAL = "nfs/files.example.com@EXAMPLE.COM"


async def test_kerberos_is_stored_then_bound_by_a_restart_and_disabled_when_removed(
    kube: KubeClient, namespace: str, node: Node, operator: RunningOperator
) -> None:
    """DittoFS binds the keytab and principal when its adapters start: after the operator
    stores them, the pod is replaced, and the new one loads them from the database (its log says
    so, and the SMB adapter, which cannot start with a keytab or krb5.conf it cannot read,
    runs). No KDC is needed for that; none is run."""
    kerberos = {
        "servicePrincipal": PRINCIPAL,
        "keytabSecretRef": {"name": "files-keytab", "key": "krb5.keytab"},
        "krb5ConfConfigMapRef": {"name": "krb5", "key": "krb5.conf"},
        "netbiosDomain": "EXAMPLE",
        "maxClockSkew": "2m",
    }
    server = sample(namespace, identity={"kerberos": kerberos})
    keytab = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "files-keytab"},
        "data": {"krb5.keytab": base64.b64encode(kerberos_files.keytab(PRINCIPAL)).decode()},
    }
    conf = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "krb5"},
        "data": {"krb5.conf": kerberos_files.krb5_conf("EXAMPLE.COM", f"{node.address}:88")},
    }
    key = await create(
        kube, namespace, server, keytab, secret("alice-password", password=ALICE_OLD)
    )
    configured = await until(kube, key, "ConfigReady", "False", "ConfigMapNotFound")
    assert "spec.identity.kerberos.krb5ConfConfigMapRef" in configured["message"]
    await kube.create(CONFIGMAPS, conf, namespace)
    await ready(kube, key, node)

    async def bound() -> Obj | None:
        found = await current(kube, key, "ServerConfigured")
        status = await server_status(kube, key)
        pod = await kube.get(PODS, names.pod(key.name), key.namespace)
        annotations = pod["metadata"].get("annotations") or {}
        started_for = annotations.get(names.STORES_REVISION_ANNOTATION)
        if found is None or found["reason"] != "Converged" or not status.get("storesRevision"):
            return None
        return status if started_for == status["storesRevision"] else None

    status = await wait_for(bound, "a pod started for the stored Kerberos settings", READY_TIMEOUT)
    assert status["identity"] == {
        "kerberos": {
            "enabled": True,
            "servicePrincipal": PRINCIPAL,
            "realm": "EXAMPLE.COM",
            "keytab": "/kerberos/krb5.keytab",
            "krb5Conf": "/kerberos-conf/krb5.conf",
        }
    }
    assert status["adapters"]["smb"]["running"] is True
    assert status["managed"]["identityProviders"] == ["kerberos"]
    log = node.logs(namespace, names.pod(key.name))
    assert "Kerberos identity provider loaded from control-plane store" in log, log[-3000:]
    assert f'"service_principal":"{PRINCIPAL}"' in log, log[-3000:]
    revision = status["storesRevision"]

    admin = await secret_value(kube, namespace, names.admin_secret(key.name), "password")
    ip = await pod_ip(kube, key)
    async with aiohttp.ClientSession() as http:
        api = DittoFSClient(http, f"http://{ip}:8080", admin)
        stored = await api.get(KERBEROS_PATH)
        assert (stored["enabled"], stored["netbios_domain"], stored["max_clock_skew"]) == (
            True,
            "EXAMPLE",
            "2m",
        )

    # Turned off: disabled on the server, and a pod started without it (the keytab still
    # mounted: DittoFS exits at start when Kerberos is on and its keytab is missing).
    await set_spec(kube, key, identity={"kerberos": {**kerberos, "enabled": False}})

    async def unbound() -> Obj | None:
        status = await bound()
        return status if status and status["storesRevision"] != revision else None

    status = await wait_for(unbound, "a pod started without Kerberos", READY_TIMEOUT)
    assert status["identity"]["kerberos"]["enabled"] is False
    (loaded,) = [
        line
        for line in node.logs(namespace, names.pod(key.name)).splitlines()
        if "Kerberos identity provider loaded" in line
    ]
    assert '"enabled":false' in loaded, loaded

    # Then removed from the spec: the mounts go, the server keeps it off.
    before = (await kube.get(PODS, names.pod(key.name), key.namespace))["metadata"]["uid"]
    await set_spec(kube, key, identity=None)

    async def unmounted() -> Obj | None:
        pod = await kube.get_or_none(PODS, names.pod(key.name), key.namespace)
        if pod is None or pod["metadata"]["uid"] == before:
            return None
        mounts = pod["spec"]["containers"][0]["volumeMounts"]
        if any(mount["mountPath"] == "/kerberos" for mount in mounts):
            return None
        return await bound()

    status = await wait_for(unmounted, "a pod started without the keytab", READY_TIMEOUT)
    assert status["identity"]["kerberos"]["enabled"] is False
    assert "identityProviders" not in status["managed"]


async def test_nfs_export_options_and_netgroups_are_what_clients_meet(
    kube: KubeClient,
    namespace: str,
    node: Node,
    operator: RunningOperator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A share admitting only a netgroup the client is not in, then one it is in; share
    options applied as declared and put back after a change by hand; netgroups deleted with
    the spec's last reference."""
    monkeypatch.setattr(report, "DRIFT_INTERVAL", 2.0)
    export = sample(namespace)["spec"]["shares"][0]
    elsewhere = {"name": "elsewhere", "members": ["192.0.2.0/24"]}
    here = {"name": "here", "members": [node.address, "198.51.100.7"]}
    options = {"smb": {"accessBasedEnumeration": True}, "trash": {"retentionDays": 7}}
    fenced = {**export, **options, "nfs": {**export["nfs"], "netgroup": "elsewhere"}}
    adapters = {"nfs": {"netgroups": [elsewhere, here]}}
    server = sample(namespace, adapters=adapters, shares=[fenced])
    key = await create(kube, namespace, server, secret("alice-password", password=ALICE_OLD))
    await ready(kube, key, node)
    await until(kube, key, "ServerConfigured", "True", "Converged")
    nfs = Nfs(await pod_ip(kube, key), "/export")
    # DittoFS 0.29 checks netgroups at MOUNT, which only NFSv3 clients call.
    outside = await _nfs3_refusal(nfs, "/outside.txt")
    assert outside is not None and "MNT3ERR_ACCES" in outside, outside

    await set_spec(kube, key, shares=[{**fenced, "nfs": {**export["nfs"], "netgroup": "here"}}])

    async def admitted() -> bool:
        return await _nfs3_refusal(nfs, "/inside.txt") is None

    await wait_for(admitted, "the client of netgroup here admitted over NFSv3")

    admin = await secret_value(kube, namespace, names.admin_secret(key.name), "password")
    async with aiohttp.ClientSession() as http:
        api = DittoFSClient(http, f"http://{nfs.host}:8080", admin)
        share = await api.get("/shares/export")
        assert (share["access_based_enumeration"], share["trash_enabled"]) == (True, True)
        assert share["trash_retention_days"] == 7
        members = (await api.get("/adapters/nfs/netgroups/here"))["members"]
        assert sorted(m["value"] for m in members) == sorted(here["members"])
        # Changed by hand, put back at the next comparison.
        await api.put("/shares/export", {"trash_enabled": False})
        await api.post(
            "/adapters/nfs/netgroups/here/members", {"type": "ip", "value": "203.0.113.9"}
        )

        async def restored() -> bool:
            share = await api.get("/shares/export")
            group = await api.get("/adapters/nfs/netgroups/here")
            values = sorted(m["value"] for m in group["members"])
            return bool(share["trash_enabled"]) and values == sorted(here["members"])

        await wait_for(restored, "the share's trash and the netgroup put back", timeout=30)

    await set_spec(kube, key, shares=[export], adapters={"nfs": {"netgroups": []}})

    async def netgroups_gone() -> bool:
        status = await server_status(kube, key)
        return "netgroups" not in status["managed"]

    await wait_for(netgroups_gone, "the netgroups deleted")
    assert await _nfs3_refusal(nfs, "/open-again.txt") is None


async def _nfs3_refusal(nfs: Nfs, path: str) -> str | None:
    """Why an NFSv3 client (MOUNT, then a write) cannot write `path`, or None."""
    try:
        return await nfs.write_error(path, "written over NFSv3")
    except ClientError as error:  # refused at MOUNT
        return str(error)
