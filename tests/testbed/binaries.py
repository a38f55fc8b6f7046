"""Locate (and build on demand) the real binaries the testbed runs.

Versions and the cache location come from build-binaries.sh itself, so the script that builds the
binaries and the code that runs them can never disagree about which version is meant.
"""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

BUILD_SCRIPT = Path(__file__).with_name("build-binaries.sh")

# Lines like `KUBERNETES_VERSION="${KUBERNETES_VERSION:-v1.35.4}"` or
# `CACHE="${DITTOFS_TESTBIN_CACHE:-$HOME/.cache/dittofs-operator/bin}"`.
_DEFAULT_LINE = re.compile(r'^(?P<var>\w+)="\$\{(?P<env>\w+):-(?P<default>[^}]*)\}"\s*$')


class BinaryBuildError(RuntimeError):
    """A component could not be built; tests that need it must fail, not skip."""


@dataclass(frozen=True)
class Component:
    """A unit build-binaries.sh builds: one cache directory holding one or more executables."""

    name: str
    version_var: str
    dir_prefix: str
    executables: tuple[str, ...]


COMPONENTS: dict[str, Component] = {
    c.name: c
    for c in (
        Component(
            "kubernetes",
            "KUBERNETES_VERSION",
            "kubernetes",
            ("kube-apiserver", "kube-controller-manager", "kubectl", "kube-proxy"),
        ),
        Component("etcd", "ETCD_VERSION", "etcd", ("etcd",)),
        Component("dfs", "DITTOFS_VERSION", "dittofs", ("dfs", "dfsctl")),
        Component("helm", "HELM_VERSION", "helm-release", ("helm",)),
        Component("coredns", "COREDNS_VERSION", "coredns", ("coredns",)),
        Component("metallb", "METALLB_VERSION", "metallb", ("metallb-controller",)),
        Component("promtool", "PROMETHEUS_VERSION", "promtool", ("promtool",)),
        Component("actionlint", "ACTIONLINT_VERSION", "actionlint", ("actionlint",)),
    )
}


@cache
def _script_defaults() -> dict[str, tuple[str, str]]:
    """Parse `VAR="${ENV:-default}"` lines: {VAR: (ENV, default)}."""
    defaults: dict[str, tuple[str, str]] = {}
    for line in BUILD_SCRIPT.read_text().splitlines():
        if m := _DEFAULT_LINE.match(line.strip()):
            defaults[m["var"]] = (m["env"], m["default"])
    return defaults


def _setting(var: str) -> str:
    """Value of a script setting: the environment wins, as `${ENV:-default}` does in bash."""
    try:
        env, default = _script_defaults()[var]
    except KeyError:
        raise BinaryBuildError(f'{BUILD_SCRIPT} has no {var}="${{...:-...}}" line') from None
    return os.environ.get(env) or os.path.expandvars(default)


def version(component: str) -> str:
    """Pinned version of a component, e.g. version("kubernetes") -> "v1.35.4"."""
    return _setting(_component(component).version_var)


def cache_root() -> Path:
    """Root of the binary cache ($DITTOFS_TESTBIN_CACHE or ~/.cache/dittofs-operator/bin)."""
    return Path(_setting("CACHE")).expanduser()


def component_dir(component: str) -> Path:
    """Cache directory of a component at its pinned version (may not exist yet)."""
    c = _component(component)
    return cache_root() / f"{c.dir_prefix}-{version(component)}"


def is_built(component: str) -> bool:
    """True when every executable of the component is present in the cache."""
    d = component_dir(component)
    return all(os.access(d / exe, os.X_OK) for exe in _component(component).executables)


def ensure(component: str) -> Path:
    """Return the component's cache dir, building it with build-binaries.sh when missing.

    The build prints live to stderr (a cold Kubernetes build takes over 10 minutes, so silence would
    look like a hang). A file lock keeps concurrent callers (e.g. two pytest runs) from building
    the same component twice.
    """
    if is_built(component):
        return component_dir(component)
    with _build_lock(component):
        if not is_built(component):  # someone else may have built it while we waited
            _build(component)
    if not is_built(component):
        raise BinaryBuildError(
            f"build-binaries.sh {component} succeeded but {component_dir(component)} lacks "
            f"{', '.join(_component(component).executables)}"
        )
    return component_dir(component)


def executable(component: str, name: str) -> Path:
    """Path of one executable of a component, building the component if needed."""
    if name not in _component(component).executables:
        raise ValueError(f"{component} has no executable {name!r}")
    return ensure(component) / name


def _component(component: str) -> Component:
    try:
        return COMPONENTS[component]
    except KeyError:
        raise ValueError(f"unknown component {component!r}; known: {sorted(COMPONENTS)}") from None


@contextmanager
def _build_lock(component: str) -> Iterator[None]:
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with (root / f".{component}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _build(component: str) -> None:
    print(
        f"[testbed] {component} {version(component)} not in {cache_root()}: "
        f"running {BUILD_SCRIPT.name} {component}",
        file=sys.stderr,
        flush=True,
    )
    # stdout/stderr are inherited on purpose: the build's progress shows live.
    rc = subprocess.run(["bash", str(BUILD_SCRIPT), component], check=False).returncode
    if rc != 0:
        raise BinaryBuildError(
            f"{BUILD_SCRIPT} {component} failed with exit code {rc} (see its output above); "
            f"it needs Go and the Go module proxy. Tests that need {component} cannot run."
        )
