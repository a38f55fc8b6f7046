"""What a DittoServer declares of DittoFS's own state, as a model built from the spec and
the Secret values it names (pure: no I/O).

Stores, shares, adapters, users and groups live in DittoFS's control-plane database, not in its
config file, and only its REST API changes them (payloads.py says how).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import attrs

from dittofs_controller.api import v1alpha1
from dittofs_controller.operator import names
from dittofs_controller.operator.children import Obj, quantity_value
from dittofs_controller.operator.config import build as config
from dittofs_controller.operator.problems import Problem

Spec = v1alpha1.DittoServerSpec
StoreKind = Literal["metadata", "local", "remote"]
SecretValues = Mapping[tuple[str, str], str]  # (Secret name, key) -> value

STORE_KINDS: tuple[StoreKind, ...] = ("metadata", "local", "remote")
STORE_PATHS: dict[StoreKind, str] = {
    "metadata": "/store/metadata",
    "local": "/store/block/local",
    "remote": "/store/block/remote",
}
STORE_WHAT: dict[StoreKind, str] = {
    "metadata": "metadata store",
    "local": "local block store",
    "remote": "remote block store",
}


def is_secret_key(key: str) -> bool:
    """DittoFS's own rule for config values it redacts on read."""
    lowered = key.lower()
    return "secret" in lowered or "password" in lowered or lowered.endswith("_key")


POSTGRES_FIELDS = ("host", "port", "user", "password")


def postgres_source(server_name: str, spec: Spec) -> tuple[str, dict[str, str], str]:
    """Where postgres metadata stores connect: the Secret, its keys per field, the sslmode."""
    postgres = spec.postgres
    if postgres is not None and postgres.external is not None:
        ext = postgres.external
        keys = {
            "host": ext.host_key,
            "port": ext.port_key,
            "user": ext.user_key,
            "password": ext.password_key,
        }
        return ext.secret_name, keys, ext.ssl_mode
    if postgres is None or postgres.percona is None:
        raise Problem(
            "PostgresNotConfigured", "metadata stores of type postgres need spec.postgres"
        )
    secret = names.percona_user_secret(names.percona_cluster(server_name, spec))
    keys = {field: config.PERCONA_SECRET_KEYS[field.upper()] for field in POSTGRES_FIELDS}
    return secret, keys, config.PERCONA_SSLMODE


@attrs.frozen
class Adapter:
    type: str
    enabled: bool
    port: int
    # The adapter's config object, or None to leave the server's alone (SMB's).
    config: Mapping[str, Any] | None = attrs.field(default=None, eq=False)

    @property
    def tls(self) -> Any:
        return (self.config or {}).get("tls")


@attrs.frozen
class Portmapper:
    enabled: bool
    port: int


@attrs.frozen
class NFSSettings:
    """The NFS adapter's settings the spec declares (/adapters/nfs/settings)."""

    portmapper: Portmapper
    lease_seconds: int
    grace_period_seconds: int


# The spec's SMB dialects as DittoFS names them (it calls 2.0.2 "SMB2.0").
SMB_DIALECT_NAMES = {
    "2.0.2": "SMB2.0",
    "2.1": "SMB2.1",
    "3.0": "SMB3.0",
    "3.0.2": "SMB3.0.2",
    "3.1.1": "SMB3.1.1",
}


@attrs.frozen
class SMBSettings:
    """The SMB adapter's settings the spec declares (/adapters/smb/settings), with DittoFS's
    values: `signing` is required or enabled, dialects are named as DittoFS names them."""

    signing: str
    min_dialect: str
    max_dialect: str

    @property
    def guest(self) -> bool:
        """DittoFS 0.29 admits guests exactly when signing is not required."""
        return self.signing != "required"


@attrs.frozen
class Group:
    name: str
    gid: int | None


@attrs.frozen
class User:
    name: str
    password: str = attrs.field(repr=False)
    uid: int | None
    gid: int | None
    groups: tuple[str, ...]

    @property
    def item(self) -> str:
        return f"user/{self.name}"


@attrs.frozen
class Store:
    kind: StoreKind
    name: str
    type: str  # the API's type name
    config: Mapping[str, Any] = attrs.field(repr=False)

    @property
    def item(self) -> str:
        return f"{self.kind}/{self.name}"

    @property
    def path(self) -> str:
        return f"{STORE_PATHS[self.kind]}/{self.name}"

    @property
    def what(self) -> str:
        return f"{STORE_WHAT[self.kind]} {self.name}"

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(str(self.config[key]) for key in sorted(self.config) if is_secret_key(key))

    def create_body(self) -> Obj:
        return {"name": self.name, "type": self.type, "config": self.config_text()}

    def update_body(self) -> Obj:
        return {"config": self.config_text()}

    def config_text(self) -> str:
        return json.dumps(dict(self.config), sort_keys=True, separators=(",", ":"))


PermissionKey = tuple[str, str]  # ("user" | "group", name)

_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|us|µs|ns|h|m|s)")
_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
INTERVAL_SHORTHANDS = {"@hourly": 3600.0, "@daily": 86400.0, "@weekly": 604800.0}


def duration_seconds(text: str) -> float:
    """Seconds of a Go duration as DittoFS writes and reads them ("1h30m0s", "90s"), or of an
    interval shorthand; 0 for "" and "0" (DittoFS' "no bound")."""
    text = text.strip().lower()
    if text in INTERVAL_SHORTHANDS:
        return INTERVAL_SHORTHANDS[text]
    return sum(float(value) * _DURATION_UNITS[unit] for value, unit in _DURATION_PART.findall(text))


@attrs.frozen
class SnapshotPolicy:
    """A share's snapshot policy; `interval` and `ttl` as written in the spec."""

    interval: str
    keep_last: int
    ttl: str
    name_prefix: str
    enabled: bool


@attrs.frozen
class QuotaLimits:
    """One quota's limits as DittoFS holds them; 0 is "no limit"."""

    hard_bytes: int = 0
    soft_bytes: int = 0
    hard_files: int = 0
    soft_files: int = 0
    grace_seconds: int = 0


QuotaScope = Literal["default-user", "user", "group"]
QuotaKey = tuple[QuotaScope, int | None]  # (scope, uid or gid; None for default-user)


@attrs.frozen
class Quota:
    """A per-identity quota of a share: DittoFS keys it by uid or gid, the spec by name."""

    scope: QuotaScope
    name: str | None  # the spec's user or group; None for default-user
    identity: int | None
    limits: QuotaLimits

    @property
    def key(self) -> QuotaKey:
        return self.scope, self.identity

    @property
    def what(self) -> str:
        return quota_what(self.key, self.name)


def quota_what(key: QuotaKey, name: str | None = None) -> str:
    """A quota in messages: "quota of user alice (uid 1001)", "quota of gid 2000"."""
    scope, identity = key
    if scope == "default-user":
        return "default user quota"
    id_kind = "uid" if scope == "user" else "gid"
    return (
        f"quota of {scope} {name} ({id_kind} {identity})"
        if name
        else f"quota of {id_kind} {identity}"
    )


@attrs.frozen
class Share:
    name: str
    metadata_store: str
    local_block_store: str
    remote_block_store: str | None
    read_only: bool
    enabled: bool
    default_permission: str
    owner: str | None
    permissions: Mapping[PermissionKey, str]
    squash: str
    anonymous_uid: int | None
    anonymous_gid: int | None
    snapshots: SnapshotPolicy | None = None
    quota_bytes: int = 0  # the share-wide limit; 0 is none
    quotas: tuple[Quota, ...] = ()
    encrypted: bool = False  # SMB clients must encrypt (SMB2_SHAREFLAG_ENCRYPT_DATA)
    # The share's other settings under DittoFS' names: always declared...
    options: Mapping[str, Any] = attrs.field(factory=dict)
    # ...and the sizes and durations declared only when the spec sets them.
    sized: Mapping[str, str] = attrs.field(factory=dict)
    nfs_options: Mapping[str, Any] = attrs.field(factory=dict)  # beside squash and anon ids

    @property
    def path(self) -> str:
        """In URLs a share is named without its leading slash."""
        return f"/shares/{self.name.lstrip('/')}"

    @property
    def stores(self) -> list[tuple[StoreKind, str]]:
        found: list[tuple[StoreKind, str]] = [
            ("metadata", self.metadata_store),
            ("local", self.local_block_store),
        ]
        if self.remote_block_store:
            found.append(("remote", self.remote_block_store))
        return found


@attrs.frozen
class LDAP:
    """The LDAP directory DittoFS resolves domain identities in, as its API names the fields
    (the bind password aside: it is compared by digest, never read back)."""

    settings: Mapping[str, Any]
    bind_password: str = attrs.field(repr=False)

    item = "identity/ldap"
    path = "/identity-providers/ldap/config"

    def body(self, bind_password: str) -> Obj:
        return {**self.settings, "bind_password": bind_password}


@attrs.frozen
class Kerberos:
    """DittoFS' Kerberos settings as its API names them (no secret: the keytab is a file)."""

    settings: Mapping[str, Any]

    item = "identity/kerberos"
    path = "/identity-providers/kerberos/config"


@attrs.frozen
class Netgroup:
    name: str
    members: frozenset[tuple[str, str]]  # (type, value) as DittoFS names them


def netgroup_member(value: str) -> tuple[str, str]:
    """DittoFS' member type of a spec member: ip, cidr or hostname."""
    if "/" in value:
        return "cidr", value
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return "hostname", value
    return "ip", value


@attrs.frozen
class Desired:
    adapters: tuple[Adapter, ...]
    nfs: NFSSettings
    smb: SMBSettings
    groups: tuple[Group, ...]
    users: tuple[User, ...]
    netgroups: tuple[Netgroup, ...]
    stores: tuple[Store, ...]
    shares: tuple[Share, ...]
    ldap: LDAP | None = None
    kerberos: Kerberos | None = None

    def names(self) -> dict[str, set[str]]:
        """Declared names per category of status.server.managed."""
        found: dict[str, set[str]] = {
            "shares": {share.name for share in self.shares},
            "users": {user.name for user in self.users},
            "groups": {group.name for group in self.groups},
            "identity": {
                name
                for name, declared in (("ldap", self.ldap), ("kerberos", self.kerberos))
                if declared is not None
            },
            "netgroups": {netgroup.name for netgroup in self.netgroups},
        }
        for kind in STORE_KINDS:
            found[kind] = {store.name for store in self.stores if store.kind == kind}
        return found

    def credentials(self) -> list[str]:
        """Every credential the desired state carries (to keep them out of messages)."""
        return (
            [user.password for user in self.users]
            + [secret for store in self.stores for secret in store.secrets]
            + ([self.ldap.bind_password] if self.ldap is not None else [])
        )


def desired(server_name: str, spec: Spec, values: SecretValues) -> Desired:
    """What the server should hold, given the values of `secret_keys`."""
    nfs, smb = spec.adapters.nfs, spec.adapters.smb
    return Desired(
        adapters=(
            Adapter("nfs", nfs.enabled, nfs.port, _nfs_config(nfs.tls)),
            Adapter("smb", smb.enabled, smb.port),
        ),
        nfs=NFSSettings(
            Portmapper(nfs.portmapper.enabled, nfs.portmapper.port),
            nfs.lease_seconds,
            nfs.grace_period_seconds,
        ),
        smb=SMBSettings(
            signing=smb.signing or ("enabled" if smb.guest else "required"),
            min_dialect=SMB_DIALECT_NAMES[smb.min_dialect],
            max_dialect=SMB_DIALECT_NAMES[smb.max_dialect],
        ),
        groups=tuple(Group(group.name, group.gid) for group in spec.groups),
        netgroups=tuple(
            Netgroup(netgroup.name, frozenset(map(netgroup_member, netgroup.members)))
            for netgroup in nfs.netgroups
        ),
        users=tuple(
            User(
                user.name,
                values[(user.password_secret_ref.name, user.password_secret_ref.key)],
                user.uid,
                user.gid,
                tuple(sorted(user.groups)),
            )
            for user in spec.users
        ),
        stores=tuple(_stores(server_name, spec, values)),
        shares=tuple(_share(share, spec) for share in spec.shares),
        ldap=_ldap(spec, values),
        kerberos=_kerberos(spec),
    )


def _nfs_config(tls: v1alpha1.NFSTLS | None) -> Obj:
    """The NFS adapter's config: TLS from the Secret the workload mounts, or none."""
    if tls is None:
        return {}
    directory = names.NFS_TLS_DIR
    return {
        "tls": {
            "cert_file": f"{directory}/{config.TLS_CERT_KEY}",
            "key_file": f"{directory}/{config.TLS_KEY_KEY}",
            "mode": tls.mode,
        }
    }


def _kerberos(spec: Spec) -> Kerberos | None:
    kerberos = spec.identity.kerberos
    if kerberos is None:
        return None
    settings: Obj = {
        "enabled": kerberos.enabled,
        "keytab_path": config.KEYTAB_PATH,
        "service_principal": kerberos.service_principal,
        "realm": kerberos.realm or kerberos.service_principal.rsplit("@", 1)[1],
        "netbios_domain": kerberos.netbios_domain or "",
        "dns_domain": kerberos.dns_domain or "",
        "krb5_conf": config.KRB5_CONF_PATH,
        "max_clock_skew": kerberos.max_clock_skew or "",
        "context_ttl": kerberos.context_ttl or "",
        "max_contexts": kerberos.max_contexts or 0,
    }
    return Kerberos(settings)


def _ldap(spec: Spec, values: SecretValues) -> LDAP | None:
    ldap = spec.identity.ldap
    if ldap is None:
        return None
    tls = ldap.tls or v1alpha1.LDAPTLS()
    password = ldap.bind_password_secret_ref
    settings: Obj = {
        "enabled": True,
        "url": ldap.url,
        "start_tls": ldap.start_tls,
        "allow_plaintext": ldap.allow_plaintext,
        "base_dn": ldap.base_dn,
        "bind_dn": ldap.bind_dn,
        "user_attr": ldap.user_attribute,
        "realm": ldap.realm or "",
        "idmap": ldap.idmap,
        "nested_groups": ldap.nested_groups,
        "timeout": ldap.timeout,
        "max_group_results": ldap.max_group_results,
        "tls": {
            "ca_cert_file": config.ldap_ca_file(spec) or "",
            "client_cert_file": "",
            "client_key_file": "",
            "insecure_skip_verify": tls.insecure_skip_verify,
            "min_version": tls.min_version,
        },
    }
    return LDAP(settings, values[(password.name, password.key)])


def _stores(server_name: str, spec: Spec, values: SecretValues) -> Iterable[Store]:
    for meta in spec.metadata_stores:
        if meta.type == "memory":
            yield Store("metadata", meta.name, "memory", {})
        elif meta.type == "badger":
            badger: Obj = {"path": names.metadata_dir(meta.name)}
            if meta.badger is not None and meta.badger.block_cache_mb is not None:
                badger["block_cache_mb"] = meta.badger.block_cache_mb
            if meta.badger is not None and meta.badger.index_cache_mb is not None:
                badger["index_cache_mb"] = meta.badger.index_cache_mb
            yield Store("metadata", meta.name, "badger", badger)
        else:
            yield Store(
                "metadata", meta.name, "postgres", _postgres(server_name, spec, meta, values)
            )
    for local in spec.local_block_stores:
        if local.type == "memory":
            yield Store("local", local.name, "memory", {})
        else:
            yield Store("local", local.name, "fs", {"path": names.blocks_dir(local.name)})
    for remote in spec.remote_block_stores:
        if remote.s3 is None:
            yield Store("remote", remote.name, "memory", _block_codecs(remote))
            continue
        s3 = remote.s3
        creds = s3.credentials_secret_ref
        s3_config: Obj = {
            "bucket": s3.bucket,
            "region": s3.region,
            "endpoint": s3.endpoint,
            "force_path_style": s3.force_path_style,
            "allow_private_endpoint": s3.allow_private_endpoint,
            "access_key_id": values[(creds.name, creds.access_key_id_key)],
            "secret_access_key": values[(creds.name, creds.secret_access_key_key)],
        }
        if s3.prefix:
            s3_config["prefix"] = s3.prefix
        yield Store("remote", remote.name, "s3", {**s3_config, **_block_codecs(remote)})


def _block_codecs(remote: v1alpha1.RemoteBlockStore) -> Obj:
    """How blocks are encoded before they are uploaded: compressed, then encrypted."""
    found: Obj = {}
    if remote.compression != "none":
        found["compression"] = {"algo": remote.compression}
    if remote.encryption is not None:
        key_file = f"{names.ENCRYPTION_DIR}/{names.ENCRYPTION_KEY_FILE_KEY}"
        found["encryption"] = {
            "aead": remote.encryption.aead,
            "key": {"kind": "local", "file": key_file},
        }
    return found


def _postgres(
    server_name: str, spec: Spec, store: v1alpha1.MetadataStore, values: SecretValues
) -> Obj:
    secret, keys, sslmode = postgres_source(server_name, spec)
    found = {field: values[(secret, keys[field])] for field in POSTGRES_FIELDS}
    try:
        port = int(found["port"])
    except ValueError:
        raise Problem(
            "SecretValueInvalid",
            f"Secret {secret!r} key {keys['port']!r} (PostgreSQL port) is not a number",
        ) from None
    return {
        "host": found["host"],
        "port": port,
        "database": names.metadata_database(store),
        "user": found["user"],
        "password": found["password"],
        "sslmode": sslmode,
    }


def _share(share: v1alpha1.Share, spec: Spec) -> Share:
    permissions: dict[PermissionKey, str] = {}
    for permission in share.permissions:
        if permission.user is not None:
            permissions[("user", permission.user)] = permission.level
        elif permission.group is not None:
            permissions[("group", permission.group)] = permission.level
    return Share(
        name=share.name,
        metadata_store=share.metadata_store,
        local_block_store=share.local_block_store,
        remote_block_store=share.remote_block_store,
        read_only=share.read_only,
        enabled=share.enabled,
        default_permission=share.default_permission,
        owner=share.owner,
        permissions=permissions,
        squash=share.nfs.squash,
        anonymous_uid=share.nfs.anon_uid,
        anonymous_gid=share.nfs.anon_gid,
        snapshots=_snapshot_policy(share.snapshots),
        quota_bytes=byte_count(share.quota),
        quotas=_quotas(share.quotas, spec),
        encrypted=share.smb.encrypt_data or spec.adapters.smb.encryption == "required",
        options=_share_options(share),
        sized=_share_sizes(share),
        nfs_options={"netgroup": share.nfs.netgroup or ""},
    )


def _share_options(share: v1alpha1.Share) -> dict[str, Any]:
    smb, trash, cache = share.smb, share.trash, share.local_cache
    return {
        "access_based_enumeration": smb.access_based_enumeration,
        "change_notify_disabled": not smb.change_notify,
        "streams_disabled": not smb.alternate_data_streams,
        "continuous_availability": smb.continuous_availability,
        "allow_mfsymlink": smb.mf_symlinks,
        "retention_policy": cache.retention,
        "trash_enabled": trash is not None and trash.enabled,
        "trash_retention_days": (trash.retention_days or 0) if trash else 0,
        "trash_restrict_to_admin": trash is not None and trash.restrict_to_admin,
        "trash_max_bytes": byte_count(trash.max_size) if trash else 0,
        "trash_exclude_patterns": list(trash.exclude_patterns) if trash else [],
    }


def _share_sizes(share: v1alpha1.Share) -> dict[str, str]:
    cache = share.local_cache
    found = {"retention_ttl": cache.ttl} if cache.ttl else {}
    if cache.size:
        found["local_store_size"] = str(byte_count(cache.size))
    if cache.read_buffer_size:
        found["read_buffer_size"] = str(byte_count(cache.read_buffer_size))
    return found


def _snapshot_policy(policy: v1alpha1.SnapshotPolicy | None) -> SnapshotPolicy | None:
    if policy is None:
        return None
    return SnapshotPolicy(
        interval=policy.interval,
        keep_last=policy.keep_last or 0,
        ttl=policy.ttl or "",
        name_prefix=policy.name_prefix or "",
        enabled=policy.enabled,
    )


def byte_count(quantity: str | None) -> int:
    """The bytes of a size the API admitted (a whole number, see v1alpha1.BYTE_QUANTITY); 0 for
    none."""
    value = quantity_value(quantity) if quantity else None
    return int(value) if value is not None else 0


def _quota_limits(limits: v1alpha1.QuotaLimits) -> QuotaLimits:
    return QuotaLimits(
        hard_bytes=byte_count(limits.hard_bytes),
        soft_bytes=byte_count(limits.soft_bytes),
        hard_files=limits.hard_files or 0,
        soft_files=limits.soft_files or 0,
        grace_seconds=int(duration_seconds(limits.grace_period or "")),
    )


def _quotas(quotas: v1alpha1.ShareQuotas | None, spec: Spec) -> tuple[Quota, ...]:
    """The share's quotas keyed as DittoFS keys them: users by the uid and groups by the gid
    the spec gives them (the API admits only users and groups that have one), built-in groups
    by the gid DittoFS gives them."""
    if quotas is None:
        return ()
    uids = {user.name: user.uid for user in spec.users}
    gids = {**v1alpha1.BUILTIN_GROUP_GIDS, **{group.name: group.gid for group in spec.groups}}
    found: list[Quota] = []
    if quotas.default_user is not None:
        found.append(Quota("default-user", None, None, _quota_limits(quotas.default_user)))
    found.extend(
        Quota("user", user.name, uids.get(user.name), _quota_limits(user)) for user in quotas.users
    )
    found.extend(
        Quota("group", group.name, gids.get(group.name), _quota_limits(group))
        for group in quotas.groups
    )
    return tuple(found)
