"""The testbed node against the real control plane: PVs, pods, and the real DittoFS end to end.

The node binds and runs pods the controllers create, the provisioner binds their claims, and
real clients (libnfs' nfs-cp/nfs-cat/nfs-ls, Samba's smbclient) talk to the real `dfs` at its
pod IP. Needs root, iproute2 and `apt-get install -y libnfs-utils smbclient`.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from dittofs_controller.kube.client import KubeClient
from dittofs_controller.kube.resources import (
    CONFIGMAPS,
    PODS,
    PVCS,
    SECRETS,
    STATEFULSETS,
    Resource,
)
from tests.testbed import binaries
from tests.testbed.node import HOST_IMAGE, Node, running_node
from tests.testbed.provisioner import PVS, STORAGE_CLASS

JSON = dict[str, Any]
CLIENT_TOOLS = ("nfs-cp", "nfs-cat", "nfs-ls", "smbclient")
EVENTS = Resource("", "v1", "events", "Event")

ADMIN_PASSWORD = "Admin-Passw0rd-for-tests"
JWT_SECRET = "testbed-jwt-secret-0123456789abcdef-0123456789"  # >= 32 chars
NFS_PORT = 12049
SMB_PORT = 12445


def _require_node_prerequisites(tools: tuple[str, ...] = ()) -> None:
    """Fail (never skip) when the machine cannot run pods: CI must notice."""
    if os.geteuid() != 0:
        pytest.fail("the testbed node needs root (network namespaces, mounts, chroot)")
    missing = [t for t in ("ip", "nsenter", *tools) if shutil.which(t) is None]
    if missing:
        pytest.fail(
            f"missing {missing}: apt-get install -y iproute2 util-linux libnfs-utils smbclient"
        )


@pytest.fixture
async def node(kube: KubeClient, namespace: str, tmp_path: Path) -> AsyncIterator[Node]:
    """A node (and PV provisioner) serving only this test's namespace, with the real dfs."""
    _require_node_prerequisites()
    dfs = binaries.executable("dfs", "dfs")
    async with running_node(kube, tmp_path / "node", dfs, namespaces=[namespace]) as testbed:
        yield testbed


async def wait_for(what: str, probe: Any, timeout: float = 30.0, interval: float = 0.2) -> Any:
    """Poll an async probe until it returns something truthy."""
    last: Any = None
    try:
        async with asyncio.timeout(timeout):
            while True:
                last = await probe()
                if last:
                    return last
                await asyncio.sleep(interval)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}; last: {last!r}") from None


def claim(name: str, size: str, storage_class: str | None = STORAGE_CLASS) -> JSON:
    spec: JSON = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}
    if storage_class is not None:
        spec["storageClassName"] = storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": spec,
    }


# -- (a) the provisioner ---------------------------------------------------------------------


async def test_claims_are_bound_and_grow(kube: KubeClient, namespace: str, node: Node) -> None:
    assert node.provisioner is not None
    await kube.create(PVCS, claim("data", "1Gi"), namespace)
    await kube.create(PVCS, claim("classless", "64Mi", storage_class=None), namespace)

    async def bound(name: str) -> JSON | None:
        pvc = await kube.get(PVCS, name, namespace)
        return pvc if pvc.get("status", {}).get("phase") == "Bound" else None

    data = await wait_for("claim data bound", lambda: bound("data"))
    await wait_for("claim classless bound", lambda: bound("classless"))
    pv = await kube.get(PVS, data["spec"]["volumeName"])
    directory = node.provisioner.claim_dir(namespace, "data")
    assert pv["spec"]["hostPath"]["path"] == str(directory) and directory.is_dir()
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    assert pv["spec"]["storageClassName"] == STORAGE_CLASS
    assert data["status"]["capacity"]["storage"] == "1Gi"

    # Expansion: the API server allows it (the class allows it), the provisioner resizes.
    patch = {"spec": {"resources": {"requests": {"storage": "2Gi"}}}}
    await kube.merge_patch(PVCS, "data", patch, namespace)

    async def grown() -> bool:
        pvc = await kube.get(PVCS, "data", namespace)
        return bool(pvc["status"].get("capacity", {}).get("storage") == "2Gi")

    await wait_for("claim data grown to 2Gi", grown)
    pv = await kube.get(PVS, data["spec"]["volumeName"])
    assert pv["spec"]["capacity"]["storage"] == "2Gi"

    # A claim re-created under the same name gets a new PV on the same directory (its data).
    (directory / "marker").write_text("kept")
    await kube.delete(PVCS, "data", namespace)
    await wait_for("claim data gone", lambda: _gone(kube, PVCS, "data", namespace))
    await kube.create(PVCS, claim("data", "1Gi"), namespace)
    again = await wait_for("claim data bound again", lambda: bound("data"))
    assert again["spec"]["volumeName"] != data["spec"]["volumeName"]
    assert (directory / "marker").read_text() == "kept"


async def _gone(kube: KubeClient, resource: Resource, name: str, namespace: str) -> bool:
    return await kube.get_or_none(resource, name, namespace) is None


# -- the node with host programs -------------------------------------------------------------


async def test_pod_runs_its_spec(kube: KubeClient, namespace: str, node: Node) -> None:
    """env, volumes, identity and probes as a container would see them."""
    await kube.create(
        CONFIGMAPS, {"metadata": {"name": "cm"}, "data": {"greeting": "hello", "x": "1"}}, namespace
    )
    await kube.create(
        SECRETS, {"metadata": {"name": "sec"}, "stringData": {"pw": "s3cret"}}, namespace
    )
    await kube.create(PVCS, claim("state", "16Mi"), namespace)
    script = (
        "echo uid=$(id -u) gid=$(id -g) groups=$(id -G); echo host=$(hostname); "
        "echo cwd=$(pwd); cat /cfg/hello.txt; echo; stat -c 'cfgmode=%a' /cfg/hello.txt; "
        "stat -c 'secmode=%a' /sec/pw; echo state-$(cat /state/count 2>/dev/null || echo none); "
        "echo run >> /state/count; touch /rootfile 2>/dev/null || echo root-readonly; "
        "touch /scratch/f && echo scratch-ok; env | sort | sed 's/^/env /'; "
        "echo sa-ns=$(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace); "
        "test -s /var/run/secrets/kubernetes.io/serviceaccount/token && echo sa-token; "
        "exec python3 -m http.server 8000 --bind 0.0.0.0"
    )
    pod = {
        "metadata": {"name": "probe", "labels": {"app": "probe"}},
        "spec": {
            "securityContext": {"runAsUser": 1234, "runAsGroup": 1234, "fsGroup": 4321},
            "terminationGracePeriodSeconds": 5,
            "containers": [
                {
                    "name": "main",
                    "image": HOST_IMAGE,
                    "command": ["sh", "-c", script],
                    "workingDir": "/scratch",
                    "env": [
                        {"name": "A", "value": "a"},
                        {"name": "B", "value": "$(A)-b-$$(A)"},
                        {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "pw"}}},
                        {
                            "name": "OPT",
                            "valueFrom": {
                                "configMapKeyRef": {"name": "nope", "key": "k", "optional": True}
                            },
                        },
                        {
                            "name": "POD_IP",
                            "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
                        },
                        {
                            "name": "POD_NS",
                            "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
                        },
                        {
                            "name": "MEM_MI",
                            "valueFrom": {
                                "resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}
                            },
                        },
                    ],
                    "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}],
                    "resources": {"limits": {"memory": "192Mi"}},
                    "securityContext": {"readOnlyRootFilesystem": True},
                    "ports": [{"name": "http", "containerPort": 8000}],
                    "readinessProbe": {
                        "httpGet": {"path": "/", "port": "http"},
                        "periodSeconds": 1,
                    },
                    "volumeMounts": [
                        {"name": "cfg", "mountPath": "/cfg"},
                        {"name": "sec", "mountPath": "/sec"},
                        {"name": "state", "mountPath": "/state"},
                        {"name": "scratch", "mountPath": "/scratch"},
                    ],
                }
            ],
            "volumes": [
                {
                    "name": "cfg",
                    "configMap": {
                        "name": "cm",
                        "items": [{"key": "greeting", "path": "hello.txt", "mode": 0o640}],
                    },
                },
                {"name": "sec", "secret": {"secretName": "sec", "defaultMode": 0o400}},
                {"name": "state", "persistentVolumeClaim": {"claimName": "state"}},
                {"name": "scratch", "emptyDir": {}},
            ],
        },
    }
    started = time.monotonic()
    await kube.create(PODS, pod, namespace)
    ready = await node.wait_ready(namespace, "probe", timeout=30)
    assert time.monotonic() - started < 15
    ip = ready["status"]["podIP"]
    assert ready["spec"]["nodeName"] == node.name
    assert ready["status"]["phase"] == "Running"
    (status,) = ready["status"]["containerStatuses"]
    assert status["ready"] and status["started"] and "running" in status["state"]
    async with aiohttp.ClientSession() as http, http.get(f"http://{ip}:8000/") as response:
        assert response.status == 200  # the host reaches the pod IP

    lines = node.logs(namespace, "probe").splitlines()
    env = dict(line[4:].split("=", 1) for line in lines if line.startswith("env "))
    assert "uid=1234 gid=1234" in lines[0] and "4321" in lines[0]
    assert "host=probe" in lines and "cwd=/scratch" in lines
    assert "hello" in lines and "cfgmode=640" in lines and "secmode=440" in lines
    assert "state-none" in lines and "root-readonly" in lines and "scratch-ok" in lines
    assert f"sa-ns={namespace}" in lines and "sa-token" in lines  # the projected SA volume
    assert env["B"] == "a-b-$(A)" and env["PW"] == "s3cret" and "OPT" not in env
    assert env["POD_IP"] == ip and env["POD_NS"] == namespace and env["MEM_MI"] == "192"
    assert env["CM_greeting"] == "hello" and env["HOSTNAME"] == "probe" and env["HOME"] == "/"

    # Deleting the pod: SIGTERM, the object goes; the claim's data stays for the next pod.
    old_uid = ready["metadata"]["uid"]
    await kube.delete(PODS, "probe", namespace)
    await wait_for("pod probe gone", lambda: _gone(kube, PODS, "probe", namespace))
    await kube.create(PODS, pod, namespace)
    await node.wait_ready(namespace, "probe", timeout=30, not_uid=old_uid)
    assert "state-run" in node.logs(namespace, "probe").splitlines()


async def test_restarts_and_failures_are_reported(
    kube: KubeClient, namespace: str, node: Node
) -> None:
    crashing = {
        "metadata": {"name": "crash"},
        "spec": {
            "containers": [
                {"name": "c", "image": HOST_IMAGE, "command": ["sh", "-c", "echo boom; exit 3"]}
            ]
        },
    }
    unknown = {
        "metadata": {"name": "unknown"},
        "spec": {"containers": [{"name": "c", "image": "example.com/not-here:v1"}]},
    }
    # preStop (an exec hook, run inside the container) comes before SIGTERM.
    on_term = "trap 'cat /shared/hook; echo got SIGTERM; exit 0' TERM; while :; do sleep 0.1; done"
    graceful = {
        "metadata": {"name": "graceful"},
        "spec": {
            "terminationGracePeriodSeconds": 10,
            "containers": [
                {
                    "name": "c",
                    "image": HOST_IMAGE,
                    "command": ["sh", "-c", on_term],
                    "lifecycle": {
                        "preStop": {
                            "exec": {"command": ["sh", "-c", "echo prestop ran > /shared/hook"]}
                        }
                    },
                    "volumeMounts": [{"name": "shared", "mountPath": "/shared"}],
                }
            ],
            "volumes": [{"name": "shared", "emptyDir": {}}],
        },
    }
    # Init containers run first, in order; a pod of finished containers is Succeeded.
    staged = {
        "metadata": {"name": "staged"},
        "spec": {
            "restartPolicy": "Never",
            "initContainers": [
                {
                    "name": f"init{i}",
                    "image": HOST_IMAGE,
                    "command": ["sh", "-c", f"echo step{i} >> /work/steps"],
                    "volumeMounts": [{"name": "work", "mountPath": "/work"}],
                }
                for i in (1, 2)
            ],
            "containers": [
                {
                    "name": "main",
                    "image": HOST_IMAGE,
                    "command": ["cat", "/work/steps"],
                    "volumeMounts": [{"name": "work", "mountPath": "/work"}],
                }
            ],
            "volumes": [{"name": "work", "emptyDir": {}}],
        },
    }
    for pod in (crashing, unknown, graceful, staged):
        await kube.create(PODS, pod, namespace)

    async def restarted() -> JSON | None:
        pod = await kube.get(PODS, "crash", namespace)
        statuses = pod.get("status", {}).get("containerStatuses") or [{}]
        return statuses[0] if statuses[0].get("restartCount", 0) >= 1 else None

    status = await wait_for("crash restarted", restarted, timeout=20)
    assert status["lastState"]["terminated"]["exitCode"] == 3
    assert node.logs(namespace, "crash", previous=True).strip() == "boom"

    async def failed() -> JSON | None:
        pod = await kube.get(PODS, "unknown", namespace)
        return pod if pod.get("status", {}).get("phase") == "Failed" else None

    pod = await wait_for("unknown image failed", failed)
    assert pod["status"]["reason"] == "UnknownImage"
    assert "example.com/not-here:v1" in pod["status"]["message"]

    await node.wait_ready(namespace, "graceful", timeout=15)
    started = time.monotonic()
    await kube.delete(PODS, "graceful", namespace)
    await wait_for("pod graceful gone", lambda: _gone(kube, PODS, "graceful", namespace))
    assert time.monotonic() - started < 5
    assert node.logs(namespace, "graceful").splitlines() == ["prestop ran", "got SIGTERM"]

    async def succeeded() -> JSON | None:
        pod = await kube.get(PODS, "staged", namespace)
        return pod if pod.get("status", {}).get("phase") == "Succeeded" else None

    pod = await wait_for("staged succeeded", succeeded)
    assert node.logs(namespace, "staged").splitlines() == ["step1", "step2"]
    (init1, init2) = pod["status"]["initContainerStatuses"]
    assert init1["state"]["terminated"]["exitCode"] == init2["state"]["terminated"]["exitCode"] == 0


# -- (b) + (c) the real DittoFS --------------------------------------------------------------

DFS_CONFIG = """\
logging:
  level: INFO
  format: text
  output: stdout
shutdown_timeout: 5s
database:
  type: sqlite
  sqlite:
    path: /data/controlplane/controlplane.db
controlplane:
  host: 0.0.0.0
  port: 8080
metrics:
  enabled: false
"""


def dittofs_statefulset(image: str = "marmos91c/dittofs:v0.29.0") -> JSON:
    """What an operator would write, by hand: config from a ConfigMap, secrets from env."""

    def secret_env(name: str, key: str) -> JSON:
        return {"name": name, "valueFrom": {"secretKeyRef": {"name": "dittofs", "key": key}}}

    container = {
        "name": "dittofs",
        "image": image,
        "args": ["start", "--foreground", "--config", "/config/config.yaml"],
        "ports": [
            {"name": "api", "containerPort": 8080},
            {"name": "nfs", "containerPort": NFS_PORT},
            {"name": "smb", "containerPort": SMB_PORT},
        ],
        "env": [
            secret_env("DITTOFS_CONTROLPLANE_SECRET", "jwt-secret"),
            secret_env("DITTOFS_ADMIN_INITIAL_PASSWORD", "admin-password"),
        ],
        "readinessProbe": {
            "httpGet": {"path": "/health/ready", "port": "api"},
            "periodSeconds": 1,
            "failureThreshold": 3,
        },
        "securityContext": {
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "config", "mountPath": "/config", "readOnly": True},
            {"name": "data", "mountPath": "/data/controlplane"},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "dittofs"},
        "spec": {
            "serviceName": "dittofs",
            "replicas": 1,
            "selector": {"matchLabels": {"app": "dittofs"}},
            "template": {
                "metadata": {"labels": {"app": "dittofs"}},
                "spec": {
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 65532,
                        "runAsGroup": 65532,
                        "fsGroup": 65532,
                    },
                    "terminationGracePeriodSeconds": 30,
                    "containers": [container],
                    "volumes": [
                        {"name": "config", "configMap": {"name": "dittofs-config"}},
                        {"name": "tmp", "emptyDir": {}},
                    ],
                },
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": claim("data", "1Gi")["spec"],
                }
            ],
        },
    }


class DittoFS:
    """The DittoFS REST API at a pod IP, as admin."""

    def __init__(self, http: aiohttp.ClientSession, ip: str) -> None:
        self.http = http
        self.base = f"http://{ip}:8080"
        self.token = ""

    async def login(self, username: str = "admin", password: str = ADMIN_PASSWORD) -> JSON:
        body = {"username": username, "password": password}
        async with self.http.post(f"{self.base}/api/v1/auth/login", json=body) as response:
            text = await response.text()
            assert response.status == 200, f"login: HTTP {response.status}: {text}"
        reply: JSON = json.loads(text)
        self.token = reply["access_token"]
        return reply

    async def call(
        self, method: str, path: str, body: JSON | None = None, expect: int = 200
    ) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"}
        url = f"{self.base}/api/v1{path}"
        async with self.http.request(method, url, json=body, headers=headers) as response:
            text = await response.text()
            assert response.status == expect, f"{method} {path}: HTTP {response.status}: {text}"
        return json.loads(text) if text else None


async def run(*argv: str, cwd: Path | None = None, timeout: float = 30) -> str:
    """Run a client tool; its output, or an AssertionError with it."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=cwd
    )
    try:
        async with asyncio.timeout(timeout):
            output, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"{argv} timed out after {timeout}s") from None
    text = output.decode(errors="replace")
    assert proc.returncode == 0, f"{argv} exited with {proc.returncode}: {text}"
    return text


def nfs_url(ip: str, path: str, version: int = 3, share: str = "/export") -> str:
    """libnfs URL; with the ports given no portmapper is needed (DittoFS has none by default)."""
    ports = f"nfsport={NFS_PORT}" + (f"&mountport={NFS_PORT}" if version == 3 else "")
    return f"nfs://{ip}{share}{path}?version={version}&{ports}&uid=0&gid=0"


@pytest.mark.e2e
async def test_dittofs_statefulset_serves_nfs_and_smb_and_survives_pod_deletion(
    kube: KubeClient, namespace: str, node: Node, tmp_path: Path
) -> None:
    _require_node_prerequisites(CLIENT_TOOLS)
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    await kube.create(
        CONFIGMAPS,
        {"metadata": {"name": "dittofs-config"}, "data": {"config.yaml": DFS_CONFIG}},
        namespace,
    )
    secrets = {"jwt-secret": JWT_SECRET, "admin-password": ADMIN_PASSWORD}
    await kube.create(SECRETS, {"metadata": {"name": "dittofs"}, "stringData": secrets}, namespace)
    await kube.create(STATEFULSETS, dittofs_statefulset(), namespace)

    pod = await node.wait_ready(namespace, "dittofs-0", timeout=60)
    timings["ready"] = time.monotonic() - t0
    ip = pod["status"]["podIP"]
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
        async with http.get(f"http://{ip}:8080/health/ready") as response:
            assert response.status == 200, await response.text()
        api = DittoFS(http, ip)
        login = await api.login()
        assert login["user"]["role"] == "admin"
        assert login["user"]["must_change_password"] is False  # the env password counts as chosen

        # /export: memory stores (gone with the process); /persist: badger metadata and fs
        # blocks on the claim (must come back with the next pod).
        stores: tuple[tuple[str, str, str, dict[str, str]], ...] = (
            ("metadata", "meta", "memory", {}),
            ("block/local", "blocks", "memory", {}),
            ("metadata", "disk-meta", "badger", {"path": "/data/controlplane/badger"}),
            ("block/local", "disk-blocks", "fs", {"path": "/data/controlplane/blocks"}),
        )
        for kind, name, store_type, config in stores:
            store = {"name": name, "type": store_type, "config": json.dumps(config)}
            await api.call("POST", f"/store/{kind}", store, 201)
        for share_name, meta, blocks in (
            ("/export", "meta", "blocks"),
            ("/persist", "disk-meta", "disk-blocks"),
        ):
            share = {
                "name": share_name,
                "metadata_store_id": meta,
                "local_block_store": blocks,
                "default_permission": "read-write",
            }
            await api.call("POST", "/shares", share, 201)
            # NFS squashes root to the guest by default: these shares trust AUTH_SYS root.
            path = f"/shares{share_name}/adapters/nfs/config"
            nfs_config = await api.call("PATCH", path, {"squash": "none"})
            assert nfs_config["squash"] == "none"
        for kind, port in (("nfs", NFS_PORT), ("smb", SMB_PORT)):
            await api.call("PUT", f"/adapters/{kind}", {"enabled": True, "port": port})

        async def adapters_running() -> bool:
            adapters = await api.call("GET", "/adapters")
            ports = {a["type"]: (a["port"], a["running"]) for a in adapters}
            return ports == {"nfs": (NFS_PORT, True), "smb": (SMB_PORT, True)}

        await wait_for("nfs and smb adapters running", adapters_running, timeout=15)
        user = {"username": "alice", "password": "Alice-Passw0rd", "uid": 1001, "gid": 1001}
        await api.call("POST", "/users", user, 201)
        timings["configured"] = time.monotonic() - t0

        # NFSv3 write + read, then NFSv4 listing, all from the host.
        local = tmp_path / "hello.txt"
        local.write_text("hello over nfs\n")
        await run("nfs-cp", str(local), nfs_url(ip, "/hello.txt"))
        assert await run("nfs-cat", nfs_url(ip, "/hello.txt")) == "hello over nfs\n"
        assert "hello.txt" in await run("nfs-ls", nfs_url(ip, "", version=4))
        await run("nfs-cp", str(local), nfs_url(ip, "/kept.txt", share="/persist"))

        # SMB3 as the bootstrap admin (its NT hash comes from the env password) and as a user.
        def smb(address: str, *auth: str) -> list[str]:
            return ["smbclient", f"//{address}/export", "-p", str(SMB_PORT), "-m", "SMB3", *auth]

        (tmp_path / "smb.txt").write_text("hello over smb\n")
        commands = "put smb.txt smb.txt; get hello.txt from-nfs.txt"
        await run(*smb(ip, "-U", f"admin%{ADMIN_PASSWORD}"), "-c", commands, cwd=tmp_path)
        assert (tmp_path / "from-nfs.txt").read_text() == "hello over nfs\n"
        listing = await run(*smb(ip, "-U", "alice%Alice-Passw0rd"), "-c", "ls")
        assert "smb.txt" in listing and "hello.txt" in listing
        assert await run("nfs-cat", nfs_url(ip, "/smb.txt")) == "hello over smb\n"
        timings["protocols"] = time.monotonic() - t0

        # (c) The pod goes; the StatefulSet controller re-creates it, the node runs it again,
        # and the control plane's SQLite database on the claim kept users, stores and shares.
        assert node.provisioner is not None
        db = node.provisioner.claim_dir(namespace, "data-dittofs-0") / "controlplane.db"
        assert db.is_file()
        deleted_at = time.monotonic()
        await kube.delete(PODS, "dittofs-0", namespace)
        pod = await node.wait_ready(
            namespace, "dittofs-0", timeout=60, not_uid=pod["metadata"]["uid"]
        )
        timings["recreated"] = time.monotonic() - deleted_at
        first_log = node.logs(namespace, "dittofs-0", instance=-2)
        assert "Server stopped gracefully" in first_log, first_log[-2000:]

        ip = pod["status"]["podIP"]
        api = DittoFS(http, ip)
        await api.login()  # same password: the admin came from the database, not the env
        shares = await api.call("GET", "/shares")
        assert sorted(s["name"] for s in shares) == ["/export", "/persist"]
        assert "alice" in [u["username"] for u in await api.call("GET", "/users")]
        adapters = {a["type"]: a["port"] for a in await api.call("GET", "/adapters")}
        assert adapters == {"nfs": NFS_PORT, "smb": SMB_PORT}
        # Listeners are back on their ports; the claim's file data is back, while the
        # memory-backed /export starts empty, as it should.
        kept = nfs_url(ip, "/kept.txt", share="/persist")
        assert await run("nfs-cat", kept) == "hello over nfs\n"
        assert "hello.txt" not in await run(*smb(ip, "-N"), "-c", "ls")  # guest is allowed
        timings["total"] = time.monotonic() - t0
    print("dittofs e2e timings:", {k: round(v, 1) for k, v in timings.items()})
