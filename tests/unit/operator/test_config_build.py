"""The rendered DittoFS config file, the restart hash and the generated Secrets.

The config is checked against the real `dfs` v0.29.0 when it is built: `dfs config validate`
must accept it without unknown keys, and `dfs config show` must report the values we meant.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from dittofs_controller.api.schema import parse, to_wire
from dittofs_controller.api.v1alpha1 import DittoServerSpec
from dittofs_controller.operator import names, references
from dittofs_controller.operator.config import build, keyfile
from dittofs_controller.operator.serverconfig.model import duration_seconds
from tests.testbed import binaries

VALID = Path(__file__).resolve().parents[1] / "api" / "valid"
SERVER = {"metadata": {"name": "files", "namespace": "team", "uid": "u-1", "generation": 7}}
BASE: dict[str, Any] = {
    "metadataStores": [{"name": "meta", "type": "badger"}],
    "localBlockStores": [{"name": "blocks", "type": "filesystem"}],
    "shares": [{"name": "/export", "metadataStore": "meta", "localBlockStore": "blocks"}],
}
EXTERNAL_PG: dict[str, Any] = {
    "controlPlane": {"database": {"type": "postgres"}},
    "postgres": {"external": {"secretName": "pg", "hostKey": "endpoint", "sslMode": "verify-full"}},
}
# Words that would mean a secret value or a place for one ended up in the file.
SECRET_WORDS = ("password", "secret", "token", "jwt", "key_file_content")


def spec_of(**fields: Any) -> DittoServerSpec:
    return parse(DittoServerSpec, {**copy.deepcopy(BASE), **fields})


def sample(name: str) -> DittoServerSpec:
    return parse(DittoServerSpec, yaml.safe_load((VALID / name).read_text())["spec"])


def keys_of(document: Any, prefix: str = "") -> set[str]:
    if not isinstance(document, dict):
        return set()
    out = set()
    for key, value in document.items():
        out.add(f"{prefix}{key}")
        out |= keys_of(value, f"{prefix}{key}.")
    return out


# --- the file -------------------------------------------------------------------------------


def test_defaults_render_a_pod_ready_config() -> None:
    document = yaml.safe_load(build.render(spec_of()))
    assert document == {
        "logging": {"level": "INFO", "format": "json", "output": "stdout"},
        "shutdown_timeout": "30s",
        "controlplane": {"host": "0.0.0.0", "port": 8080},
        "metrics": {"enabled": True, "host": "0.0.0.0", "port": 9090},
        "database": {"type": "sqlite", "sqlite": {"path": names.SQLITE_PATH}},
    }


def test_spec_settings_reach_the_file() -> None:
    document = yaml.safe_load(build.render(sample("custom-ports-metrics.yaml")))
    assert document["logging"] == {"level": "DEBUG", "format": "text", "output": "stdout"}
    assert document["shutdown_timeout"] == "60s"
    assert document["controlplane"] == {"host": "0.0.0.0", "port": 18080}
    assert document["metrics"] == {"enabled": True, "host": "0.0.0.0", "port": 19090}


def test_snapshot_check_interval_is_written_only_when_set() -> None:
    # Absent by default, so that the key's arrival does not change (and restart) every server.
    assert "snapshot" not in yaml.safe_load(build.render(spec_of()))
    document = yaml.safe_load(build.render(sample("snapshots.yaml")))
    assert document["snapshot"] == {"scheduler_poll_interval": "30s"}


def test_tuning_reaches_the_file_as_dittofs_names_it_and_only_when_set() -> None:
    document = yaml.safe_load(build.render(sample("tuning.yaml")))
    assert document["gc"] == {
        "auto_interval": "30m",
        "grace_period": "2h",
        "compaction_live_ratio": 0.5,
    }
    assert document["blockstore"] == {
        "local": {
            "default_remote_cache_size": 150 * 2**30,
            "backpressure_max_wait": "2m",
            "max_log_bytes": 2 * 2**30,
        }
    }
    manual = spec_of(tuning={"gc": {"automatic": False}})
    assert yaml.safe_load(build.render(manual))["gc"] == {"auto_enabled": False}
    defaults = yaml.safe_load(build.render(spec_of()))
    assert "gc" not in defaults and "blockstore" not in defaults


def test_disabled_metrics_render_only_the_switch() -> None:
    spec = spec_of(controlPlane={"metrics": {"enabled": False}})
    assert yaml.safe_load(build.render(spec))["metrics"] == {"enabled": False}


def test_tls_points_at_the_mounted_secret() -> None:
    document = yaml.safe_load(build.render(sample("api-loadbalancer-tls.yaml")))
    assert document["controlplane"]["tls"] == {
        "cert_file": f"{names.TLS_DIR}/tls.crt",
        "key_file": f"{names.TLS_DIR}/tls.key",
    }


def test_mutual_tls_names_the_mounted_client_ca_and_the_lowest_version() -> None:
    document = yaml.safe_load(build.render(sample("api-mutual-tls.yaml")))
    assert document["controlplane"]["tls"] == {
        "cert_file": f"{names.TLS_DIR}/tls.crt",
        "key_file": f"{names.TLS_DIR}/tls.key",
        "client_ca": f"{names.CLIENT_CA_DIR}/ca.crt",
        "min_version": "1.3",
    }


def test_the_secrets_of_mutual_tls_are_watched() -> None:
    # A renewed client certificate or a new CA bundle must reach the reconcilers at once.
    referenced = references.referenced_secret_names(sample("api-mutual-tls.yaml"))
    assert {"dittofs-api-tls", "dittofs-client-ca", "dittofs-operator-client"} <= referenced


def test_postgres_settings_from_secrets_stay_out_of_the_file() -> None:
    external = yaml.safe_load(build.render(sample("external-postgres.yaml")))["database"]
    assert external == {
        "type": "postgres",
        "postgres": {
            "sslmode": "verify-full",
            "ssl_root_cert": f"{names.POSTGRES_CA_DIR}/ca.pem",
        },
    }
    percona = yaml.safe_load(build.render(sample("percona.yaml")))["database"]
    assert percona == {
        "type": "postgres",
        "postgres": {"sslmode": "verify-full", "ssl_root_cert": "/postgres-ca/root.crt"},
    }


@pytest.mark.parametrize("path", sorted(VALID.glob("*.yaml")), ids=lambda p: p.stem)
def test_no_sample_puts_a_secret_or_a_store_in_the_file(path: Path) -> None:
    spec = parse(DittoServerSpec, yaml.safe_load(path.read_text())["spec"])
    text = build.render(spec)
    keys = keys_of(yaml.safe_load(text))
    assert not [key for key in keys if any(word in key for word in SECRET_WORDS)]
    # Stores, shares, users and adapters are REST-managed runtime state.
    assert not {"adapters", "shares", "stores", "users"} & {key.split(".")[0] for key in keys}
    assert build.render(spec) == text  # deterministic


def test_shares_users_and_stores_do_not_change_the_file() -> None:
    edited = spec_of(
        shares=[{"name": "/other", "metadataStore": "meta", "localBlockStore": "blocks"}],
        metadataStores=[{"name": "meta", "type": "badger", "badger": {"blockCacheMB": 64}}],
        users=[{"name": "ann", "passwordSecretRef": {"name": "ann", "key": "pw"}}],
        adapters={"smb": {"port": 10445}},
    )
    assert build.render(edited) == build.render(spec_of())


# --- restart hash ---------------------------------------------------------------------------


def test_restart_hash_follows_the_file_and_start_time_secrets_only() -> None:
    text = build.render(spec_of())
    values = {("files-jwt", "secret"): "a" * 48}
    digest = build.restart_hash(text, values)
    assert digest == build.restart_hash(text, dict(values))
    assert len(digest) == 64 and "a" * 8 not in digest
    log_level = build.render(spec_of(controlPlane={"logLevel": "DEBUG"}))
    assert build.restart_hash(log_level, values) != digest
    assert build.restart_hash(text, {("files-jwt", "secret"): "b" * 48}) != digest
    assert build.restart_hash(text, {**values, ("pg", "password"): "x"}) != digest


def test_config_map_carries_the_file_and_the_hash_never_a_value() -> None:
    jwt = "j" * 48
    text = build.render(spec_of())
    digest = build.restart_hash(text, {("files-jwt", "secret"): jwt})
    config_map = build.config_map(SERVER, text, digest)
    assert config_map["metadata"]["name"] == "files-config"
    assert config_map["metadata"]["annotations"] == {names.RESTART_HASH_ANNOTATION: digest}
    assert config_map["data"] == {names.CONFIG_KEY: text}
    owner = config_map["metadata"]["ownerReferences"][0]
    assert owner["uid"] == "u-1" and owner["controller"] is True
    assert jwt not in json.dumps(config_map)


# --- Secret references ----------------------------------------------------------------------


def test_generated_secrets_only_without_references_and_always_the_digest_key() -> None:
    generated = build.generated("files", spec_of())
    assert [(g.name, g.key) for g in generated] == [
        ("files-jwt", names.GENERATED_JWT_KEY),
        ("files-admin", names.GENERATED_ADMIN_KEY),
        ("files-digest-key", names.GENERATED_DIGEST_KEY),
    ]
    (key,) = build.generated("public-api", sample("api-loadbalancer-tls.yaml"))
    assert (key.name, key.field) == ("public-api-digest-key", None)  # no reference replaces it
    assert len(build.generated("files", None)) == 4  # deletion with an unreadable spec


def test_an_encrypted_remote_store_gets_a_generated_key_unless_one_is_referenced() -> None:
    sealed = sample("s3-encrypted.yaml")
    assert build.encryption_key_secret("sealed", sealed) == "sealed-master-key"
    assert "sealed-encryption-key" not in {g.name for g in build.generated("sealed", sealed)}
    own_key = parse(DittoServerSpec, {**to_wire(sealed), "encryptionKey": None})
    (key,) = [g for g in build.generated("sealed", own_key) if g.field == "spec.encryptionKey"]
    assert (key.name, key.key) == ("sealed-encryption-key", "passphrase")
    assert build.encryption_key_secret("sealed", own_key) == "sealed-encryption-key"
    data = key.data("a-passphrase")
    assert data["passphrase"] == "a-passphrase"
    assert data["key.pem"].startswith("-----BEGIN DITTOFS ENCRYPTED MASTER KEY-----\n")
    unsealed = sample("s3-cubbit.yaml")
    assert build.encryption_key_secret("cubbit", unsealed) is None
    assert len(build.generated("cubbit", unsealed)) == 3


def test_key_file_is_dittofs_format_and_opens_with_its_passphrase_only() -> None:
    text = keyfile.key_file("correct horse")
    assert text != keyfile.key_file("correct horse")  # a new master key every time
    begin, *lines, end = text.strip().splitlines()
    assert (begin, end) == (
        "-----BEGIN DITTOFS ENCRYPTED MASTER KEY-----",
        "-----END DITTOFS ENCRYPTED MASTER KEY-----",
    )
    assert all(len(line) <= 64 for line in lines)
    body = json.loads(base64.b64decode("".join(lines)))
    assert (body["version"], body["wrap"], body["kdf"]["algo"]) == (1, "aes-256-gcm", "argon2id")
    kdf = body["kdf"]
    # DittoFS refuses a key file whose parameters are below these (keyprovider/local.go).
    assert kdf["time"] >= 1 and kdf["memory_kib"] >= 8 * 1024 and kdf["threads"] >= 1

    def unwrap(passphrase: str) -> bytes:
        kek = Argon2id(
            salt=base64.b64decode(kdf["salt"]),
            length=32,
            iterations=kdf["time"],
            lanes=kdf["threads"],
            memory_cost=kdf["memory_kib"],
        ).derive(passphrase.encode())
        return AESGCM(kek).decrypt(
            base64.b64decode(body["nonce"]), base64.b64decode(body["wrapped_master_key"]), None
        )

    assert len(unwrap("correct horse")) == 32
    with pytest.raises(InvalidTag):
        unwrap("wrong horse")


def test_generated_values_are_long_random_and_url_safe() -> None:
    jwt, admin, key = build.generated("files", spec_of())
    values = {jwt.new_value() for _ in range(20)}
    assert len(values) == 20
    assert all(len(v) == 48 and v.replace("-", "").replace("_", "").isalnum() for v in values)
    assert len(admin.new_value()) == 32
    assert len(key.new_value()) == 43  # 256 bits, as long as the HMAC-SHA256 block needs


def test_generated_secret_is_owned_and_labelled() -> None:
    jwt = build.generated("files", spec_of())[0]
    secret = build.generated_secret(SERVER, jwt, "v" * 48)
    assert secret["stringData"] == {"secret": "v" * 48}
    assert secret["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "dittofs-operator"
    assert secret["metadata"]["labels"]["app.kubernetes.io/instance"] == "files"
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "u-1"


def test_references_win_over_generated_secrets() -> None:
    spec = sample("api-loadbalancer-tls.yaml")
    assert (build.jwt_secret_ref("x", spec).name, build.jwt_secret_ref("x", spec).key) == (
        "dittofs-jwt",
        "secret",
    )
    assert build.admin_secret_ref("x", spec).name == "dittofs-admin"
    assert build.admin_secret_ref("x", spec_of()).name == "x-admin"


def test_postgres_env_from_external_keys_or_the_percona_user_secret() -> None:
    external = build.postgres_env("x", sample("external-postgres.yaml"))
    assert {variable: (ref.name, ref.key) for variable, ref in external.items()} == {
        "DITTOFS_DATABASE_POSTGRES_HOST": ("rds-credentials", "endpoint"),
        "DITTOFS_DATABASE_POSTGRES_PORT": ("rds-credentials", "port"),
        "DITTOFS_DATABASE_POSTGRES_USER": ("rds-credentials", "username"),
        "DITTOFS_DATABASE_POSTGRES_PASSWORD": ("rds-credentials", "password"),
        "DITTOFS_DATABASE_POSTGRES_DATABASE": ("rds-credentials", "database"),
    }
    percona = build.postgres_env("percona", sample("percona.yaml"))
    assert {ref.name for ref in percona.values()} == {"percona-pg-pguser-dittofs"}
    assert percona["DITTOFS_DATABASE_POSTGRES_DATABASE"].key == "dbname"
    # Metadata stores in PostgreSQL alone do not move the control plane there.
    assert build.postgres_env("pg16", sample("percona-pg16-backups.yaml")) == {}


# --- against the real dfs -------------------------------------------------------------------

DFS_SAMPLES = (
    "minimal.yaml",
    "custom-ports-metrics.yaml",
    "api-loadbalancer-tls.yaml",
    "api-mutual-tls.yaml",
    "external-postgres.yaml",
    "percona.yaml",
    "memory-no-shares.yaml",
    "tuning.yaml",
    "snapshots.yaml",
)


def dfs_binary() -> Path:
    if not binaries.is_built("dfs"):
        pytest.skip(
            f"dfs {binaries.version('dfs')} is not built in {binaries.component_dir('dfs')}; "
            "build it with `bash tests/testbed/build-binaries.sh dfs`"
        )
    return binaries.component_dir("dfs") / "dfs"


def pod_env(spec: DittoServerSpec, home: Path) -> dict[str, str]:
    """The environment the pod would get: the Secret-backed variables with sample values."""
    env = {"HOME": str(home), "PATH": os.environ.get("PATH", "")}
    env[build.ENV_JWT_SECRET] = "s" * 48
    env[build.ENV_ADMIN_PASSWORD] = "admin-password"
    samples = {"HOST": "db.example", "PORT": "5432", "USER": "dittofs", "DATABASE": "dittofs"}
    for variable in build.postgres_env("x", spec):
        suffix = variable.removeprefix(build.ENV_POSTGRES_PREFIX)
        env[variable] = samples.get(suffix, "pg-password")
    return env


def go_duration(seconds: int) -> str:
    minutes, rest = divmod(seconds, 60)
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"


@pytest.mark.parametrize("name", DFS_SAMPLES)
def test_dfs_accepts_the_rendered_config_and_reads_our_values(name: str, tmp_path: Path) -> None:
    dfs = dfs_binary()
    spec = sample(name)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(build.render(spec))
    env = pod_env(spec, tmp_path)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(dfs), "config", *args, "--config", str(config_file)],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    validated = run("validate")
    assert validated.returncode == 0, validated.stdout + validated.stderr
    assert "Validation: OK\n" in validated.stdout, validated.stdout  # and no warnings
    assert "unknown keys" not in validated.stderr, validated.stderr

    shown = run("show", "--output", "json")
    assert shown.returncode == 0, shown.stderr
    effective = json.loads(shown.stdout)
    cp = spec.control_plane
    logging = effective["logging"]
    assert (logging["level"], logging["format"], logging["output"]) == (
        cp.log_level,
        cp.log_format,
        "stdout",
    )
    assert effective["shutdown_timeout"] == go_duration(cp.shutdown_timeout)
    assert (effective["controlplane"]["host"], effective["controlplane"]["port"]) == (
        "0.0.0.0",
        cp.port,
    )
    tls = effective["controlplane"]["tls"]
    assert bool(tls["cert_file"]) == bool(tls["key_file"]) == (cp.tls is not None)
    client_ca = cp.tls.client_ca if cp.tls else None
    assert tls["client_ca"] == (build.client_ca_file(client_ca) if client_ca else "")
    assert tls["min_version"] == ((cp.tls.min_version if cp.tls else None) or "")
    metrics = effective["metrics"]
    assert (metrics["enabled"], metrics["host"], metrics["port"]) == (
        True,
        "0.0.0.0",
        cp.metrics.port,
    )
    database = effective["database"]
    assert database["type"] == cp.database.type
    if cp.database.type == "sqlite":
        assert database["sqlite"]["path"] == names.SQLITE_PATH
    else:
        postgres = database["postgres"]
        assert (postgres["host"], postgres["port"], postgres["user"]) == (
            "db.example",
            5432,
            "dittofs",
        )
        assert postgres["password"] == "********"  # set, from the environment
    # Every tunable we wrote is the value dfs runs with (it shows durations as Go writes them).
    written = yaml.safe_load(config_file.read_text())
    ours = {**(written.get("gc") or {}), **((written.get("blockstore") or {}).get("local") or {})}
    theirs = {**effective["gc"], **effective["blockstore"]["local"]}
    for key, value in ours.items():
        if isinstance(value, str):
            assert duration_seconds(theirs[key]) == duration_seconds(value), (key, theirs[key])
        else:
            assert theirs[key] == value, (key, theirs[key])
    if "snapshot" in written:
        interval = effective["snapshot"]["scheduler_poll_interval"]
        assert interval == written["snapshot"]["scheduler_poll_interval"]


def test_keys_added_by_hand_are_removed_by_a_merge_patch() -> None:
    desired = {"data": {"config.yaml": "x"}}
    assert build.foreign_keys(desired, None) is None
    assert build.foreign_keys(desired, {"data": {"config.yaml": "tampered"}}) is None
    live = {"data": {"config.yaml": "x", "junk": "1", "a": "2"}, "binaryData": {"b": "AA=="}}
    assert build.foreign_keys(desired, live) == {
        "data": {"a": None, "junk": None},
        "binaryData": {"b": None},
    }
