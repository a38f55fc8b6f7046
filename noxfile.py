"""Developer and CI entry points: `nox -s lint`, `nox -s tests`, `nox -s e2e`, `nox -s dev`.

Every session installs what it needs itself, so they work on a fresh machine: Python packages
into the session's virtualenv, and the real Kubernetes control plane binaries (built once from
the Go module proxy into ~/.cache/dittofs-operator/bin by tests/testbed/build-binaries.sh).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nox

nox.options.sessions = ["lint", "tests", "e2e"]
nox.options.reuse_existing_virtualenvs = True

ROOT = Path(__file__).parent
PYTHON = "3.11"


# Debian packages the tests use: real NFS/SMB clients, and ip/nsenter/unshare for running pods.
SYSTEM_PACKAGES = {
    "nfs-cp": "libnfs-utils",
    "smbclient": "smbclient",
    "ip": "iproute2",
    "nsenter": "util-linux",
    "pg_ctlcluster": "postgresql",  # the end-to-end suite's local PostgreSQL (initdb, postgres)
    "nft": "nftables",  # kube-proxy (nftables mode) and the testbed's forwarding filter
    "conntrack": "conntrack",  # kube-proxy clears stale UDP flows with it
    "slapd": "slapd",  # the identity tests' LDAP directory (OpenLDAP, run by a fixture)
    "ldapadd": "ldap-utils",
}


def install_system_packages(session: nox.Session) -> None:
    """apt-get install what is missing (the tests run pods as root, so root is assumed)."""
    missing = sorted({pkg for cmd, pkg in SYSTEM_PACKAGES.items() if not shutil.which(cmd)})
    if not missing:
        return
    if os.geteuid() != 0:
        session.error(f"missing commands; as root run: apt-get install {' '.join(missing)}")
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    session.run("apt-get", "update", "-qq", external=True, env=env)
    session.run("apt-get", "install", "-y", "-qq", *missing, external=True, env=env)


def build_binaries(session: nox.Session, *components: str) -> None:
    session.run("bash", str(ROOT / "tests/testbed/build-binaries.sh"), *components, external=True)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff (lint + format check) on everything, mypy --strict on the package, and the import
    contracts that keep the layers one-way (ruff's and import-linter's settings are in
    pyproject.toml, mypy's in setup.cfg), then a collection of every test, so that a test module
    or conftest that no longer imports fails here in seconds rather than after the tests
    session's half hour (an e2e conftest importing a moved fixture once did), then actionlint
    on the GitHub Actions workflows."""
    session.install("-e", ".[lint,test]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy", "dittofs_controller")
    session.run("lint-imports")
    session.run("pytest", "-p", "no:cacheprovider", "--collect-only", "-q", "tests", silent=True)
    actionlint(session)


def actionlint(session: nox.Session) -> None:
    """actionlint on .github/workflows (expressions, action inputs and outputs, runner labels),
    built from its Go module like the test components: Go is needed only while it is not yet
    in the cache. shellcheck and pyflakes, which it runs on `run:` scripts when they are on
    PATH, are turned off so that every machine judges the workflows alike."""
    build_binaries(session, "actionlint")
    where = "from tests.testbed import binaries; print(binaries.component_dir('actionlint'))"
    directory = session.run("python", "-c", where, silent=True)
    assert isinstance(directory, str)
    session.run(
        str(Path(directory.strip()) / "actionlint"), "-shellcheck=", "-pyflakes=", external=True
    )


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Unit tests, then integration tests on a real etcd + kube-apiserver + controller-manager."""
    session.install("-e", ".[test]")
    install_system_packages(session)
    build_binaries(session, "etcd", "kubernetes", "helm", "dfs", "coredns", "metallb", "promtool")
    session.run(
        "pytest",
        "-p",
        "no:cacheprovider",
        *(session.posargs or ["tests/unit", "tests/integration"]),
    )


@nox.session(python=PYTHON)
def e2e(session: nox.Session) -> None:
    """End to end: the operator deploys every sample and the real DittoFS serves NFS and SMB.

    Pods run on the testbed node (root needed) with kube-proxy and CoreDNS, MetalLB's controller
    gives LoadBalancers their addresses, and clients dial those; S3 (moto), PostgreSQL and the
    Percona operator are local stand-ins. `nox -s e2e -- -k badger` runs a subset.
    """
    session.install("-e", ".[test]")
    install_system_packages(session)
    build_binaries(session, "etcd", "kubernetes", "dfs", "coredns", "metallb", "helm")
    session.run("pytest", "-p", "no:cacheprovider", *(session.posargs or ["tests/e2e"]))


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Operator speed and memory against the real control plane; writes docs/performance.md.

    `nox -s bench -- --sizes 10,100` measures fewer sizes.
    """
    session.install("-e", ".[test]")
    build_binaries(session, "etcd", "kubernetes")
    session.run("python", "-m", "tests.bench.operator_bench", *session.posargs)


@nox.session(python=PYTHON)
def dev(session: nox.Session) -> None:
    """Run the operator in the foreground against the current kubeconfig, or a local server.

    With $KUBECONFIG (or ~/.kube/config) pointing at a reachable cluster, the CRD is applied there
    and the operator runs against it. Otherwise a local etcd + kube-apiserver +
    kube-controller-manager is started and, as root, a node with kube-proxy and CoreDNS and
    MetalLB's controller; a sample (`-- --sample FILE`, default samples/badger-filesystem.yaml)
    is applied, and once Ready the commands that write and read a file over NFS and SMB from
    this machine are printed. Ctrl-C stops the operator and tears everything down.
    """
    session.install("-e", ".[test]")
    if not os.environ.get("KUBECONFIG") and not Path("~/.kube/config").expanduser().exists():
        if os.geteuid() == 0:
            install_system_packages(session)
            build_binaries(session, "etcd", "kubernetes", "dfs", "coredns", "metallb")
        else:
            build_binaries(session, "etcd", "kubernetes")
    session.run("python", "-m", "tests.testbed", "dev", *session.posargs)
