"""Secrets a DittoServer references: who references what, and reading their values on demand.

Secrets are cached as metadata only (names, versions), so the operator notices a referenced
Secret appear or change at once without ever holding unrelated Secret values in memory. A value
is read with a GET when a reconciler needs it, memoised per resourceVersion.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable

from dittofs_controller.api import v1alpha1
from dittofs_controller.api.schema import ParseError
from dittofs_controller.kube.client import KubeClient
from dittofs_controller.kube.resources import SECRETS, ObjectKey
from dittofs_controller.operator.children import Obj
from dittofs_controller.operator.names import PERCONA_USER, percona_cluster, percona_user_secret
from dittofs_controller.operator.problems import Problem
from dittofs_controller.operator.specs import server_spec
from dittofs_controller.runtime.controller import KeyMapper
from dittofs_controller.runtime.informer import ResourceCache

BY_SECRET = "referenced-secrets"


def referenced_secret_names(spec: v1alpha1.DittoServerSpec) -> set[str]:
    """Every Secret name the spec points at (generated Secrets are owned, not referenced)."""
    cp = spec.control_plane
    names = {ref.name for ref in (cp.jwt_secret_ref, cp.admin_password_secret_ref) if ref}
    if cp.tls:
        names.add(cp.tls.secret_name)
        if cp.tls.client_ca:
            names.add(cp.tls.client_ca.secret_name)
        if cp.tls.operator_certificate:
            names.add(cp.tls.operator_certificate.secret_name)
    if spec.adapters.nfs.tls:
        names.add(spec.adapters.nfs.tls.secret_name)
    if spec.postgres and spec.postgres.external:
        names.add(spec.postgres.external.secret_name)
        if spec.postgres.external.ssl_root_cert_secret_ref:
            names.add(spec.postgres.external.ssl_root_cert_secret_ref.name)
    names.update(
        store.s3.credentials_secret_ref.name for store in spec.remote_block_stores if store.s3
    )
    names.update(user.password_secret_ref.name for user in spec.users)
    if spec.encryption_key:
        names.add(spec.encryption_key.secret_name)
    if (ldap := spec.identity.ldap) is not None:
        names.add(ldap.bind_password_secret_ref.name)
        if ldap.tls is not None and ldap.tls.ca_secret_ref is not None:
            names.add(ldap.tls.ca_secret_ref.name)
    if (kerberos := spec.identity.kerberos) is not None:
        names.add(kerberos.keytab_secret_ref.name)
    names.update(ref.name for ref in spec.image_pull_secrets)
    return names


def secret_index(server: Obj) -> Iterable[str]:
    """Index DittoServers by `<namespace>/<secret name>` for every Secret they reference."""
    try:
        spec = server_spec(server)
    except ParseError:
        return ()
    namespace = server["metadata"]["namespace"]
    return [f"{namespace}/{name}" for name in referenced_secret_names(spec)]


def servers_referencing(servers: ResourceCache) -> KeyMapper:
    """A key mapper: Secret -> the DittoServers that reference it."""

    def mapper(secret: Obj) -> Iterable[ObjectKey]:
        meta = secret["metadata"]
        return [
            ObjectKey.of(server)
            for server in servers.by_index(BY_SECRET, f"{meta['namespace']}/{meta['name']}")
        ]

    return mapper


def percona_user_servers(servers: ResourceCache) -> KeyMapper:
    """A key mapper: a Percona user Secret -> the DittoServers whose pod reads it."""
    suffix = f"-pguser-{PERCONA_USER}"

    def mapper(secret: Obj) -> Iterable[ObjectKey]:
        meta = secret["metadata"]
        if not meta["name"].endswith(suffix):
            return ()
        keys = []
        for server in servers.objects(meta["namespace"]):
            try:
                spec = server_spec(server)
            except ParseError:
                continue
            if spec.postgres and spec.postgres.percona:
                cluster = percona_cluster(server["metadata"]["name"], spec)
                if percona_user_secret(cluster) == meta["name"]:
                    keys.append(ObjectKey.of(server))
        return keys

    return mapper


class SecretReader:
    """Reads referenced Secret values, memoised by resourceVersion from the metadata cache."""

    def __init__(self, client: KubeClient, secrets: ResourceCache) -> None:
        self.client = client
        self.secrets = secrets
        self._values: dict[ObjectKey, tuple[str, dict[str, str]]] = {}

    def forget(self, secret: Obj) -> None:
        """Drop the values of a Secret that is gone (a lookup would find it missing, but a
        deleted Secret that nothing looks up again would be kept for good)."""
        self._values.pop(ObjectKey.of(secret), None)

    async def data(self, namespace: str, name: str) -> dict[str, str] | None:
        """The decoded data of a Secret, or None when it does not exist."""
        key = ObjectKey(namespace, name)
        meta = self.secrets.get(key)
        if meta is None:
            self._values.pop(key, None)
            return None
        version = meta["metadata"].get("resourceVersion", "")
        cached = self._values.get(key)
        if cached and cached[0] == version:
            return cached[1]
        secret = await self.client.get_or_none(SECRETS, name, namespace)
        if secret is None:
            return None
        data = {
            k: base64.b64decode(v).decode("utf-8", "replace")
            for k, v in (secret.get("data") or {}).items()
        }
        self._values[key] = (secret["metadata"].get("resourceVersion", ""), data)
        return data

    async def value(self, namespace: str, name: str, key: str, *, what: str) -> str:
        """One key of a referenced Secret; a missing Secret or key is a Problem naming it."""
        data = await self.data(namespace, name)
        if data is None:
            raise Problem("SecretNotFound", f"Secret {name!r} ({what}) does not exist")
        if key not in data:
            raise Problem("SecretKeyNotFound", f"Secret {name!r} ({what}) has no key {key!r}")
        return data[key]

    async def require_keys(
        self, namespace: str, name: str, keys: Iterable[str], *, what: str
    ) -> None:
        """Check a Secret exists with `keys` (for Secrets only the pod reads, via env)."""
        for key in keys:
            await self.value(namespace, name, key, what=what)
