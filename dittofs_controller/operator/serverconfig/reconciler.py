"""The serverconfig reconciler: DittoFS's own state (adapters, groups, users, stores, shares) made
to match the spec over its REST API -> ServerConfigured and status.server.

It starts once Available is True for the current generation (a pod is ready) and logs in as
the bootstrap `admin` with the password of the admin Secret. A pass creates what is missing and
updates what differs from what the server reports, in dependency order: adapters, groups,
users, stores, shares (options, NFS settings, permissions); then it deletes what it created
earlier and the spec no longer names, shares first. Objects the spec never named (made through
the API by hand) are left alone; status.server.managed lists what the operator manages.

A share removed from the spec is deleted from the server: its export, permissions and NFS
options go, never its files, which stay in its stores (DittoFS's DELETE /shares leaves them,
and a share of the same name declared again on the same metadata store finds them). They go
with the stores' volumes only (deletionPolicy Delete, or a store deleted by hand).

Credentials read back as `********`, so the digests of the values last sent are kept, in memory
and in status.server.applied (never a value): HMAC-SHA256 keyed with the Secret the config
reconciler generates (names.digest_key_secret), so readers of DittoServers cannot test guessed
passwords against them. A rotated Secret changes the digest and the value is sent again (a
user's password, S3 keys, a PostgreSQL password); so does a new digest key, once, and so did
the move from the former unkeyed digests.
DittoFS keeps a store's new settings in its database but opens a store only when it starts:
after a change over the API, status.server.storesRevision (a keyed digest of the stores as
sent) is what the pod must be started for, the workload reconciler puts it into the pod
template, and ServerConfigured says StoresReopening until the running pod carries it. (A
crash between such a change and the status write leaves a credential change to be sent again,
its digest being unrecorded; a change of another setting would wait for the next restart.)

A pass whose inputs (spec, Secret values, address, pod) did not change is not repeated within
its recheck interval; a converged server is compared again every 5 minutes to notice changes
made through its API by hand.

Where the API is (--dittofs-api-access): the API Service in the cluster; out of it a
port-forward through the API server (kube/portforward.py), opened for each pass and closed
after it; or the pod IP when the machine routes to the pod network.

Failures: the server unreachable or erring (5xx) -> ServerUnreachable/ServerError, retried
with backoff; a port-forward the API server refuses or the kubelet cannot make ->
PortForwardForbidden/PodNotFound/PortForwardRejected/PortForwardFailed, retried with backoff;
the admin login refused -> AuthenticationFailed; a store, share, user, group or adapter the
server rejects -> a False condition naming it and the server's words, and the rest of the pass
goes on; a store the server accepted but reports unhealthy (its S3 endpoint or PostgreSQL
unreachable) -> StoreUnhealthy, looked at again every 30 s.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiohttp
import attrs
import structlog

from dittofs_controller.dittofs import (
    AuthenticationFailed,
    DittoFSClient,
    DittoFSError,
    DittoFSUnreachable,
    Tokens,
    pinned_ssl_context,
)
from dittofs_controller.kube.portforward import PortForward
from dittofs_controller.kube.resources import DITTOSERVERS, PODS, ObjectKey
from dittofs_controller.operator import conditions, names
from dittofs_controller.operator.base import (
    Context,
    ServerReconciler,
    Spec,
    Synced,
    server_controller,
)
from dittofs_controller.operator.children import Obj
from dittofs_controller.operator.config.build import TLS_CERT_KEY
from dittofs_controller.operator.config.reconciler import percona_user_servers
from dittofs_controller.operator.problems import Problem, api_problem
from dittofs_controller.operator.references import servers_referencing
from dittofs_controller.operator.serverconfig import build
from dittofs_controller.operator.serverconfig.build import (
    STORE_KINDS,
    STORE_PATHS,
    Desired,
    Issue,
    Observed,
    StoreKind,
)
from dittofs_controller.runtime.controller import DONE, Result

if TYPE_CHECKING:
    from dittofs_controller.runtime.manager import Manager

log = structlog.get_logger("dittofs_controller.operator.serverconfig")

# Answers that reject what was sent (a bad store config, a duplicate uid, a store in use):
# reported, and retried only when something changes. Anything else is transient.
REJECTED = (400, 409, 422)
ACCESS_WHAT: dict[build.Access, str] = {
    "service": "the API Service",
    "pod": "the pod IP",
    "port-forward": "a port-forward through the API server",
}


@attrs.define
class Memory:
    """What the operator remembers of one server between passes."""

    uid: str
    applied: dict[str, str]
    managed: dict[str, set[str]]
    stores_revision: str | None = None
    tokens: Tokens = attrs.Factory(Tokens)
    # The last pass: its inputs digest, when it ended, what it concluded.
    inputs: str = ""
    until: float = 0.0
    synced: Synced | None = None

    @classmethod
    def recalled(cls, server: Obj) -> Memory:
        """Start from what the last operator process published (status.server)."""
        published = (server.get("status") or {}).get("server") or {}
        managed_status = published.get("managed") or {}
        managed = {
            category: set(managed_status.get(key) or ())
            for category, key in build.CATEGORIES.items()
        }
        applied = {str(k): str(v) for k, v in (published.get("applied") or {}).items()}
        revision = published.get("storesRevision")
        return cls(
            uid=server["metadata"]["uid"],
            applied=applied,
            managed=managed,
            stores_revision=str(revision) if revision else None,
        )

    def recent(self, inputs: str, now: float) -> Synced | None:
        """The last verdict, while the inputs are the same and its recheck is not due."""
        if self.synced is None or inputs != self.inputs or now >= self.until:
            return None
        return attrs.evolve(self.synced, requeue_after=self.until - now)


class ServerConfigReconciler(ServerReconciler):
    # Its former name, kept: it is the field manager of ServerConfigured and status.server.
    name = "runtime"
    condition = conditions.SERVER_CONFIGURED
    reads = (conditions.AVAILABLE, conditions.PROGRESSING)
    status_fields = ("server",)

    def __init__(self, ctx: Context, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(ctx)
        settings = ctx.settings
        self.access = build.resolve_access(
            settings.dittofs_api_access, settings.kubeconfig, os.environ
        )
        self.clock = clock
        self.memory: dict[ObjectKey, Memory] = {}

    async def reconcile(self, key: ObjectKey) -> Result:
        server = self.ctx.servers.get(key)
        if server is None:
            self.memory.pop(key, None)  # deleted: nothing left to talk to
        elif not build.judged(server):
            return DONE  # Available for this generation is still to come: its update re-queues
        return await super().reconcile(key)

    async def sync(self, server: Obj, spec: Spec) -> Synced:
        if waiting := build.waiting_for_server(server, spec):
            return Synced(waiting)
        meta = server["metadata"]
        values = await self._secret_values(server, spec)
        tls = await self._tls(server, spec)
        pod_ip = await self._pod_ip(server) if self.access == "pod" else None
        if self.access == "pod" and not pod_ip:
            pod = names.pod(meta["name"])
            return Synced(build.waiting(f"pod {pod} has no IP address yet"))
        url = build.api_url(server, spec, self.access, pod_ip)
        desired = build.desired(meta["name"], spec, values)
        memory = self._memory(server)
        inputs = build.inputs_digest(server, url, values, tls)
        if recent := memory.recent(inputs, self.clock()):
            return recent
        admin = build.admin_key(meta["name"], spec)
        password = values[(admin.name, admin.key)]
        digest_key = build.digest_key(meta["name"])
        key = values[(digest_key.name, digest_key.key)]
        secrets = [password, *desired.credentials()]
        forward = None
        if self.access == "port-forward":
            pod = names.pod(meta["name"])
            forward = PortForward(self.client, meta["namespace"], pod, spec.control_plane.port)
        try:
            async with contextlib.AsyncExitStack() as stack:
                base_url = url
                if forward is not None:
                    await stack.enter_async_context(forward)
                    base_url = build.forwarded_url(spec, forward.local_port)
                connector = aiohttp.TCPConnector(ssl=pinned_ssl_context(tls) if tls else True)
                http = await stack.enter_async_context(aiohttp.ClientSession(connector=connector))
                api = DittoFSClient(http, base_url, password, tokens=memory.tokens)
                converge = Converge(api, desired, memory, digest_key=key, secrets=secrets)
                observed = await converge.run()
        except AuthenticationFailed as error:
            raise Problem(
                "AuthenticationFailed",
                f"DittoFS at {url} refused the admin login ({error.detail or error.title}): the "
                f"password in Secret {admin.name!r} (key {admin.key!r}) does not match the "
                "server's stored admin password. DittoFS reads that Secret only at its first "
                "boot, so changing it later changes nothing in the server: restore the "
                "original password, or reset the admin password through the DittoFS API and "
                "put the new one in the Secret",
                requeue_after=build.DRIFT_INTERVAL,
            ) from None
        except DittoFSUnreachable as error:
            if forward is not None and forward.failure is not None:
                reason, message = build.forward_problem(forward.failure)
                raise Problem(reason, f"{forward}: {message}", retry=True) from None
            raise Problem(
                "ServerUnreachable",
                f"cannot reach the DittoFS REST API ({error}); the operator reaches it "
                f"through {ACCESS_WHAT[self.access]} (--dittofs-api-access)",
                retry=True,
            ) from None
        except DittoFSError as error:
            raise Problem(
                "ServerError", f"DittoFS at {url}: {build.scrub(str(error), secrets)}", retry=True
            ) from None
        running = await self._pod(server) if memory.stores_revision else None
        issues = [
            *converge.issues,
            *build.reopen_pending(memory.stores_revision, running),
            *build.not_running(desired, observed),
            *build.unhealthy_stores(desired, observed, secrets),
        ]
        outcome, recheck = build.verdict(desired, issues)
        status = build.server_status(
            observed, memory.managed, memory.applied, memory.stores_revision
        )
        synced = Synced(outcome, requeue_after=recheck, status={"server": status})
        memory.inputs, memory.until, memory.synced = inputs, self.clock() + recheck, synced
        return synced

    def _memory(self, server: Obj) -> Memory:
        key = ObjectKey.of(server)
        memory = self.memory.get(key)
        if memory is None or memory.uid != server["metadata"]["uid"]:
            memory = self.memory[key] = Memory.recalled(server)
        return memory

    async def _secret_values(self, server: Obj, spec: Spec) -> dict[tuple[str, str], str]:
        """The Secret values the desired state is made of; a missing one is a Problem."""
        namespace = server["metadata"]["namespace"]
        values = {}
        for ref in build.secret_keys(server["metadata"]["name"], spec):
            values[(ref.name, ref.key)] = await self.ctx.secret_values.value(
                namespace, ref.name, ref.key, what=ref.what
            )
        return values

    async def _tls(self, server: Obj, spec: Spec) -> str | None:
        """The certificates to trust when the API serves HTTPS: its own and its CA's."""
        tls = spec.control_plane.tls
        if tls is None:
            return None
        namespace = server["metadata"]["namespace"]
        what = "TLS certificate of the REST API"
        certificate = await self.ctx.secret_values.value(
            namespace, tls.secret_name, TLS_CERT_KEY, what=what
        )
        data = await self.ctx.secret_values.data(namespace, tls.secret_name) or {}
        return certificate + "\n" + data.get(build.TLS_CA_KEY, "")

    async def _pod(self, server: Obj) -> Obj | None:
        meta = server["metadata"]
        name = names.pod(meta["name"])
        with api_problem("PodUnreadable", f"reading pod {name}"):
            return await self.client.get_or_none(PODS, name, meta["namespace"])

    async def _pod_ip(self, server: Obj) -> str | None:
        ip = ((await self._pod(server) or {}).get("status") or {}).get("podIP")
        return str(ip) if ip else None


class Converge:
    """One pass against one server: creates, updates and deletes, collecting what failed."""

    def __init__(
        self,
        api: DittoFSClient,
        desired: Desired,
        memory: Memory,
        *,
        digest_key: str,
        secrets: list[str],
    ) -> None:
        self.api = api
        self.desired = desired
        self.memory = memory
        self.digest_key = digest_key
        self.secrets = secrets
        self.issues: list[Issue] = []
        self.changed = False
        self.failed_stores: set[tuple[StoreKind, str]] = set()

    async def run(self) -> Observed:
        # Managed from the first attempt on: removed from the spec after a failed pass, a
        # half-made object is still deleted.
        for category, declared in self.desired.names().items():
            self.memory.managed[category] = self.memory.managed.get(category, set()) | declared
        await self._adapters()
        await self._groups()
        users = await self._users()
        stores = await self._stores()
        await self._shares(stores, users)
        await self._prune()
        return await self._observe()

    async def _attempt(self, reason: str, what: str, call: Awaitable[Any]) -> tuple[bool, Any]:
        """Make one change; a rejection becomes an issue naming `what`, anything else raises."""
        try:
            result = await call
        except DittoFSError as error:
            if isinstance(error, AuthenticationFailed) or error.status not in REJECTED:
                raise
            detail = build.scrub(error.detail or error.title, self.secrets)
            self.issues.append(Issue(reason, f"{what}: DittoFS answered {error.status}: {detail}"))
            return False, None
        self.changed = True
        log.info("changed dittofs state", change=what, server=self.api.base_url)
        return True, result

    async def _list(self, path: str) -> list[Obj]:
        return list(await self.api.get(path) or ())

    async def _adapters(self) -> None:
        enabled = {adapter.type for adapter in self.desired.adapters if adapter.enabled}
        if "smb" in enabled:
            await self._smb_guest()
        reported = {adapter.get("type"): adapter for adapter in await self._list("/adapters")}
        for adapter in self.desired.adapters:
            change = build.adapter_change(adapter, reported.get(adapter.type))
            if change is not None:
                method, path, body = change
                what = f"{adapter.type} adapter (port {adapter.port})"
                await self._attempt("AdapterRejected", what, self.api.request(method, path, body))
        if "nfs" in enabled:
            await self._portmapper()

    async def _smb_guest(self) -> None:
        """Guest sessions as declared. Before the adapters: the SMB listener reads its settings
        when it (re)starts, as it does when the operator moves it to its port, so it never
        serves a guest; a running one picks a change up within its settings watcher's poll."""
        settings = await self.api.get("/adapters/smb/settings") or {}
        patch = build.smb_guest_patch(self.desired.smb_guest, settings)
        if patch is not None:
            what = f"SMB guest sessions {'on' if self.desired.smb_guest else 'off'}"
            await self._attempt(
                "AdapterRejected", what, self.api.patch("/adapters/smb/settings", patch)
            )

    async def _portmapper(self) -> None:
        nfs = next(adapter for adapter in self.desired.adapters if adapter.type == "nfs")
        settings = await self.api.get("/adapters/nfs/settings") or {}
        patch = build.portmapper_patch(self.desired.portmapper, settings)
        if patch is None:
            return
        what = "NFS portmapper settings"
        done, _ = await self._attempt(
            "AdapterRejected", what, self.api.patch("/adapters/nfs/settings", patch)
        )
        if done:  # the NFS adapter reads them when it starts: restart it
            await self._attempt(
                "AdapterRejected",
                "NFS adapter stop",
                self.api.put("/adapters/nfs", {"enabled": False}),
            )
            body = {"enabled": True, "port": nfs.port}
            await self._attempt(
                "AdapterRejected", "NFS adapter start", self.api.put("/adapters/nfs", body)
            )

    async def _groups(self) -> None:
        reported = {group.get("name"): group for group in await self._list("/groups")}
        for group in self.desired.groups:
            found = reported.get(group.name)
            what = f"group {group.name}"
            if found is None:
                body = build.group_create_body(group)
                await self._attempt("GroupRejected", what, self.api.post("/groups", body))
            elif update := build.group_update_body(group, found):
                path = f"/groups/{group.name}"
                await self._attempt("GroupRejected", what, self.api.put(path, update))

    async def _users(self) -> dict[str, Obj]:
        """Users as the server reports them once converged (for share owners)."""
        reported = {user.get("username"): user for user in await self._list("/users")}
        applied = self.memory.applied
        for user in self.desired.users:
            found = reported.get(user.name)
            what = f"user {user.name}"
            secret = build.digest(self.digest_key, user.item, [user.password])
            if found is None:
                body = build.user_create_body(user)
                done, created = await self._attempt(
                    "UserRejected", what, self.api.post("/users", body)
                )
                if done:
                    applied[user.item] = secret
                    reported[user.name] = created or {}
                continue
            if update := build.user_update_body(user, found):
                path = f"/users/{user.name}"
                done, updated = await self._attempt(
                    "UserRejected", what, self.api.put(path, update)
                )
                if done and updated:
                    reported[user.name] = updated
            if applied.get(user.item) != secret:
                path = f"/users/{user.name}/password"
                body = {"new_password": user.password}
                call = self.api.post(path, body)
                done, _ = await self._attempt("UserRejected", f"password of {what}", call)
                if done:
                    applied[user.item] = secret
        return {str(name): user for name, user in reported.items()}

    async def _stores(self) -> build.StoreIds:
        """Stores converged; the server's id of each (shares are reported by store id)."""
        reported: dict[StoreKind, dict[str, Obj]] = {}
        for kind in STORE_KINDS:
            reported[kind] = {
                str(store.get("name")): store for store in await self._list(STORE_PATHS[kind])
            }
        applied = self.memory.applied
        for store in self.desired.stores:
            found = reported[store.kind].get(store.name)
            secret = build.digest(self.digest_key, store.item, store.secrets)
            if found is None:
                call = self.api.post(STORE_PATHS[store.kind], store.create_body())
                done, created = await self._attempt("StoreRejected", store.what, call)
                if done:
                    reported[store.kind][store.name] = created or {}
                    if store.secrets:
                        applied[store.item] = secret
                else:
                    self.failed_stores.add((store.kind, store.name))
                continue
            if found.get("type") != store.type:
                self.failed_stores.add((store.kind, store.name))
                self.issues.append(
                    Issue(
                        "StoreConflict",
                        f"{store.what} exists on the server with type {found.get('type')}, the "
                        f"spec says {store.type}: the operator does not replace a store (its data "
                        "would go); delete it through the DittoFS API or rename it in the spec",
                    )
                )
                continue
            drift = build.config_drift(store, found, applied.get(store.item), secret)
            if drift is not None:
                call = self.api.put(store.path, store.update_body())
                done, _ = await self._attempt("StoreRejected", f"{store.what} ({drift})", call)
                if done:
                    # Saved, not in use: the running server keeps the store it opened.
                    revision = build.stores_revision(self.digest_key, self.desired.stores)
                    self.memory.stores_revision = revision
                    if store.secrets:
                        applied[store.item] = secret
        return {
            (kind, str(name)): str(store.get("id"))
            for kind in STORE_KINDS
            for name, store in reported[kind].items()
        }

    async def _shares(self, ids: build.StoreIds, users: dict[str, Obj]) -> None:
        reported = {share.get("name"): share for share in await self._list("/shares")}
        for share in self.desired.shares:
            what = f"share {share.name}"
            blocked = [
                f"{build.STORE_WHAT[k]} {n}"
                for k, n in share.stores
                if (k, n) in self.failed_stores
            ]
            if blocked:
                self.issues.append(
                    Issue("ShareRejected", f"{what} waits for {', '.join(blocked)} (see above)")
                )
                continue
            if share.owner and share.owner not in users:
                self.issues.append(
                    Issue("ShareRejected", f"{what} waits for its owner, user {share.owner}")
                )
                continue
            owner = build.owner_ids(users.get(share.owner)) if share.owner else None
            if share.owner and owner is None:
                self.issues.append(
                    Issue(
                        "ShareRejected",
                        f"{what}: its owner {share.owner} has no uid (set spec.users[].uid): "
                        "DittoFS gives the share's root the owner's uid and gid",
                    )
                )
                continue
            found = reported.get(share.name)
            if found is not None:
                if conflict := build.share_conflict(share, found, ids):
                    self.issues.append(Issue("ShareConflict", conflict))
                    continue
                if build.owner_differs(owner, found):
                    # No API changes an owner: created again, the share keeps its files.
                    call = self.api.delete(share.path)
                    done, _ = await self._attempt("ShareRejected", f"{what} (new owner)", call)
                    if not done:
                        continue
                    found = None
            if found is None:
                call = self.api.post("/shares", build.share_create_body(share))
                done, found = await self._attempt("ShareRejected", what, call)
                if not done:
                    continue
            elif update := build.share_update_body(share, found, ids):
                await self._attempt("ShareRejected", what, self.api.put(share.path, update))
            if found is not None and found.get("enabled") is False:
                call = self.api.post(f"{share.path}/enable")
                await self._attempt("ShareRejected", f"{what} (enable)", call)
            await self._share_options(share)

    async def _share_options(self, share: build.Share) -> None:
        what = f"share {share.name}"
        nfs_path = f"{share.path}/adapters/nfs/config"
        if patch := build.nfs_options_patch(share, await self.api.get(nfs_path) or {}):
            call = self.api.patch(nfs_path, patch)
            await self._attempt("ShareRejected", f"NFS options of {what}", call)
        permissions = await self.api.get(f"{share.path}/permissions")
        sets, removals = build.permission_changes(share, permissions)
        for kind, name, level in sets:
            path = build.permission_path(share, kind, name)
            call = self.api.put(path, {"level": level})
            await self._attempt("ShareRejected", f"{kind} {name}'s permission on {what}", call)
        for kind, name in removals:
            path = build.permission_path(share, kind, name)
            call = self.api.delete(path)
            await self._attempt("ShareRejected", f"{kind} {name}'s permission on {what}", call)

    async def _prune(self) -> None:
        """Delete what the operator created and the spec no longer names (build.PRUNE_ORDER)."""
        declared = self.desired.names()
        managed = self.memory.managed
        for category, reason in build.PRUNE_ORDER:
            stale = managed.get(category, set()) - declared[category]
            kept = set()
            if stale:
                listed = await self._list(build.listing_path(category))
                present = {build.listed_name(category, item) for item in listed}
                for name in sorted(stale & present):
                    call = self.api.delete(build.object_path(category, name))
                    what = f"{build.CATEGORIES[category]} entry {name} (no longer in the spec)"
                    done, _ = await self._attempt(reason, what, call)
                    if not done:
                        kept.add(name)
            managed[category] = declared[category] | kept
        current = {user.item for user in self.desired.users} | {
            store.item for store in self.desired.stores if store.secrets
        }
        for item in set(self.memory.applied) - current:
            del self.memory.applied[item]

    async def _observe(self) -> Observed:
        return Observed(
            adapters=await self._list("/adapters"),
            stores={kind: await self._list(STORE_PATHS[kind]) for kind in STORE_KINDS},
            shares=await self._list("/shares"),
            users=await self._list("/users"),
            groups=await self._list("/groups"),
        )


def setup(manager: Manager, ctx: Context) -> None:
    """The serverconfig controller: DittoServers (Available above all) and every Secret whose value
    it sends or keys its digests with: referenced ones, the generated admin Secret and digest key,
    Percona's user Secret."""
    controller = server_controller(manager, ServerConfigReconciler(ctx))
    controller.owns(ctx.secrets, DITTOSERVERS)
    controller.watch(ctx.secrets, servers_referencing(ctx.servers))
    controller.watch(ctx.secrets, percona_user_servers(ctx.servers))
