"""The config reconciler: the DittoFS config file, its restart hash and the generated Secrets.

Owns ConfigReady. It checks that every Secret the pod will read exists with its keys (so a
missing one is a condition naming it, not a crash-looping pod), generates the JWT and admin
Secrets the spec does not reference and the key of the serverconfig reconciler's credential digests,
and writes the ConfigMap whose restart-hash annotation the server reconciler copies onto the pod
template.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING

import structlog

from dittofs_controller.api.v1alpha1 import SecretKeySelector
from dittofs_controller.kube.client import ApiError
from dittofs_controller.kube.resources import CONFIGMAPS, DITTOSERVERS, SECRETS, ObjectKey
from dittofs_controller.operator import conditions, names
from dittofs_controller.operator.base import (
    Context,
    ServerReconciler,
    Spec,
    Synced,
    owned_children,
    server_controller,
)
from dittofs_controller.operator.children import Obj, adoption_problem, owner_reference
from dittofs_controller.operator.conditions import Outcome
from dittofs_controller.operator.config import build
from dittofs_controller.operator.problems import UNWATCHED_RECHECK, Problem, api_problem
from dittofs_controller.operator.references import percona_user_servers, servers_referencing
from dittofs_controller.runtime.informer import ResourceCache

if TYPE_CHECKING:
    from dittofs_controller.runtime.manager import Manager

log = structlog.get_logger("dittofs_controller.operator.config")

SecretValues = dict[tuple[str, str], str]


class ConfigReconciler(ServerReconciler):
    name = "config"
    condition = conditions.CONFIG_READY
    # The generated Secrets outlive the DittoServer under deletionPolicy Retain: the admin
    # password is read at first boot only, and retained data is useless without it. The digest
    # key goes the same way: one rule for every generated Secret.
    finalizer = "dittofs.io/config"

    def __init__(self, ctx: Context, config_maps: ResourceCache) -> None:
        super().__init__(ctx)
        self.config_maps = config_maps

    async def sync(self, server: Obj, spec: Spec) -> Synced:
        meta = server["metadata"]
        known: SecretValues = {}
        for secret in build.generated(meta["name"], spec):
            value = await self._ensure_generated(server, secret)
            if value is not None:
                known[(secret.name, secret.key)] = value
        restart_values = await self._check_secrets(meta["name"], meta["namespace"], spec, known)
        text = build.render(spec)
        desired = build.config_map(server, text, build.restart_hash(text, restart_values))
        live = self.config_maps.get(ObjectKey(meta["namespace"], desired["metadata"]["name"]))
        with api_problem("ApplyFailed", f"could not write ConfigMap {desired['metadata']['name']}"):
            await self.apply_child(CONFIGMAPS, desired, live)
            if foreign := build.foreign_keys(desired, live):
                # Keys added by hand belong to their writer: an apply never removes them.
                await self.client.merge_patch(
                    CONFIGMAPS, desired["metadata"]["name"], foreign, meta["namespace"]
                )
        return Synced(
            Outcome.true(
                "Rendered",
                f"the config file is in ConfigMap {desired['metadata']['name']!r} and every "
                "Secret the server reads exists",
            )
        )

    async def release(self, server: Obj, spec: Spec | None) -> None:
        """Under Retain (or an unreadable spec) orphan the generated Secrets so they survive."""
        if spec is not None and spec.deletion_policy == "Delete":
            return  # garbage collection deletes them with the DittoServer
        generated = {secret.name for secret in build.generated(server["metadata"]["name"], None)}
        for live in await self.children_from_api(SECRETS, server):
            if live["metadata"]["name"] in generated:
                await self.disown(SECRETS, live, server)

    async def _ensure_generated(self, server: Obj, secret: build.Generated) -> str | None:
        """Create the Secret when missing, else adopt it unchanged; its value when known here.

        Never rewritten: a new JWT secret would restart the server, and DittoFS keeps the admin
        password it read at first boot whatever the Secret says later. The value is returned
        when this pass wrote or read the Secret, because the cache may not show it yet.
        """
        namespace = server["metadata"]["namespace"]
        live = self.ctx.secrets.get(ObjectKey(namespace, secret.name))
        if live is not None:
            await self._adopt(server, live, secret)
            return None
        value = secret.new_value()
        try:
            with api_problem("ApplyFailed", f"could not create Secret {secret.name}"):
                await self.client.create(
                    SECRETS, build.generated_secret(server, secret, value), namespace
                )
        except ApiError as error:
            if not error.conflict:
                raise
            # It exists and the cache has not seen it yet.
            live = await self.client.get(SECRETS, secret.name, namespace)
            await self._adopt(server, live, secret)
            encoded = (live.get("data") or {}).get(secret.key)
            return base64.b64decode(encoded).decode() if encoded is not None else None
        log.info("generated secret", secret=secret.name)
        return value

    async def _adopt(self, server: Obj, live: Obj, secret: build.Generated) -> None:
        """Make the DittoServer the owner of a Secret generated for a server of its name."""
        if problem := adoption_problem(server, live):
            instead = f", or reference a Secret in {secret.field}" if secret.field else ""
            raise Problem(
                "NameConflict",
                f"Secret {secret.name} ({secret.what}) {problem}: delete it{instead}",
                requeue_after=UNWATCHED_RECHECK,
            )
        refs = live["metadata"].get("ownerReferences") or []
        if any(ref.get("uid") == server["metadata"]["uid"] for ref in refs):
            return
        # Kept by a former DittoServer of this name under Retain: take it over, data unchanged.
        await self._set_owners(live, [*refs, owner_reference(server)])
        log.info("adopted generated secret", secret=secret.name)

    async def _set_owners(self, live: Obj, refs: list[Obj]) -> None:
        meta = live["metadata"]
        patch = {
            "metadata": {
                "ownerReferences": refs or None,
                # A precondition: never overwrite owners someone changed since we looked.
                "resourceVersion": meta["resourceVersion"],
            }
        }
        with api_problem("ApplyFailed", f"could not set the owners of Secret {meta['name']}"):
            await self.client.merge_patch(SECRETS, meta["name"], patch, meta["namespace"])

    async def _check_secrets(
        self, server_name: str, namespace: str, spec: Spec, known: SecretValues
    ) -> SecretValues:
        """Check every Secret the pod reads; return the values whose change must restart it.

        Values are read to check them and to hash them; they never leave this process.
        """
        cp = spec.control_plane
        reader = self.ctx.secret_values

        async def value(ref: SecretKeySelector, what: str) -> str:
            if (ref.name, ref.key) in known:
                return known[(ref.name, ref.key)]
            return await reader.value(namespace, ref.name, ref.key, what=what)

        jwt = build.jwt_secret_ref(server_name, spec)
        what = _source("jwtSecretRef", cp.jwt_secret_ref)
        restart: SecretValues = {(jwt.name, jwt.key): await value(jwt, what)}
        if len(restart[(jwt.name, jwt.key)]) < build.JWT_MIN_LENGTH:
            raise _invalid(jwt, what, f"at least {build.JWT_MIN_LENGTH} characters")
        admin = build.admin_secret_ref(server_name, spec)
        what = _source("adminPasswordSecretRef", cp.admin_password_secret_ref)
        if not await value(admin, what):
            raise _invalid(admin, what, "a non-empty password")
        if cp.tls is not None:
            await reader.require_keys(
                namespace,
                cp.tls.secret_name,
                (build.TLS_CERT_KEY, build.TLS_KEY_KEY),
                what="spec.controlPlane.tls",
            )
            if (client_ca := cp.tls.client_ca) is not None:
                # DittoFS reloads its own certificate when the file changes, but reads the
                # client CA bundle only when it starts: a changed bundle restarts the pod.
                ref = SecretKeySelector(name=client_ca.secret_name, key=client_ca.key)
                restart[(ref.name, ref.key)] = await value(ref, "spec.controlPlane.tls.clientCA")
        if (nfs_tls := spec.adapters.nfs.tls) is not None:
            await reader.require_keys(
                namespace,
                nfs_tls.secret_name,
                (build.TLS_CERT_KEY, build.TLS_KEY_KEY),
                what="spec.adapters.nfs.tls",
            )
        external = spec.postgres.external if build.uses_postgres(spec) and spec.postgres else None
        for ref in build.postgres_env(server_name, spec).values():
            if external is not None:
                restart[(ref.name, ref.key)] = await value(ref, "spec.postgres.external")
                continue
            # The Percona operator writes its user Secret; DatabaseReady waits for it. Hash
            # what exists: before it appears the server is not started anyway.
            data = await reader.data(namespace, ref.name)
            if data is not None and ref.key in data:
                restart[(ref.name, ref.key)] = data[ref.key]
        if external is not None and external.ssl_root_cert_secret_ref is not None:
            ca = external.ssl_root_cert_secret_ref
            await value(ca, "spec.postgres.external.sslRootCertSecretRef")
        if (ldap_ca := build.ldap_ca(spec)) is not None:
            await value(ldap_ca, "spec.identity.ldap.tls.caSecretRef")
        if (kerberos := spec.identity.kerberos) is not None:
            # DittoFS loads the keytab when its adapters start: a new one needs a restart.
            keytab = kerberos.keytab_secret_ref
            what = "spec.identity.kerberos.keytabSecretRef"
            restart[(keytab.name, keytab.key)] = await value(keytab, what)
            conf = kerberos.krb5_conf_config_map_ref
            await self._require_config_map_key(namespace, conf.name, conf.key)
        if (secret := build.encryption_key_secret(server_name, spec)) is not None:
            what = "spec.encryptionKey" if spec.encryption_key else "generated"
            passphrase = SecretKeySelector(name=secret, key=names.ENCRYPTION_PASSPHRASE_KEY)
            if (secret, passphrase.key) not in known:  # generated by this pass: complete
                await reader.require_keys(
                    namespace, secret, (names.ENCRYPTION_KEY_FILE_KEY,), what=what
                )
            restart[(secret, passphrase.key)] = await value(passphrase, what)
        return restart

    async def _require_config_map_key(self, namespace: str, name: str, key: str) -> None:
        """A ConfigMap the pod mounts (not one of ours, so not watched: looked at again every
        30 s until it is there)."""
        found = await self.client.get_or_none(CONFIGMAPS, name, namespace)
        what = "spec.identity.kerberos.krb5ConfConfigMapRef"
        if found is None:
            raise Problem(
                "ConfigMapNotFound",
                f"ConfigMap {name!r} ({what}) does not exist",
                requeue_after=UNWATCHED_RECHECK,
            )
        if key not in (found.get("data") or {}):
            raise Problem(
                "ConfigMapKeyNotFound",
                f"ConfigMap {name!r} ({what}) has no key {key!r}",
                requeue_after=UNWATCHED_RECHECK,
            )


def _source(field: str, ref: SecretKeySelector | None) -> str:
    """How a message names a Secret: by the spec field referencing it, or as generated."""
    return f"spec.controlPlane.{field}" if ref else "generated"


def _invalid(ref: SecretKeySelector, what: str, expected: str) -> Problem:
    return Problem(
        "SecretValueInvalid", f"Secret {ref.name!r} ({what}) key {ref.key!r} must hold {expected}"
    )


def setup(manager: Manager, ctx: Context) -> None:
    """The config controller: DittoServers, its ConfigMaps and every Secret it reads."""
    config_maps = owned_children(manager, CONFIGMAPS)
    controller = server_controller(manager, ConfigReconciler(ctx, config_maps))
    controller.owns(config_maps, DITTOSERVERS)
    controller.owns(ctx.secrets, DITTOSERVERS)  # the generated Secrets
    controller.watch(ctx.secrets, servers_referencing(ctx.servers))
    controller.watch(ctx.secrets, percona_user_servers(ctx.servers))
