"""The whole install, as a user does it: the operator in its pod from the Helm chart (or the plain
manifests), a sample served through its load-balancer addresses, an upgrade that rolls only the
operator, and an uninstall that leaves the file server and its data alone.

The operator's image is the wheel installed as the Containerfile does (incluster.operator_image);
its pod reaches the API server through the `kubernetes` Service and DittoFS through its API
Service's cluster DNS name, both routed by the node's kube-proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from dittofs_controller.kube.client import KubeClient
from dittofs_controller.kube.resources import DITTOSERVERS, PODS, PVCS
from tests.e2e.conftest import SAMPLES_DIR, Deployment, Timings, documents
from tests.support import incluster
from tests.testbed import binaries
from tests.testbed.devserver import local_clients
from tests.testbed.node import Image, Node, default_images, running_node

NAME = "badger-filesystem"
SAMPLE = SAMPLES_DIR / f"{NAME}.yaml"
MANIFESTS = incluster.REPO / "deploy" / "manifests"
MANIFESTS_NAMESPACE = "dittofs-system"
RELEASE = "files-operator"
Obj = dict[str, Any]


@pytest.fixture(scope="session")
def operator_image(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Image]:
    return incluster.operator_image(tmp_path_factory.mktemp("operator-image"))


class Installer:
    """helm or kubectl with the admin kubeconfig, and the operator's namespace."""

    def __init__(self, method: str, control_plane: Any, namespace: str, home: Path) -> None:
        self.method = method
        self.kubeconfig = str(control_plane.kubeconfig_path)
        self.kubectl = str(binaries.executable("kubernetes", "kubectl"))
        self.namespace = namespace if method == "helm" else MANIFESTS_NAMESPACE
        self.env = {"KUBECONFIG": self.kubeconfig, "HOME": str(home), "PATH": incluster.SYSTEM_PATH}

    def run(self, *command: str) -> str:
        result = subprocess.run(
            command, env=self.env, capture_output=True, text=True, timeout=300, check=False
        )
        assert result.returncode == 0, f"{' '.join(command)}:\n{result.stderr}{result.stdout}"
        return result.stdout

    def helm(self, *args: str) -> str:
        return self.run(str(incluster.helm()), *args, "--namespace", self.namespace)

    def install(self) -> None:
        if self.method == "helm":
            self.helm("install", RELEASE, str(incluster.CHART))
        else:
            self.run(
                self.kubectl, "apply", "--server-side", "--force-conflicts", "-k", str(MANIFESTS)
            )

    def upgrade(self) -> None:
        """A changed setting: the operator's log level."""
        if self.method == "helm":
            self.helm("upgrade", RELEASE, str(incluster.CHART), "--set", "logLevel=debug")
        else:
            env = [
                self.kubectl, "-n", self.namespace, "set", "env",
                "deployment/dittofs-operator", "DITTOFS_CONTROLLER_LOG_LEVEL=debug",
            ]  # fmt: skip
            self.run(*env)

    def uninstall(self) -> None:
        if self.method == "helm":
            self.helm("uninstall", RELEASE, "--wait")
        else:
            # docs/install.md's commands: the operator's objects go, the CRD (and so every
            # DittoServer) stays, as Helm leaves crds/.
            selector = "app.kubernetes.io/name=dittofs-operator"
            kinds = "deployment,service,serviceaccount,role,rolebinding"
            self.run(self.kubectl, "delete", kinds, "-n", self.namespace, "-l", selector)
            self.run(self.kubectl, "delete", "clusterrole,clusterrolebinding", "-l", selector)


@pytest.fixture
async def installed_node(
    kube: KubeClient,
    namespace: str,
    control_plane: Any,
    load_balancer: Any,
    operator_image: tuple[str, Image],
    tmp_path: Path,
) -> AsyncIterator[Node]:
    """A node for the test's namespace and the manifests' namespace, running DittoFS and the
    operator's image."""
    repository, image = operator_image
    images = {**default_images(binaries.executable("dfs", "dfs")), repository: image}
    async with running_node(
        kube,
        tmp_path / "node",
        None,
        images=images,
        namespaces=[namespace, MANIFESTS_NAMESPACE],
        kubeconfig=control_plane.kubeconfig_path,
    ) as node:
        yield node


async def operator_pod(
    kube: KubeClient, node: Node, namespace: str, not_uid: str = "", timeout: float = 180
) -> Obj:
    """The operator's ready pod (a new one when not_uid is the old one's)."""
    selector = {"labelSelector": "app.kubernetes.io/name=dittofs-operator"}
    seen: list[Obj] = []
    try:
        async with asyncio.timeout(timeout):
            while True:
                seen = (await kube.request("GET", PODS.path(namespace), query=selector))["items"]
                for pod in seen:
                    meta = pod["metadata"]
                    if meta["uid"] != not_uid and not meta.get("deletionTimestamp"):
                        with contextlib.suppress(AssertionError):
                            return await node.wait_ready(
                                namespace, meta["name"], timeout=5, not_uid=not_uid
                            )
                await asyncio.sleep(1)
    except TimeoutError:
        described = [node.describe(namespace, p["metadata"]["name"], p) for p in seen]
        raise AssertionError(
            f"no ready operator pod in {namespace} after {timeout} s:\n" + "\n".join(described)
        ) from None


@pytest.fixture(params=["helm", "manifests"])
def installer(
    request: pytest.FixtureRequest, control_plane: Any, namespace: str, tmp_path: Path
) -> Iterator[Installer]:
    found = Installer(request.param, control_plane, namespace, tmp_path)
    yield found
    if found.method == "manifests":  # the fixed namespace must not outlive the test
        found.run(found.kubectl, "delete", "namespace", MANIFESTS_NAMESPACE,
                  "--ignore-not-found", "--wait=false")  # fmt: skip


async def test_install_serve_upgrade_uninstall(
    kube: KubeClient,
    namespace: str,
    installed_node: Node,
    installer: Installer,
    timings: Timings,
    tmp_path: Path,
) -> None:
    node = installed_node
    await asyncio.to_thread(installer.install)
    first = await operator_pod(kube, node, installer.namespace)
    timings.mark("operator-ready")

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    deployment = Deployment(kube, namespace, node, scratch)
    await deployment.create(local_clients(documents(SAMPLE)))
    await deployment.wait_ready(NAME)
    nfs, smb = await deployment.nfs(NAME), await deployment.smb(NAME)
    await nfs.write("/installed.txt", "written through the load balancer\n", scratch)
    assert await smb.read("installed.txt", scratch) == "written through the load balancer\n"
    server_pod = await deployment.pod(NAME)
    timings.mark("served")

    await asyncio.to_thread(installer.upgrade)
    second = await operator_pod(kube, node, installer.namespace, not_uid=first["metadata"]["uid"])
    assert second["metadata"]["uid"] != first["metadata"]["uid"], "the operator did not roll"
    # The upgraded operator converges a change over REST (DittoFS through cluster DNS)...
    shares = [*((await deployment.server(NAME))["spec"]["shares"])]
    shares.append({**shares[0], "name": "/after-upgrade"})
    await deployment.patch(NAME, {"shares": shares})
    await deployment.wait_ready(NAME)
    assert await (await deployment.smb(NAME, "/after-upgrade")).login_error() is None
    # ...and left the file server's pod alone.
    assert (await deployment.pod(NAME))["metadata"]["uid"] == server_pod["metadata"]["uid"]
    timings.mark("upgraded")

    await asyncio.to_thread(installer.uninstall)
    async with asyncio.timeout(120):
        while True:
            if not await kube.get_or_none(PODS, second["metadata"]["name"], installer.namespace):
                break
            await asyncio.sleep(1)
    assert await kube.get_or_none(DITTOSERVERS, NAME, namespace) is not None
    claims = await kube.request("GET", PVCS.path(namespace))
    assert {c["metadata"]["name"] for c in claims["items"]} >= {f"{NAME}-controlplane"}
    assert await nfs.read("/installed.txt") == "written through the load balancer\n"
    assert (await deployment.pod(NAME))["metadata"]["uid"] == server_pod["metadata"]["uid"]
    timings.mark("uninstalled")
