"""The pure builders of operator/serverconfig: the DittoFS state a DittoServer declares, and
how it differs from what DittoFS reports.

Reported objects below have the shapes DittoFS v0.29.0's handlers answer with (ids, configs
as objects with secrets shown as ********, share stores by UUID)."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml

from dittofs_controller.api.schema import parse
from dittofs_controller.api.v1alpha1 import DittoServerSpec
from dittofs_controller.kube.portforward import (
    PortForwardError,
    PortForwardFailed,
    PortForwardRejected,
)
from dittofs_controller.operator import names, serverapi
from dittofs_controller.operator.problems import Problem
from dittofs_controller.operator.serverconfig import (
    credentials,
    gates,
    memory,
    model,
    payloads,
    report,
)
from tests.support.conditions import Reported, status_of

VALID = Path(__file__).resolve().parents[1] / "api" / "valid"
SAMPLES = Path(__file__).resolve().parents[3] / "samples"
Obj = dict[str, Any]


def manifest(path: Path) -> Obj:
    document = next(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    assert isinstance(document, dict)
    return document


def spec_of(document: Obj) -> DittoServerSpec:
    return parse(DittoServerSpec, document["spec"])


def server(generation: int = 3, **conditions: Reported) -> Obj:
    metadata = {"name": "files", "namespace": "team", "uid": "uid-1", "generation": generation}
    return {"metadata": metadata, "spec": {}, "status": status_of(**conditions)}


def values_for(name: str, spec: DittoServerSpec) -> dict[tuple[str, str], str]:
    """A made-up value for every Secret key the spec needs (ports must be numbers)."""
    return {
        (ref.name, ref.key): "5432" if ref.key == "port" else f"{ref.name}:{ref.key}:value"
        for ref in credentials.secret_keys(name, spec)
    }


TEAMS = spec_of(manifest(VALID / "users-and-permissions.yaml"))
TEAMS_STATE = model.desired("teams", TEAMS, values_for("teams", TEAMS))


# --- desired state --------------------------------------------------------------------------


def test_badger_filesystem_sample() -> None:
    spec = spec_of(manifest(SAMPLES / "badger-filesystem.yaml"))
    state = model.desired("badger-filesystem", spec, values_for("badger-filesystem", spec))
    assert [(s.kind, s.name, s.type, dict(s.config)) for s in state.stores] == [
        ("metadata", "meta", "badger", {"path": "/data/metadata/meta"}),
        ("local", "blocks", "fs", {"path": "/data/blocks/blocks"}),
    ]
    assert state.adapters == (
        model.Adapter("nfs", True, 12049),
        model.Adapter("smb", True, 12445),  # DittoFS starts SMB on 1445: this moves it
    )
    assert state.nfs == model.NFSSettings(model.Portmapper(False, 10111), 90, 90)
    assert state.smb == model.SMBSettings("required", "SMB2.0", "SMB3.1.1")
    assert not state.smb.guest
    (share,) = state.shares
    assert (share.name, share.path, share.squash, share.default_permission) == (
        "/export",
        "/shares/export",
        "root_to_guest",
        "read",
    )
    assert share.stores == [("metadata", "meta"), ("local", "blocks")]
    assert share.permissions == {("user", "alice"): "read-write"}
    assert payloads.share_create_body(share) == {
        "name": "/export",
        "metadata_store_id": "meta",
        "local_block_store": "blocks",
        "read_only": False,
        "default_permission": "read",
        "owner": "alice",
        **{k: v for k, v in DEFAULT_SHARE_OPTIONS.items() if k != "encrypt_data"},
        "trash_exclude_patterns": [],
    }
    assert [(user.name, user.uid, user.gid) for user in state.users] == [("alice", 1000, 1000)]
    store = state.stores[0]
    assert store.create_body() == {
        "name": "meta",
        "type": "badger",
        "config": '{"path":"/data/metadata/meta"}',  # a JSON string, as the API wants
    }
    assert store.path == "/store/metadata/meta" and store.secrets == ()


def test_badger_cache_sizes_go_into_the_store_config() -> None:
    document = manifest(SAMPLES / "badger-filesystem.yaml")
    document["spec"]["metadataStores"][0]["badger"].update(blockCacheMB=256, indexCacheMB=0)
    spec = spec_of(document)
    store = model.desired("b", spec, values_for("b", spec)).stores[0]
    assert dict(store.config) == {
        "path": "/data/metadata/meta",
        "block_cache_mb": 256,
        "index_cache_mb": 0,
    }


def test_s3_store_carries_its_keys_from_the_secret() -> None:
    spec = spec_of(manifest(SAMPLES / "postgres-s3.yaml"))
    values = values_for("postgres-s3", spec)
    values[("s3-credentials", "accessKeyId")] = "AKIA-TEST"
    values[("s3-credentials", "secretAccessKey")] = "s3-secret-value"
    state = model.desired("postgres-s3", spec, values)
    remote = next(s for s in state.stores if s.kind == "remote")
    assert (remote.type, remote.path) == ("s3", "/store/block/remote/s3")
    assert dict(remote.config) == {
        "bucket": "dittofs-data",
        "region": "eu-west-1",
        "endpoint": "https://s3.cubbit.eu",
        "prefix": "postgres-s3/",
        "force_path_style": True,
        "allow_private_endpoint": False,
        "access_key_id": "AKIA-TEST",
        "secret_access_key": "s3-secret-value",
    }
    assert remote.secrets == ("s3-secret-value",)  # the access key id is shown by DittoFS
    assert "s3-secret-value" in state.credentials()
    assert "s3-secret-value" not in repr(remote)
    (share,) = state.shares
    assert payloads.share_create_body(share)["remote_block_store"] == "s3"


def test_remote_stores_compress_then_encrypt_with_the_mounted_key_file() -> None:
    spec = spec_of(manifest(VALID / "s3-encrypted.yaml"))
    values = {("cubbit-keys", "accessKeyId"): "AKIA", ("cubbit-keys", "secretAccessKey"): "s"}
    sealed, archive = [
        s for s in model.desired("sealed", spec, values).stores if s.kind == "remote"
    ]
    assert sealed.config["compression"] == {"algo": "zstd"}
    assert sealed.config["encryption"] == {
        "aead": "xchacha20-poly1305",
        "key": {"kind": "local", "file": "/encryption/key.pem"},
    }
    assert archive.config["compression"] == {"algo": "lz4"}
    assert "encryption" not in archive.config
    # The key file's path is a setting, compared as one; the passphrase never leaves the pod.
    assert sealed.secrets == ("s",)
    memory = manifest(VALID / "memory-no-shares.yaml")
    memory["spec"]["remoteBlockStores"] = [{"name": "r", "type": "memory", "compression": "lz4"}]
    (remote,) = [s for s in model.desired("m", spec_of(memory), {}).stores if s.kind == "remote"]
    assert dict(remote.config) == {"compression": {"algo": "lz4"}}


def test_percona_postgres_store() -> None:
    spec = spec_of(manifest(SAMPLES / "postgres-s3.yaml"))
    keys = credentials.secret_keys("postgres-s3", spec)
    pguser = [k for k in keys if k.name == "postgres-s3-pg-pguser-dittofs"]
    assert [k.key for k in pguser] == ["host", "port", "user", "password"]
    values = values_for("postgres-s3", spec)
    store = model.desired("postgres-s3", spec, values).stores[0]
    assert dict(store.config) == {
        "host": "postgres-s3-pg-pguser-dittofs:host:value",
        "port": 5432,
        "database": "dittofs_meta",
        "user": "postgres-s3-pg-pguser-dittofs:user:value",
        "password": "postgres-s3-pg-pguser-dittofs:password:value",
        "sslmode": "verify-full",  # with Percona's CA, which the pod names in PGSSLROOTCERT
    }
    assert store.secrets == ("postgres-s3-pg-pguser-dittofs:password:value",)


def test_external_postgres_store_uses_the_renamed_keys() -> None:
    spec = spec_of(manifest(VALID / "external-postgres.yaml"))
    values = values_for("external-pg", spec)
    store = model.desired("external-pg", spec, values).stores[0]
    assert store.config["host"] == "rds-credentials:endpoint:value"
    assert store.config["user"] == "rds-credentials:username:value"
    assert (store.config["database"], store.config["sslmode"]) == ("dittofs_pg", "verify-full")
    values[("rds-credentials", "port")] = "five"
    with pytest.raises(Problem) as raised:
        model.desired("external-pg", spec, values)
    assert raised.value.reason == "SecretValueInvalid"
    assert "five" not in raised.value.message and "'port'" in raised.value.message


def test_secret_keys_name_what_they_are_for() -> None:
    keys = credentials.secret_keys("teams", TEAMS)
    assert [(k.name, k.key) for k in keys] == [
        ("teams-admin", "password"),  # generated: no adminPasswordSecretRef
        ("teams-digest-key", "key"),  # generated: keys status.server.applied
        ("alice-password", "password"),
        ("bob-password", "password"),
    ]
    assert keys[2].what == "password of user alice"


def test_users_groups_and_permissions() -> None:
    alice, bob = TEAMS_STATE.users
    assert (alice.uid, alice.gid, alice.groups) == (1000, 2000, ("engineering",))
    assert bob.groups == ("engineering", "users")
    assert "alice-password:password:value" not in repr(alice)
    assert payloads.user_create_body(alice) == {
        "username": "alice",
        "password": "alice-password:password:value",
        "role": "user",
        "uid": 1000,
        "gid": 2000,
        "groups": ["engineering"],
    }
    assert TEAMS_STATE.groups == (model.Group("engineering", 2000), model.Group("auditors", None))
    engineering = TEAMS_STATE.shares[0]
    assert engineering.owner == "alice"
    assert dict(engineering.permissions) == {
        ("group", "engineering"): "read-write",
        ("group", "auditors"): "read",
        ("user", "bob"): "admin",
        ("group", "admins"): "admin",
    }
    public = TEAMS_STATE.shares[1]
    assert (public.squash, public.anonymous_uid, public.anonymous_gid) == (
        "all_to_guest",
        65534,
        65534,
    )
    assert TEAMS_STATE.names() == {
        "shares": {"/engineering", "/public"},
        "users": {"alice", "bob"},
        "groups": {"engineering", "auditors"},
        "metadata": {"meta"},
        "local": {"blocks"},
        "remote": set(),
        "identity": set(),
        "netgroups": set(),
    }


# --- where the API is -----------------------------------------------------------------------


def test_access_auto_is_the_service_in_a_pod_and_a_port_forward_outside() -> None:
    in_pod = {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}
    assert serverapi.resolve_access("auto", None, in_pod) == "service"
    assert serverapi.resolve_access("auto", "/home/me/.kube/config", in_pod) == "port-forward"
    assert serverapi.resolve_access("auto", None, {}) == "port-forward"
    assert serverapi.resolve_access("service", "/kubeconfig", {}) == "service"
    assert serverapi.resolve_access("pod", None, in_pod) == "pod"
    assert serverapi.resolve_access("port-forward", None, in_pod) == "port-forward"


def test_api_url() -> None:
    obj = server()
    spec = TEAMS
    assert serverapi.api_url(obj, spec, "service", None) == "http://files-api.team.svc:8080"
    assert serverapi.api_url(obj, spec, "pod", "10.233.0.7") == "http://10.233.0.7:8080"
    assert serverapi.api_url(obj, spec, "pod", "fd00::7") == "http://[fd00::7]:8080"
    # Through a port-forward: the pod's name (stable across tunnels), and the tunnel's address.
    assert serverapi.api_url(obj, spec, "port-forward", None) == "port-forward://team/files-0:8080"
    assert serverapi.forwarded_url(spec, 40123) == "http://127.0.0.1:40123"
    tls = spec_of(manifest(VALID / "api-loadbalancer-tls.yaml"))
    assert serverapi.api_url(obj, tls, "service", None).startswith("https://files-api.team.svc:")
    assert serverapi.forwarded_url(tls, 40123) == "https://127.0.0.1:40123"


@pytest.mark.parametrize(
    ("error", "reason", "words"),
    [
        (PortForwardRejected(403, "forbidden"), "PortForwardForbidden", "pods/portforward"),
        (PortForwardRejected(404, 'pods "files-0" not found', "pods"), "PodNotFound", "gone"),
        (PortForwardRejected(404, 'nodes "n1" not found', "nodes"), "PortForwardRejected", "n1"),
        (PortForwardRejected(500, "dialing"), "PortForwardRejected", "answered 500"),
        (PortForwardFailed("connection refused"), "PortForwardFailed", "connection refused"),
        (PortForwardError("no WebSocket within 10 s"), "PortForwardFailed", "10 s"),
    ],
)
def test_forward_problem_names_the_cause(error: PortForwardError, reason: str, words: str) -> None:
    found, message = serverapi.forward_problem(error)
    assert found == reason
    assert words in message


def test_nothing_is_judged_before_available_is_published_for_this_generation() -> None:
    assert not gates.judged(server())
    assert not gates.judged(server(Available=("True", "Running", 2)))
    assert gates.judged(server(Available=("False", "PodNotReady", 3)))


def test_waits_for_a_serving_pod_of_this_generation() -> None:
    running = ("True", "Running", 3)
    assert gates.waiting_for_server(server(Available=running), TEAMS) is None
    done = ("False", "RolloutComplete", 3)
    assert gates.waiting_for_server(server(Available=running, Progressing=done), TEAMS) is None
    starting = gates.waiting_for_server(server(Available=("False", "PodNotReady", 3)), TEAMS)
    assert starting is not None
    assert (starting.status, starting.reason) == ("Unknown", "WaitingForServer")
    # Named, not quoted: Available's changes while the pod starts do not rewrite this one.
    assert "see condition Available" in starting.message
    assert "Available says" not in starting.message
    # The previous template still serves: a new store's volume is not mounted yet.
    rolling = server(Available=running, Progressing=("True", "RollingOut", 3))
    outcome = gates.waiting_for_server(rolling, TEAMS)
    assert outcome is not None and "to roll out (see condition Progressing)" in outcome.message
    older = server(Available=running, Progressing=("True", "RollingOut", 2))
    assert gates.waiting_for_server(older, TEAMS) is None
    stopped = spec_of(manifest(VALID / "stopped.yaml"))
    outcome = gates.waiting_for_server(server(Available=("False", "Stopped", 3)), stopped)
    assert outcome is not None and outcome.reason == "ServerStopped"


# --- differences ----------------------------------------------------------------------------


def test_adapters() -> None:
    smb = model.Adapter("smb", True, 12445)
    first_boot = {"type": "smb", "enabled": True, "running": True, "port": 1445}
    assert payloads.adapter_change(smb, first_boot) == (
        "PUT",
        "/adapters/smb",
        {"enabled": True, "port": 12445},
    )
    assert payloads.adapter_change(smb, {**first_boot, "port": 12445}) is None
    assert payloads.adapter_change(smb, None) == (
        "POST",
        "/adapters",
        {"type": "smb", "enabled": True, "port": 12445},
    )
    off = model.Adapter("nfs", False, 12049)
    assert payloads.adapter_change(off, None) is None
    assert payloads.adapter_change(off, {"enabled": True, "port": 12049}) == (
        "PUT",
        "/adapters/nfs",
        {"enabled": False, "port": 12049},
    )
    assert payloads.adapter_change(off, {"enabled": False, "port": 999}) is None


def test_nfs_tls_is_the_adapters_config_sent_when_it_differs() -> None:
    spec = spec_of(manifest(VALID / "protocol-security.yaml"))
    nfs, _ = model.desired("files", spec, values_for("files", spec)).adapters
    tls = {"cert_file": "/nfs-tls/tls.crt", "key_file": "/nfs-tls/tls.key", "mode": "require"}
    assert nfs.config == {"tls": tls}
    plain = {"type": "nfs", "enabled": True, "running": True, "port": 12049, "config": {}}
    assert payloads.adapter_change(nfs, plain) == (
        "PUT",
        "/adapters/nfs",
        {"enabled": True, "port": 12049, "config": {"tls": tls}},
    )
    assert payloads.adapter_change(nfs, {**plain, "config": {"tls": tls}}) is None
    # Dropped from the spec, TLS is taken off; a server that never had it is left alone.
    (without,) = [a for a in TEAMS_STATE.adapters if a.type == "nfs"]
    assert without.config == {}
    assert payloads.adapter_change(without, {**plain, "config": {"tls": tls}}) == (
        "PUT",
        "/adapters/nfs",
        {"enabled": True, "port": 12049, "config": {}},
    )
    assert payloads.adapter_change(without, plain) is None
    assert payloads.adapter_change(without, {**plain, "config": None}) is None
    status = report.server_status(observed(adapters=[{**plain, "config": {"tls": tls}}]), {}, {})
    assert status["adapters"]["nfs"]["tls"] == {"mode": "require"}
    assert "/nfs-tls" not in json.dumps(status)


# GET /adapters/nfs/settings of a fresh DittoFS (the keys the operator reads).
NFS_DEFAULTS = {
    "portmapper_enabled": False,
    "portmapper_port": 10111,
    "lease_time": 90,
    "grace_period": 90,
}


def nfs(portmapper: tuple[bool, int] = (False, 10111), lease: int = 90, grace: int = 90) -> Any:
    return model.NFSSettings(model.Portmapper(*portmapper), lease, grace)


def test_nfs_settings() -> None:
    assert payloads.nfs_settings_patch(nfs(), NFS_DEFAULTS) is None
    assert payloads.nfs_settings_patch(nfs((False, 20111)), NFS_DEFAULTS) is None
    assert payloads.nfs_settings_patch(nfs((True, 10111)), NFS_DEFAULTS) == {
        "portmapper_enabled": True,
        "portmapper_port": 10111,
    }
    on = {**NFS_DEFAULTS, "portmapper_enabled": True}
    assert payloads.nfs_settings_patch(nfs((True, 10112)), on) == {
        "portmapper_enabled": True,
        "portmapper_port": 10112,
    }
    assert payloads.nfs_settings_patch(nfs(lease=30, grace=120), NFS_DEFAULTS) == {
        "lease_time": 30,
        "grace_period": 120,
    }


def smb_spec(**smb: Any) -> Any:
    document = manifest(SAMPLES / "badger-filesystem.yaml")
    document["spec"]["adapters"] = {"smb": smb}
    spec = spec_of(document)
    return model.desired("files", spec, values_for("files", spec))


def test_smb_signing_follows_guest_unless_declared() -> None:
    assert smb_spec().smb.signing == "required"
    assert smb_spec(guest=True).smb.signing == "enabled"
    assert smb_spec(guest=True).smb.guest
    assert smb_spec(signing="required").smb.signing == "required"
    assert smb_spec(guest=True, signing="enabled").smb.signing == "enabled"
    dialects = smb_spec(minDialect="3.0", maxDialect="3.0.2").smb
    assert (dialects.min_dialect, dialects.max_dialect) == ("SMB3.0", "SMB3.0.2")


def test_smb_settings_patch_guests_refused_through_required_signing() -> None:
    wanted = model.SMBSettings("required", "SMB2.0", "SMB3.1.1")
    current = {"signing": "required", "min_dialect": "SMB2.0", "max_dialect": "SMB3.1.1"}
    assert payloads.smb_settings_patch(wanted, current) is None
    # A fresh DittoFS reports "" (inherit the file config, which lets guests in).
    fresh = {**current, "signing": ""}
    assert payloads.smb_settings_patch(wanted, fresh) == {"signing": "required"}
    assert payloads.smb_settings_patch(wanted, {}) == {
        "signing": "required",
        "min_dialect": "SMB2.0",
        "max_dialect": "SMB3.1.1",
    }
    guests = model.SMBSettings("enabled", "SMB3.0", "SMB3.1.1")
    assert payloads.smb_settings_patch(guests, current) == {
        "signing": "enabled",
        "min_dialect": "SMB3.0",
    }


def test_smb_encryption_required_marks_every_share() -> None:
    plain = smb_spec()
    (share,) = plain.shares
    assert not share.encrypted
    assert "encrypt_data" not in payloads.share_create_body(share)
    encrypted = smb_spec(encryption="required", minDialect="3.0")
    (share,) = encrypted.shares
    assert share.encrypted
    assert payloads.share_create_body(share)["encrypt_data"] is True
    reported = reported_share(name="/export", default_permission="read", encrypt_data=False)
    assert payloads.share_update_body(share, reported, IDS) == {"encrypt_data": True}
    reported["encrypt_data"] = True
    assert payloads.share_update_body(share, reported, IDS) is None
    # DittoFS reads a share's encryption when it starts: a change is a new revision.
    key = "digest-key"
    before = credentials.stores_revision(key, plain.stores, plain.shares)
    assert before == credentials.stores_revision(key, plain.stores)
    assert credentials.stores_revision(key, encrypted.stores, encrypted.shares) != before


def test_stores_revision_follows_every_store_setting_and_credential_keyed() -> None:
    spec = spec_of(manifest(SAMPLES / "postgres-s3.yaml"))
    stores = model.desired("postgres-s3", spec, values_for("postgres-s3", spec)).stores
    revision = credentials.stores_revision("key", stores)
    assert revision == credentials.stores_revision("key", stores)
    assert revision != credentials.stores_revision("other key", stores)
    for index, store in enumerate(stores):
        for setting in store.config:
            changed = attrs.evolve(store, config={**store.config, setting: "changed"})
            others = (*stores[:index], changed, *stores[index + 1 :])
            assert credentials.stores_revision("key", others) != revision, (store.item, setting)
    assert not any(secret in revision for store in stores for secret in store.secrets)


def test_stores_reopen_until_the_running_pod_was_started_for_the_revision() -> None:
    def pod(revision: str | None) -> dict[str, Any]:
        annotations = {names.STORES_REVISION_ANNOTATION: revision} if revision else {}
        return {"metadata": {"annotations": annotations}}

    assert report.reopen_pending(None, pod(None)) == []  # never changed over the API
    assert report.reopen_pending("r2", None) == []  # no pod: Available says so
    assert report.reopen_pending("r2", pod("r2")) == []
    for started_for in (None, "r1"):
        (issue,) = report.reopen_pending("r2", pod(started_for))
        assert issue.reason == "StoresReopening"


def test_user_updates() -> None:
    alice, bob = TEAMS_STATE.users
    same = {"username": "alice", "role": "user", "enabled": True, "uid": 1000, "gid": 2000}
    assert payloads.user_update_body(alice, {**same, "groups": ["engineering"]}) is None
    assert payloads.user_update_body(alice, {**same, "role": "admin", "enabled": False}) == {
        "role": "user",
        "enabled": True,
        "groups": ["engineering"],
    }
    # bob declares no uid/gid: whatever the server has stays; groups compare as sets.
    reported = {"username": "bob", "role": "user", "uid": 5, "groups": ["users", "engineering"]}
    assert payloads.user_update_body(bob, reported) is None
    assert payloads.user_update_body(bob, {**reported, "groups": None}) == {
        "groups": ["engineering", "users"]
    }


def test_groups() -> None:
    engineering, auditors = TEAMS_STATE.groups
    assert payloads.group_create_body(engineering) == {"name": "engineering", "gid": 2000}
    assert payloads.group_create_body(auditors) == {"name": "auditors"}
    assert payloads.group_update_body(engineering, {"name": "engineering", "gid": 2001}) == {
        "gid": 2000
    }
    assert payloads.group_update_body(auditors, {"name": "auditors", "gid": 7}) is None


def test_store_config_drift_compares_credentials_by_digest() -> None:
    spec = spec_of(manifest(SAMPLES / "postgres-s3.yaml"))
    state = model.desired("p", spec, values_for("p", spec))
    remote = next(s for s in state.stores if s.kind == "remote")
    current = credentials.digest("key-1", remote.item, remote.secrets)
    shown = {**remote.config, "secret_access_key": "********"}
    reported = {"name": "s3", "type": "s3", "config": shown}
    assert payloads.config_drift(remote, reported, current, current) is None
    assert payloads.config_drift(remote, reported, None, current) == "credentials"  # not known
    assert payloads.config_drift(remote, reported, "0123456789abcdef", current) == "credentials"
    # A digest of the former unkeyed scheme (16 characters) is sent again, once.
    assert payloads.config_drift(remote, reported, current[:16], current) == "credentials"
    moved = {**reported, "config": {**shown, "bucket": "other", "prefix": "x/"}}
    assert payloads.config_drift(remote, moved, current, current) == "settings bucket, prefix"
    lost = {**reported, "config": {k: v for k, v in shown.items() if k != "secret_access_key"}}
    assert payloads.config_drift(remote, lost, current, current) == "credentials"
    memory = model.Store("local", "cache", "memory", {})
    assert payloads.config_drift(memory, {"name": "cache", "type": "memory"}, None, "x") is None


def test_digests_are_keyed_and_change_with_the_value() -> None:
    one = credentials.digest("key-1", "user/alice", ["pw-1"])
    assert len(one) == 32 and "pw-1" not in one
    assert one == credentials.digest("key-1", "user/alice", ["pw-1"])
    assert one != credentials.digest("key-2", "user/alice", ["pw-1"])  # same value, another key
    assert one != credentials.digest("key-1", "user/bob", ["pw-1"])
    assert one != credentials.digest("key-1", "user/alice", ["pw-2"])
    assert one == hmac.new(b"key-1", b'["user/alice", "pw-1"]', hashlib.sha256).hexdigest()[:32]
    # Nothing public is enough to compute it: neither the former uid-salted sha256 nor any
    # unkeyed sha256 of the value.
    for text in ("uid-1\0user/alice\0pw-1", "user/alice\0pw-1", '["user/alice", "pw-1"]', "pw-1"):
        assert not hashlib.sha256(text.encode()).hexdigest().startswith(one[:16])
    assert credentials.digest("", "user/alice", ["pw-1"]) != one
    assert model.is_secret_key("secret_access_key") and model.is_secret_key("password")
    assert not model.is_secret_key("access_key_id") and not model.is_secret_key("path")


def test_scrub_masks_credentials_in_server_messages() -> None:
    text = "connect to db as dittofs with password hunter22 failed"
    assert credentials.scrub(text, ["hunter22", "ab"]) == (
        "connect to db as dittofs with password *** failed"
    )


IDS: payloads.StoreIds = {
    ("metadata", "meta"): "m-uuid",
    ("local", "blocks"): "l-uuid",
    ("local", "fast"): "f-uuid",
    ("remote", "s3"): "r-uuid",
}


def reported_share(**fields: Any) -> Obj:
    share = {
        "id": "s-uuid",
        "name": "/engineering",
        "metadata_store_id": "m-uuid",
        "local_block_store_id": "l-uuid",
        "remote_block_store_id": None,
        "read_only": False,
        "enabled": True,
        "default_permission": "none",
        "owner_uid": 1000,
        "owner_gid": 2000,
        "status": {"status": "healthy"},
        **DEFAULT_SHARE_OPTIONS,
    }
    return {**share, **fields}


# What DittoFS reports of a share made without options (shareToResponse in v0.29.0).
DEFAULT_SHARE_OPTIONS = {
    "encrypt_data": False,
    "access_based_enumeration": False,
    "change_notify_disabled": False,
    "streams_disabled": False,
    "continuous_availability": False,
    "allow_mfsymlink": False,
    "retention_policy": "lru",
    "trash_enabled": False,
    "trash_retention_days": 0,
    "trash_restrict_to_admin": False,
    "trash_max_bytes": 0,
}
# ...and of its NFS export options (DefaultNFSExportOptions).
DEFAULT_NFS_OPTIONS = {
    "allow_auth_sys": True,
    "require_kerberos": False,
    "min_kerberos_level": "krb5",
    "netgroup": "",
    "disable_readdirplus": False,
}


def test_share_updates() -> None:
    share = TEAMS_STATE.shares[0]
    assert payloads.share_update_body(share, reported_share(), IDS) is None
    changed = reported_share(
        local_block_store_id="f-uuid", read_only=True, remote_block_store_id="r-uuid"
    )
    assert payloads.share_update_body(share, changed, IDS) == {
        "local_block_store_id": "blocks",
        "remote_block_store_id": "",  # clears the remote store
        "read_only": False,
    }
    with_remote = attrs.evolve(share, remote_block_store="s3")
    assert payloads.share_update_body(with_remote, reported_share(), IDS) == {
        "remote_block_store_id": "s3"
    }
    assert payloads.share_conflict(share, reported_share(), IDS) is None
    elsewhere = payloads.share_conflict(share, reported_share(metadata_store_id="x"), IDS)
    assert elsewhere is not None and "another metadata store" in elsewhere


def test_share_owner() -> None:
    alice = {"username": "alice", "uid": 1000, "gid": 2000}
    assert payloads.owner_ids(alice) == (1000, 2000)
    assert payloads.owner_ids({"username": "u", "uid": 7}) == (7, 7)  # DittoFS: gid = uid
    assert payloads.owner_ids({"username": "u"}) is None
    assert not payloads.owner_differs((1000, 2000), reported_share())
    assert payloads.owner_differs((1001, 2000), reported_share())
    assert payloads.owner_differs(None, reported_share())
    unowned = {k: v for k, v in reported_share().items() if not k.startswith("owner_")}
    assert not payloads.owner_differs(None, unowned)


def test_share_nfs_options() -> None:
    public = TEAMS_STATE.shares[1]
    reported = {"squash": "root_to_guest", **DEFAULT_NFS_OPTIONS}
    assert payloads.nfs_options_patch(public, reported) == {
        "squash": "all_to_guest",
        "anonymous_uid": 65534,
        "anonymous_gid": 65534,
    }
    matching = {
        **reported,
        "squash": "all_to_guest",
        "anonymous_uid": 65534,
        "anonymous_gid": 65534,
    }
    assert payloads.nfs_options_patch(public, matching) is None
    engineering = TEAMS_STATE.shares[0]  # no anonymous ids declared: the server's stay
    mapped = {**DEFAULT_NFS_OPTIONS, "squash": "none", "anonymous_uid": 5}
    assert payloads.nfs_options_patch(engineering, mapped) is None
    # A netgroup set by hand is put back.
    assert payloads.nfs_options_patch(engineering, {**mapped, "netgroup": "anyone"}) == {
        "netgroup": ""
    }


def test_share_options_under_dittofs_names_and_compared_as_it_prints_them() -> None:
    spec = spec_of(manifest(VALID / "share-options.yaml"))
    (share,) = model.desired("opts", spec, {}).shares
    assert share.encrypted is True
    assert share.options == {
        "access_based_enumeration": True,
        "change_notify_disabled": True,
        "streams_disabled": True,
        "continuous_availability": True,
        "allow_mfsymlink": True,
        "retention_policy": "ttl",
        "trash_enabled": True,
        "trash_retention_days": 30,
        "trash_restrict_to_admin": True,
        "trash_max_bytes": 10 * 2**30,
        "trash_exclude_patterns": ["*.tmp", "~$*"],
    }
    assert share.sized == {
        "retention_ttl": "72h",
        "local_store_size": str(100 * 2**30),
        "read_buffer_size": str(256 * 2**20),
    }
    assert share.nfs_options == {"netgroup": "lab"}
    # As DittoFS reports it once applied: durations and sizes in its own words.
    applied = reported_share(
        **{**share.options, "trash_exclude_patterns": ["~$*", "*.tmp"]},
        encrypt_data=True,
        retention_ttl="72h0m0s",
        local_store_size="100.00GiB",
        read_buffer_size="256.00MiB",
    )
    assert payloads.share_update_body(share, applied, IDS_OF_SHARE_OPTIONS) is None
    drifted = {**applied, "trash_enabled": False, "local_store_size": "1.00GiB"}
    assert payloads.share_update_body(share, drifted, IDS_OF_SHARE_OPTIONS) == {
        "trash_enabled": True,
        "local_store_size": str(100 * 2**30),
    }
    (lab,) = model.desired("opts", spec, {}).netgroups
    assert lab.members == {
        ("ip", "10.0.0.7"),
        ("cidr", "10.1.0.0/16"),
        ("hostname", "*.lab.example"),
    }
    listed = {
        "members": [
            {"id": "m1", "type": "ip", "value": "10.0.0.7"},
            {"id": "m2", "type": "ip", "value": "10.9.9.9"},
        ]
    }
    assert payloads.netgroup_changes(lab, listed) == (
        [{"type": "cidr", "value": "10.1.0.0/16"}, {"type": "hostname", "value": "*.lab.example"}],
        ["m2"],
    )


IDS_OF_SHARE_OPTIONS = {("metadata", "meta"): "m-uuid", ("local", "blocks"): "l-uuid"}


def test_snapshot_policies_of_the_spec() -> None:
    projects, scratch, archive = model.desired(
        "s", spec_of(manifest(VALID / "snapshots.yaml")), {}
    ).shares
    assert projects.snapshots == model.SnapshotPolicy("6h", 28, "", "projects", True)
    assert scratch.snapshots == model.SnapshotPolicy("@daily", 0, "168h", "", True)
    assert archive.snapshots == model.SnapshotPolicy("1h30m", 3, "720h", "", False)
    assert payloads.snapshot_policy_body(scratch.snapshots) == {
        "interval": "@daily",
        "keep_last": 0,  # no count bound
        "ttl": "168h",
        "enabled": True,
        "name_prefix": "",  # DittoFS' default prefix
    }
    assert TEAMS_STATE.shares[0].snapshots is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("6h0m0s", 21600),
        ("6h", 21600),
        ("1h30m0s", 5400),
        ("90s", 90),
        ("@daily", 86400),
        ("@Weekly", 604800),
        ("1.5s", 1.5),
        ("250ms", 0.25),
        ("", 0),
        ("0", 0),
        ("0s", 0),
    ],
)
def test_durations_compare_as_go_writes_them(text: str, seconds: float) -> None:
    assert model.duration_seconds(text) == seconds


def test_snapshot_policy_drift() -> None:
    policy = model.SnapshotPolicy("@daily", 0, "168h", "", True)
    # As DittoFS answers GET for the policy the spec declares: durations in Go's String().
    reported = {
        "share": "/scratch",
        "enabled": True,
        "interval": "24h0m0s",
        "keep_last": 0,
        "ttl": "168h0m0s",
        "last_run_at": "2026-12-08T01:00:00Z",
    }
    assert not payloads.snapshot_policy_differs(policy, reported)
    for change in (
        {"enabled": False},
        {"interval": "12h0m0s"},
        {"keep_last": 5},
        {"ttl": ""},
        {"name_prefix": "hand-made"},
    ):
        assert payloads.snapshot_policy_differs(policy, {**reported, **change}), change


QUOTAS = spec_of(manifest(VALID / "quotas.yaml"))
QUOTAS_STATE = model.desired("quotas", QUOTAS, values_for("quotas", QUOTAS))
GIB = 2**30


def test_quotas_of_the_spec_are_keyed_by_uid_and_gid() -> None:
    projects, scratch = QUOTAS_STATE.shares
    assert projects.quota_bytes == 1536 * GIB
    assert [(q.scope, q.name, q.identity, q.limits) for q in projects.quotas] == [
        ("default-user", None, None, model.QuotaLimits(hard_bytes=10 * GIB, hard_files=100000)),
        (
            "user",
            "alice",
            1000,
            model.QuotaLimits(50 * 10**9, 40 * 10**9, 1000000, 900000, 168 * 3600),
        ),
        ("group", "engineering", 2000, model.QuotaLimits(hard_bytes=500 * GIB)),
        ("group", "users", 1000, model.QuotaLimits(soft_files=5000, grace_seconds=86400)),
    ]
    assert [q.what for q in projects.quotas] == [
        "default user quota",
        "quota of user alice (uid 1000)",
        "quota of group engineering (gid 2000)",
        "quota of group users (gid 1000)",  # built-in: the gid DittoFS gives it
    ]
    assert (scratch.quota_bytes, scratch.quotas) == (1000000, ())
    assert [model.byte_count(size) for size in ("1Ei", "2E", "500M", "7", None)] == [
        2**60,
        2 * 10**18,
        500 * 10**6,
        7,
        0,
    ]
    assert (TEAMS_STATE.shares[0].quota_bytes, TEAMS_STATE.shares[0].quotas) == (0, ())


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, ""),
        (512, "512B"),
        (1024, "1.00KiB"),
        (1000000, "976.56KiB"),
        (1152, "1.12KiB"),  # 1.125: Go's %.2f rounds half to even, as Python's does
        (10 * GIB, "10.00GiB"),
        (1536 * GIB, "1.50TiB"),
        (2**60, "1048576.00TiB"),
    ],
)
def test_byte_sizes_compare_as_dittofs_prints_them(size: int, text: str) -> None:
    assert payloads.byte_size_text(size) == text


def test_share_quota_is_sent_whole_and_compared_as_printed() -> None:
    scratch = QUOTAS_STATE.shares[1]
    assert payloads.share_create_body(scratch)["quota_bytes"] == "1000000"
    assert "quota_bytes" not in payloads.share_create_body(TEAMS_STATE.shares[0])
    ids = {("metadata", "meta"): "m-uuid", ("local", "blocks"): "l-uuid"}
    reported = reported_share(name="/scratch", default_permission="none")
    assert (
        payloads.share_update_body(scratch, {**reported, "quota_bytes": "976.56KiB"}, ids) is None
    )
    assert payloads.share_update_body(scratch, reported, ids) == {"quota_bytes": "1000000"}
    limited = {**reported, "quota_bytes": "1.00GiB"}
    unlimited = attrs.evolve(scratch, quota_bytes=0)
    assert payloads.share_update_body(unlimited, limited, ids) == {"quota_bytes": "0"}


# GET /shares/projects/quotas as DittoFS v0.29.0 answers it (sizes printed, usage live).
REPORTED_QUOTAS = [
    {
        "share_name": "/projects",
        "scope": "default-user",
        "limit_bytes": "10.00GiB",
        "limit_files": 100000,
        "soft_files": 0,
        "grace_seconds": 0,
        "used_bytes": 0,
        "used_files": 0,
    },
    {
        "share_name": "/projects",
        "scope": "user",
        "identity_id": 1000,
        "limit_bytes": "46.57GiB",
        "soft_bytes": "37.25GiB",
        "limit_files": 1000000,
        "soft_files": 900000,
        "grace_seconds": 604800,
        "grace_started_at": "2026-12-08T00:51:22Z",
        "used_bytes": 41000000000,
        "used_files": 12,
    },
    {
        "share_name": "/projects",
        "scope": "group",
        "identity_id": 2000,
        "limit_bytes": "500.00GiB",
        "limit_files": 0,
        "soft_files": 0,
        "grace_seconds": 0,
        "used_bytes": 5,
        "used_files": 1,
    },
    {
        "share_name": "/projects",
        "scope": "group",
        "identity_id": 1000,
        "limit_files": 0,
        "soft_files": 5000,
        "grace_seconds": 86400,
        "used_bytes": 0,
        "used_files": 0,
    },
]


def test_quotas_are_the_whole_list_and_compared_without_usage() -> None:
    projects = QUOTAS_STATE.shares[0]
    assert payloads.quota_changes(projects, REPORTED_QUOTAS) == ([], [])
    by_hand = {**REPORTED_QUOTAS[0], "scope": "user", "identity_id": 1001}
    drifted = [{**REPORTED_QUOTAS[2], "limit_bytes": "1.00GiB"}, by_hand, REPORTED_QUOTAS[3]]
    sets, removals = payloads.quota_changes(projects, drifted)
    assert [quota.key for quota in sets] == [
        ("default-user", None),
        ("user", 1000),
        ("group", 2000),
    ]
    assert removals == [("user", 1001)]
    for change in (
        {"limit_bytes": ""},
        {"soft_bytes": "37.26GiB"},
        {"limit_files": 1},
        {"soft_files": 1},
        {"grace_seconds": 60},
    ):
        assert payloads.quota_differs(sets[1].limits, {**REPORTED_QUOTAS[1], **change}), change
    assert payloads.quota_changes(TEAMS_STATE.shares[0], REPORTED_QUOTAS[:1]) == (
        [],
        [("default-user", None)],
    )


def test_quota_paths_and_bodies() -> None:
    default_user, alice, engineering, _ = QUOTAS_STATE.shares[0].quotas
    # DittoFS v0.29.0's /quotas/default-user route answers 400: the {scope}/{id} one takes it.
    assert payloads.quota_path(QUOTAS_STATE.shares[0], default_user.key) == (
        "/shares/projects/quotas/default-user/0"
    )
    assert payloads.quota_path(QUOTAS_STATE.shares[0], engineering.key) == (
        "/shares/projects/quotas/group/2000"
    )
    assert payloads.quota_body(alice.limits) == {
        "limit_bytes": "50000000000",
        "soft_bytes": "40000000000",
        "limit_files": 1000000,
        "soft_files": 900000,
        "grace_seconds": 604800,
    }
    assert payloads.quota_body(default_user.limits)["soft_bytes"] == "0"  # none
    assert model.quota_what(("group", 2000)) == "quota of gid 2000"


def test_share_permissions_are_the_whole_list_but_sid_grants() -> None:
    share = TEAMS_STATE.shares[0]
    reported = [
        {"type": "group", "name": "engineering", "level": "read"},
        {"type": "user", "name": "bob", "level": "admin"},
        {"type": "user", "name": "mallory", "level": "read-write"},
        {"type": "sid", "name": "DOMAIN\\ops", "level": "admin", "sid": "S-1-5-21-1"},
    ]
    sets, removals = payloads.permission_changes(share, reported)
    assert sets == [
        ("group", "admins", "admin"),
        ("group", "auditors", "read"),
        ("group", "engineering", "read-write"),
    ]
    assert removals == [("user", "mallory")]
    assert payloads.permission_path(share, "group", "admins") == (
        "/shares/engineering/permissions/groups/admins"
    )
    none_yet, _ = payloads.permission_changes(share, None)  # DittoFS answers null for none
    assert len(none_yet) == 4


def test_prune_paths() -> None:
    assert payloads.object_path("shares", "/old") == "/shares/old"
    assert payloads.object_path("remote", "s3") == "/store/block/remote/s3"
    assert payloads.object_path("users", "bob") == "/users/bob"
    assert payloads.listing_path("metadata") == "/store/metadata"
    assert payloads.listing_path("groups") == "/groups"
    assert payloads.listed_name("users", {"username": "bob", "name": "x"}) == "bob"
    assert next(category for category, _ in payloads.PRUNE_ORDER) == "shares"


# --- status and verdict ---------------------------------------------------------------------


def observed(**overrides: Any) -> report.Observed:
    fields: dict[str, Any] = {
        "adapters": [
            {"type": "nfs", "enabled": True, "running": True, "port": 12049, "config": {}},
            {"type": "smb", "enabled": True, "running": True, "port": 12445},
        ],
        "stores": {
            "metadata": [
                {
                    "id": "m-uuid",
                    "name": "meta",
                    "type": "postgres",
                    "config": {"host": "db", "password": "********"},
                    "status": {"status": "healthy"},
                }
            ],
            "local": [{"id": "l-uuid", "name": "blocks", "type": "fs", "config": {"path": "/x"}}],
            "remote": [],
        },
        "shares": [reported_share()],
        "users": [{"username": "bob"}, {"username": "admin"}],
        "groups": [{"name": "users"}, {"name": "admins"}],
    }
    fields.update(overrides)
    return report.Observed(**fields)


def test_status_reports_state_names_and_digests_never_configs() -> None:
    managed = {"shares": {"/engineering"}, "users": {"bob"}, "metadata": set()}
    status = report.server_status(observed(), managed, {"user/bob": "0123456789abcdef"})
    assert status["adapters"] == {
        "nfs": {"enabled": True, "running": True, "port": 12049},
        "smb": {"enabled": True, "running": True, "port": 12445},
    }
    settings = {
        "smb": {"signing": "required", "min_dialect": "SMB3.0", "max_dialect": "SMB3.1.1"},
        "nfs": {**NFS_DEFAULTS, "lease_time": 30},
    }
    encrypted = [reported_share(encrypt_data=True)]
    found = report.server_status(observed(settings=settings, shares=encrypted), {}, {})
    assert found["adapters"] == {
        "nfs": {
            "enabled": True,
            "running": True,
            "port": 12049,
            "leaseSeconds": 30,
            "gracePeriodSeconds": 90,
        },
        "smb": {
            "enabled": True,
            "running": True,
            "port": 12445,
            "signing": "required",
            "minDialect": "3.0",
            "maxDialect": "3.1.1",
        },
    }
    assert found["shares"][0]["encryptData"] is True
    assert status["shares"] == [
        {
            "name": "/engineering",
            "enabled": True,
            "readOnly": False,
            "health": "healthy",
            "metadataStore": "meta",
            "localBlockStore": "blocks",
        }
    ]
    assert status["metadataStores"] == [{"name": "meta", "type": "postgres", "health": "healthy"}]
    assert status["localBlockStores"] == [{"name": "blocks", "type": "fs", "health": "unknown"}]
    assert (status["users"], status["groups"]) == (["admin", "bob"], ["admins", "users"])
    assert status["managed"] == {"shares": ["/engineering"], "users": ["bob"]}
    assert status["applied"] == {"user/bob": "0123456789abcdef"}
    text = json.dumps(status)
    assert "********" not in text and "config" not in text and "/x" not in text


def test_status_reports_a_snapshot_policy_but_not_when_it_ran() -> None:
    policy = {
        "share": "/engineering",
        "enabled": True,
        "interval": "6h0m0s",
        "keep_last": 28,
        "name_prefix": "eng",
        "last_run_at": "2026-12-08T01:00:00Z",
        "created_at": "2026-12-07T01:00:00Z",
        "updated_at": "2026-12-07T01:00:00Z",
    }
    found = observed(snapshot_policies={"/engineering": policy})
    (share,) = report.server_status(found, {}, {})["shares"]
    assert share["snapshots"] == {
        "enabled": True,
        "interval": "6h0m0s",
        "keepLast": 28,
        "namePrefix": "eng",
    }
    (share,) = report.server_status(observed(), {}, {})["shares"]
    assert "snapshots" not in share


def test_status_reports_quotas_but_not_usage_or_grace_timers() -> None:
    found = observed(
        shares=[reported_share(quota_bytes="1.50TiB", used_bytes=7, usage_percent=0.1)],
        users=[{"username": "alice", "uid": 1000}, {"username": "admin", "uid": 0}],
        groups=[{"name": "engineering", "gid": 2000}, {"name": "users", "gid": 1000}],
        quotas={"/engineering": REPORTED_QUOTAS},
    )
    (share,) = report.server_status(found, {}, {})["shares"]
    assert share["quota"] == "1.50TiB"
    assert share["quotas"] == [
        {"scope": "default-user", "hardBytes": "10.00GiB", "hardFiles": 100000},
        {"scope": "group", "id": 1000, "name": "users", "softFiles": 5000, "graceSeconds": 86400},
        {"scope": "group", "id": 2000, "name": "engineering", "hardBytes": "500.00GiB"},
        {
            "scope": "user",
            "id": 1000,
            "name": "alice",
            "hardBytes": "46.57GiB",
            "softBytes": "37.25GiB",
            "hardFiles": 1000000,
            "softFiles": 900000,
            "graceSeconds": 604800,
        },
    ]
    unknown = observed(quotas={"/engineering": [{**REPORTED_QUOTAS[2], "identity_id": 7}]})
    (share,) = report.server_status(unknown, {}, {})["shares"]
    assert share["quotas"] == [{"scope": "group", "id": 7, "hardBytes": "500.00GiB"}]
    (share,) = report.server_status(observed(), {}, {})["shares"]
    assert "quota" not in share and "quotas" not in share


def test_verdict() -> None:
    outcome, recheck = report.verdict(TEAMS_STATE, [])
    assert (outcome.status, outcome.reason, recheck) == ("True", "Converged", 300.0)
    assert "2 stores, 2 shares, 2 users and 2 groups" in outcome.message
    assert "NFS on port 12049, SMB on port 12445" in outcome.message
    issues = [
        report.Issue("StoreRejected", "metadata store meta: DittoFS answered 400: bad path"),
        report.Issue("AdapterNotRunning", "smb ...", report.NOT_RUNNING_RECHECK),
    ]
    outcome, recheck = report.verdict(TEAMS_STATE, issues)
    assert (outcome.status, outcome.reason, recheck) == ("False", "StoreRejected", 30.0)
    assert "bad path" in outcome.message and "smb ..." in outcome.message


def test_an_enabled_adapter_that_does_not_run_is_an_issue() -> None:
    assert report.not_running(TEAMS_STATE, observed()) == []
    down = observed(adapters=[{"type": "nfs", "enabled": True, "running": True, "port": 12049}])
    (issue,) = report.not_running(TEAMS_STATE, down)
    assert issue.reason == "AdapterNotRunning" and "smb adapter" in issue.message


def test_a_store_reported_unhealthy_is_an_issue_with_its_message_scrubbed() -> None:
    assert report.unhealthy_stores(TEAMS_STATE, observed(), []) == []
    sick = {
        "id": "m-uuid",
        "name": "meta",
        "type": "postgres",
        "status": {"status": "unhealthy", "message": "dial db:5432 as s3cr3t-pw: refused"},
    }
    stores = {"metadata": [sick], "local": [], "remote": []}
    (issue,) = report.unhealthy_stores(TEAMS_STATE, observed(stores=stores), ["s3cr3t-pw"])
    assert issue.reason == "StoreUnhealthy"
    assert (
        issue.message
        == "metadata store meta is unhealthy on the server: dial db:5432 as ***: refused"
    )
    assert issue.recheck_after == report.NOT_RUNNING_RECHECK
    degraded = {**sick, "status": {"status": "degraded"}}
    stores = {"metadata": [degraded], "local": [], "remote": []}
    assert report.unhealthy_stores(TEAMS_STATE, observed(stores=stores), []) == []


def test_inputs_digest_follows_what_a_pass_depends_on() -> None:
    obj = server(Available=("True", "Running", 3))
    values = {("s", "k"): "v"}
    base = memory.inputs_digest(obj, "http://a:8080", values, None, None)
    assert base == memory.inputs_digest(copy.deepcopy(obj), "http://a:8080", values, None, None)
    assert base != memory.inputs_digest(obj, "http://b:8080", values, None, None)
    assert base != memory.inputs_digest(obj, "http://a:8080", {("s", "k"): "w"}, None, None)
    restarted = copy.deepcopy(obj)
    restarted["status"]["conditions"][0]["lastTransitionTime"] = "2026-02-02T00:00:00Z"
    assert base != memory.inputs_digest(restarted, "http://a:8080", values, None, None)
    edited = {**obj, "spec": {"replicas": 1}}
    assert base != memory.inputs_digest(edited, "http://a:8080", values, None, None)
    assert base != memory.inputs_digest(obj, "http://a:8080", values, None, "renewed cert")


# --- identity -------------------------------------------------------------------------------

LDAP_SPEC = spec_of(manifest(VALID / "identity-ldap.yaml"))
LDAP_STATE = model.desired("directory", LDAP_SPEC, values_for("directory", LDAP_SPEC))


def ldap_reported(**overrides: Any) -> Obj:
    """GET /identity-providers/ldap/config as DittoFS answers it for LDAP_STATE's PUT."""
    assert LDAP_STATE.ldap is not None
    found = copy.deepcopy(dict(LDAP_STATE.ldap.settings))
    found.update({"timeout": "5s", "bind_password": "********", **overrides})
    return found


def test_ldap_of_the_spec_names_every_field_the_api_has() -> None:
    ldap = LDAP_STATE.ldap
    assert ldap is not None and ldap.bind_password == "ldap-bind:password:value"
    assert "ldap-bind:password:value" not in repr(ldap)
    assert dict(ldap.settings) == {
        "enabled": True,
        "url": "ldaps://dc1.example.com:636",
        "start_tls": False,
        "allow_plaintext": False,
        "base_dn": "DC=example,DC=com",
        "bind_dn": "CN=dittofs,OU=Service Accounts,DC=example,DC=com",
        "user_attr": "sAMAccountName",
        "realm": "EXAMPLE.COM",
        "idmap": "rfc2307",
        "nested_groups": True,
        "timeout": "5s",
        "max_group_results": 200,
        "tls": {
            "ca_cert_file": "/ldap-ca/ca.crt",
            "client_cert_file": "",
            "client_key_file": "",
            "insecure_skip_verify": False,
            "min_version": "1.3",
        },
    }
    assert ldap.body("secret")["bind_password"] == "secret"
    assert ("ldap-bind", "password") in {
        (ref.name, ref.key) for ref in credentials.secret_keys("directory", LDAP_SPEC)
    }
    assert "ldap-bind:password:value" in LDAP_STATE.credentials()
    assert LDAP_STATE.names()["identity"] == {"ldap"}
    assert TEAMS_STATE.ldap is None and TEAMS_STATE.names()["identity"] == set()


def test_ldap_drift_compares_settings_and_the_bind_password_by_digest() -> None:
    ldap = LDAP_STATE.ldap
    assert ldap is not None
    current = credentials.digest("key-1", ldap.item, [ldap.bind_password])
    assert payloads.ldap_drift(ldap, ldap_reported(), current, current) is None
    # Go writes durations its own way: 5s is 5s, 1m is 1m0s.
    assert payloads.ldap_drift(ldap, ldap_reported(timeout="5.0s"), current, current) is None
    assert payloads.ldap_drift(ldap, None, current, current) == "not configured"
    assert payloads.ldap_drift(ldap, ldap_reported(), None, current) == "bind password"
    assert payloads.ldap_drift(ldap, ldap_reported(bind_password=""), current, current) == (
        "bind password"
    )
    changed = ldap_reported(enabled=False, base_dn="DC=other", timeout="1m0s")
    assert payloads.ldap_drift(ldap, changed, current, current) == (
        "settings base_dn, enabled, timeout"
    )
    tls = ldap_reported()
    tls["tls"]["insecure_skip_verify"] = True
    assert payloads.ldap_drift(ldap, tls, current, current) == "settings tls"


def test_ldap_removed_from_the_spec_is_disabled_with_its_settings_kept() -> None:
    body = payloads.disable_body(ldap_reported())
    assert body is not None and body["enabled"] is False
    assert body["bind_password"] == "********"  # DittoFS keeps the stored one
    assert body["url"] == "ldaps://dc1.example.com:636"
    assert payloads.disable_body(ldap_reported(enabled=False)) is None


def test_status_reports_the_directory_never_its_password() -> None:
    status = report.server_status(observed(ldap=ldap_reported()), {"identity": {"ldap"}}, {})
    assert status["identity"] == {
        "ldap": {
            "enabled": True,
            "url": "ldaps://dc1.example.com:636",
            "baseDN": "DC=example,DC=com",
            "bindDN": "CN=dittofs,OU=Service Accounts,DC=example,DC=com",
            "userAttribute": "sAMAccountName",
            "idmap": "rfc2307",
            "startTLS": False,
            "nestedGroups": True,
            "realm": "EXAMPLE.COM",
        }
    }
    assert status["managed"] == {"identityProviders": ["ldap"]}
    assert "password" not in json.dumps(status) and "****" not in json.dumps(status)
    assert "identity" not in report.server_status(observed(), {}, {})
    outcome, _ = report.verdict(LDAP_STATE, [])
    assert outcome.message.endswith("; LDAP directory ldaps://dc1.example.com:636")


KERBEROS_SPEC = spec_of(manifest(VALID / "identity-kerberos.yaml"))
KERBEROS_STATE = model.desired("k", KERBEROS_SPEC, values_for("k", KERBEROS_SPEC))


def test_kerberos_of_the_spec_points_at_the_mounted_files() -> None:
    kerberos = KERBEROS_STATE.kerberos
    assert kerberos is not None and KERBEROS_STATE.ldap is None
    assert dict(kerberos.settings) == {
        "enabled": True,
        "keytab_path": "/kerberos/krb5.keytab",
        "service_principal": "nfs/files.example.com@EXAMPLE.COM",
        "realm": "EXAMPLE.COM",  # from the principal
        "netbios_domain": "EXAMPLE",
        "dns_domain": "example.com",
        "krb5_conf": "/kerberos-conf/krb5.conf",
        "max_clock_skew": "2m",
        "context_ttl": "",
        "max_contexts": 0,
    }
    assert KERBEROS_STATE.names()["identity"] == {"kerberos"}
    # The keytab is a file, never a credential the operator sends.
    assert KERBEROS_STATE.credentials() == []


def test_kerberos_drift_and_body_keep_the_machine_account_of_the_server() -> None:
    kerberos = KERBEROS_STATE.kerberos
    assert kerberos is not None
    machine = {"enabled": True, "account_name": "FILES$", "secret": "********"}
    reported = {**kerberos.settings, "max_clock_skew": "2m0s", "machine_account": machine}
    assert payloads.kerberos_drift(kerberos, reported) is None
    assert payloads.kerberos_drift(kerberos, None) == "not configured"
    moved = {**reported, "keytab_path": "/etc/krb5.keytab", "enabled": False}
    assert payloads.kerberos_drift(kerberos, moved) == "settings enabled, keytab_path"
    body = payloads.kerberos_body(kerberos, reported)
    assert body["machine_account"] == machine  # its redacted secret keeps the stored one
    assert body["service_principal"] == "nfs/files.example.com@EXAMPLE.COM"
    assert payloads.kerberos_body(kerberos, None)["machine_account"] == {}


def test_a_kerberos_change_moves_the_revision_the_pod_is_started_for() -> None:
    stores = KERBEROS_STATE.stores
    plain = credentials.stores_revision("key", stores)
    assert credentials.stores_revision("key", stores, kerberos=None) == plain  # as without
    with_kerberos = credentials.stores_revision("key", stores, kerberos=KERBEROS_STATE.kerberos)
    assert with_kerberos != plain
    assert KERBEROS_STATE.kerberos is not None
    other = model.Kerberos({**KERBEROS_STATE.kerberos.settings, "realm": "OTHER.COM"})
    assert credentials.stores_revision("key", stores, kerberos=other) != with_kerberos


def test_status_reports_kerberos_as_the_server_has_it() -> None:
    assert KERBEROS_STATE.kerberos is not None
    reported = {**KERBEROS_STATE.kerberos.settings, "machine_account": {"secret": "********"}}
    status = report.server_status(observed(kerberos=reported), {"identity": {"kerberos"}}, {})
    assert status["identity"] == {
        "kerberos": {
            "enabled": True,
            "servicePrincipal": "nfs/files.example.com@EXAMPLE.COM",
            "realm": "EXAMPLE.COM",
            "keytab": "/kerberos/krb5.keytab",
            "krb5Conf": "/kerberos-conf/krb5.conf",
        }
    }
    assert "****" not in json.dumps(status)
    outcome, _ = report.verdict(KERBEROS_STATE, [])
    assert outcome.message.endswith("; Kerberos for nfs/files.example.com@EXAMPLE.COM")
