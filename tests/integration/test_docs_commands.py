"""Every command and manifest shown in README.md, deploy/README.md, the chart's README and docs/
is run or checked.

One test per Markdown file runs its blocks in document order in a sandbox (docs/README.md
describes the convention; tests/support/doccommands.py parses it):
- a copy of the repository as working directory, so documented commands that write files
  (regenerating install.yaml...) leave the checkout alone;
- a fresh HOME whose ~/.kube/config is the local control plane's admin kubeconfig, its
  context defaulting to a fresh namespace;
- the real kubectl, helm and this virtualenv's python first on PATH.
Namespaces, ClusterRoles and ClusterRoleBindings a file created are deleted after it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dittofs_controller.kube.client import KubeClient
from tests.support import docchecks, doccommands, incluster
from tests.support.crds import install_crd
from tests.support.doccommands import REPO, Block
from tests.support.percona import install_crd as install_percona_crd
from tests.support.process import free_ports
from tests.testbed import binaries

FILES = doccommands.markdown_files()
BACKGROUND_SECONDS = 6.0
RUN_TIMEOUT = 150.0
CLUSTER_SCOPED = ("namespaces", "clusterroles", "clusterrolebindings")

pytestmark = (
    [] if binaries.is_built("helm") else [pytest.mark.timeout(incluster.HELM_BUILD_TIMEOUT)]
)


class Sandbox:
    """Where one Markdown file's commands run (see the module docstring)."""

    def __init__(self, root: Path, kubeconfig: Path, namespace: str) -> None:
        self.root = root
        self.repo = root / "repo"
        self.home = root / "home"
        self.bin = root / "bin"
        self.namespace = namespace
        _copy_checkout(self.repo)
        self.bin.mkdir()
        (self.bin / "kubectl").symlink_to(binaries.executable("kubernetes", "kubectl"))
        (self.bin / "helm").symlink_to(incluster.helm())
        (self.bin / "dfsctl").symlink_to(binaries.executable("dfs", "dfsctl"))
        for name in ("python", "python3"):  # a wrapper: a symlink would lose the virtualenv
            wrapper = self.bin / name
            wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
            wrapper.chmod(0o755)
        (self.home / ".kube").mkdir(parents=True)
        shutil.copy(kubeconfig, self.home / ".kube" / "config")
        health, metrics = free_ports(2)
        self.env = {
            "HOME": str(self.home),
            "PATH": f"{self.bin}:{incluster.SYSTEM_PATH}",
            "LANG": "C.UTF-8",
            # The operator's documented `run` must not collide with other listeners here.
            "DITTOFS_CONTROLLER_BIND_ADDRESS": "127.0.0.1",
            "DITTOFS_CONTROLLER_HEALTH_PORT": str(health),
            "DITTOFS_CONTROLLER_METRICS_PORT": str(metrics),
            "POD_NAMESPACE": namespace,  # its leader-election Lease goes there, not in default
        }
        self.command(["kubectl", "create", "namespace", namespace], 30, check=True)
        self.command(
            ["kubectl", "config", "set-context", "--current", f"--namespace={namespace}"],
            30,
            check=True,
        )

    def command(
        self, argv: list[str], timeout: float, *, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            argv,
            cwd=self.repo,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check:
            assert result.returncode == 0, f"{argv}: {result.stderr}"
        return result

    def script(self, text: str, timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess[str]:
        return self.command(["bash", "-euo", "pipefail", "-c", text], timeout)

    def names(self, resource: str) -> set[str]:
        listed = self.command(["kubectl", "get", resource, "-o", "name"], 30, check=True)
        return set(listed.stdout.split())


def _copy_checkout(target: Path) -> None:
    """Tracked and untracked (not ignored) files: the docs as they are being edited."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    )
    for name in filter(None, listed.stdout.decode().split("\0")):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


@pytest.fixture
async def crds(kube: KubeClient) -> None:
    """The DittoServer CRD and the Percona stand-in CRD, as on a cluster prepared per the docs."""
    await install_crd(kube)
    await install_percona_crd(kube)


@pytest.fixture
async def sandbox(
    control_plane: Any, kube: KubeClient, tmp_path: Path, crds: None
) -> AsyncIterator[Sandbox]:
    box = Sandbox(tmp_path, control_plane.kubeconfig_path, f"docs-{uuid.uuid4().hex[:8]}")
    before = {resource: box.names(resource) for resource in CLUSTER_SCOPED}
    yield box
    _cleanup(box, before)


def _cleanup(box: Sandbox, before: dict[str, set[str]]) -> None:
    """Delete what the file created; wait for the namespaces it named itself to go, since a
    later file may create them again (the sandbox's own random one need not be awaited)."""
    created = {resource: box.names(resource) - before[resource] for resource in CLUSTER_SCOPED}
    own = f"namespace/{box.namespace}"
    for names in [*created.values(), {own}]:
        if names:
            box.command(["kubectl", "delete", "--wait=false", *sorted(names)], 60)
    deadline = time.monotonic() + 90
    while created["namespaces"] & box.names("namespaces"):
        assert time.monotonic() < deadline, f"namespaces not deleted: {created['namespaces']}"
        time.sleep(0.5)


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(REPO)) for p in FILES])
def test_every_block_runs_or_checks(path: Path, request: pytest.FixtureRequest) -> None:
    found = doccommands.blocks(path)
    broken = [problem for block in found for problem in doccommands.problems(block)]
    assert not broken, "\n".join(broken)
    if all(block.mode is None for block in found):
        return  # prose and diagrams only: nothing to run (the parse above still applies)
    sandbox: Sandbox = request.getfixturevalue("sandbox")
    checks = docchecks.Checks(_runner(sandbox), doccommands.facts(found))
    failures: list[str] = []
    for block in found:
        if block.mode is None:
            continue
        try:
            failures += [f"{block.where}: {p}" for p in _verify(block, sandbox, checks)]
        except doccommands.DocError as error:
            failures.append(f"{block.where}: {error}")
    assert not failures, "\n".join(failures)


def _runner(box: Sandbox) -> docchecks.Runner:
    def run(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        return box.command(argv, timeout)

    return run


def _verify(block: Block, box: Sandbox, checks: docchecks.Checks) -> list[str]:
    if block.mode in ("run", "background"):
        found = [
            problem
            for command in doccommands.commands(doccommands.script(block))
            for problem in checks.semantics(command)
        ]
        if block.mode == "background":
            return found + _background(block, box)
        result = box.script(doccommands.script(block))
        if result.returncode != 0:
            found.append(
                f"exit {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
            )
        return found
    if block.mode == "check":
        windows = block.lang in doccommands.WINDOWS_LANGS
        return [
            problem
            for command in doccommands.commands(doccommands.script(block), windows=windows)
            for problem in checks.check(command, windows=windows)
        ]
    docs = doccommands.documents(block)
    if block.mode == "external":
        return [problem for doc in docs for problem in docchecks.external_problems(doc)]
    if block.mode == "values":
        values = box.root / f"values-{block.line}.yaml"
        values.write_text(block.text)
        chart = str(docchecks.CHART.relative_to(REPO))
        found = _failed(box.command(["helm", "template", "docs", chart, "-f", str(values)], 60))
    else:
        if block.mode == "fragment":
            docs = _completed(block, docs)
        manifest = box.root / f"manifest-{block.line}.yaml"
        manifest.write_text(yaml.safe_dump_all(docs))
        applied = ["kubectl", "apply", "--server-side", "--dry-run=server", "-f", str(manifest)]
        found = _failed(box.command(applied, 60))
    if block.mode in ("apply", "values") and block.args and not found:
        (box.repo / block.args[0]).write_text(block.text)  # for the commands that follow
    return found


def _completed(block: Block, fragments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The base file's documents with the fragment merged into its DittoServer."""
    base = [doc for doc in yaml.safe_load_all((REPO / block.args[0]).read_text()) if doc]
    servers = [doc for doc in base if doc.get("kind") == "DittoServer"]
    if len(servers) != 1 or len(fragments) != 1:
        raise doccommands.DocError(f"fragment of {block.args[0]}: one DittoServer, one fragment")
    merged = doccommands.merged(servers[0], fragments[0])
    return [merged if doc is servers[0] else doc for doc in base]


def _failed(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [] if result.returncode == 0 else [result.stderr.strip() or result.stdout.strip()]


def _background(block: Block, box: Sandbox) -> list[str]:
    """Still running after BACKGROUND_SECONDS (then stopped with its whole process group)."""
    log = box.root / f"background-{block.line}.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            ["bash", "-euo", "pipefail", "-c", doccommands.script(block)],
            cwd=box.repo,
            env=box.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            process.wait(timeout=BACKGROUND_SECONDS)
        except subprocess.TimeoutExpired:
            _stop(process)
            return []
    return [f"exited with {process.returncode} before {BACKGROUND_SECONDS} s:\n{log.read_text()}"]


def _stop(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=40)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
