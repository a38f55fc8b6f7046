"""The DittoFS config file, its restart hash and the generated Secrets, as pure functions.

The file carries static settings only (DittoFS reads it once at start): logging, shutdown,
the REST API listener, metrics and the control-plane database. Stores, shares, users and
adapters live in the control-plane database and are managed over REST, so editing them never
touches the file and never restarts the pod. Secrets never go in the file: the pod gets them
as environment variables from Secrets (`DITTOFS_<DOTTED_PATH>` beats the file in DittoFS).

Keys were checked against DittoFS v0.29.0 (pkg/config, pkg/controlplane/api/config.go,
pkg/controlplane/store/gorm.go); `dfs config validate` accepts every rendering in the tests.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import yaml

from dittofs_controller.api import v1alpha1
from dittofs_controller.api.v1alpha1 import SecretKeySelector
from dittofs_controller.operator import names
from dittofs_controller.operator.children import Obj, child_metadata, object_for, quantity_value
from dittofs_controller.operator.config import keyfile

Spec = v1alpha1.DittoServerSpec

COMPONENT = "config"
# Inside a pod every listener must accept traffic from the pod network; DittoFS defaults to
# 127.0.0.1 for the API and metrics, which nothing outside the container could reach.
ALL_INTERFACES = "0.0.0.0"
TLS_CERT_KEY = "tls.crt"
TLS_KEY_KEY = "tls.key"
JWT_MIN_LENGTH = 32  # DittoFS refuses to start with a shorter signing secret

# Environment variables the pod reads at start (verified in DittoFS v0.29.0: the JWT secret has
# this documented short form bound explicitly; the others follow DITTOFS_ + dotted path).
ENV_JWT_SECRET = "DITTOFS_CONTROLPLANE_SECRET"
ENV_ADMIN_PASSWORD = "DITTOFS_ADMIN_INITIAL_PASSWORD"
ENV_POSTGRES_PREFIX = "DITTOFS_DATABASE_POSTGRES_"
ENV_POSTGRES_CA = "PGSSLROOTCERT"  # libpq's, which pgx and lib/pq read too
ENV_ENCRYPTION_PASSPHRASE = "DITTOFS_ENCRYPTION_PASSPHRASE"  # unlocks the key file
# Keys of the Secret the Percona operator writes for a user.
PERCONA_SECRET_KEYS = {
    "HOST": "host",
    "PORT": "port",
    "USER": "user",
    "PASSWORD": "password",
    "DATABASE": "dbname",
}
# Percona's PostgreSQL only accepts TLS connections (hostssl), with a certificate from the root
# CA Percona makes for each cluster: verified against that CA (postgres_ca), host name included.
PERCONA_SSLMODE = "verify-full"


def jwt_secret_ref(server_name: str, spec: Spec) -> SecretKeySelector:
    """Where the JWT signing secret comes from: the spec's reference, else the generated one."""
    ref = spec.control_plane.jwt_secret_ref
    return ref or SecretKeySelector(name=names.jwt_secret(server_name), key=names.GENERATED_JWT_KEY)


def admin_secret_ref(server_name: str, spec: Spec) -> SecretKeySelector:
    """Where the bootstrap admin password comes from: the spec's reference, else generated."""
    ref = spec.control_plane.admin_password_secret_ref
    return ref or SecretKeySelector(
        name=names.admin_secret(server_name), key=names.GENERATED_ADMIN_KEY
    )


def uses_postgres(spec: Spec) -> bool:
    return spec.control_plane.database.type == "postgres" and spec.postgres is not None


def postgres_env(server_name: str, spec: Spec) -> dict[str, SecretKeySelector]:
    """The DITTOFS_DATABASE_POSTGRES_* variables and the Secret keys they come from.

    Empty for SQLite. The external Secret's keys may be renamed in the spec; a Percona
    cluster's user Secret has fixed keys.
    """
    if not uses_postgres(spec):
        return {}
    assert spec.postgres is not None
    external = spec.postgres.external
    if external is not None:
        keys = {
            "HOST": external.host_key,
            "PORT": external.port_key,
            "USER": external.user_key,
            "PASSWORD": external.password_key,
            "DATABASE": external.database_key,
        }
        secret = external.secret_name
    else:
        keys = PERCONA_SECRET_KEYS
        secret = names.percona_user_secret(names.percona_cluster(server_name, spec))
    return {
        f"{ENV_POSTGRES_PREFIX}{suffix}": SecretKeySelector(name=secret, key=key)
        for suffix, key in keys.items()
    }


def encryption_key_secret(server_name: str, spec: Spec) -> str | None:
    """The Secret holding the key file and passphrase of encrypted remote stores, or None when
    no remote store is encrypted."""
    if not any(store.encryption for store in spec.remote_block_stores):
        return None
    if spec.encryption_key is not None:
        return spec.encryption_key.secret_name
    return names.encryption_key_secret(server_name)


def client_ca_file(client_ca: v1alpha1.ClientCA) -> str:
    """Where the pod finds the CA bundle it verifies the API's client certificates against."""
    return f"{names.CLIENT_CA_DIR}/{client_ca.key}"


def config_document(spec: Spec) -> dict[str, Any]:
    """The config file as data; every key exists in DittoFS v0.29.0's Config struct."""
    cp = spec.control_plane
    controlplane: dict[str, Any] = {"host": ALL_INTERFACES, "port": cp.port}
    if cp.tls is not None:
        tls = controlplane["tls"] = {
            "cert_file": f"{names.TLS_DIR}/{TLS_CERT_KEY}",
            "key_file": f"{names.TLS_DIR}/{TLS_KEY_KEY}",
        }
        # Each only when set, as below.
        if cp.tls.client_ca is not None:
            tls["client_ca"] = client_ca_file(cp.tls.client_ca)
        if cp.tls.min_version is not None:
            tls["min_version"] = cp.tls.min_version
    metrics: dict[str, Any] = {"enabled": cp.metrics.enabled}
    if cp.metrics.enabled:
        metrics.update(host=ALL_INTERFACES, port=cp.metrics.port)
    document: dict[str, Any] = {
        "logging": {"level": cp.log_level, "format": cp.log_format, "output": "stdout"},
        "shutdown_timeout": f"{cp.shutdown_timeout}s",
        "controlplane": controlplane,
        "metrics": metrics,
        "database": _database(spec),
    }
    # Each only when set: a new key in every server's file would restart every server.
    if cp.snapshot_check_interval is not None:
        document["snapshot"] = {"scheduler_poll_interval": f"{cp.snapshot_check_interval}s"}
    if gc := _gc(spec.tuning.gc):
        document["gc"] = gc
    if local := _local_tier(spec.tuning.local_tier):
        document["blockstore"] = {"local": local}
    return document


def _gc(gc: v1alpha1.GarbageCollection) -> dict[str, Any]:
    found: dict[str, Any] = {}
    if not gc.automatic:
        found["auto_enabled"] = False
    if gc.interval is not None:
        found["auto_interval"] = gc.interval
    if gc.grace_period is not None:
        found["grace_period"] = gc.grace_period
    if gc.compaction_threshold is not None:
        found["compaction_live_ratio"] = gc.compaction_threshold / 100
    return found


def _local_tier(local: v1alpha1.LocalTier) -> dict[str, Any]:
    found: dict[str, Any] = {}
    if local.remote_cache_size is not None:
        found["default_remote_cache_size"] = _bytes(local.remote_cache_size)
    if local.backpressure_wait is not None:
        found["backpressure_max_wait"] = local.backpressure_wait
    if local.append_log_size is not None:
        found["max_log_bytes"] = _bytes(local.append_log_size)
    return found


def _bytes(quantity: str) -> int:
    """Whole bytes of a quantity the API server has admitted (so a valid one)."""
    value = quantity_value(quantity)
    assert value is not None, quantity
    return int(value)


def _database(spec: Spec) -> dict[str, Any]:
    if not uses_postgres(spec):
        return {"type": "sqlite", "sqlite": {"path": names.SQLITE_PATH}}
    assert spec.postgres is not None
    external = spec.postgres.external
    postgres: dict[str, Any] = {"sslmode": external.ssl_mode if external else PERCONA_SSLMODE}
    if (ca_file := postgres_ca_file(spec)) is not None:
        postgres["ssl_root_cert"] = ca_file
    # host, port, user, password and database come from a Secret as environment variables.
    return {"type": "postgres", "postgres": postgres}


def postgres_ca_file(spec: Spec) -> str | None:
    """Where the pod finds the CA certificate that verifies PostgreSQL's: the external
    sslRootCertSecretRef's key, or the root CA the Percona operator makes for its cluster.
    None without PostgreSQL, or for an external one without a CA."""
    if not spec.needs_postgres() or spec.postgres is None:
        return None
    external = spec.postgres.external
    if external is None:
        return f"{names.POSTGRES_CA_DIR}/{names.PERCONA_CA_KEY}"
    if external.ssl_root_cert_secret_ref is None:
        return None
    return f"{names.POSTGRES_CA_DIR}/{external.ssl_root_cert_secret_ref.key}"


def postgres_ca(server_name: str, spec: Spec) -> SecretKeySelector | None:
    """The Secret key mounted at postgres_ca_file."""
    if postgres_ca_file(spec) is None or spec.postgres is None:
        return None
    if spec.postgres.external is not None:
        return spec.postgres.external.ssl_root_cert_secret_ref
    cluster = names.percona_cluster(server_name, spec)
    return SecretKeySelector(name=names.percona_ca_secret(cluster), key=names.PERCONA_CA_KEY)


def ldap_ca(spec: Spec) -> SecretKeySelector | None:
    """The Secret key with the CA bundle that verifies the LDAP directory, or None."""
    ldap = spec.identity.ldap
    return ldap.tls.ca_secret_ref if ldap is not None and ldap.tls is not None else None


def ldap_ca_file(spec: Spec) -> str | None:
    """Where the pod finds ldap_ca (DittoFS reads it on every connection to the directory)."""
    ca = ldap_ca(spec)
    return f"{names.LDAP_CA_DIR}/{ca.key}" if ca is not None else None


# Where the pod finds the files of spec.identity.kerberos (mounted under fixed names).
KEYTAB_PATH = f"{names.KERBEROS_DIR}/{names.KEYTAB_FILE}"
KRB5_CONF_PATH = f"{names.KRB5_CONF_DIR}/{names.KRB5_CONF_FILE}"


def render(spec: Spec) -> str:
    """The config file's text: deterministic, so an unchanged spec renders identical bytes."""
    text: str = yaml.safe_dump(config_document(spec), sort_keys=False, default_flow_style=False)
    return text


def restart_hash(config_text: str, env_values: Mapping[tuple[str, str], str]) -> str:
    """sha256 over the config file and the start-time Secret values (name, key) -> value.

    Only the digest leaves this function; it changes exactly when the server must restart.
    """
    document = {
        "config": config_text,
        "env": sorted([name, key, value] for (name, key), value in env_values.items()),
    }
    text = json.dumps(document, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def foreign_keys(desired: Obj, live: Obj | None) -> Obj | None:
    """A merge patch removing the keys of the live ConfigMap that the desired one does not
    have (its pod would see each as a file in the config directory), or None."""
    patch: Obj = {}
    for field in ("data", "binaryData"):
        extra = set((live or {}).get(field) or ()) - set(desired.get(field) or ())
        if extra:
            patch[field] = dict.fromkeys(sorted(extra))
    return patch or None


def config_map(server: Obj, config_text: str, digest: str) -> Obj:
    metadata = child_metadata(
        server,
        names.config_map(server["metadata"]["name"]),
        COMPONENT,
        annotations={names.RESTART_HASH_ANNOTATION: digest},
    )
    return object_for("v1", "ConfigMap", metadata, data={names.CONFIG_KEY: config_text})


@attrs.frozen
class Generated:
    """A Secret the operator generates because the spec references none."""

    name: str
    key: str
    what: str
    random_bytes: int  # url-safe base64: 4 characters per 3 bytes
    # The spec field that references a Secret of the user's instead, if there is one.
    field: str | None = None
    # More keys of the Secret, made from its value when it is generated.
    derive: Callable[[str], Mapping[str, str]] | None = None

    def new_value(self) -> str:
        return secrets.token_urlsafe(self.random_bytes)

    def data(self, value: str) -> dict[str, str]:
        return {self.key: value, **(self.derive(value) if self.derive else {})}


def generated(server_name: str, spec: Spec | None) -> list[Generated]:
    """The Secrets to generate; with no spec (deletion of an unparsable object), all of them."""
    cp = spec.control_plane if spec else None
    out = []
    if cp is None or cp.jwt_secret_ref is None:
        out.append(
            Generated(
                names.jwt_secret(server_name),
                names.GENERATED_JWT_KEY,
                "JWT secret",
                36,
                "spec.controlPlane.jwtSecretRef",
            )
        )
    if cp is None or cp.admin_password_secret_ref is None:
        out.append(
            Generated(
                names.admin_secret(server_name),
                names.GENERATED_ADMIN_KEY,
                "admin password",
                24,
                "spec.controlPlane.adminPasswordSecretRef",
            )
        )
    if spec is None or (
        spec.encryption_key is None and encryption_key_secret(server_name, spec) is not None
    ):
        out.append(
            Generated(
                names.encryption_key_secret(server_name),
                names.ENCRYPTION_PASSPHRASE_KEY,
                "master key of the encrypted remote block stores",
                32,
                "spec.encryptionKey",
                derive=_encryption_key_file,
            )
        )
    out.append(
        Generated(
            names.digest_key_secret(server_name),
            names.GENERATED_DIGEST_KEY,
            "key of the credential digests in status.server.applied",
            32,
        )
    )
    return out


def _encryption_key_file(passphrase: str) -> dict[str, str]:
    return {names.ENCRYPTION_KEY_FILE_KEY: keyfile.key_file(passphrase)}


def generated_secret(server: Obj, secret: Generated, value: str) -> Obj:
    """A generated Secret, owned by the DittoServer; created once and never rewritten."""
    metadata = child_metadata(server, secret.name, COMPONENT)
    return object_for("v1", "Secret", metadata, type="Opaque", stringData=secret.data(value))
