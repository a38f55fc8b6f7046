"""The REST calls that make the server match the model: what differs between a declared object
and the server's, as request bodies (pure: no I/O; the reconciler sends them).

Payloads follow DittoFS v0.29.0's handlers (internal/controlplane/api/handlers):
- Store configs are sent as a JSON *string* and read back as a JSON *object*, with every value
  whose key contains "secret" or "password" or ends in "_key" shown as `********`: credentials
  are compared through a keyed digest of the values last sent (`applied`), never read back.
- Block store types: the API calls a filesystem store "fs"; `path` must be absolute.
- A share's stores are named on POST (`metadata_store_id`, `local_block_store`,
  `remote_block_store`) but reported by UUID (`*_store_id`), and PUT takes
  `local_block_store_id`/`remote_block_store_id` (a name or UUID; "" clears the remote one).
  There is no way to change a share's owner after creation: the share is deleted and created
  again, which keeps its files (DELETE /shares removes the export, its permissions and
  options, never the files in its stores: a share created again on the same metadata store
  finds them, with the new owner applied to its root).
- Share NFS options (squash, anonymous uid/gid) live at /shares/{name}/adapters/nfs/config.
- Users: no UID is ever assigned by DittoFS; an owner without one is refused.
- A share's snapshot policy (/shares/{name}/snapshot-policy) is replaced whole by PUT and read
  back with its durations as Go writes them ("30m0s" for "30m", "24h0m0s" for "@daily"), so
  durations are compared in seconds.
- Byte limits (a share's `quota_bytes`, a quota's `limit_bytes`/`soft_bytes`) are sent as
  plain byte counts but read back rounded, the way DittoFS prints sizes ("976.56KiB" for
  1000000), so they are compared in that form: a change by hand within the rounding goes
  unnoticed.
- Per-identity quotas live at /shares/{name}/quotas/{scope}/{uid or gid}; PUT replaces one
  whole. DittoFS v0.29.0's own /quotas/default-user route answers 400 (its handler reads a
  {scope} that route does not have), so the default-user quota goes through
  /quotas/default-user/0, whose id that scope ignores.
- Adapter ports change live; the NFS portmapper settings only apply when the adapter starts.
  An adapter's `config` object (NFS's `tls`: cert_file, key_file, mode) is replaced whole by
  PUT, which restarts the listener with it.
  The NFS lease and grace times and the SMB signing mode and dialect range are read by
  DittoFS's settings watcher (a 10 s poll) and apply live; the grace period is used from the
  next start.
- A share's `encrypt_data` (SMB clients must encrypt) is used from a share's creation, but a
  change made by PUT only once DittoFS starts again: the stores revision is bumped for it.
- Identity providers (/identity-providers/{ldap,kerberos}/config) are replaced whole by PUT.
  LDAP is read back with DittoFS' defaults filled in, the timeout as Go writes it ("1m0s") and
  the bind password as `********` (or "" when none is stored); a PUT whose password is "" or
  `********` keeps the stored one. LDAP changes apply at once (DittoFS rebuilds its
  resolvers); Kerberos is read back as sent (the machine account's secret redacted the same
  way) and applies when the server starts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dittofs_controller.operator.children import Obj
from dittofs_controller.operator.serverconfig.model import (
    LDAP,
    STORE_PATHS,
    Adapter,
    Group,
    Kerberos,
    Netgroup,
    NFSSettings,
    PermissionKey,
    Quota,
    QuotaKey,
    QuotaLimits,
    QuotaScope,
    Share,
    SMBSettings,
    SnapshotPolicy,
    Store,
    StoreKind,
    User,
    duration_seconds,
    is_secret_key,
)

ROLE = "user"


def adapter_change(adapter: Adapter, reported: Obj | None) -> tuple[str, str, Obj] | None:
    """(method, path, body) that makes the server's adapter match, or None. A config (NFS's
    TLS) is sent when it differs; PUT restarts the listener with it."""
    body: Obj = {"enabled": adapter.enabled, "port": adapter.port}
    shown = ((reported or {}).get("config") or {}).get("tls")
    config_differs = adapter.config is not None and shown != adapter.tls
    if adapter.config or config_differs:
        body["config"] = dict(adapter.config or {})
    if reported is None:
        return ("POST", "/adapters", {"type": adapter.type, **body}) if adapter.enabled else None
    if reported.get("enabled") != adapter.enabled or (
        adapter.enabled and (reported.get("port") != adapter.port or config_differs)
    ):
        return "PUT", f"/adapters/{adapter.type}", body
    return None


def nfs_settings_patch(wanted: NFSSettings, settings: Obj) -> Obj | None:
    """PATCH /adapters/nfs/settings body for what differs, or None."""
    body: Obj = {}
    portmapper = wanted.portmapper
    if settings.get("portmapper_enabled") != portmapper.enabled or (
        portmapper.enabled and settings.get("portmapper_port") != portmapper.port
    ):
        body.update(portmapper_enabled=portmapper.enabled, portmapper_port=portmapper.port)
    if settings.get("lease_time") != wanted.lease_seconds:
        body["lease_time"] = wanted.lease_seconds
    if settings.get("grace_period") != wanted.grace_period_seconds:
        body["grace_period"] = wanted.grace_period_seconds
    return body or None


def smb_settings_patch(wanted: SMBSettings, settings: Obj) -> Obj | None:
    """PATCH /adapters/smb/settings body for what differs, or None.

    DittoFS 0.29 refuses guest and anonymous sessions exactly when signing is required (its
    guest switch has no API), so the signing mode carries the spec's guest choice too. An
    unset signing ("", inherit the server's file config) counts as different.
    """
    body: Obj = {}
    if settings.get("signing") != wanted.signing:
        body["signing"] = wanted.signing
    if settings.get("min_dialect") != wanted.min_dialect:
        body["min_dialect"] = wanted.min_dialect
    if settings.get("max_dialect") != wanted.max_dialect:
        body["max_dialect"] = wanted.max_dialect
    return body or None


def group_create_body(group: Group) -> Obj:
    return {"name": group.name, **({"gid": group.gid} if group.gid is not None else {})}


def group_update_body(group: Group, reported: Obj) -> Obj | None:
    if group.gid is not None and reported.get("gid") != group.gid:
        return {"gid": group.gid}
    return None


def user_create_body(user: User) -> Obj:
    body: Obj = {"username": user.name, "password": user.password, "role": ROLE}
    if user.uid is not None:
        body["uid"] = user.uid
    if user.gid is not None:
        body["gid"] = user.gid
    if user.groups:
        body["groups"] = list(user.groups)
    return body


def user_update_body(user: User, reported: Obj) -> Obj | None:
    """PUT /users/{name} body for what differs (the password is set on its own), or None."""
    body: Obj = {}
    if reported.get("role") != ROLE:
        body["role"] = ROLE
    if reported.get("enabled") is False:
        body["enabled"] = True
    if user.uid is not None and reported.get("uid") != user.uid:
        body["uid"] = user.uid
    if user.gid is not None and reported.get("gid") != user.gid:
        body["gid"] = user.gid
    if tuple(sorted(reported.get("groups") or ())) != user.groups:
        body["groups"] = list(user.groups)
    return body or None


def config_drift(store: Store, reported: Obj, applied: str | None, current: str) -> str | None:
    """What differs between a declared store's config and the server's, or None.

    `current` is the digest of the declared credentials, `applied` that of the ones last sent.
    """
    shown = reported.get("config") or {}
    public = {key: value for key, value in store.config.items() if not is_secret_key(key)}
    visible = {key: value for key, value in shown.items() if not is_secret_key(key)}
    if public != visible:
        changed = sorted(key for key in {*public, *visible} if public.get(key) != visible.get(key))
        return f"settings {', '.join(changed)}"
    secret = {key for key in store.config if is_secret_key(key)}
    if secret != {key for key in shown if is_secret_key(key)} or (secret and applied != current):
        return "credentials"
    return None


StoreIds = Mapping[tuple[StoreKind, str], str]  # (kind, name) -> the server's UUID


def share_create_body(share: Share) -> Obj:
    body: Obj = {
        "name": share.name,
        "metadata_store_id": share.metadata_store,
        "local_block_store": share.local_block_store,
        "read_only": share.read_only,
        "default_permission": share.default_permission,
    }
    if share.remote_block_store:
        body["remote_block_store"] = share.remote_block_store
    if share.owner:
        body["owner"] = share.owner
    if share.quota_bytes:
        body["quota_bytes"] = str(share.quota_bytes)
    if share.encrypted:
        body["encrypt_data"] = True
    return {**body, **share.options, **share.sized}


def share_conflict(share: Share, reported: Obj, ids: StoreIds) -> str | None:
    """Why a share of the same name on the server cannot be taken over, or None."""
    wanted = ids.get(("metadata", share.metadata_store))
    if reported.get("metadata_store_id") == wanted:
        return None
    return (
        f"share {share.name} exists on the server on another metadata store than "
        f"{share.metadata_store}: its files live there, so the operator does not move it; "
        "delete the share through the DittoFS API or rename it in the spec"
    )


def share_update_body(share: Share, reported: Obj, ids: StoreIds) -> Obj | None:
    """PUT /shares/{name} body for what differs, or None."""
    body: Obj = {}
    if reported.get("local_block_store_id") != ids.get(("local", share.local_block_store)):
        body["local_block_store_id"] = share.local_block_store
    remote = ids.get(("remote", share.remote_block_store)) if share.remote_block_store else None
    if (reported.get("remote_block_store_id") or None) != remote:
        body["remote_block_store_id"] = share.remote_block_store or ""
    if reported.get("read_only") != share.read_only:
        body["read_only"] = share.read_only
    if reported.get("default_permission") != share.default_permission:
        body["default_permission"] = share.default_permission
    if (reported.get("quota_bytes") or "") != byte_size_text(share.quota_bytes):
        body["quota_bytes"] = str(share.quota_bytes)  # "0" removes the limit
    if bool(reported.get("encrypt_data")) != share.encrypted:
        body["encrypt_data"] = share.encrypted
    for key, value in share.options.items():
        found = reported.get(key)
        if (sorted(found or ()) != sorted(value)) if isinstance(value, list) else found != value:
            body[key] = value
    for key, value in share.sized.items():
        shown = str(reported.get(key) or "")
        if key == "retention_ttl":
            differs = duration_seconds(shown) != duration_seconds(value)
        else:
            differs = shown != byte_size_text(int(value))
        if differs:
            body[key] = value
    return body or None


def byte_size_text(size: int) -> str:
    """A byte count as DittoFS prints it back: two decimals of the largest binary unit it
    reaches ("976.56KiB"), plain bytes below 1KiB ("512B"), "" for none."""
    if size <= 0:
        return ""
    for power, unit in ((4, "TiB"), (3, "GiB"), (2, "MiB"), (1, "KiB")):
        if size >= 1024**power:
            return f"{size / 1024**power:.2f}{unit}"
    return f"{size}B"


def owner_ids(user: Obj | None) -> tuple[int, int] | None:
    """The root's uid/gid for a share owned by `user` (as the server reports it): DittoFS uses
    the user's gid, else its uid; None when the user has no uid."""
    if user is None or user.get("uid") is None:
        return None
    uid = int(user["uid"])
    gid = user.get("gid")
    return uid, int(gid) if gid is not None else uid


def owner_differs(wanted: tuple[int, int] | None, reported: Obj) -> bool:
    found = (reported.get("owner_uid"), reported.get("owner_gid"))
    return found != (wanted if wanted is not None else (None, None))


def nfs_options_patch(share: Share, reported: Obj) -> Obj | None:
    """PATCH /shares/{name}/adapters/nfs/config body for what differs, or None. Anonymous ids
    left unset in the spec keep whatever the server has (the API cannot unset them)."""
    body: Obj = {}
    if reported.get("squash") != share.squash:
        body["squash"] = share.squash
    if share.anonymous_uid is not None and reported.get("anonymous_uid") != share.anonymous_uid:
        body["anonymous_uid"] = share.anonymous_uid
    if share.anonymous_gid is not None and reported.get("anonymous_gid") != share.anonymous_gid:
        body["anonymous_gid"] = share.anonymous_gid
    for key, value in share.nfs_options.items():
        found = reported.get(key)
        if (found or "" if key == "netgroup" else found) != value:  # no netgroup: "" or absent
            body[key] = value
    return body or None


def netgroup_changes(netgroup: Netgroup, reported: Obj | None) -> tuple[list[Obj], list[str]]:
    """Members to add ({type, value}) and member ids to remove, to make the server's netgroup
    (as GET lists it, None when missing) hold exactly the declared members."""
    found = {
        (str(member.get("type")), str(member.get("value"))): str(member.get("id"))
        for member in (reported or {}).get("members") or ()
    }
    additions = [
        {"type": kind, "value": value} for kind, value in sorted(netgroup.members - set(found))
    ]
    removals = [found[key] for key in sorted(set(found) - netgroup.members)]
    return additions, removals


def snapshot_policy_body(policy: SnapshotPolicy) -> Obj:
    """PUT /shares/{name}/snapshot-policy body: the whole policy."""
    return {
        "interval": policy.interval,
        "keep_last": policy.keep_last,
        "ttl": policy.ttl,
        "enabled": policy.enabled,
        "name_prefix": policy.name_prefix,
    }


def snapshot_policy_differs(policy: SnapshotPolicy, reported: Obj) -> bool:
    """The server's policy (as GET reports it) is not the declared one."""

    def seconds(key: str) -> float:
        return duration_seconds(str(reported.get(key) or ""))

    return (
        bool(reported.get("enabled")) != policy.enabled
        or seconds("interval") != duration_seconds(policy.interval)
        or int(reported.get("keep_last") or 0) != policy.keep_last
        or seconds("ttl") != duration_seconds(policy.ttl)
        or str(reported.get("name_prefix") or "") != policy.name_prefix
    )


def quota_key(reported: Obj) -> QuotaKey:
    """The key of a quota as GET reports it (a default-user quota has no identity_id)."""
    scope: QuotaScope = reported["scope"]
    identity = reported.get("identity_id")
    return scope, None if identity is None else int(identity)


def quota_path(share: Share, key: QuotaKey) -> str:
    scope, identity = key
    return f"{share.path}/quotas/{scope}/{identity if identity is not None else 0}"


def quota_body(limits: QuotaLimits) -> Obj:
    """PUT /shares/{name}/quotas/... body: the whole quota (0 is no limit)."""
    return {
        "limit_bytes": str(limits.hard_bytes),
        "soft_bytes": str(limits.soft_bytes),
        "limit_files": limits.hard_files,
        "soft_files": limits.soft_files,
        "grace_seconds": limits.grace_seconds,
    }


def quota_differs(limits: QuotaLimits, reported: Obj) -> bool:
    """The server's quota (as GET reports it, usage aside) is not the declared one."""
    return (
        (reported.get("limit_bytes") or "") != byte_size_text(limits.hard_bytes)
        or (reported.get("soft_bytes") or "") != byte_size_text(limits.soft_bytes)
        or int(reported.get("limit_files") or 0) != limits.hard_files
        or int(reported.get("soft_files") or 0) != limits.soft_files
        or int(reported.get("grace_seconds") or 0) != limits.grace_seconds
    )


def quota_changes(share: Share, reported: Sequence[Obj]) -> tuple[list[Quota], list[QuotaKey]]:
    """Quotas to set and keys to remove: the spec's quotas are the share's whole list. DittoFS
    refuses two users of one uid or two groups of one gid, so two declared quotas of one key
    only come with that refusal reported; the last one is set."""
    found = {quota_key(entry): entry for entry in reported}
    wanted = {quota.key: quota for quota in share.quotas}
    sets = [
        quota
        for key, quota in wanted.items()
        if key not in found or quota_differs(quota.limits, found[key])
    ]
    removals = [key for key in found if key not in wanted]
    return sets, removals


def permission_changes(
    share: Share, reported: Sequence[Obj] | None
) -> tuple[list[tuple[str, str, str]], list[PermissionKey]]:
    """Permissions to set (kind, name, level) and to remove (kind, name). The spec's list is
    the share's whole list of user and group permissions; grants to Windows SIDs (made
    through the API for directory principals) are left alone."""
    found = {
        (str(entry.get("type")), str(entry.get("name"))): entry.get("level")
        for entry in reported or ()
        if entry.get("type") in ("user", "group")
    }
    wanted = share.permissions
    sets = [
        (kind, name, level)
        for (kind, name), level in wanted.items()
        if found.get((kind, name)) != level
    ]
    removals = [key for key in found if key not in wanted]
    return sorted(sets), sorted(removals)


def permission_path(share: Share, kind: str, name: str) -> str:
    return f"{share.path}/permissions/{kind}s/{name}"


# Deleting what the spec no longer names: shares first (a store in use cannot go), then
# stores, users, groups; with the reason a refusal is reported under.
PRUNE_ORDER: tuple[tuple[str, str], ...] = (
    ("shares", "ShareRejected"),
    ("netgroups", "AdapterRejected"),  # once no share admits only them
    ("metadata", "StoreInUse"),
    ("local", "StoreInUse"),
    ("remote", "StoreInUse"),
    ("users", "UserRejected"),
    ("groups", "GroupRejected"),
)


NETGROUPS_PATH = "/adapters/nfs/netgroups"


def listing_path(category: str) -> str:
    paths: dict[str, str] = {
        **{str(k): v for k, v in STORE_PATHS.items()},
        "netgroups": NETGROUPS_PATH,
    }
    return paths.get(category) or f"/{category}"


def object_path(category: str, name: str) -> str:
    if category == "shares":
        return f"/shares/{name.lstrip('/')}"
    return f"{listing_path(category)}/{name}"


def listed_name(category: str, item: Obj) -> str:
    return str(item.get("username" if category == "users" else "name"))


# What DittoFS answers for a stored secret on read, and takes on write as "keep the stored one".
REDACTED = "********"


def ldap_drift(ldap: LDAP, reported: Obj | None, applied: str | None, current: str) -> str | None:
    """What differs between the declared directory and the server's, or None.

    `current` is the digest of the declared bind password, `applied` that of the one last sent.
    """
    if reported is None:
        return "not configured"
    if changed := _changed_settings(ldap.settings, reported):
        return changed
    if reported.get("bind_password") != REDACTED or applied != current:
        return "bind password"
    return None


def kerberos_drift(kerberos: Kerberos, reported: Obj | None) -> str | None:
    """What differs between the declared Kerberos settings and the server's, or None."""
    if reported is None:
        return "not configured"
    return _changed_settings(kerberos.settings, reported)


def _changed_settings(settings: Mapping[str, Any], reported: Obj) -> str | None:
    """The identity provider's settings the server holds otherwise, as "settings a, b"."""
    changed = sorted(
        key for key, value in settings.items() if not _same_setting(key, value, reported.get(key))
    )
    return f"settings {', '.join(changed)}" if changed else None


def kerberos_body(kerberos: Kerberos, reported: Obj | None) -> Obj:
    """PUT body: the declared settings, and the machine account (NTLM pass-through, not in the
    spec) as the server has it; its secret reads back redacted, which keeps the stored one."""
    machine_account = (reported or {}).get("machine_account") or {}
    return {**kerberos.settings, "machine_account": machine_account}


DURATION_SETTINGS = ("timeout", "max_clock_skew", "context_ttl")


def _same_setting(key: str, declared: object, reported: object) -> bool:
    if key in DURATION_SETTINGS:
        return duration_seconds(str(declared)) == duration_seconds(str(reported or ""))
    if isinstance(declared, dict):
        found = reported if isinstance(reported, dict) else {}
        return all(_same_setting(k, v, found.get(k)) for k, v in declared.items())
    return declared == reported


def disable_body(reported: Obj) -> Obj | None:
    """PUT body that turns off an identity provider the spec no longer declares, keeping its
    settings on the server (its secrets read back redacted, which keeps the stored ones);
    None when it is off already."""
    if not reported.get("enabled"):
        return None
    return {**reported, "enabled": False}
