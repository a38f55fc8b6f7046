"""`nox -s dev` on a local control plane: a file server you can mount, on real parts.

Started in order: the load balancer (MetalLB's controller), a node (kube-proxy, cluster DNS,
volume provisioner) for every namespace, the operator as a local process (it reaches DittoFS by
port-forward, as on a laptop), then a sample applied with kubectl and waited on until Ready.
What it prints (`usage()`) are commands a user runs from this machine; tests/e2e/test_dev_e2e.py
runs exactly them.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import secrets
import shlex
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dittofs_controller.kube.client import KubeClient, connect
from dittofs_controller.operator import names

from . import binaries, netns
from .controlplane import ControlPlane
from .kubeproxy import wait_connectable
from .loadbalancer import LoadBalancerController
from .node import running_node

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SAMPLE = REPO / "samples" / "badger-filesystem.yaml"
# The samples' stand-in for "your clients' network" (TEST-NET-1), and what this machine's
# clients are: its address toward load balancers and nodes is in the testbed's network.
PLACEHOLDER_CLIENTS = "192.0.2.0/24"
LOCAL_CLIENTS = str(netns.NETWORK)
NAMESPACE = "demo"
READY_TIMEOUT = 300


def local_clients(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The documents with each Service's placeholder client network replaced by this
    machine's, so the load balancers admit the clients here (a copy; the rest as written)."""
    docs = copy.deepcopy(docs)
    for doc in docs:
        if doc.get("kind") != "DittoServer":
            continue
        for service in (doc["spec"].get("expose") or {}).values():
            ranges = service.get("loadBalancerSourceRanges") if isinstance(service, dict) else None
            if ranges:
                service["loadBalancerSourceRanges"] = [
                    LOCAL_CLIENTS if cidr == PLACEHOLDER_CLIENTS else cidr for cidr in ranges
                ]
    return docs


def user_passwords(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The password Secrets the samples tell their reader to create (`kubectl create secret`),
    each with a random password: those the documents name for spec.users and do not hold."""
    shipped = {doc["metadata"]["name"] for doc in docs if doc.get("kind") == "Secret"}
    refs = [
        user["passwordSecretRef"]
        for doc in docs
        if doc.get("kind") == "DittoServer"
        for user in doc["spec"].get("users") or ()
    ]
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": ref["name"]},
            "stringData": {ref["key"]: secrets.token_urlsafe(18)},
        }
        for ref in refs
        if ref["name"] not in shipped
    ]


class DevServerError(RuntimeError):
    """A step of bringing up the dev server failed; the message says which and why."""


@dataclass(frozen=True)
class FileUser:
    """Who the printed commands act as: NFS UID/GID, SMB login and its password's Secret key."""

    name: str
    uid: int
    gid: int
    secret: str
    key: str

    @classmethod
    def of(cls, user: dict[str, Any]) -> FileUser:
        ref = user["passwordSecretRef"]
        return cls(user["name"], user.get("uid", 0), user.get("gid", 0), ref["name"], ref["key"])

    @classmethod
    def admin(cls, server: str) -> FileUser:
        """A share without owner: the built-in admin, whose password the operator generated."""
        return cls("admin", 0, 0, names.admin_secret(server), names.GENERATED_ADMIN_KEY)


@dataclass(frozen=True)
class Served:
    """A Ready DittoServer and where it is reached."""

    namespace: str
    name: str
    endpoints: dict[str, str]
    share: str
    user: FileUser
    kubectl: Path
    kubeconfig: Path


@contextlib.asynccontextmanager
async def serving(cp: ControlPlane, work_dir: Path) -> AsyncIterator[KubeClient]:
    """The load balancer and a node for every namespace on `cp`; stopped on exit."""
    lb = LoadBalancerController(cp.kubeconfig_path, str(netns.LOAD_BALANCER_POOL))
    await asyncio.to_thread(lb.start)
    kube = await connect(str(cp.kubeconfig_path), None)
    try:
        dfs = await asyncio.to_thread(binaries.executable, "dfs", "dfs")
        async with running_node(kube, work_dir / "node", dfs, kubeconfig=cp.kubeconfig_path):
            yield kube
    finally:
        await kube.close()
        await asyncio.to_thread(lb.stop)


def kubectl_command(cp: ControlPlane) -> list[str]:
    return [str(cp.kubernetes_bin_dir / "kubectl"), f"--kubeconfig={cp.kubeconfig_path}"]


async def apply_sample(cp: ControlPlane, sample: Path) -> Served:
    """kubectl apply the sample into NAMESPACE and wait for its DittoServer to be Ready."""
    kubectl = kubectl_command(cp)
    rendered = await _kubectl(
        kubectl, "create", "--dry-run=client", "-n", NAMESPACE, "-o", "json", "-f", str(sample)
    )
    parsed = json.loads(rendered)
    items = parsed.get("items", [parsed])
    servers = [item for item in items if item.get("kind") == "DittoServer"]
    if len(servers) != 1:
        raise DevServerError(f"{sample} must hold exactly one DittoServer ({len(servers)} found)")
    name = servers[0]["metadata"]["name"]
    passwords = user_passwords(items)
    localized = Path(cp.kubeconfig_path).parent / "dev-sample.json"
    localized.write_text(
        json.dumps({"apiVersion": "v1", "kind": "List", "items": local_clients(items) + passwords})
    )
    await _kubectl(kubectl, "create", "namespace", NAMESPACE, check=False)
    await _kubectl(kubectl, "apply", "--server-side", "-n", NAMESPACE, "-f", str(localized))
    print(
        f"[dev] applied {sample} (its placeholder client network {PLACEHOLDER_CLIENTS} "
        f"replaced by this machine's, {LOCAL_CLIENTS}"
        + "".join(
            f"; Secret {secret['metadata']['name']} made with a random password"
            for secret in passwords
        )
        + f"); waiting for dittoserver/{name} to be Ready",
        file=sys.stderr,
    )
    await _kubectl(
        kubectl,
        "wait",
        "-n",
        NAMESPACE,
        f"dittoserver/{name}",
        "--for=condition=Ready",
        f"--timeout={READY_TIMEOUT}s",
    )
    live = json.loads(
        await _kubectl(kubectl, "get", "-n", NAMESPACE, f"dittoserver/{name}", "-o", "json")
    )
    endpoints = dict(live["status"].get("endpoints") or {})
    for protocol in ("nfs", "smb"):
        host, port = endpoints[protocol].rsplit(":", 1)
        try:
            await wait_connectable(host, int(port))
        except ConnectionError as error:
            raise DevServerError(f"{protocol}: {error}") from None
    spec = live["spec"]
    share = (spec.get("shares") or [{"name": "/export"}])[0]
    owner = next((u for u in spec.get("users") or () if u["name"] == share.get("owner")), None)
    return Served(
        namespace=NAMESPACE,
        name=name,
        endpoints=endpoints,
        share=share["name"],
        user=FileUser.of(owner) if owner else FileUser.admin(name),
        kubectl=cp.kubernetes_bin_dir / "kubectl",
        kubeconfig=cp.kubeconfig_path,
    )


async def _kubectl(kubectl: list[str], *args: str, check: bool = True) -> str:
    proc = await asyncio.create_subprocess_exec(
        *kubectl, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await proc.communicate()
    if check and proc.returncode != 0:
        raise DevServerError(f"kubectl {shlex.join(args)}: {err.decode().strip()}")
    return out.decode()


def kernel_has_nfs() -> bool:
    """Whether this kernel can mount NFS (else only the userspace clients are shown)."""
    try:
        return any(line.split()[-1] == "nfs" for line in Path("/proc/filesystems").open())
    except OSError:
        return False


def usage(served: Served) -> str:
    """The commands printed once the server is Ready: each runs as printed, from here."""
    nfs_host, nfs_port = served.endpoints["nfs"].rsplit(":", 1)
    smb_host, smb_port = served.endpoints["smb"].rsplit(":", 1)
    share = served.share
    user = served.user
    nfs_url = (
        f"nfs://{nfs_host}{share}/hello.txt?version=3&nfsport={nfs_port}&mountport={nfs_port}"
        f"&uid={user.uid}&gid={user.gid}"
    )
    password = (
        f"$(kubectl -n {served.namespace} get secret {user.secret} "
        f"-o jsonpath='{{.data.{user.key}}}' | base64 -d)"
    )
    smb = (
        f"smbclient //{smb_host}/{share.lstrip('/')} -p {smb_port} -m SMB3 "
        f'-U "{user.name}%{password}"'
    )
    lines = [
        f"DittoServer {served.namespace}/{served.name} is Ready.",
        f"  NFS  {served.endpoints['nfs']}   (load-balancer address, routed by kube-proxy)",
        f"  SMB  {served.endpoints['smb']}",
        "",
        "Use the cluster (kubectl of the control plane's version):",
        f"  export KUBECONFIG={served.kubeconfig} PATH={served.kubectl.parent}:$PATH",
        f"  kubectl -n {served.namespace} get dittoserver {served.name} -o wide",
        "",
        f"Write a file over NFS as UID {user.uid} and read it back over NFS and over SMB as "
        f"{user.name} (libnfs-utils, smbclient):",
        "  echo 'hello from the dev server' > /tmp/dittofs-hello.txt",
        f"  nfs-cp /tmp/dittofs-hello.txt '{nfs_url}'",
        f"  nfs-cat '{nfs_url}'",
        f"  {smb} -c 'get hello.txt /tmp/dittofs-hello-smb.txt' && cat /tmp/dittofs-hello-smb.txt",
        "",
    ]
    mount = served.endpoints.get("mountHint", "").split("  #")[0]
    if mount and kernel_has_nfs():
        lines += ["Mount it with the kernel's NFS client:", f"  sudo {mount}", ""]
    else:
        lines += [
            "This kernel has no NFS client, so no `mount` here; elsewhere, with one:",
            f"  sudo {mount}" if mount else "  (no mount hint published)",
            "",
        ]
    lines.append("Ctrl-C stops the operator and tears everything down.")
    return "\n".join(lines)
