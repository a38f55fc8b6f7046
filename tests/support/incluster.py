"""Run the operator exactly as the chart's Deployment runs it in a pod, without a container engine.

What a pod gives the process, and how it is reproduced here:
- the image's runtime: the wheel built and installed the way the Containerfile does it
  (`build_wheel`, `install_runtime`), run with the runtime stage's ENV (`image_env`), all read
  from the Containerfile itself;
- the container's command line and environment, read from the rendered Deployment
  (`container_args`, `container_env`, fieldRefs resolved), plus the KUBERNETES_SERVICE_HOST/PORT
  the kubelet injects; nothing of the test runner's environment leaks in;
- the service-account volume at /var/run/secrets/kubernetes.io/serviceaccount (token from the
  TokenRequest API, ca.crt from the kube-root-ca.crt ConfigMap, namespace), mounted read-only;
- readOnlyRootFilesystem, and the image's USER (65532) instead of root.
The last three come from a private mount namespace (`unshare`): a tmpfs over /run (where
/var/run/secrets lives) holds the service-account files, the root filesystem is remounted
read-only for this process only, and `setpriv` drops to the image's user before the exec.
The operator's own code is used unchanged: its in-cluster config reads the standard paths, as
in a pod.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from dittofs_controller.kube.client import APPLY_PATCH, KubeClient
from dittofs_controller.kube.resources import (
    CONFIGMAPS,
    CRDS,
    DEPLOYMENTS,
    NETWORKPOLICIES,
    SERVICES,
    Resource,
)
from tests.support import leaks
from tests.support.process import REPO, OperatorProcess
from tests.testbed.node import Image

SERVICEACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
CHART = REPO / "deploy" / "helm" / "dittofs-operator"
CONTAINERFILE = REPO / "Containerfile"
# Tests that may build helm first get this much time (a cold `go install` of helm).
HELM_BUILD_TIMEOUT = 1800
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Shell run inside the new mount namespace before exec'ing the operator. $1 is the directory
# holding token/ca.crt/namespace ("" for none); the remaining arguments are the command.
_SANDBOX_SCRIPT = r"""
set -eu
source_dir=$1; shift
if [ -n "$source_dir" ]; then
    mount -t tmpfs -o size=1m,mode=0755 tmpfs "$TMPFS_AT"
    mkdir -p "$SA_DIR"
    mount --bind "$source_dir" "$SA_DIR"
    mount -o remount,bind,ro "$SA_DIR"
fi
mount -o remount,bind,ro /
exec "$@"
"""


# -- the chart ------------------------------------------------------------------------------


def helm() -> Path:
    """The pinned helm binary (built from the Go module proxy on first use)."""
    from tests.testbed import binaries

    return binaries.executable("helm", "helm")


def render_chart_text(
    values: Mapping[str, Any] | None = None,
    *,
    release: str = "dittofs-operator",
    namespace: str = "dittofs-system",
    include_crds: bool = False,
    kube_version: str | None = None,
) -> str:
    """`helm template` output of the chart; values go through a file so numbers keep types.
    Without `kube_version`, helm assumes its own client-go's Kubernetes version."""
    with tempfile.TemporaryDirectory(prefix="dittofs-chart-") as scratch:
        values_file = Path(scratch) / "values.yaml"
        values_file.write_text(json.dumps(dict(values or {})))
        command = [
            str(helm()),
            "template",
            release,
            str(CHART),
            "--namespace",
            namespace,
            "--values",
            str(values_file),
            *(["--include-crds"] if include_crds else []),
            *(["--kube-version", kube_version] if kube_version else []),
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ChartError(result.stderr.strip())
    return result.stdout


def render_chart(values: Mapping[str, Any] | None = None, **options: Any) -> list[dict[str, Any]]:
    """The chart's objects as dicts, in helm's install order."""
    text = render_chart_text(values, **options)
    return [doc for doc in yaml.safe_load_all(text) if doc]


class ChartError(AssertionError):
    """`helm template` refused the values; the message is helm's."""


def find(docs: Sequence[Mapping[str, Any]], kind: str, name: str | None = None) -> list[Any]:
    return [
        doc
        for doc in docs
        if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name)
    ]


Doc = dict[str, Any]
FIELD_MANAGER = "dittofs-tests-deploy"
RBAC_GROUP = "rbac.authorization.k8s.io"
KINDS: dict[str, Resource] = {
    resource.kind: resource
    for resource in (
        Resource("", "v1", "serviceaccounts", "ServiceAccount"),
        Resource(RBAC_GROUP, "v1", "roles", "Role"),
        Resource(RBAC_GROUP, "v1", "rolebindings", "RoleBinding"),
        Resource(RBAC_GROUP, "v1", "clusterroles", "ClusterRole", namespaced=False),
        Resource(RBAC_GROUP, "v1", "clusterrolebindings", "ClusterRoleBinding", namespaced=False),
        DEPLOYMENTS,
        SERVICES,
        NETWORKPOLICIES,
        CRDS,
        Resource("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget"),
        CONFIGMAPS,  # the Grafana dashboard's
    )
}


async def apply_rendered(kube: KubeClient, doc: Doc, *, dry_run: bool) -> Doc:
    """Server-side apply one rendered object, strictly validated."""
    resource = KINDS[doc["kind"]]
    meta = doc["metadata"]
    return await kube.request(
        "PATCH",
        resource.path(meta.get("namespace"), meta["name"]),
        query={
            "fieldManager": FIELD_MANAGER,
            "force": "true",
            "fieldValidation": "Strict",
            "dryRun": "All" if dry_run else None,
        },
        body=doc,
        content_type=APPLY_PATCH,
    )


# -- the chart's RBAC -----------------------------------------------------------------------


def operator_roles(docs: list[Doc]) -> list[Doc]:
    """The rendered Roles and ClusterRoles bound to the operator's ServiceAccount.

    Not the ClusterRoles for people (templates/user-roles.yaml): nothing binds them in the
    chart, the built-in admin/edit/view roles aggregate them.
    """
    (deployment,) = find(docs, "Deployment")
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    subject = ("ServiceAccount", account, deployment["metadata"]["namespace"])
    bound = {
        (
            binding["roleRef"]["kind"],
            binding["roleRef"]["name"],
            binding["metadata"].get("namespace") if binding["roleRef"]["kind"] == "Role" else None,
        )
        for binding in docs
        if binding["kind"] in ("RoleBinding", "ClusterRoleBinding")
        and any((s["kind"], s["name"], s.get("namespace")) == subject for s in binding["subjects"])
    }
    return [
        doc
        for doc in docs
        if (doc["kind"], doc["metadata"]["name"], doc["metadata"].get("namespace")) in bound
    ]


def granted_verbs(docs: list[Doc]) -> list[tuple[str, str, str]]:
    """Every (apiGroup, resource, verb) the operator's Roles and ClusterRoles grant."""
    return sorted(
        {
            (group, resource, verb)
            for doc in operator_roles(docs)
            for rule in doc["rules"]
            for group in rule["apiGroups"]
            for resource in rule["resources"]
            for verb in rule["verbs"]
        }
    )


def without_verb(docs: list[Doc], group: str, resource: str, verb: str) -> list[Doc]:
    """`docs` with `verb` on `resource` taken out of every Role and ClusterRole of the
    operator's."""
    docs = copy.deepcopy(docs)
    removed = 0
    for doc in operator_roles(docs):
        rules = []
        for rule in doc["rules"]:
            if group not in rule["apiGroups"] or resource not in rule["resources"]:
                rules.append(rule)
                continue
            removed += verb in rule["verbs"]
            others = [r for r in rule["resources"] if r != resource]
            if others:
                rules.append({**rule, "resources": others})
            verbs = [v for v in rule["verbs"] if v != verb]
            if verbs:
                rules.append({**rule, "resources": [resource], "verbs": verbs})
        doc["rules"] = rules
    assert removed, f"the chart grants no {verb} on {group or 'core'}/{resource}"
    return docs


# `User "system:serviceaccount:ns:sa" cannot patch resource "dittoservers/status" ...`: the
# API server's wording of an RBAC denial (a terminating namespace is a 403 too, worded otherwise).
DENIAL = re.compile(
    r'User \\?"system:serviceaccount:[^"\\]+\\?" cannot (\w+) resource \\?"([^"\\]+)'
)
# The OwnerReferencesPermissionEnforcement admission plugin's denials name the permission, not
# in RBAC's words: changing the ownerReferences of an existing object needs delete on it
# (`persistentvolumeclaims "x" is forbidden: cannot set an ownerRef on a resource you can't
# delete`); setting blockOwnerDeletion needs update on the owner's finalizers subresource (the
# owner is not named: every ownerReference the operator writes points at a DittoServer).
OWNER_REF_DENIAL = re.compile(
    r'(\w+)(?:\.[\w.-]+)? \\?"[^"\\]+\\?" is forbidden: cannot set an ownerRef on a resource '
    r"you can't delete"
)
BLOCK_OWNER_DELETION_DENIAL = "cannot set blockOwnerDeletion if an ownerReference refers to"


def denials(operator: OperatorProcess) -> list[tuple[str, str]]:
    """(verb, resource) of every permission the API server found missing, from the log."""
    found: set[tuple[str, str]] = set()
    for entry in operator.logs():
        text = json.dumps(entry)
        found.update(DENIAL.findall(text))
        found.update(("delete", resource) for resource in OWNER_REF_DENIAL.findall(text))
        if BLOCK_OWNER_DELETION_DENIAL in text:
            found.add(("update", "dittoservers/finalizers"))
    return sorted(found)


# -- the image's runtime --------------------------------------------------------------------


def containerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """The Containerfile's instructions by stage name: [(KEYWORD, arguments)], continuation
    lines joined and comments dropped."""
    stages: dict[str, list[tuple[str, str]]] = {"": []}
    current = stages[""]
    text = re.sub(r"\\\n", " ", CONTAINERFILE.read_text())
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, arguments = line.partition(" ")
        if keyword.upper() == "FROM":
            words = arguments.split()
            current = stages.setdefault(words[-1] if "AS" in map(str.upper, words) else "", [])
        current.append((keyword.upper(), arguments.strip()))
    return stages


def _stage(name: str) -> list[tuple[str, str]]:
    try:
        return containerfile_stages()[name]
    except KeyError:
        raise AssertionError(f"{CONTAINERFILE} has no stage {name!r}") from None


def builder_sources() -> list[str]:
    """What the builder stage COPYs from the build context."""
    sources: list[str] = []
    for keyword, arguments in _stage("builder"):
        words = arguments.split()
        if keyword == "COPY" and not any(w.startswith("--from") for w in words):
            sources += words[:-1]
    if not sources:
        raise AssertionError(f"{CONTAINERFILE}: the builder stage copies nothing")
    return sources


def _stage_variables(stage: str, keyword: str) -> dict[str, str]:
    """ARG or ENV assignments of a stage (`K=V` forms), unquoted as the shell does."""
    found: dict[str, str] = {}
    for instruction, arguments in _stage(stage):
        if instruction == keyword:
            for item in shlex.split(arguments):
                name, _, value = item.partition("=")
                found[name] = value
    return found


def pip_install_flags() -> list[str]:
    """The runtime stage's PIP_INSTALL_FLAGS, split as the shell does."""
    flags = _stage_variables("runtime", "ARG").get("PIP_INSTALL_FLAGS")
    if flags is None:
        raise AssertionError(f'{CONTAINERFILE} has no ARG PIP_INSTALL_FLAGS="..." line')
    return shlex.split(flags)


def image_user() -> tuple[int, int]:
    """The runtime stage's USER, as (uid, gid)."""
    uid, gid = (int(part) for part in dict(_stage("runtime"))["USER"].split(":"))
    return uid, gid


def image_env(python: Path) -> dict[str, str]:
    """The runtime stage's ENV, with its venv moved to `python`'s and the base image's PATH
    standing in for ${PATH}: the entrypoint's whole environment."""
    declared = _stage_variables("runtime", "ENV")
    venv = declared.pop("VIRTUAL_ENV")
    moved = str(python.parent.parent)
    return {
        "VIRTUAL_ENV": moved,
        **{
            name: value.replace("${PATH}", SYSTEM_PATH).replace(venv, moved)
            for name, value in declared.items()
        },
    }


def build_wheel(work_dir: Path) -> Path:
    """The builder stage: copy its COPY sources into a clean tree, `pip wheel --no-deps` it."""
    tree = work_dir / "src"
    tree.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for source in builder_sources():
        path = REPO / source.rstrip("/")
        if path.is_dir():
            shutil.copytree(path, tree / path.name, ignore=ignore)
        else:
            shutil.copy2(path, tree / path.name)
    wheels = work_dir / "wheels"
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(wheels), "."]
    _run(command, tree, env={**os.environ, **_stage_variables("builder", "ENV")})
    (wheel,) = wheels.glob("*.whl")
    return wheel


def install_runtime(wheel: Path, venv: Path, base_python: Path | None = None) -> Path:
    """The runtime stage: a venv of `base_python` (default: this one) without pip, the wheel
    installed into it with the Containerfile's flags by an outside pip. Returns its python."""
    base = str(base_python or sys.executable)
    _run([base, "-m", "venv", "--without-pip", str(venv)], venv.parent)
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install"]
    _run([*pip, *pip_install_flags(), str(wheel)], venv.parent)
    return python


# The interpreter every testbed container sees (the host's /usr is each container's /usr):
# the stand-in for the base image's Python 3.11.
IMAGE_PYTHON = Path("/usr/bin/python3.11")


def operator_image(work_dir: Path) -> tuple[str, Image]:
    """The operator's image for the testbed node, as (repository, Image): the chart's default
    repository mapped to the wheel installed as the Containerfile does, at its VIRTUAL_ENV,
    with its ENTRYPOINT, CMD, USER, WORKDIR and ENV."""
    runtime = dict(_stage("runtime"))
    venv = Path(_stage_variables("runtime", "ENV")["VIRTUAL_ENV"])
    built = install_runtime(build_wheel(work_dir), work_dir / "venv", IMAGE_PYTHON).parent.parent
    env = image_env(venv / "bin" / "python")
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    image = Image(
        files={str(venv): built},
        entrypoint=tuple(json.loads(runtime["ENTRYPOINT"])),
        cmd=tuple(json.loads(runtime["CMD"])),
        workdir=runtime.get("WORKDIR", "/"),
        user=image_user(),
        home=env.get("HOME", "/"),
        env=env,
    )
    return str(values["image"]["repository"]), image


def _run(command: Sequence[str], cwd: Path, env: Mapping[str, str] | None = None) -> None:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise AssertionError(
            f"{shlex.join(command)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
        )


# -- the pod's sandbox ----------------------------------------------------------------------


def sandboxed(command: Sequence[str], serviceaccount_files: Path | None = None) -> list[str]:
    """`command` in a private mount namespace: root filesystem read-only and, when given,
    `serviceaccount_files` mounted read-only at /var/run/secrets/kubernetes.io/serviceaccount.

    As root, a plain mount namespace, and the command runs as the image's USER (so the files
    it runs from must be readable by that user); otherwise a user namespace maps the caller to
    root (needs unprivileged user namespaces) and nothing else, so the command stays root
    there. /run (the first existing ancestor of the service-account path) is hidden behind a
    tmpfs for this process only.
    """
    unshare, setpriv = shutil.which("unshare"), shutil.which("setpriv")
    if unshare is None or setpriv is None:
        raise AssertionError("the pod sandbox needs util-linux's unshare and setpriv")
    if os.geteuid() == 0:
        namespaces = ["--mount"]
        uid, gid = image_user()
        command = [setpriv, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--", *command]
    else:
        namespaces = ["--user", "--map-root-user", "--mount"]
    tmpfs_at = _first_existing_ancestor(SERVICEACCOUNT_DIR)
    sa_dir = Path(os.path.realpath(SERVICEACCOUNT_DIR.parent)) / SERVICEACCOUNT_DIR.name
    script = f"TMPFS_AT={shlex.quote(str(tmpfs_at))}; SA_DIR={shlex.quote(str(sa_dir))}\n"
    return [
        unshare,
        *namespaces,
        "--propagation",
        "private",
        "sh",
        "-c",
        script + _SANDBOX_SCRIPT,
        "pod-sandbox",
        str(serviceaccount_files or ""),
        *command,
    ]


def _first_existing_ancestor(path: Path) -> Path:
    resolved = Path(os.path.realpath(path))
    while not resolved.exists():
        resolved = resolved.parent
    return resolved


# -- the pod's identity ---------------------------------------------------------------------


async def request_token(
    kube: Any, namespace: str, service_account: str, expiration_seconds: int = 3600
) -> str:
    """A bound token for the ServiceAccount from the TokenRequest API, as the kubelet gets."""
    answer = await kube.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token",
        body={
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": expiration_seconds},
        },
    )
    token: str = answer["status"]["token"]
    return token


async def serviceaccount_files(kube: Any, namespace: str, service_account: str) -> dict[str, str]:
    """What the kubelet projects: token, ca.crt (from kube-root-ca.crt) and namespace."""
    root_ca = await kube.request(
        "GET", f"/api/v1/namespaces/{namespace}/configmaps/kube-root-ca.crt"
    )
    return {
        "token": await request_token(kube, namespace, service_account),
        "ca.crt": root_ca["data"]["ca.crt"],
        "namespace": namespace,
    }


def write_files(directory: Path, files: Mapping[str, str]) -> Path:
    """Write the projected files world-readable, as the volume's defaultMode 0644 does."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    for name, content in files.items():
        (directory / name).write_text(content)
        (directory / name).chmod(0o644)
    return directory


# -- the pod's container --------------------------------------------------------------------


def operator_container(deployment: Mapping[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    (container,) = [c for c in containers if c["name"] == "operator"]
    return dict(container)


def container_args(deployment: Mapping[str, Any]) -> list[str]:
    """The arguments the kubelet passes to the image's entrypoint."""
    container = operator_container(deployment)
    if container.get("command"):
        raise AssertionError("the chart must not override the image's entrypoint")
    return [str(arg) for arg in container.get("args") or ()]


def container_env(
    deployment: Mapping[str, Any], *, namespace: str, pod_name: str
) -> dict[str, str]:
    """The container's env with fieldRefs resolved as the kubelet would."""
    fields = {"metadata.namespace": namespace, "metadata.name": pod_name}
    env: dict[str, str] = {}
    for item in operator_container(deployment).get("env") or ():
        if "value" in item:
            env[item["name"]] = str(item["value"])
        elif field := (item.get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath"):
            env[item["name"]] = fields[field]
        else:
            raise AssertionError(f"cannot resolve env {item} outside a kubelet")
    return env


class InClusterOperator(OperatorProcess):
    """The operator as the Deployment's container runs it, under the pod's service account.

    Built on OperatorProcess for its log and endpoint helpers, but with its own command line:
    no flags beyond the container's args and `--kubeconfig=` (in-cluster config), no inherited
    environment; ports come from the Deployment's env.
    """

    def __init__(
        self,
        *,
        python: Path,
        deployment: Mapping[str, Any],
        serviceaccount_files: Path,
        apiserver_url: str,
        namespace: str,
        log_path: Path,
        pod_name: str = "dittofs-operator-0",
    ) -> None:
        url = urlsplit(apiserver_url)
        env = container_env(deployment, namespace=namespace, pod_name=pod_name)
        self.env = {
            **image_env(python),
            "KUBERNETES_SERVICE_HOST": str(url.hostname),
            "KUBERNETES_SERVICE_PORT": str(url.port or 443),
            "HOSTNAME": pod_name,
            **env,
        }
        self.health_port = int(env["DITTOFS_CONTROLLER_HEALTH_PORT"])
        self.metrics_port = int(env["DITTOFS_CONTROLLER_METRICS_PORT"])
        self.log_path = log_path
        self.command = sandboxed(
            ["python", "-m", "dittofs_controller", *container_args(deployment), "--kubeconfig="],
            serviceaccount_files,
        )
        self._log_file = log_path.open("w")
        leaks.watch_log(log_path)
        self.process = subprocess.Popen(
            self.command,
            cwd="/",
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=self.env,
        )

    def ids(self) -> tuple[int, int]:
        """The real uid and gid the operator process runs as (unshare, sh and setpriv exec
        into it, so it keeps the pid Popen started)."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        found = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        return int(found["Uid"].split()[0]), int(found["Gid"].split()[0])

    def probe(self, path: str = "/readyz") -> int | None:
        """HTTP status of a probe endpoint, as the kubelet sees it; None when nothing answers."""
        url = f"http://127.0.0.1:{self.health_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return int(error.code)
        except (urllib.error.URLError, OSError):
            return None

    def forbidden(self) -> list[dict[str, Any]]:
        """Log entries that carry a 403 from the API server."""
        return [entry for entry in self.logs() if "403" in str(entry.get("error", ""))]
