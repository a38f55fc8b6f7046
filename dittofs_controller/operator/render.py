"""Every object the operator would create for a DittoServer, computed offline (`render`).

For GitOps review and debugging: no cluster is contacted. The objects come from the same pure
builders the reconcilers apply (operator/*/build.py), called the way the reconcilers call them
for a DittoServer none of whose children exist yet. What only the cluster knows is replaced by
a documented placeholder, never by a real value:

- the DittoServer's uid (in every ownerReference) unless the manifest carries one (e.g. from
  `kubectl get dittoserver NAME -o yaml`);
- the restart hash (ConfigMap annotation, copied onto the pod template): a digest of the config
  file and of Secret values the server reads at start.

The generated Secrets (JWT, admin password, digest key, encryption key) are not printed at
all, only named in a comment. Any value render could print would be known to every reader of
its output, and applied through GitOps it would become the server's admin password or signing
key for good (the operator never rewrites a Secret that exists). Left out, the operator
generates random ones.

The `dittofs.io/applied-hash` annotations, and the StatefulSet's `dittofs.io/pod-template-hash`,
hash the object as rendered, placeholders included, so they differ from the cluster's. The
REST-side state (stores, shares, users) is not an object: the serverconfig reconciler sends it
to DittoFS over its API.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import attrs
import yaml

from dittofs_controller.api import v1alpha1
from dittofs_controller.api.schema import ParseError, parse
from dittofs_controller.api.validation import dittoserver_errors
from dittofs_controller.operator.children import Obj
from dittofs_controller.operator.config import build as config
from dittofs_controller.operator.database import build as database
from dittofs_controller.operator.network import build as network
from dittofs_controller.operator.storage import build as storage
from dittofs_controller.operator.workload import build as workload

Spec = v1alpha1.DittoServerSpec

DEFAULT_NAMESPACE = "default"
# A well-formed uid, so the output passes `kubectl apply --dry-run=server` as it is.
PLACEHOLDER_UID = "00000000-0000-0000-0000-000000000000"
RESTART_HASH = "PLACEHOLDER-computed-in-the-cluster"


class InvalidManifest(ValueError):
    """The manifest is not a valid DittoServer; the message lists every problem found."""


@attrs.frozen
class Rendered:
    """One object, the reconciler that owns it, and what a reader must know about it."""

    obj: Obj
    reconciler: str
    notes: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        return str(self.obj["kind"])

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])


def load_server(document: Any, namespace: str | None = None) -> tuple[Obj, Spec]:
    """The DittoServer as the reconcilers see it (metadata and parsed spec), or InvalidManifest.

    `namespace` overrides the manifest's; without either it is `default`, as for kubectl.
    """
    if not isinstance(document, dict):
        raise InvalidManifest("a DittoServer manifest must be a YAML mapping")
    label = f"DittoServer {((document.get('metadata') or {}).get('name'))!r}"
    problems = []
    if document.get("apiVersion") != v1alpha1.API_VERSION:
        problems.append(
            f"apiVersion: Unsupported value: {document.get('apiVersion')!r}: supported values: "
            f"{v1alpha1.API_VERSION!r}"
        )
    meta = document.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    if not isinstance(name, str) or not name:
        problems.append("metadata.name: Required value")
    elif len(name) > 253 or not re.fullmatch(v1alpha1.DNS_SUBDOMAIN, name):
        problems.append(
            f"metadata.name: Invalid value: {name!r}: a lowercase RFC 1123 subdomain must "
            "consist of lower case alphanumeric characters, '-' or '.'"
        )
    problems += dittoserver_errors(document)
    if problems:
        raise InvalidManifest(f"{label} is invalid: " + "; ".join(dict.fromkeys(problems)))
    try:
        spec = parse(Spec, document["spec"])
    except ParseError as error:  # the structural check above should have caught it
        raise InvalidManifest(f"{label} is invalid: {error}") from None
    assert isinstance(meta, dict)
    server = {
        "apiVersion": v1alpha1.API_VERSION,
        "kind": v1alpha1.KIND,
        "metadata": {
            "name": name,
            "namespace": namespace or meta.get("namespace") or DEFAULT_NAMESPACE,
            "uid": meta.get("uid") or PLACEHOLDER_UID,
        },
        "spec": document["spec"],
    }
    return server, spec


def children(server: Obj, spec: Spec, operator_namespace: str) -> list[Rendered]:
    """Every child, in the order the concerns are listed in docs/architecture.md."""
    return [
        *_config(server, spec),
        *_storage(server, spec),
        *_database(server, spec),
        *_network(server, spec, operator_namespace),
        *_workload(server, spec),
    ]


def _config(server: Obj, spec: Spec) -> Iterable[Rendered]:
    yield Rendered(
        config.config_map(server, config.render(spec), RESTART_HASH),
        "config",
        (
            "the restart-hash annotation is a placeholder: in the cluster it is a digest of "
            "the config file and of the Secret values the server reads at start",
        ),
    )


def _storage(server: Obj, spec: Spec) -> Iterable[Rendered]:
    for claim in storage.claims(server["metadata"]["name"], spec):
        yield Rendered(
            storage.claim_manifest(server, claim, None, None),
            "storage",
            (f"holds {claim.purpose}; the operator grows it, never shrinks or deletes it",),
        )


def _database(server: Obj, spec: Spec) -> Iterable[Rendered]:
    postgres = spec.postgres
    # As the reconciler decides: an external server wins (the CRD allows only one of them).
    if not database.uses_percona(spec) or postgres is None or postgres.external is not None:
        return
    assert postgres.percona is not None
    cluster = database.percona_cluster(server, spec, postgres.percona)
    if database.wants_delete_pvc(spec):
        # Applied separately by the reconciler, under a field manager of its own.
        cluster["metadata"]["finalizers"] = [database.DELETE_PVC_FINALIZER]
    yield Rendered(
        cluster,
        "database",
        ("created only when the Percona Operator for PostgreSQL's CRD is installed",),
    )


def _network(server: Obj, spec: Spec, operator_namespace: str) -> Iterable[Rendered]:
    for service in network.services(server, spec).values():
        if service is not None:
            yield Rendered(service, "network")
    ingress = network.ingress(server, spec)
    if ingress is not None:
        yield Rendered(ingress, "network")
    for purpose, policy in network.network_policies(server, spec, operator_namespace).items():
        if policy is not None:
            note = (
                f"always admits the operator's namespace {operator_namespace!r} "
                "(render --operator-namespace)"
                if purpose == "api"
                else "admits the file protocols' clients"
            )
            yield Rendered(policy, "network", (note,))
    monitor = network.service_monitor(server, spec)
    if monitor is not None:
        yield Rendered(
            monitor,
            "network",
            ("created only when the Prometheus Operator's ServiceMonitor CRD is installed",),
        )


def _workload(server: Obj, spec: Spec) -> Iterable[Rendered]:
    yield Rendered(
        workload.statefulset(server, spec, RESTART_HASH),
        "server",
        (
            "created once ConfigReady, StorageReady and DatabaseReady are True",
            "the pod template's restart-hash annotation is the ConfigMap's (a placeholder)",
        ),
    )


class _Dumper(yaml.SafeDumper):
    """Block style, multi-line strings (the config file) as literal blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def to_yaml(server: Obj, spec: Spec, rendered: Iterable[Rendered]) -> str:
    """A multi-document YAML stream, each document headed by comments saying what it is."""
    meta = server["metadata"]
    out = [
        f"# Rendered offline for DittoServer {meta['namespace']}/{meta['name']}: what the "
        "operator would create.\n"
        "# Placeholders stand for what only the cluster knows (uid, restart hash); no secret "
        "is printed.\n"
        "# Not printed: the Secrets the operator generates with random values in the cluster "
        "(a value\n# printed here would be known to every reader; applied, it would be kept "
        "for good):\n"
    ]
    for secret in config.generated(meta["name"], spec):
        instead = f"; or set {secret.field}" if secret.field else ""
        out.append(f"# - Secret {secret.name} (key {secret.key}): {secret.what}{instead}\n")
    for item in rendered:
        header = f"# {item.kind} {item.name} (reconciler: {item.reconciler})\n"
        notes = "".join(f"# - {note}\n" for note in item.notes)
        body = yaml.dump(item.obj, Dumper=_Dumper, sort_keys=False, width=100)
        out.append(f"---\n{header}{notes}{body}")
    return "".join(out)
