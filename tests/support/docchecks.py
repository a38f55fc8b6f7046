"""Checkers for documented commands that cannot run on this machine (``<!-- check: check -->``).

Each checker takes one simple command and returns what is wrong with it. Checks are as real
as the machine allows:
- kubectl and helm commands are run with the real binaries against the real local control
  plane in a form without lasting effect (server-side dry run, 1 s waits) and may fail only for
  a reason the local cluster explains (an object that exists only on a real cluster...); their
  flags are parsed by the binaries themselves; DittoServer conditions and JSONPath fields are
  checked against the operator's own conditions and generated CRD.
- scw commands are checked against SCW_COMMANDS, a pinned table of the Scaleway CLI's
  subcommands and arguments (from its reference documentation).
- Mount and drive commands (Linux, macOS, Windows) must use the shares and ports the operator
  really publishes: the NFS options of the operator's own mount hint, the Services' ports.
- Third-party artefacts (manifest URLs, Helm repositories and charts) must be pinned in
  EXTERNAL_ARTEFACTS, with one version each across all docs. The project's own chart from an
  OCI registry must be the one .github/workflows/release.yaml publishes, at this tree's version.
- Image references must be the operator's at the chart's version (in the chart's repository or
  a registry of one's own) or DittoFS' at the version the operator runs.
"""

from __future__ import annotations

import ast
import configparser
import functools
import re
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dittofs_controller.api import crd, v1alpha1
from dittofs_controller.operator import conditions
from dittofs_controller.operator.network.build import mount_hint
from dittofs_controller.settings import setting_options
from tests.support.doccommands import REPO, SUBSTITUTION, Command, DocFacts

Runner = Callable[[list[str], float], subprocess.CompletedProcess[str]]

CHART = REPO / "deploy" / "helm" / "dittofs-operator"
RELEASE_WORKFLOW = REPO / ".github" / "workflows" / "release.yaml"

# -- pinned third-party facts ---------------------------------------------------------------

# Manifests the docs install from the network, and Helm repositories/charts, with the one
# version every doc must use. Bump a version here and in the docs together.
EXTERNAL_MANIFESTS = {
    "https://raw.githubusercontent.com/percona/percona-postgresql-operator/v2.8.2/deploy/bundle.yaml",
    "https://raw.githubusercontent.com/metallb/metallb/v0.15.2/config/manifests/metallb-native.yaml",
}
HELM_REPOS = {
    "percona": "https://percona.github.io/percona-helm-charts/",
    "ingress-nginx": "https://kubernetes.github.io/ingress-nginx",
    "jetstack": "https://charts.jetstack.io",
    "metallb": "https://metallb.github.io/metallb",
}
HELM_CHARTS = {
    "percona/pg-operator": "2.8.2",
    "ingress-nginx/ingress-nginx": "4.13.3",
    "jetstack/cert-manager": "v1.19.1",
    "metallb/metallb": "0.15.2",
}

# Scaleway CLI (scw) subcommands the docs use and the arguments each accepts (`name=value`,
# with `.N` list indices written as `.N`), from the CLI's reference pages. Global flags
# (`-o json`, `-w`/`--wait`, `-p profile`) are always accepted.
SCW_COMMANDS: dict[tuple[str, ...], frozenset[str]] = {
    ("init",): frozenset(),
    ("k8s", "version", "list"): frozenset({"region"}),
    ("k8s", "cluster", "create"): frozenset(
        {
            "name",
            "version",
            "cni",
            "type",
            "region",
            "project-id",
            "tags.N",
            "private-network-id",
            "pools.N.name",
            "pools.N.node-type",
            "pools.N.size",
            "pools.N.zone",
            "pools.N.autohealing",
            "pools.N.autoscaling",
            "pools.N.min-size",
            "pools.N.max-size",
            "pools.N.root-volume-type",
            "pools.N.root-volume-size",
        }
    ),
    ("k8s", "cluster", "list"): frozenset({"name", "region", "status", "project-id"}),
    ("k8s", "cluster", "wait"): frozenset({"cluster-id", "region", "timeout", "wait-for-pools"}),
    ("k8s", "cluster", "delete"): frozenset({"cluster-id", "region", "with-additional-resources"}),
    ("k8s", "kubeconfig", "install"): frozenset({"cluster-id", "region", "keep-current-context"}),
    ("lb", "ip", "create"): frozenset({"zone", "project-id", "reverse", "is-ipv6", "tags.N"}),
    ("lb", "ip", "list"): frozenset({"zone", "project-id", "ip-address", "ip-type"}),
    ("lb", "ip", "delete"): frozenset({"ip-id", "zone"}),
    ("registry", "namespace", "create"): frozenset(
        {"name", "description", "project-id", "is-public", "organization-id", "region"}
    ),
    ("registry", "namespace", "list"): frozenset(
        {"order-by", "project-id", "name", "organization-id", "region"}
    ),
    ("registry", "namespace", "delete"): frozenset({"namespace-id", "region"}),
    ("registry", "login"): frozenset({"program", "region"}),
}
SCW_GLOBAL_FLAGS = frozenset({"-o", "--output", "-w", "--wait", "-p", "--profile"})

# Third-party kinds shown as YAML but not installed on the local control plane, with the
# fields their API requires.
EXTERNAL_KINDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("cert-manager.io/v1", "ClusterIssuer"): ("spec.acme.server", "spec.acme.privateKeySecretRef"),
    ("cert-manager.io/v1", "Issuer"): ("spec",),
    ("cert-manager.io/v1", "Certificate"): ("spec.secretName", "spec.issuerRef.name"),
    ("metallb.io/v1beta1", "IPAddressPool"): ("spec.addresses",),
    ("metallb.io/v1beta1", "L2Advertisement"): (),
}

# Small utilities that may appear in checked pipelines; they say nothing about the operator.
PLAIN_UTILITIES = frozenset(
    {"jq", "base64", "echo", "printf", "mkdir", "cd", "export", "cat", "tee"}
)

NFS_OPTIONS = frozenset(
    {"vers", "nfsvers", "port", "mountport", "nolock", "proto", "hard", "soft", "timeo"}
    | {"retrans", "rsize", "wsize", "noatime", "tcp", "sec", "actimeo", "xprtsec"}
)
MACOS_NFS_OPTIONS = frozenset({"vers", "port", "mountport", "nolocks", "resvport", "noresvport"})
CIFS_OPTIONS = frozenset(
    {"username", "user", "password", "port", "vers", "uid", "gid", "file_mode", "dir_mode"}
    | {"credentials", "domain", "guest", "noperm", "seal", "sec"}
)
SMB_DIALECTS = frozenset({"2.0", "2.1", "3", "3.0", "3.02", "3.1.1"})
WINDOWS_NFS_OPTIONS = frozenset({"anon", "nolock", "mtype", "rsize", "wsize", "timeout"})
WINDOWS_FEATURES = frozenset({"ServicesForNFS-ClientOnly", "ClientForNFS-Infrastructure"})

# DittoFS health endpoints (the pod's probes use them; tests/unit/operator checks the probes).
DITTOFS_HTTP_PATHS = frozenset({"/health", "/health/ready"})

# What the real dfsctl says once it has parsed a command and would need a server: with no login
# (HOME is empty) or, for `login`, at a closed port.
DFSCTL_ACCEPTED = re.compile(r"not logged in|connect: connection refused")
DFSCTL_NOWHERE = "http://127.0.0.1:1"
# dfsctl's flags naming PEM files (mutual TLS), which it reads before it connects: the files of
# the doc's commands exist only on the reader's machine, so throwaway ones stand in for them.
DFSCTL_PEM_FLAGS = ("--cacert", "--client-cert", "--client-key")

# kubectl failures that only say the object lives on a real cluster (or is not running here).
KUBECTL_ACCEPTED = re.compile(
    r"Error from server \(NotFound\)|timed out waiting for the condition"
    r"|is waiting to start|unable to forward port because pod is not running"
    r"|pod .* does not have a host assigned|No resources found"
)
KUBECTL_MUTATING = frozenset(
    {"apply", "create", "delete", "patch", "replace", "annotate", "label", "scale", "edit"}
)


@dataclass(frozen=True)
class Defaults:
    """The ports and shares the operator publishes by default, from the API model."""

    nfs_port: int
    smb_port: int
    portmapper_port: int
    shares: frozenset[str]


@functools.cache
def defaults() -> Defaults:
    adapters = v1alpha1.Adapters()
    shares: set[str] = set()
    for sample in sorted((REPO / "samples").glob("*.yaml")):
        for doc in yaml.safe_load_all(sample.read_text()):
            if doc and doc.get("kind") == v1alpha1.KIND:
                shares |= {share["name"] for share in doc["spec"].get("shares", [])}
    return Defaults(
        adapters.nfs.service_port,
        adapters.smb.service_port,
        adapters.nfs.portmapper.service_port,
        frozenset(shares),
    )


@functools.cache
def nox_sessions() -> frozenset[str]:
    tree = ast.parse((REPO / "noxfile.py").read_text())
    return frozenset(
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef)
        and any("session" in ast.unparse(d) for d in node.decorator_list)
    )


@functools.cache
def chart_image() -> tuple[str, str]:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    return values["image"]["repository"], str(chart["appVersion"])


@functools.cache
def release_defaults() -> dict[str, str]:
    """The release workflow's destinations when the repository sets no variables: its job's
    `NAME: ${{ vars.NAME || 'default' }}` entries, as {NAME: default}."""
    workflow = yaml.safe_load(RELEASE_WORKFLOW.read_text())
    env: dict[str, str] = workflow["jobs"]["release"]["env"]
    return {
        name: match[1]
        for name, value in env.items()
        if (match := re.fullmatch(r"\$\{\{ vars\.\w+ \|\| '([^']+)' \}\}", value))
    }


def released_chart() -> str:
    """The oci:// reference of the chart a release publishes by default."""
    where = release_defaults()
    return f"oci://{where['REGISTRY']}/{where['CHART_REPOSITORY']}/{CHART.name}"


# How the test suite reads its own knobs (e.g. os.environ.get("DITTOFS_FAULTS_SEED")).
_TEST_ENV_READ = re.compile(r"""os\.environ(?:\.get\(|\[)["'](DITTOFS_[A-Z0-9_]+)["']""")


@functools.cache
def known_env() -> frozenset[str]:
    """Environment variables a documented command may set: the operator's settings, and the
    test suite's knobs that some test really reads."""
    from tests import conftest

    settings = {option.env for _, option in setting_options()}
    test_knobs = {
        name
        for path in (REPO / "tests").rglob("*.py")
        for name in _TEST_ENV_READ.findall(path.read_text())
    }
    return frozenset(
        settings | test_knobs | {conftest.REUSE_ENV, "KUBECONFIG", "OTEL_EXPORTER_OTLP_ENDPOINT"}
    )


# -- the CRD schema, for JSONPath checks ----------------------------------------------------


@functools.cache
def _crd_schema() -> dict[str, Any]:
    schema: dict[str, Any] = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def jsonpath_problem(expression: str) -> str | None:
    """A DittoServer JSONPath like {.status.endpoints.nfs} must name fields of the CRD; inside
    {range X}...{end} paths are relative to X's items."""
    ranges: list[str] = []
    for template in re.findall(r"\{([^{}]*)\}", expression) or [expression]:
        words = template.split()
        if words[:1] == ["end"]:
            ranges = ranges[:-1]
            continue
        path = words[1] if words[:1] == ["range"] and len(words) > 1 else template.strip()
        path = re.sub(r"\[[^\]]*\]", "", path)
        if not path.startswith("."):
            continue
        if ranges and not path.startswith((".status", ".spec", ".metadata")):
            path = ranges[-1] + path
        if words[:1] == ["range"]:
            ranges.append(path)
        if problem := _schema_problem(path):
            return problem
    return None


# ObjectMeta is not described by the CRD's schema; these are the fields docs may read.
OBJECT_META_FIELDS = frozenset(
    {
        "name",
        "namespace",
        "uid",
        "generation",
        "resourceVersion",
        "creationTimestamp",
        "deletionTimestamp",
        "labels",
        "annotations",
        "finalizers",
        "ownerReferences",
    }
)


def _schema_problem(path: str) -> str | None:
    parts = path.strip(".").split(".")
    if parts[0] == "metadata":
        if len(parts) > 1 and parts[1] not in OBJECT_META_FIELDS:
            return f"JSONPath {path!r}: no field {parts[1]!r} in ObjectMeta"
        return None
    node: dict[str, Any] | None = _crd_schema()
    for part in path.strip(".").split("."):
        if node is None or node.get("x-kubernetes-preserve-unknown-fields"):
            return None
        if node.get("type") == "array":
            node = node.get("items")
            if node is None:
                return None
        properties = node.get("properties") or {}
        if part in properties:
            node = properties[part]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return f"JSONPath {path!r}: no field {part!r} in the DittoServer CRD"
    return None


DITTOSERVER_NAMES = frozenset(
    {"dittoserver", "dittoservers", "ditto", "dfs", "dittoservers.dittofs.io"}
)
CONDITION_TYPES = frozenset(
    value for name, value in vars(conditions).items() if name.isupper() and isinstance(value, str)
)


# -- the checkers -----------------------------------------------------------------------------


class Checks:
    """Checkers by program name. `run` runs the real kubectl/helm against the local cluster;
    `semantics` applies to every command, `check` adds the program's checker."""

    def __init__(self, run: Runner, facts: DocFacts) -> None:
        self.run = run
        self.facts = facts
        self.helm_repos: dict[str, str] = {}
        self.by_program: dict[str, Callable[[Command], list[str]]] = {
            "kubectl": self.kubectl,
            "helm": self.helm,
            "scw": self.scw,
            "mount": self.mount,
            "mount_nfs": self.mount_nfs,
            "mount_smbfs": self.mount_smbfs,
            "umount": self.umount,
            "net": self.net_use,
            "New-PSDrive": self.ps_drive,
            "Enable-WindowsOptionalFeature": self.windows_feature,
            "open": self.macos_open,
            "nox": self.nox,
            "python": self.python,
            "python3": self.python,
            "pytest": self.pytest,
            "podman": self.image_tool,
            "docker": self.image_tool,
            "curl": self.curl,
            "dfsctl": self.dfsctl,
        }

    def check(self, command: Command, *, windows: bool = False) -> list[str]:
        program = command.program
        if not program:  # a shell variable for later commands, not a program's environment
            return []
        found = self.semantics(command)
        if program in PLAIN_UTILITIES:
            return found
        if windows and program == "mount":
            return found + self.windows_mount(command)
        checker = self.by_program.get(program)
        if checker is None:
            return [*found, f"no checker for {program!r}: {' '.join(command.argv)}"]
        return found + checker(command)

    def semantics(self, command: Command) -> list[str]:
        """What holds for commands that do run too: jsonpath and conditions kubectl would
        accept silently (a missing field prints nothing, exit 0), environment names."""
        if not command.program:
            return []
        found = [
            f"unknown environment variable {name}"
            for name, _ in command.env
            if name not in known_env()
        ]
        if command.program == "kubectl":
            found += self._kubectl_semantics(list(command.argv[1:]))
        return found

    # kubectl and helm: the real binaries

    def kubectl(self, command: Command) -> list[str]:
        args = list(command.argv[1:])
        found: list[str] = []
        urls = [a for a in args if a.startswith(("http://", "https://"))]
        if urls:
            found += [f"unpinned manifest URL {u}" for u in urls if u not in EXTERNAL_MANIFESTS]
            return found + self._flags_parse("kubectl", args)
        if SUBSTITUTION in " ".join(args) or any("$" in a for a in args):
            return found + self._flags_parse("kubectl", args)
        words = _positional(args)
        verb = words[0] if words else ""
        if verb in KUBECTL_MUTATING:
            args.append("--dry-run=server")
        if verb == "wait" or words[:2] == ["rollout", "status"]:
            args = [a for a in args if not a.startswith("--timeout")] + ["--timeout=1s"]
        if verb in ("logs", "port-forward", "exec", "attach"):
            args.append("--pod-running-timeout=1s")
        if verb in ("logs",) and "-f" in args:
            args.remove("-f")
        result = self.run(["kubectl", *args, "--request-timeout=10s"], 30)
        if result.returncode != 0 and not KUBECTL_ACCEPTED.search(result.stderr):
            found.append(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return found

    def _kubectl_semantics(self, args: list[str]) -> list[str]:
        found: list[str] = []
        words = " ".join(args).lower()
        about_server = any(name in re.split(r"[\s/,]", words) for name in DITTOSERVER_NAMES)
        for arg in args:
            if arg.startswith("--for=condition="):
                kind = arg.removeprefix("--for=condition=").split("=")[0]
                if about_server and kind not in CONDITION_TYPES:
                    found.append(f"the operator writes no condition {kind!r}")
            for expression in re.findall(r"jsonpath=(.*)", arg):
                if about_server and (problem := jsonpath_problem(expression)):
                    found.append(problem)
        return found

    def _flags_parse(self, program: str, args: list[str]) -> list[str]:
        """Cobra parses every flag before it honours --help: unknown flags fail here."""
        result = self.run([program, *args, "--help"], 30)
        if result.returncode != 0:
            return [f"{program} {' '.join(args)}: {result.stderr.strip()}"]
        return []

    def helm(self, command: Command) -> list[str]:
        args = list(command.argv[1:])
        positional = [a for a in args if not a.startswith("-")]
        found: list[str] = []
        if positional[:2] == ["repo", "add"] and len(positional) >= 4:
            name, url = positional[2], positional[3]
            if HELM_REPOS.get(name) != url:
                found.append(f"unpinned Helm repository {name} {url}")
            self.helm_repos[name] = url
        if positional[:1] in (["install"], ["upgrade"], ["template"]):
            chart = positional[2] if len(positional) > 2 else ""
            version = _flag(args, "--version")
            if chart == released_chart():
                if version != chart_image()[1]:
                    found.append(f"{chart}: use --version {chart_image()[1]} (this release)")
            elif "/" in chart and not (REPO / chart).exists():
                pinned = HELM_CHARTS.get(chart)
                if pinned is None:
                    found.append(f"unpinned Helm chart {chart}")
                elif version != pinned:
                    found.append(f"{chart}: use --version {pinned} (pinned), not {version}")
                if not chart.startswith("oci://") and chart.split("/")[0] not in self.helm_repos:
                    found.append(f"{chart}: its repository is never added in this document")
        return found + self._flags_parse("helm", args)

    # Scaleway CLI: the pinned table

    def scw(self, command: Command) -> list[str]:
        words = [w for w in command.argv[1:]]
        path: list[str] = []
        while words and "=" not in words[0] and not words[0].startswith("-"):
            candidate = (*path, words[0])
            if not any(known[: len(candidate)] == candidate for known in SCW_COMMANDS):
                break
            path.append(words.pop(0))
        allowed = SCW_COMMANDS.get(tuple(path))
        if allowed is None:
            return [f"scw {' '.join(path) or words[:1]}: not a known scw command"]
        found: list[str] = []
        skip = False
        for word in words:
            if skip:
                skip = False
                continue
            if word.startswith("-"):
                flag = word.split("=")[0]
                if flag not in SCW_GLOBAL_FLAGS:
                    found.append(f"scw {' '.join(path)}: unknown flag {flag}")
                skip = "=" not in word and flag in ("-o", "--output", "-p", "--profile")
            elif "=" in word:
                name = re.sub(r"\.\d+", ".N", word.split("=")[0])
                if name not in allowed:
                    found.append(f"scw {' '.join(path)}: unknown argument {name}")
        return found

    # file-protocol clients: the shares and ports the operator publishes

    def _share(self, share: str) -> list[str]:
        shares = defaults().shares | self.facts.shares
        return [] if share in shares else [f"share {share} is not declared ({sorted(shares)})"]

    def _port(self, port: str, default: int, what: str) -> list[str]:
        allowed = {default} | self.facts.ports
        if not port.isdigit() or int(port) not in allowed:
            return [f"{what} port {port} is not one the operator publishes ({sorted(allowed)})"]
        return []

    def mount(self, command: Command) -> list[str]:
        args = list(command.argv[1:])
        fstype = _flag(args, "-t")
        options = _options(_flag(args, "-o") or "")
        targets = [
            a for a in args if not a.startswith("-") and a not in (fstype, _flag(args, "-o"))
        ]
        if fstype in ("nfs", "nfs4") and len(targets) == 2:
            return self._linux_nfs(options, targets[0])
        if fstype == "cifs" and len(targets) == 2:
            return self._cifs(options, targets[0])
        return [f"mount {' '.join(args)}: expected mount -t nfs|cifs -o OPTIONS SOURCE DIR"]

    def _linux_nfs(self, options: dict[str, str], source: str) -> list[str]:
        found = [f"unknown NFS mount option {k}" for k in options if k not in NFS_OPTIONS]
        host, _, share = source.rpartition(":")
        found += self._share(share) if host else [f"NFS source {source}: expected HOST:/share"]
        version = options.get("vers") or options.get("nfsvers") or ""
        port = options.get("port", str(defaults().nfs_port))
        found += self._port(port, defaults().nfs_port, "NFS")
        hint = mount_hint("HOST", port, share)
        wanted = _options(hint.split(" -o ")[2 if version.startswith("3") else 1].split()[0])
        missing = {k: v for k, v in wanted.items() if options.get(k) != v}
        if version not in ("3", "4", "4.0", "4.1", "4.2"):
            found.append(f"NFS version {version!r}: DittoFS serves 3, 4.0, 4.1 and 4.2")
        elif version.startswith("3") and missing:
            found.append(f"NFSv3 mounts need {missing} (the operator's mount hint: {hint})")
        return found

    def _cifs(self, options: dict[str, str], source: str) -> list[str]:
        found = [f"unknown cifs option {k}" for k in options if k not in CIFS_OPTIONS]
        found += self._unc(source.replace("/", "\\"))
        if "port" in options:
            found += self._port(options["port"], defaults().smb_port, "SMB")
        if "vers" in options and options["vers"] not in SMB_DIALECTS:
            found.append(f"SMB dialect {options['vers']}: DittoFS speaks {sorted(SMB_DIALECTS)}")
        return found

    def _unc(self, unc: str) -> list[str]:
        """\\\\host[@port]\\share (user@ prefixes allowed): the share is a declared share."""
        parts = [p for p in unc.split("\\") if p]
        if len(parts) != 2:
            return [f"{unc}: expected //HOST/SHARE"]
        return self._share("/" + parts[1].lower())

    def mount_nfs(self, command: Command) -> list[str]:
        args = list(command.argv[1:])
        options = _options(_flag(args, "-o") or "")
        found = [f"unknown macOS NFS option {k}" for k in options if k not in MACOS_NFS_OPTIONS]
        targets = [a for a in args if not a.startswith("-") and a != _flag(args, "-o")]
        if len(targets) != 2:
            return [*found, "mount_nfs: expected mount_nfs -o OPTIONS HOST:/share DIR"]
        share = targets[0].rpartition(":")[2]
        found += self._share(share)
        for key in ("port", "mountport"):
            if key not in options:
                found.append(f"mount_nfs needs {key}= (DittoFS runs no portmapper by default)")
            else:
                found += self._port(options[key], defaults().nfs_port, "NFS")
        return found

    def mount_smbfs(self, command: Command) -> list[str]:
        targets = [a for a in command.argv[1:] if not a.startswith("-")]
        if len(targets) != 2 or not targets[0].startswith("//"):
            return ["mount_smbfs: expected mount_smbfs //USER@HOST/SHARE DIR"]
        return self._unc(targets[0].replace("/", "\\"))

    def umount(self, command: Command) -> list[str]:
        return [] if len(command.argv) == 2 else ["umount: expected umount DIR"]

    def macos_open(self, command: Command) -> list[str]:
        url = command.argv[1] if len(command.argv) == 2 else ""
        if not url.startswith(("smb://", "nfs://")):
            return [f"open {url}: expected smb:// or nfs:// URL"]
        scheme, _, rest = url.partition("://")
        host, _, share = rest.partition("/")
        found = self._share("/" + share.rstrip("/"))
        if ":" in host.rpartition("@")[2]:
            default = defaults().smb_port if scheme == "smb" else defaults().nfs_port
            found += self._port(host.rpartition(":")[2], default, scheme.upper())
        return found

    def net_use(self, command: Command) -> list[str]:
        args = list(command.argv[1:])
        if args[:1] != ["use"]:
            return [f"net {' '.join(args)}: only `net use` is documented"]
        uncs = [a for a in args if a.startswith("\\\\")]
        if len(uncs) != 1:
            return ["net use: expected one \\\\HOST\\SHARE"]
        found = self._unc(uncs[0])
        bad = [
            a
            for a in args[1:]
            if a.startswith("/")
            and a.split(":")[0].lower() not in ("/user", "/persistent", "/delete")
        ]
        return found + [f"net use: unknown switch {b}" for b in bad]

    def windows_mount(self, command: Command) -> list[str]:
        """Windows' NFS client (mount.exe): NFSv3 through the portmapper, so port 111."""
        args = list(command.argv[1:])
        options = _options(_flag(args, "-o") or "")
        found = [f"unknown Windows NFS option {k}" for k in options if k not in WINDOWS_NFS_OPTIONS]
        uncs = [a for a in args if a.startswith("\\\\")]
        if len(uncs) != 1:
            return [*found, "mount: expected mount -o OPTIONS \\\\HOST\\share DRIVE:"]
        found += self._unc(uncs[0])
        return found

    def ps_drive(self, command: Command) -> list[str]:
        root = _flag(list(command.argv[1:]), "-Root") or ""
        return self._unc(root.strip("'\""))

    def windows_feature(self, command: Command) -> list[str]:
        names = _flag(list(command.argv[1:]), "-FeatureName") or ""
        wanted = {n.strip(" ,") for n in names.split(",") if n.strip(" ,")}
        rest = [a.strip(",") for a in command.argv if a.strip(",") in WINDOWS_FEATURES]
        unknown = (wanted | set(rest)) - WINDOWS_FEATURES
        return [f"unknown Windows feature {n}" for n in sorted(unknown)]

    # the repository's own tools

    def nox(self, command: Command) -> list[str]:
        args = list(command.argv[1:])
        before, _, after = _split_dashdash(args)
        found = [
            f"no nox session {s!r} in noxfile.py"
            for s in _flag_values(before, "-s")
            if s not in nox_sessions()
        ]
        return found + _missing_paths(after)

    def python(self, command: Command) -> list[str]:
        args = list(command.argv[1:])
        if args[:1] != ["-m"] or len(args) < 2:
            return [f"{command.program} {' '.join(args)}: expected python -m MODULE"]
        module, rest = args[1], args[2:]
        if module == "nox":
            return self.nox(Command(("nox", *rest)))
        if module == "pip":
            return _pip(rest)
        if module == "pytest":
            return self.pytest(Command(("pytest", *rest)))
        if module == "dittofs_controller":
            return _operator_cli(rest)
        if module == "tests.testbed":
            return [] if rest[:1] in (["up"], ["dev"]) else ["tests.testbed: up or dev"]
        return [f"python -m {module}: no checker"]

    def pytest(self, command: Command) -> list[str]:
        return _missing_paths(list(command.argv[1:]))

    def image_tool(self, command: Command) -> list[str]:
        args = list(command.argv[1:])
        found: list[str] = []
        containerfile = _flag(args, "-f")
        if containerfile and not (REPO / containerfile).is_file():
            found.append(f"{containerfile} does not exist")
        for arg in args:
            image = arg.removeprefix("docker://")
            if ":" in image and not image.startswith(("-", ".", "/")) and "=" not in image:
                found += _image_problems(image)
        return found

    def dfsctl(self, command: Command) -> list[str]:
        """The real dfsctl, with no login and --server pointed at a closed port: its own parser
        checks subcommands, flags and arguments before it gives up for want of a server."""
        args = list(command.argv[1:])
        with tempfile.TemporaryDirectory() as directory:
            pem = _throwaway_pem(Path(directory))
            replacements = {"--server": DFSCTL_NOWHERE, **pem}
            for i, arg in enumerate(args):
                flag, equals, _ = arg.partition("=")
                if flag not in replacements:
                    continue
                if equals:
                    args[i] = f"{flag}={replacements[flag]}"
                elif i + 1 < len(args):
                    args[i + 1] = replacements[flag]
            result = self.run(["dfsctl", *args], 30)
        said = f"{result.stdout}{result.stderr}"
        if result.returncode == 0 or not DFSCTL_ACCEPTED.search(said):
            return [f"dfsctl {' '.join(command.argv[1:])}: {said.strip()[:300]}"]
        return []

    def curl(self, command: Command) -> list[str]:
        urls = [a for a in command.argv[1:] if a.startswith(("http://", "https://"))]
        if len(urls) != 1:
            return ["curl: expected one URL"]
        path = "/" + urls[0].split("://", 1)[1].partition("/")[2]
        if path not in DITTOFS_HTTP_PATHS:
            return [f"curl {urls[0]}: DittoFS serves {sorted(DITTOFS_HTTP_PATHS)} without login"]
        return []


# -- helpers ------------------------------------------------------------------------------------


def _throwaway_pem(directory: Path) -> dict[str, str]:
    """A self-signed certificate and its key in `directory`, as dfsctl's PEM flags' values."""
    from tests.unit.test_dittofs_client import self_signed

    certificate, key = self_signed("dfsctl-doc-check")
    (directory / "cert.pem").write_text(certificate)
    (directory / "key.pem").write_text(key)
    cert_file, key_file = str(directory / "cert.pem"), str(directory / "key.pem")
    return dict(zip(DFSCTL_PEM_FLAGS, (cert_file, cert_file, key_file), strict=True))


def _image_problems(image: str) -> list[str]:
    """The operator's image at the chart's version, in the chart's repository or another
    registry's `.../dittofs-operator` (a registry of one's own); or DittoFS' image, or a copy
    of it elsewhere, at the version the operator runs by default."""
    name, _, tag = image.rpartition(":")
    repository, version = chart_image()
    dittofs_repository, _, dittofs_version = v1alpha1.DEFAULT_IMAGE.rpartition(":")
    basename = name.rpartition("/")[2]
    if basename == dittofs_repository.rpartition("/")[2]:
        if tag != dittofs_version:
            return [f"image {image}: the operator runs {v1alpha1.DEFAULT_IMAGE} by default"]
        return []
    if tag != version or basename != repository.rpartition("/")[2]:
        return [
            f"image {image}: the chart runs {repository}:{version} "
            "(values.yaml image.repository, Chart.yaml appVersion)"
        ]
    return []


def _flag(args: list[str], name: str) -> str | None:
    """Value of `name VALUE` or `name=VALUE`, or None."""
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.partition("=")[2]
    return None


# kubectl flags that take a separate value (`-n NS`), so that value is no positional word.
_VALUED_FLAGS = frozenset(
    {"-n", "--namespace", "--context", "--kubeconfig", "-l", "--selector", "-o", "--output"}
    | {"-f", "--filename", "-k", "-p", "--patch", "--type", "-c", "--container"}
)


def _positional(args: list[str]) -> list[str]:
    words: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg.startswith("-"):
            skip = arg in _VALUED_FLAGS
        else:
            words.append(arg)
    return words


def _flag_values(args: list[str], name: str) -> list[str]:
    return [args[i + 1] for i, arg in enumerate(args[:-1]) if arg == name]


def _options(text: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        found[key] = value
    return found


def _split_dashdash(args: list[str]) -> tuple[list[str], bool, list[str]]:
    if "--" in args:
        i = args.index("--")
        return args[:i], True, args[i + 1 :]
    return args, False, []


def _missing_paths(args: list[str]) -> list[str]:
    paths = [a for a in args if "/" in a and not a.startswith(("-", "$")) and "=" not in a]
    return [f"{p} does not exist" for p in paths if not (REPO / p).exists()]


def _pip(args: list[str]) -> list[str]:
    """Only `pip install nox` or the project itself (with extras that setup.cfg defines)."""
    if args[:1] != ["install"]:
        return ["pip: only pip install is documented"]
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    extras = (
        set(parser["options.extras_require"])
        if parser.has_section("options.extras_require")
        else set()
    )
    found: list[str] = []
    for arg in args[1:]:
        if arg.startswith("-"):
            continue
        if arg == "nox":
            continue
        if match := re.fullmatch(r"\.(?:\[([\w,]+)\])?", arg):
            found += [
                f"setup.cfg has no extra {e}"
                for e in (match[1] or "").split(",")
                if e and e not in extras
            ]
            continue
        found.append(f"pip install {arg}: not a documented dependency")
    return found


def _operator_cli(args: list[str]) -> list[str]:
    """Parse with the operator's real argument parser (without running anything)."""
    from dittofs_controller import cli

    words = [a for a in args if SUBSTITUTION not in a]
    try:
        cli.build_parser().parse_args(words)
    except SystemExit as exit_:
        return [] if exit_.code == 0 else [f"dittofs_controller {' '.join(args)}: rejected"]
    return []


def external_problems(doc: dict[str, Any]) -> list[str]:
    """A third-party object: a pinned kind with its required fields."""
    key = (doc.get("apiVersion", ""), doc.get("kind", ""))
    required = EXTERNAL_KINDS.get(key)
    if required is None:
        return [f"{key[0]} {key[1]}: not a pinned external kind ({sorted(EXTERNAL_KINDS)})"]
    found = [] if doc.get("metadata", {}).get("name") else [f"{key[1]} without metadata.name"]
    for dotted in required:
        node: Any = doc
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            found.append(f"{key[1]}: {dotted} is required")
    return found
