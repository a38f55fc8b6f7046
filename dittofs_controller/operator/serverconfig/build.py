"""The DittoFS runtime state a DittoServer declares, and how it differs from what the server
reports, as pure functions; the reconciler makes the REST calls.

Stores, shares, adapters, users and groups live in DittoFS's control-plane database, not in its
config file, and only its REST API changes them. Payloads follow DittoFS v0.29.0's handlers
(internal/controlplane/api/handlers):
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
- Adapter ports change live; the NFS portmapper settings only apply when the adapter starts.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import attrs

from dittofs_controller.api import v1alpha1
from dittofs_controller.kube.portforward import (
    PortForwardError,
    PortForwardFailed,
    PortForwardRejected,
)
from dittofs_controller.operator import conditions, names
from dittofs_controller.operator.conditions import Outcome
from dittofs_controller.operator.config import build as config
from dittofs_controller.operator.problems import Problem

Obj = dict[str, Any]
Spec = v1alpha1.DittoServerSpec
StoreKind = Literal["metadata", "local", "remote"]
Access = Literal["service", "pod", "port-forward"]
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
# Keys of status.server.managed (and of the store lists in status.server).
CATEGORIES: dict[str, str] = {
    "metadata": "metadataStores",
    "local": "localBlockStores",
    "remote": "remoteBlockStores",
    "shares": "shares",
    "users": "users",
    "groups": "groups",
}
ROLE = "user"
TLS_CA_KEY = "ca.crt"
# How often a converged server is compared again, to notice changes made through its API.
DRIFT_INTERVAL = 300.0
# An enabled adapter that does not run (its port is taken...) is looked at again this often.
NOT_RUNNING_RECHECK = 30.0
# 128 bits: half the HMAC's output, as RFC 2104 advises for truncation. Digests of the former
# unkeyed scheme had 16 characters, so none of them ever equals a keyed one.
DIGEST_CHARS = 32


def is_secret_key(key: str) -> bool:
    """DittoFS's own rule for config values it redacts on read."""
    lowered = key.lower()
    return "secret" in lowered or "password" in lowered or lowered.endswith("_key")


# --- where the API is -----------------------------------------------------------------------


def resolve_access(setting: str, kubeconfig: str | None, environ: Mapping[str, str]) -> Access:
    """`auto`: the Service name when the operator runs in a pod, a port-forward otherwise."""
    if setting in ("service", "pod", "port-forward"):
        return setting  # type: ignore[return-value]
    in_cluster = bool(environ.get("KUBERNETES_SERVICE_HOST")) and not kubeconfig
    return "service" if in_cluster else "port-forward"


def api_url(server: Obj, spec: Spec, access: Access, pod_ip: str | None) -> str:
    """Base URL of the REST API: the API Service's cluster DNS name, or the pod's IP.

    Through a port-forward it only names the pod, for messages and for the inputs digest (a
    pass must not repeat because a new tunnel listens on another local port); `forwarded_url`
    is where requests go.
    """
    meta = server["metadata"]
    scheme = "https" if spec.control_plane.tls is not None else "http"
    port = spec.control_plane.port
    if access == "port-forward":
        return f"port-forward://{meta['namespace']}/{names.pod(meta['name'])}:{port}"
    if access == "service":
        host = f"{names.service(meta['name'], 'api')}.{meta['namespace']}.svc"
    else:
        assert pod_ip is not None
        host = f"[{pod_ip}]" if ipaddress.ip_address(pod_ip).version == 6 else pod_ip
    return f"{scheme}://{host}:{port}"


def forwarded_url(spec: Spec, local_port: int) -> str:
    """Base URL of the REST API through a port-forward listening on `local_port`."""
    scheme = "https" if spec.control_plane.tls is not None else "http"
    return f"{scheme}://127.0.0.1:{local_port}"


def forward_problem(error: PortForwardError) -> tuple[str, str]:
    """The condition reason for a port-forward that failed, and what to do about it."""
    if isinstance(error, PortForwardRejected) and error.status == 403:
        return "PortForwardForbidden", (
            f"{error}. Out of the cluster the operator reaches the DittoFS API through the API "
            "server's port-forward, as kubectl port-forward does: grant the user of its "
            "kubeconfig get and create on pods/portforward in this namespace, or pick another "
            "--dittofs-api-access"
        )
    if isinstance(error, PortForwardRejected) and error.status == 404 and error.kind == "pods":
        return "PodNotFound", f"{error} (the DittoFS pod is gone: being replaced?)"
    if isinstance(error, PortForwardRejected):
        return "PortForwardRejected", str(error)
    if isinstance(error, PortForwardFailed):
        return "PortForwardFailed", (
            f"the pod's node could not reach the DittoFS API port in the pod: {error}"
        )
    return "PortForwardFailed", str(error)


def waiting(why: str) -> Outcome:
    return Outcome.unknown("WaitingForServer", f"waiting for the DittoFS pod: {why}")


def judged(server: Obj) -> bool:
    """Whether the server reconciler has published Available for the current generation.

    Until it has, the serverconfig reconciler publishes nothing: a verdict for a generation whose
    pod template may still change would flap ServerConfigured (and Ready) on every edit.
    """
    available = conditions.find(server, conditions.AVAILABLE)
    generation = server["metadata"].get("generation", 0)
    return available is not None and available.get("observedGeneration") == generation


def waiting_for_server(server: Obj, spec: Spec) -> Outcome | None:
    """Unknown while there is no server of this generation to talk to; None once there is.

    Available alone is not enough: it stays True while a pod of the previous template serves,
    and that pod lacks the volumes a new store of this generation lives on.
    """
    if spec.replicas == 0:
        return Outcome.unknown(
            "ServerStopped", "spec.replicas is 0: the server is stopped, its state is kept"
        )
    # The messages name the condition that says why instead of quoting it: quoted, every
    # change of Available while the pod starts would rewrite this condition (and Ready) too.
    available = conditions.find(server, conditions.AVAILABLE) or {}
    if available.get("status") != "True":
        return waiting("it is not available yet (see condition Available)")
    progressing = conditions.find(server, conditions.PROGRESSING) or {}
    generation = server["metadata"].get("generation", 0)
    if progressing.get("observedGeneration") == generation and progressing.get("status") == "True":
        return waiting(
            "the pod template of this generation to roll out (see condition Progressing)"
        )
    return None


# --- Secrets --------------------------------------------------------------------------------


@attrs.frozen
class SecretKey:
    """One Secret value the desired state needs, and what it is for (for messages)."""

    name: str
    key: str
    what: str


def admin_key(server_name: str, spec: Spec) -> SecretKey:
    ref = config.admin_secret_ref(server_name, spec)
    return SecretKey(ref.name, ref.key, "password of DittoFS's admin account")


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


def digest_key(server_name: str) -> SecretKey:
    return SecretKey(
        names.digest_key_secret(server_name),
        names.GENERATED_DIGEST_KEY,
        "key of the credential digests in status.server.applied",
    )


def secret_keys(server_name: str, spec: Spec) -> list[SecretKey]:
    """Every Secret value a pass is made of (the TLS Secret aside)."""
    keys = [admin_key(server_name, spec), digest_key(server_name)]
    for user in spec.users:
        ref = user.password_secret_ref
        keys.append(SecretKey(ref.name, ref.key, f"password of user {user.name}"))
    for store in spec.remote_block_stores:
        if store.s3 is not None:
            creds = store.s3.credentials_secret_ref
            what = f"S3 credentials of remote block store {store.name}"
            keys.append(SecretKey(creds.name, creds.access_key_id_key, what))
            keys.append(SecretKey(creds.name, creds.secret_access_key_key, what))
    if any(store.type == "postgres" for store in spec.metadata_stores):
        secret, fields, _ = postgres_source(server_name, spec)
        what = "PostgreSQL connection of the postgres metadata stores"
        keys.extend(SecretKey(secret, fields[field], what) for field in POSTGRES_FIELDS)
    return keys


def digest(key: str, item: str, values: Sequence[str]) -> str:
    """A truncated HMAC-SHA256 keyed with the server's generated digest key: tells whether a
    credential changed, and a reader of status without the key cannot test guesses against it.
    The item is part of the message, so two users with one password get different digests."""
    message = json.dumps([item, *values])
    return hmac.new(key.encode(), message.encode(), hashlib.sha256).hexdigest()[:DIGEST_CHARS]


def stores_revision(key: str, stores: Iterable[Store]) -> str:
    """What the declared stores hold, as a keyed digest (credentials never in the clear): the
    revision a pod must be started for once a store was changed over the API."""
    return digest(key, "stores", [f"{store.item} {store.config_text()}" for store in stores])


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
            "a store changed on the server and DittoFS opens its stores only when it starts: "
            "the pod is being replaced so the new settings (or credentials) are used",
            NOT_RUNNING_RECHECK,
        )
    ]


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` from the server with any credential it might quote masked."""
    for secret in secrets:
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


# --- the desired state ----------------------------------------------------------------------


@attrs.frozen
class Adapter:
    type: str
    enabled: bool
    port: int


@attrs.frozen
class Portmapper:
    enabled: bool
    port: int


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


@attrs.frozen
class Share:
    name: str
    metadata_store: str
    local_block_store: str
    remote_block_store: str | None
    read_only: bool
    default_permission: str
    owner: str | None
    permissions: Mapping[PermissionKey, str]
    squash: str
    anonymous_uid: int | None
    anonymous_gid: int | None

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
class Desired:
    adapters: tuple[Adapter, ...]
    portmapper: Portmapper
    smb_guest: bool
    groups: tuple[Group, ...]
    users: tuple[User, ...]
    stores: tuple[Store, ...]
    shares: tuple[Share, ...]

    def names(self) -> dict[str, set[str]]:
        """Declared names per category of status.server.managed."""
        found: dict[str, set[str]] = {
            "shares": {share.name for share in self.shares},
            "users": {user.name for user in self.users},
            "groups": {group.name for group in self.groups},
        }
        for kind in STORE_KINDS:
            found[kind] = {store.name for store in self.stores if store.kind == kind}
        return found

    def credentials(self) -> list[str]:
        """Every credential the desired state carries (to keep them out of messages)."""
        return [user.password for user in self.users] + [
            secret for store in self.stores for secret in store.secrets
        ]


def desired(server_name: str, spec: Spec, values: SecretValues) -> Desired:
    """What the server should hold, given the values of `secret_keys`."""
    nfs, smb = spec.adapters.nfs, spec.adapters.smb
    return Desired(
        adapters=(
            Adapter("nfs", nfs.enabled, nfs.port),
            Adapter("smb", smb.enabled, smb.port),
        ),
        portmapper=Portmapper(nfs.portmapper.enabled, nfs.portmapper.port),
        smb_guest=smb.guest,
        groups=tuple(Group(group.name, group.gid) for group in spec.groups),
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
        shares=tuple(_share(share) for share in spec.shares),
    )


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
            yield Store("remote", remote.name, "memory", {})
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
        yield Store("remote", remote.name, "s3", s3_config)


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


def _share(share: v1alpha1.Share) -> Share:
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
        default_permission=share.default_permission,
        owner=share.owner,
        permissions=permissions,
        squash=share.nfs.squash,
        anonymous_uid=share.nfs.anon_uid,
        anonymous_gid=share.nfs.anon_gid,
    )


# --- differences ----------------------------------------------------------------------------


def adapter_change(adapter: Adapter, reported: Obj | None) -> tuple[str, str, Obj] | None:
    """(method, path, body) that makes the server's adapter match, or None."""
    body = {"enabled": adapter.enabled, "port": adapter.port}
    if reported is None:
        return ("POST", "/adapters", {"type": adapter.type, **body}) if adapter.enabled else None
    if reported.get("enabled") != adapter.enabled or (
        adapter.enabled and reported.get("port") != adapter.port
    ):
        return "PUT", f"/adapters/{adapter.type}", body
    return None


def portmapper_patch(portmapper: Portmapper, settings: Obj) -> Obj | None:
    """PATCH /adapters/nfs/settings body when the embedded portmapper differs, or None."""
    if settings.get("portmapper_enabled") == portmapper.enabled and (
        not portmapper.enabled or settings.get("portmapper_port") == portmapper.port
    ):
        return None
    return {"portmapper_enabled": portmapper.enabled, "portmapper_port": portmapper.port}


def smb_guest_patch(guest: bool, settings: Obj) -> Obj | None:
    """PATCH /adapters/smb/settings body when guest sessions are not as declared, or None.

    DittoFS 0.29 refuses guest and anonymous sessions exactly when signing is required (its
    guest switch has no API), so the signing mode carries the choice.
    """
    signing = "enabled" if guest else "required"
    return None if settings.get("signing") == signing else {"signing": signing}


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
    return body


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
    return body or None


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
    return body or None


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
    ("metadata", "StoreInUse"),
    ("local", "StoreInUse"),
    ("remote", "StoreInUse"),
    ("users", "UserRejected"),
    ("groups", "GroupRejected"),
)


def listing_path(category: str) -> str:
    paths: dict[str, str] = {kind: path for kind, path in STORE_PATHS.items()}
    return paths.get(category) or f"/{category}"


def object_path(category: str, name: str) -> str:
    if category == "shares":
        return f"/shares/{name.lstrip('/')}"
    return f"{listing_path(category)}/{name}"


def listed_name(category: str, item: Obj) -> str:
    return str(item.get("username" if category == "users" else "name"))


# --- status and verdict ---------------------------------------------------------------------


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
    status: Obj = {
        "adapters": {
            str(adapter.get("type")): {
                "enabled": bool(adapter.get("enabled")),
                "running": bool(adapter.get("running")),
                "port": adapter.get("port"),
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
    }
    for kind in STORE_KINDS:
        status[CATEGORIES[kind]] = [
            {"name": store.get("name"), "type": store.get("type"), "health": _health(store)}
            for store in sorted(observed.stores[kind], key=lambda s: str(s.get("name")))
        ]
    return status


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
    return Outcome.true(
        "Converged", f"the server matches the spec: {counts}{served}"
    ), DRIFT_INTERVAL


def _count(items: Sequence[object], noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def inputs_digest(server: Obj, url: str, values: SecretValues, tls: str | None) -> str:
    """Everything a pass depends on: an unchanged digest within a pass's recheck interval
    means the pass would only repeat itself. Lives in memory only."""
    available = conditions.find(server, conditions.AVAILABLE) or {}
    document = {
        "uid": server["metadata"].get("uid"),
        "spec": server.get("spec"),
        "url": url,
        "since": available.get("lastTransitionTime"),
        "values": sorted([name, key, value] for (name, key), value in values.items()),
        "tls": tls,
    }
    text = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
