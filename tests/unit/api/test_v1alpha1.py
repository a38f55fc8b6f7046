"""The DittoServer model: the manifest corpus parses with the right defaults, and CEL rules only
refer to fields that exist."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml

from dittofs_controller.api import v1alpha1
from dittofs_controller.api.schema import (
    cel_rules,
    field_schema,
    parse,
    to_wire,
    wire_name,
)
from dittofs_controller.api.v1alpha1 import (
    ApiServiceSpec,
    ControlPlaneStorage,
    DittoServer,
    DittoServerSpec,
    S3Credentials,
    ServiceSpec,
    Storage,
)

CORPUS = Path(__file__).parent
VALID = sorted((CORPUS / "valid").glob("*.yaml"))
INVALID = sorted((CORPUS / "invalid").glob("*.yaml"))
EXPECT = re.compile(r"^# expect: (?P<message>\S.*)$")
# Texts of the API server's own schema errors (as opposed to our CEL messages).
SCHEMA_ERROR = re.compile(
    r"Unsupported value|Required value|should be (greater|less) than or equal to|should match|"
    r"should have at least|must have at most|Duplicate value|Too long|unknown field"
)


def load(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict), path
    return document


def expected_message(path: Path) -> str:
    first_line = path.read_text().splitlines()[0]
    match = EXPECT.match(first_line)
    assert match, f"{path.name}: the first line must be '# expect: <admission error substring>'"
    return match["message"]


def all_models() -> list[type]:
    """Every model class reachable from DittoServer (subclasses included)."""
    seen: list[type] = []
    pending: list[type] = [DittoServer]
    while pending:
        cls = pending.pop()
        if cls in seen:
            continue
        seen.append(cls)
        hints = attrs.resolve_types(cls)
        for attribute in attrs.fields(hints):
            pending.extend(_model_classes(attribute.type))
    return seen


def _model_classes(tp: Any) -> list[type]:
    if isinstance(tp, type) and attrs.has(tp):
        return [tp]
    return [cls for arg in getattr(tp, "__args__", ()) for cls in _model_classes(arg)]


# --- corpus ---------------------------------------------------------------------------------


def test_corpus_is_big_enough() -> None:
    assert len(VALID) >= 12
    assert len(INVALID) >= 40


def test_corpus_names_are_unique() -> None:
    names = [load(path)["metadata"]["name"] for path in VALID + INVALID]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_manifest_states_its_expected_error(path: Path) -> None:
    message = expected_message(path)
    document = load(path)
    assert document["apiVersion"] == v1alpha1.API_VERSION
    assert document["kind"] == v1alpha1.KIND
    rule_messages = [rule.message for cls in all_models() for rule in cel_rules(cls)]
    rule_messages += [
        rule.message
        for cls in all_models()
        for attribute in attrs.fields(cls)
        for rule in field_schema(attribute).rules
    ]
    assert SCHEMA_ERROR.search(message) or any(message in m for m in rule_messages), (
        f"{path.name}: '{message}' is neither a schema error nor one of the CEL messages"
    )


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_manifest_parses_and_round_trips(path: Path) -> None:
    document = load(path)
    assert not path.read_text().startswith("# expect:")
    server = parse(DittoServer, document)
    assert server.api_version == v1alpha1.API_VERSION
    assert server.kind == v1alpha1.KIND
    assert parse(DittoServer, to_wire(server)) == server


def spec_of(name: str) -> DittoServerSpec:
    return parse(DittoServer, load(CORPUS / "valid" / name)).spec


def test_minimal_manifest_gets_every_default() -> None:
    spec = spec_of("minimal.yaml")
    assert spec.image == v1alpha1.DEFAULT_IMAGE == "marmos91c/dittofs:v0.29.0"
    assert spec.image_pull_policy == "IfNotPresent"
    assert spec.replicas == 1
    assert spec.deletion_policy == "Retain"
    assert spec.postgres is None
    cp = spec.control_plane
    assert (cp.port, cp.log_level, cp.log_format, cp.shutdown_timeout) == (8080, "INFO", "json", 30)
    assert cp.jwt_secret_ref is None and cp.admin_password_secret_ref is None and cp.tls is None
    assert (cp.metrics.enabled, cp.metrics.port, cp.metrics.service_monitor.enabled) == (
        True,
        9090,
        False,
    )
    assert cp.database.type == "sqlite"
    assert cp.database.sqlite.storage == ControlPlaneStorage(
        size="1Gi", access_modes=["ReadWriteOnce"]
    )
    nfs, smb = spec.adapters.nfs, spec.adapters.smb
    assert (nfs.enabled, nfs.port, nfs.service_port) == (True, 12049, 2049)
    assert (nfs.portmapper.enabled, nfs.portmapper.port, nfs.portmapper.service_port) == (
        False,
        10111,
        111,
    )
    assert (smb.enabled, smb.guest, smb.port, smb.service_port) == (True, False, 12445, 445)
    assert spec.expose.nfs == spec.expose.smb == ServiceSpec(type="ClusterIP")
    assert not spec.expose.nfs.allow_all_sources
    assert spec.expose.api == ApiServiceSpec(type="ClusterIP")
    assert not spec.expose.ingress.enabled
    assert (spec.expose.ingress.class_name, spec.expose.ingress.path) == ("nginx", "/")
    assert spec.expose.network_policy.enabled  # the admin API admits the operator only
    (share,) = spec.shares
    assert (share.read_only, share.default_permission, share.nfs.squash) == (
        False,
        "none",
        "root_to_guest",
    )
    assert share.remote_block_store is None and share.permissions == []
    assert spec.users == [] and spec.groups == [] and spec.remote_block_stores == []


def test_s3_defaults_point_at_cubbit() -> None:
    (store,) = spec_of("s3-cubbit.yaml").remote_block_stores
    assert store.s3 is not None
    assert store.s3.endpoint == "https://s3.cubbit.eu"
    assert store.s3.region == "eu-west-1"
    assert store.s3.force_path_style is True
    assert store.s3.allow_private_endpoint is False
    assert store.s3.credentials_secret_ref == S3Credentials(
        name="cubbit-keys", access_key_id_key="accessKeyId", secret_access_key_key="secretAccessKey"
    )


def test_store_storage_defaults_to_10gi() -> None:
    spec = spec_of("s3-cubbit.yaml")
    badger = spec.metadata_stores[0].badger
    assert badger is not None
    assert badger.storage == Storage(size="20Gi")
    assert (badger.block_cache_mb, badger.index_cache_mb) == (512, 256)
    assert Storage().size == "10Gi"


def test_percona_defaults() -> None:
    spec = spec_of("percona.yaml")
    assert spec.postgres is not None and spec.postgres.percona is not None
    percona = spec.postgres.percona
    assert percona.postgres_version == 17
    assert percona.cr_version == "2.8.2"
    assert percona.image == v1alpha1.DEFAULT_PERCONA_IMAGE
    assert percona.image.split(":")[1].startswith(f"{percona.postgres_version}.")
    assert percona.instances == 3
    assert percona.cluster_name is None
    assert percona.backups.enabled is False and percona.backups.pgbackrest is None
    assert percona.storage.storage_class_name == "fast-ssd"


def test_percona_backups_keep_free_form_settings() -> None:
    spec = spec_of("percona-pg16-backups.yaml")
    assert spec.postgres is not None and spec.postgres.percona is not None
    backups = spec.postgres.percona.backups
    assert backups.enabled
    assert backups.pgbackrest is not None
    assert backups.pgbackrest["repos"][0]["s3"]["bucket"] == "pg-backups"


def test_external_postgres_secret_keys_default_to_percona_names() -> None:
    external = v1alpha1.ExternalPostgres(secret_name="pg")
    assert (
        external.host_key,
        external.port_key,
        external.user_key,
        external.password_key,
        external.database_key,
        external.ssl_mode,
    ) == ("host", "port", "user", "password", "dbname", "require")


def test_pod_options_stay_plain_dicts() -> None:
    pod = spec_of("pod-scheduling.yaml").pod
    assert pod.tolerations[0]["effect"] == "NoSchedule"
    assert pod.affinity is not None and "nodeAffinity" in pod.affinity
    assert pod.resources.limits == {"cpu": 2, "memory": "4Gi"}
    assert pod.env[1]["valueFrom"]["resourceFieldRef"]["resource"] == "limits.cpu"


# --- CEL rules refer to real fields ---------------------------------------------------------

_SELF_PATH = re.compile(r"\b(?:self|oldSelf)((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")


def _resolve(cls: type, path: list[str]) -> None:
    """Follow a dotted wire path through model classes; fail on an unknown field."""
    hints = attrs.resolve_types(cls)
    by_wire = {wire_name(a): a for a in attrs.fields(hints)}
    head, *rest = path
    assert head in by_wire, f"{cls.__name__} has no field {head!r}"
    if not rest:
        return
    (target,) = _model_classes(by_wire[head].type)
    _resolve(target, rest)


def _method_free(path: str) -> list[str]:
    """Drop CEL method calls (self.x.all(...)) from a matched path."""
    parts = path.strip(".").split(".")
    methods = {"all", "exists", "size", "contains", "matches", "split", "startsWith"}
    cut = next((i for i, part in enumerate(parts) if part in methods), len(parts))
    return parts[:cut]


@pytest.mark.parametrize("cls", all_models(), ids=lambda c: c.__name__)
def test_object_rules_only_name_existing_fields(cls: type) -> None:
    for rule in cel_rules(cls):
        assert rule.message, rule
        for match in _SELF_PATH.finditer(rule.rule):
            if path := _method_free(match.group(1)):
                _resolve(cls, path)
        if rule.field_path is not None:
            _resolve(cls, rule.field_path.strip(".").split("."))


def test_replicas_rule_carries_the_documented_message() -> None:
    messages = [rule.message for rule in cel_rules(DittoServerSpec)]
    assert (
        "replicas must be 0 (stopped) or 1: DittoFS is a single-node server and two replicas "
        "would corrupt its data"
    ) in messages


def test_builtin_groups_match_dittofs_first_boot() -> None:
    assert v1alpha1.BUILTIN_GROUPS == ("admins", "operators", "users")
