"""What the server reports after a pass, judged: status.server, the issues that keep it from
matching the spec, and ServerConfigured with when to look again (pure: no I/O)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from dittofs_controller.operator import names
from dittofs_controller.operator.children import Obj
from dittofs_controller.operator.conditions import Outcome
from dittofs_controller.operator.serverconfig.credentials import scrub
from dittofs_controller.operator.serverconfig.model import (
    SMB_DIALECT_NAMES,
    STORE_KINDS,
    Desired,
    StoreKind,
)

# How often a converged server is compared again, to notice changes made through its API.
DRIFT_INTERVAL = 300.0

# An enabled adapter that does not run (its port is taken...) is looked at again this often.
NOT_RUNNING_RECHECK = 30.0

# Keys of status.server.managed (and of the store lists in status.server).
CATEGORIES: dict[str, str] = {
    "metadata": "metadataStores",
    "local": "localBlockStores",
    "remote": "remoteBlockStores",
    "shares": "shares",
    "users": "users",
    "groups": "groups",
    "identity": "identityProviders",
    "netgroups": "netgroups",
}


@attrs.frozen
class Issue:
    """One thing that keeps the server from matching the spec."""

    reason: str
    message: str
    recheck_after: float = DRIFT_INTERVAL


@attrs.frozen
class Observed:
    """What the server reports after a pass."""

    adapters: Sequence[Obj]
    stores: Mapping[StoreKind, Sequence[Obj]]
    shares: Sequence[Obj]
    users: Sequence[Obj]
    groups: Sequence[Obj]
    snapshot_policies: Mapping[str, Obj] = attrs.field(factory=dict)  # by share name
    quotas: Mapping[str, Sequence[Obj]] = attrs.field(factory=dict)  # by share name
    settings: Mapping[str, Obj] = attrs.field(factory=dict)  # by adapter type, when enabled
    ldap: Obj | None = None  # /identity-providers/ldap/config, when one is stored
    kerberos: Obj | None = None  # /identity-providers/kerberos/config, when one is stored


def _health(obj: Obj) -> str:
    return str((obj.get("status") or {}).get("status") or "unknown")


def server_status(
    observed: Observed,
    managed: Mapping[str, Iterable[str]],
    applied: Mapping[str, str],
    stores_revision: str | None = None,
) -> Obj:
    """status.server: the server's state as it reports it (never a credential or a config),
    the names the operator manages there, keyed digests of the credentials it applied, and the
    stores revision the pod must be started for (once a store was changed over the API)."""
    store_names = {
        store.get("id"): store.get("name")
        for kind in STORE_KINDS
        for store in observed.stores[kind]
    }
    identities = {
        **{("user", user.get("uid")): user.get("username") for user in observed.users},
        **{("group", group.get("gid")): group.get("name") for group in observed.groups},
    }
    status: Obj = {
        "adapters": {
            str(adapter.get("type")): {
                "enabled": bool(adapter.get("enabled")),
                "running": bool(adapter.get("running")),
                "port": adapter.get("port"),
                **_adapter_settings(str(adapter.get("type")), observed.settings),
                **_tls(adapter),
            }
            for adapter in observed.adapters
        },
        "shares": [
            {
                "name": share.get("name"),
                "enabled": bool(share.get("enabled", True)),
                "readOnly": bool(share.get("read_only")),
                "health": _health(share),
                "metadataStore": store_names.get(share.get("metadata_store_id")),
                "localBlockStore": store_names.get(share.get("local_block_store_id")),
                **(
                    {"remoteBlockStore": store_names.get(share.get("remote_block_store_id"))}
                    if share.get("remote_block_store_id")
                    else {}
                ),
                **({"encryptData": True} if share.get("encrypt_data") else {}),
                **(
                    {"snapshots": _snapshot_policy(policy)}
                    if (policy := observed.snapshot_policies.get(str(share.get("name"))))
                    else {}
                ),
                **({"quota": share["quota_bytes"]} if share.get("quota_bytes") else {}),
                **(
                    {"quotas": _quotas(quotas, identities)}
                    if (quotas := observed.quotas.get(str(share.get("name"))))
                    else {}
                ),
            }
            for share in sorted(observed.shares, key=lambda s: str(s.get("name")))
        ],
        "users": sorted(str(user.get("username")) for user in observed.users),
        "groups": sorted(str(group.get("name")) for group in observed.groups),
        "managed": {
            CATEGORIES[category]: sorted(found) for category, found in managed.items() if found
        },
        "applied": dict(sorted(applied.items())),
        **({"storesRevision": stores_revision} if stores_revision else {}),
        **({"identity": identity} if (identity := _identity(observed)) else {}),
    }
    for kind in STORE_KINDS:
        status[CATEGORIES[kind]] = [
            {"name": store.get("name"), "type": store.get("type"), "health": _health(store)}
            for store in sorted(observed.stores[kind], key=lambda s: str(s.get("name")))
        ]
    return status


_SPEC_DIALECTS = {name: dialect for dialect, name in SMB_DIALECT_NAMES.items()}


def _adapter_settings(kind: str, settings: Mapping[str, Obj]) -> Obj:
    """The protocol security an adapter's settings report, in the spec's terms."""
    found = settings.get(kind)
    if not found:
        return {}
    if kind == "smb":
        return {
            "signing": found.get("signing") or "unset",
            "minDialect": _SPEC_DIALECTS.get(
                str(found.get("min_dialect")), found.get("min_dialect")
            ),
            "maxDialect": _SPEC_DIALECTS.get(
                str(found.get("max_dialect")), found.get("max_dialect")
            ),
        }
    return {
        "leaseSeconds": found.get("lease_time"),
        "gracePeriodSeconds": found.get("grace_period"),
    }


def _tls(adapter: Obj) -> Obj:
    """An adapter's TLS mode, as its config reports it (file paths are left out)."""
    tls = (adapter.get("config") or {}).get("tls")
    return {"tls": {"mode": tls.get("mode") or "opportunistic"}} if tls else {}


def _snapshot_policy(policy: Obj) -> Obj:
    """A share's snapshot policy in status: what it is, not when it last ran (that changes
    every interval and would make every pass write status)."""
    found: Obj = {"enabled": bool(policy.get("enabled")), "interval": policy.get("interval")}
    if policy.get("keep_last"):
        found["keepLast"] = policy["keep_last"]
    if policy.get("ttl"):
        found["ttl"] = policy["ttl"]
    if policy.get("name_prefix"):
        found["namePrefix"] = policy["name_prefix"]
    return found


_QUOTA_FIELDS = {
    "limit_bytes": "hardBytes",
    "soft_bytes": "softBytes",
    "limit_files": "hardFiles",
    "soft_files": "softFiles",
    "grace_seconds": "graceSeconds",
}


def _quotas(quotas: Sequence[Obj], identities: Mapping[tuple[str, Any], Any]) -> list[Obj]:
    """A share's quotas in status: their limits as DittoFS holds them, with the name of the
    user or group of each uid or gid it knows; not the usage or grace timers, which change
    with every write."""
    found = []
    for quota in quotas:
        scope, identity = quota.get("scope"), quota.get("identity_id")
        entry: Obj = {"scope": scope}
        if identity is not None:
            entry["id"] = identity
            if name := identities.get((str(scope), identity)):
                entry["name"] = name
        entry.update({wire: quota[key] for key, wire in _QUOTA_FIELDS.items() if quota.get(key)})
        found.append(entry)
    return sorted(found, key=lambda entry: (str(entry["scope"]), entry.get("id", -1)))


def _identity(observed: Observed) -> Obj:
    found: Obj = {}
    if observed.ldap is not None:
        found["ldap"] = _ldap(observed.ldap)
    if observed.kerberos is not None:
        found["kerberos"] = _kerberos(observed.kerberos)
    return found


def _kerberos(reported: Obj) -> Obj:
    """Kerberos as the server has it: the principal and where its files are."""
    found: Obj = {
        "enabled": bool(reported.get("enabled")),
        "servicePrincipal": reported.get("service_principal"),
        "realm": reported.get("realm"),
        "keytab": reported.get("keytab_path"),
    }
    if reported.get("krb5_conf"):
        found["krb5Conf"] = reported["krb5_conf"]
    return found


def _ldap(reported: Obj) -> Obj:
    """The directory as the server has it: where and how it looks users up, never the bind
    password (not even whether one is stored)."""
    found: Obj = {
        "enabled": bool(reported.get("enabled")),
        "url": reported.get("url"),
        "baseDN": reported.get("base_dn"),
        "bindDN": reported.get("bind_dn"),
        "userAttribute": reported.get("user_attr"),
        "idmap": reported.get("idmap"),
        "startTLS": bool(reported.get("start_tls")),
        "nestedGroups": bool(reported.get("nested_groups")),
    }
    if reported.get("realm"):
        found["realm"] = reported["realm"]
    return found


def not_running(desired_state: Desired, observed: Observed) -> list[Issue]:
    """Enabled adapters whose listener does not run (a port in use, a bind failure)."""
    reported = {adapter.get("type"): adapter for adapter in observed.adapters}
    issues = []
    for adapter in desired_state.adapters:
        found = reported.get(adapter.type) or {}
        if adapter.enabled and not found.get("running"):
            issues.append(
                Issue(
                    "AdapterNotRunning",
                    f"the {adapter.type} adapter is enabled on port {adapter.port} but DittoFS "
                    "does not run it (it could not listen: see the DittoFS pod's log)",
                    NOT_RUNNING_RECHECK,
                )
            )
    return issues


def unhealthy_stores(
    desired_state: Desired, observed: Observed, secrets: Iterable[str]
) -> list[Issue]:
    """Declared stores the server reports unhealthy: it accepted them, but cannot reach what
    they point at (an S3 endpoint, a PostgreSQL), so the shares on them fail. DittoFS probes
    a store's backend each time it lists the store; a degraded one still serves."""
    issues = []
    for store in desired_state.stores:
        found = next((s for s in observed.stores[store.kind] if s.get("name") == store.name), None)
        report = (found or {}).get("status") or {}
        if report.get("status") == "unhealthy":
            detail = scrub(str(report.get("message") or "no detail given"), secrets)
            issues.append(
                Issue(
                    "StoreUnhealthy",
                    f"{store.what} is unhealthy on the server: {detail}",
                    NOT_RUNNING_RECHECK,
                )
            )
    return issues


def reopen_pending(revision: str | None, pod: Obj | None) -> list[Issue]:
    """StoresReopening while the running pod predates the stores' last change over the API."""
    if not revision or pod is None:
        return []
    started_for = ((pod.get("metadata") or {}).get("annotations") or {}).get(
        names.STORES_REVISION_ANNOTATION
    )
    if started_for == revision:
        return []
    return [
        Issue(
            "StoresReopening",
            "a store, the SMB encryption of a share or Kerberos changed on the server and "
            "DittoFS reads them only when it starts: the pod is being replaced so the new "
            "settings (or credentials) are used",
            NOT_RUNNING_RECHECK,
        )
    ]


def verdict(desired_state: Desired, issues: Sequence[Issue]) -> tuple[Outcome, float]:
    """ServerConfigured, and when to compare again."""
    if issues:
        message = "; ".join(issue.message for issue in issues)
        return Outcome.false(issues[0].reason, message), min(i.recheck_after for i in issues)
    listening = ", ".join(
        f"{adapter.type.upper()} on port {adapter.port}"
        for adapter in desired_state.adapters
        if adapter.enabled
    )
    counts = (
        f"{_count(desired_state.stores, 'store')}, {_count(desired_state.shares, 'share')}, "
        f"{_count(desired_state.users, 'user')} and {_count(desired_state.groups, 'group')}"
    )
    served = f"; {listening}" if listening else "; no protocol adapter enabled"
    ldap, kerberos = desired_state.ldap, desired_state.kerberos
    identity = (f"; LDAP directory {ldap.settings['url']}" if ldap is not None else "") + (
        f"; Kerberos for {kerberos.settings['service_principal']}" if kerberos is not None else ""
    )
    return Outcome.true(
        "Converged", f"the server matches the spec: {counts}{served}{identity}"
    ), DRIFT_INTERVAL


def _count(items: Sequence[object], noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"
