"""One pass against one DittoFS server: the REST calls that make it match the model, in
dependency order, and what the server reports afterwards."""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any

import structlog

from dittofs_controller.dittofs import AuthenticationFailed, DittoFSClient, DittoFSError
from dittofs_controller.operator.children import Obj
from dittofs_controller.operator.serverconfig import credentials, payloads
from dittofs_controller.operator.serverconfig.memory import Memory
from dittofs_controller.operator.serverconfig.model import (
    LDAP,
    STORE_KINDS,
    STORE_PATHS,
    STORE_WHAT,
    Adapter,
    Desired,
    Kerberos,
    Share,
    Store,
    StoreKind,
    User,
    quota_what,
)
from dittofs_controller.operator.serverconfig.report import (
    CATEGORIES,
    NOT_RUNNING_RECHECK,
    Issue,
    Observed,
)

log = structlog.get_logger("dittofs_controller.operator.serverconfig")

# Answers that reject what was sent (a bad store config, a duplicate uid, a store in use):
# reported, and retried only when something changes. Anything else is transient.
REJECTED = (400, 409, 422)


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
        self.snapshot_policies: dict[str, Obj] = {}  # share name -> the server's policy
        self.quotas: dict[str, list[Obj]] = {}  # share name -> the server's quotas
        self.smb_settings: Obj = {}  # the adapters' settings as the server reports them
        self.nfs_settings: Obj = {}

    async def run(self) -> Observed:
        # Managed from the first attempt on: removed from the spec after a failed pass, a
        # half-made object is still deleted.
        for category, declared in self.desired.names().items():
            self.memory.managed[category] = self.memory.managed.get(category, set()) | declared
        await self._adapters()
        await self._groups()
        await self._netgroups()
        users = await self._users()
        stores = await self._stores()
        await self._shares(stores, users)
        ldap = await self._ldap()
        kerberos = await self._kerberos()
        await self._prune()
        return await self._observe(ldap, kerberos)

    async def _attempt(self, reason: str, what: str, call: Awaitable[Any]) -> tuple[bool, Any]:
        """Make one change; a rejection becomes an issue naming `what`, anything else raises."""
        try:
            result = await call
        except DittoFSError as error:
            if isinstance(error, AuthenticationFailed) or error.status not in REJECTED:
                raise
            detail = credentials.scrub(error.detail or error.title, self.secrets)
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
            await self._smb_settings()
        reported = {adapter.get("type"): adapter for adapter in await self._list("/adapters")}
        for adapter in self.desired.adapters:
            found = reported.get(adapter.type)
            change = payloads.adapter_change(adapter, found)
            if change is not None:
                method, path, body = change
                what = f"{adapter.type} adapter (port {adapter.port})"
                call = self.api.request(method, path, body)
                done, _ = await self._attempt("AdapterRejected", what, call)
                # A listener on an unchanged port is kept across a PUT, with its old config.
                if done and found is not None and "config" in body and adapter.enabled:
                    await self._restart_adapter(adapter)
        if "nfs" in enabled:
            await self._nfs_settings()

    async def _restart_adapter(self, adapter: Adapter) -> None:
        """Stop and start an adapter, for what DittoFS reads only when its listener starts."""
        stop = self.api.put(f"/adapters/{adapter.type}", {"enabled": False})
        await self._attempt("AdapterRejected", f"{adapter.type} adapter stop", stop)
        start = self.api.put(f"/adapters/{adapter.type}", {"enabled": True, "port": adapter.port})
        await self._attempt("AdapterRejected", f"{adapter.type} adapter start", start)

    async def _smb_settings(self) -> None:
        """Signing (and so guests) and dialects as declared. Before the adapters: the SMB
        listener reads its settings when it (re)starts, as it does when the operator moves it
        to its port, so it never serves a guest; a running one picks a change up within its
        settings watcher's poll."""
        self.smb_settings = await self.api.get("/adapters/smb/settings") or {}
        patch = payloads.smb_settings_patch(self.desired.smb, self.smb_settings)
        if patch is not None:
            what = f"SMB settings ({', '.join(sorted(patch))})"
            done, answered = await self._attempt(
                "AdapterRejected", what, self.api.patch("/adapters/smb/settings", patch)
            )
            if done and answered:
                self.smb_settings = answered

    async def _nfs_settings(self) -> None:
        self.nfs_settings = await self.api.get("/adapters/nfs/settings") or {}
        patch = payloads.nfs_settings_patch(self.desired.nfs, self.nfs_settings)
        if patch is None:
            return
        what = f"NFS settings ({', '.join(sorted(patch))})"
        done, answered = await self._attempt(
            "AdapterRejected", what, self.api.patch("/adapters/nfs/settings", patch)
        )
        if done and answered:
            self.nfs_settings = answered
        if done and "portmapper_enabled" in patch:  # read when the adapter starts
            nfs = next(adapter for adapter in self.desired.adapters if adapter.type == "nfs")
            await self._restart_adapter(nfs)

    async def _netgroups(self) -> None:
        """Netgroups with exactly their declared members, before the shares that admit them."""
        if not self.desired.netgroups:
            return
        listed = {str(item.get("name")) for item in await self._list(payloads.NETGROUPS_PATH)}
        for netgroup in self.desired.netgroups:
            what = f"NFS netgroup {netgroup.name}"
            path = f"{payloads.NETGROUPS_PATH}/{netgroup.name}"
            if netgroup.name not in listed:
                body = {"name": netgroup.name}
                done, _ = await self._attempt(
                    "AdapterRejected", what, self.api.post(payloads.NETGROUPS_PATH, body)
                )
                if not done:
                    continue
            found = await self.api.get(path) if netgroup.name in listed else None
            additions, removals = payloads.netgroup_changes(netgroup, found)
            for member in additions:
                call = self.api.post(f"{path}/members", member)
                await self._attempt("AdapterRejected", f"{what} member {member['value']}", call)
            for member_id in removals:
                call = self.api.delete(f"{path}/members/{member_id}")
                await self._attempt("AdapterRejected", f"{what} member {member_id}", call)

    async def _groups(self) -> None:
        reported = {group.get("name"): group for group in await self._list("/groups")}
        for group in self.desired.groups:
            found = reported.get(group.name)
            what = f"group {group.name}"
            if found is None:
                body = payloads.group_create_body(group)
                await self._attempt("GroupRejected", what, self.api.post("/groups", body))
            elif update := payloads.group_update_body(group, found):
                path = f"/groups/{group.name}"
                await self._attempt("GroupRejected", what, self.api.put(path, update))

    async def _users(self) -> dict[str, Obj]:
        """Users as the server reports them once converged (for share owners)."""
        reported = {user.get("username"): user for user in await self._list("/users")}
        for user in self.desired.users:
            found = reported.get(user.name)
            if found is None:
                found = await self._create_user(user)
            else:
                found = await self._update_user(user, found)
            if found is not None:
                reported[user.name] = found
        return {str(name): user for name, user in reported.items()}

    async def _create_user(self, user: User) -> Obj | None:
        """The new user as the server reports it, or None when it was refused."""
        call = self.api.post("/users", payloads.user_create_body(user))
        done, created = await self._attempt("UserRejected", f"user {user.name}", call)
        if not done:
            return None
        self.memory.applied[user.item] = self._digest(user.item, [user.password])
        return created or {}

    async def _update_user(self, user: User, found: Obj) -> Obj:
        """The user updated where it differs, its password sent again when that changed."""
        what = f"user {user.name}"
        if update := payloads.user_update_body(user, found):
            path = f"/users/{user.name}"
            done, updated = await self._attempt("UserRejected", what, self.api.put(path, update))
            if done and updated:
                found = updated
        secret = self._digest(user.item, [user.password])
        if self.memory.applied.get(user.item) != secret:
            path = f"/users/{user.name}/password"
            call = self.api.post(path, {"new_password": user.password})
            done, _ = await self._attempt("UserRejected", f"password of {what}", call)
            if done:
                self.memory.applied[user.item] = secret
        return found

    def _digest(self, item: str, values: Sequence[str]) -> str:
        return credentials.digest(self.digest_key, item, values)

    async def _stores(self) -> payloads.StoreIds:
        """Stores converged; the server's id of each (shares are reported by store id)."""
        reported: dict[StoreKind, dict[str, Obj]] = {}
        for kind in STORE_KINDS:
            reported[kind] = {
                str(store.get("name")): store for store in await self._list(STORE_PATHS[kind])
            }
        for store in self.desired.stores:
            found = reported[store.kind].get(store.name)
            if found is None:
                created = await self._create_store(store)
                if created is not None:
                    reported[store.kind][store.name] = created
            elif found.get("type") != store.type:
                self.failed_stores.add((store.kind, store.name))
                self.issues.append(
                    Issue(
                        "StoreConflict",
                        f"{store.what} exists on the server with type {found.get('type')}, the "
                        f"spec says {store.type}: the operator does not replace a store (its data "
                        "would go); delete it through the DittoFS API or rename it in the spec",
                    )
                )
            else:
                await self._update_store(store, found)
        return {
            (kind, str(name)): str(store.get("id"))
            for kind in STORE_KINDS
            for name, store in reported[kind].items()
        }

    async def _create_store(self, store: Store) -> Obj | None:
        """The new store as the server reports it, or None when it was refused."""
        call = self.api.post(STORE_PATHS[store.kind], store.create_body())
        done, created = await self._attempt("StoreRejected", store.what, call)
        if not done:
            self.failed_stores.add((store.kind, store.name))
            return None
        if store.secrets:
            self.memory.applied[store.item] = self._digest(store.item, store.secrets)
        return created or {}

    async def _update_store(self, store: Store, found: Obj) -> None:
        """Send the store's config when it drifted from the server's (settings or credentials)."""
        applied = self.memory.applied
        secret = self._digest(store.item, store.secrets)
        drift = payloads.config_drift(store, found, applied.get(store.item), secret)
        if drift is None:
            return
        call = self.api.put(store.path, store.update_body())
        done, _ = await self._attempt("StoreRejected", f"{store.what} ({drift})", call)
        if done:
            # Saved, not in use: the running server keeps the store it opened.
            self._restart_for_change()
            if store.secrets:
                applied[store.item] = secret

    def _restart_for_change(self) -> None:
        """A change DittoFS reads only when it starts was saved: publish the revision the pod
        must be started for."""
        self.memory.stores_revision = credentials.stores_revision(
            self.digest_key, self.desired.stores, self.desired.shares, self.desired.kerberos
        )

    async def _shares(self, ids: payloads.StoreIds, users: dict[str, Obj]) -> None:
        reported = {share.get("name"): share for share in await self._list("/shares")}
        for share in self.desired.shares:
            owner = payloads.owner_ids(users.get(share.owner)) if share.owner else None
            if waits := self._share_waits(share, users, owner):
                self.issues.append(Issue("ShareRejected", waits))
            else:
                await self._share(share, reported.get(share.name), owner, ids)

    def _share_waits(
        self, share: Share, users: dict[str, Obj], owner: tuple[int, int] | None
    ) -> str | None:
        """Why the share cannot be made yet (a store or its owner is missing), or None."""
        what = f"share {share.name}"
        blocked = [f"{STORE_WHAT[k]} {n}" for k, n in share.stores if (k, n) in self.failed_stores]
        if blocked:
            return f"{what} waits for {', '.join(blocked)} (see above)"
        if share.owner and share.owner not in users:
            return f"{what} waits for its owner, user {share.owner}"
        if share.owner and owner is None:
            return (
                f"{what}: its owner {share.owner} has no uid (set spec.users[].uid): "
                "DittoFS gives the share's root the owner's uid and gid"
            )
        return None

    async def _share(
        self,
        share: Share,
        found: Obj | None,
        owner: tuple[int, int] | None,
        ids: payloads.StoreIds,
    ) -> None:
        """Create or update one share (`found` is the server's), then its options."""
        what = f"share {share.name}"
        if found is not None:
            if conflict := payloads.share_conflict(share, found, ids):
                self.issues.append(Issue("ShareConflict", conflict))
                return
            if payloads.owner_differs(owner, found):
                # No API changes an owner: created again, the share keeps its files.
                call = self.api.delete(share.path)
                done, _ = await self._attempt("ShareRejected", f"{what} (new owner)", call)
                if not done:
                    return
                found = None
        if found is None:
            call = self.api.post("/shares", payloads.share_create_body(share))
            done, found = await self._attempt("ShareRejected", what, call)
            if not done:
                return
        elif update := payloads.share_update_body(share, found, ids):
            done, _ = await self._attempt("ShareRejected", what, self.api.put(share.path, update))
            if done and "encrypt_data" in update:  # used once DittoFS starts again
                self._restart_for_change()
        if found is not None and found.get("enabled", True) != share.enabled:
            action = "enable" if share.enabled else "disable"
            call = self.api.post(f"{share.path}/{action}")
            await self._attempt("ShareRejected", f"{what} ({action})", call)
        await self._share_options(share)

    async def _share_options(self, share: Share) -> None:
        what = f"share {share.name}"
        nfs_path = f"{share.path}/adapters/nfs/config"
        if patch := payloads.nfs_options_patch(share, await self.api.get(nfs_path) or {}):
            call = self.api.patch(nfs_path, patch)
            await self._attempt("ShareRejected", f"NFS options of {what}", call)
        permissions = await self.api.get(f"{share.path}/permissions")
        sets, removals = payloads.permission_changes(share, permissions)
        for kind, name, level in sets:
            path = payloads.permission_path(share, kind, name)
            call = self.api.put(path, {"level": level})
            await self._attempt("ShareRejected", f"{kind} {name}'s permission on {what}", call)
        for kind, name in removals:
            path = payloads.permission_path(share, kind, name)
            call = self.api.delete(path)
            await self._attempt("ShareRejected", f"{kind} {name}'s permission on {what}", call)
        await self._snapshot_policy(share)
        await self._quotas(share)

    async def _snapshot_policy(self, share: Share) -> None:
        """The declared policy, or none: the spec speaks for every share it declares."""
        what = f"snapshot policy of share {share.name}"
        path = f"{share.path}/snapshot-policy"
        try:
            reported: Obj | None = await self.api.get(path)
        except DittoFSError as error:
            if error.status != 404:
                raise
            reported = None
        policy = share.snapshots
        if policy is None:
            if reported is not None:
                done, _ = await self._attempt("ShareRejected", what, self.api.delete(path))
                if not done:
                    self.snapshot_policies[share.name] = reported
            return
        if reported is None or payloads.snapshot_policy_differs(policy, reported):
            call = self.api.put(path, payloads.snapshot_policy_body(policy))
            done, answered = await self._attempt("ShareRejected", what, call)
            if done and answered:
                reported = answered
        if reported is not None:
            self.snapshot_policies[share.name] = reported

    async def _quotas(self, share: Share) -> None:
        """The declared quotas and no others: the spec speaks for every share it declares."""
        listed = await self._list(f"{share.path}/quotas")
        found = {payloads.quota_key(entry): entry for entry in listed}
        sets, removals = payloads.quota_changes(share, listed)
        for quota in sets:
            body = payloads.quota_body(quota.limits)
            call = self.api.put(payloads.quota_path(share, quota.key), body)
            what = f"{quota.what} on share {share.name}"
            done, answered = await self._attempt("QuotaRejected", what, call)
            if done and answered:
                found[quota.key] = answered
        for key in removals:
            call = self.api.delete(payloads.quota_path(share, key))
            what = f"{quota_what(key)} on share {share.name} (not in the spec)"
            done, _ = await self._attempt("QuotaRejected", what, call)
            if done:
                del found[key]
        self.quotas[share.name] = list(found.values())

    async def _provider(self, path: str) -> Obj | None:
        """An identity provider's config as the server has it, or None when it has none."""
        try:
            found: Obj | None = await self.api.get(path)
        except DittoFSError as error:
            if error.status != 404:
                raise
            return None
        return found

    async def _disabled(self, name: str, what: str, path: str, reported: Obj | None) -> Obj | None:
        """A provider the spec no longer declares turned off, if the operator configured it
        (one configured by hand through the API is left alone); the server's config after."""
        managed = self.memory.managed.setdefault("identity", set())
        body = payloads.disable_body(reported) if reported is not None else None
        if name in managed and body is not None:
            call = self.api.put(path, body)
            reason = "IdentityProviderRejected"
            done, answered = await self._attempt(reason, f"{what} (no longer in the spec)", call)
            if not done:
                return reported
            reported = answered or reported
        managed.discard(name)
        return reported

    async def _ldap(self) -> Obj | None:
        """The declared directory, or the one the operator configured turned off; then whether
        DittoFS can reach it and bind. The server's config once converged (for status)."""
        ldap = self.desired.ldap
        reported = await self._provider(LDAP.path)
        if ldap is None:
            return await self._disabled("ldap", "LDAP directory", LDAP.path, reported)
        secret = self._digest(LDAP.item, [ldap.bind_password])
        applied = self.memory.applied.get(LDAP.item)
        if drift := payloads.ldap_drift(ldap, reported, applied, secret):
            what = f"LDAP directory {ldap.settings['url']} ({drift})"
            call = self.api.put(LDAP.path, ldap.body(ldap.bind_password))
            done, answered = await self._attempt("IdentityProviderRejected", what, call)
            if not done:
                return reported
            self.memory.applied[LDAP.item] = secret
            reported = answered or reported
        await self._ldap_reachable(ldap)
        return reported

    async def _kerberos(self) -> Obj | None:
        """The declared Kerberos settings, or the ones the operator configured turned off. DittoFS
        binds them when it starts, so a change moves the revision the pod is started for (as a
        store change does). The server's config once converged (for status)."""
        kerberos = self.desired.kerberos
        reported = await self._provider(Kerberos.path)
        if kerberos is None:
            after = await self._disabled("kerberos", "Kerberos settings", Kerberos.path, reported)
            if after is not reported:
                self._restart_for_change()
            return after
        if drift := payloads.kerberos_drift(kerberos, reported):
            what = f"Kerberos for {kerberos.settings['service_principal']} ({drift})"
            body = payloads.kerberos_body(kerberos, reported)
            call = self.api.put(Kerberos.path, body)
            done, answered = await self._attempt("IdentityProviderRejected", what, call)
            if not done:
                return reported
            reported = answered or reported
            self._restart_for_change()
        return reported

    async def _ldap_reachable(self, ldap: LDAP) -> None:
        """Ask DittoFS to dial and bind with what it stored: a wrong password or an unreachable
        directory is accepted by PUT and would otherwise only show when a user logs in."""
        body = ldap.body(payloads.REDACTED)
        result = await self.api.post("/identity-providers/ldap/test", body) or {}
        if not result.get("ok"):
            stage = result.get("stage") or "test"
            detail = credentials.scrub(str(result.get("message") or "no detail"), self.secrets)
            self.issues.append(
                Issue(
                    "IdentityProviderUnreachable",
                    f"DittoFS cannot use the LDAP directory {ldap.settings['url']} ({stage}): "
                    f"{detail}",
                    NOT_RUNNING_RECHECK,
                )
            )

    async def _prune(self) -> None:
        """Delete what the operator created and the spec no longer names (payloads.PRUNE_ORDER)."""
        declared = self.desired.names()
        managed = self.memory.managed
        for category, reason in payloads.PRUNE_ORDER:
            stale = managed.get(category, set()) - declared[category]
            kept = set()
            if stale:
                listed = await self._list(payloads.listing_path(category))
                present = {payloads.listed_name(category, item) for item in listed}
                for name in sorted(stale & present):
                    call = self.api.delete(payloads.object_path(category, name))
                    what = f"{CATEGORIES[category]} entry {name} (no longer in the spec)"
                    done, _ = await self._attempt(reason, what, call)
                    if not done:
                        kept.add(name)
            managed[category] = declared[category] | kept
        current = (
            {user.item for user in self.desired.users}
            | {store.item for store in self.desired.stores if store.secrets}
            | ({LDAP.item} if self.desired.ldap is not None else set())
        )
        for item in set(self.memory.applied) - current:
            del self.memory.applied[item]

    async def _observe(self, ldap: Obj | None, kerberos: Obj | None) -> Observed:
        return Observed(
            ldap=ldap,
            kerberos=kerberos,
            adapters=await self._list("/adapters"),
            stores={kind: await self._list(STORE_PATHS[kind]) for kind in STORE_KINDS},
            shares=await self._list("/shares"),
            users=await self._list("/users"),
            groups=await self._list("/groups"),
            snapshot_policies=self.snapshot_policies,
            quotas=self.quotas,
            settings={"smb": self.smb_settings, "nfs": self.nfs_settings},
        )
