"""The Secret values a pass needs, and how the credentials among them are kept out of sight:
keyed digests in status instead of values, and masks in messages (pure: no I/O)."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Sequence

import attrs

from dittofs_controller.operator import names
from dittofs_controller.operator.config import build as config
from dittofs_controller.operator.serverconfig.model import (
    POSTGRES_FIELDS,
    Kerberos,
    Share,
    Spec,
    Store,
    postgres_source,
)

# 128 bits: half the HMAC's output, as RFC 2104 advises for truncation. Digests of the former
# unkeyed scheme had 16 characters, so none of them ever equals a keyed one.
DIGEST_CHARS = 32


@attrs.frozen
class SecretKey:
    """One Secret value the desired state needs, and what it is for (for messages)."""

    name: str
    key: str
    what: str


def admin_key(server_name: str, spec: Spec) -> SecretKey:
    ref = config.admin_secret_ref(server_name, spec)
    return SecretKey(ref.name, ref.key, "password of DittoFS's admin account")


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
    if (ldap := spec.identity.ldap) is not None:
        ref = ldap.bind_password_secret_ref
        keys.append(SecretKey(ref.name, ref.key, "bind password of the LDAP directory"))
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


def stores_revision(
    key: str,
    stores: Iterable[Store],
    shares: Iterable[Share] = (),
    kerberos: Kerberos | None = None,
) -> str:
    """What DittoFS reads only when it starts, as declared: the stores, which shares SMB
    clients must encrypt and the Kerberos settings, as a keyed digest (credentials never in the
    clear). The revision a pod must be started for once one of them was changed over the API."""
    held = [f"{store.item} {store.config_text()}" for store in stores]
    held += [f"share {share.name} encrypted" for share in shares if share.encrypted]
    if kerberos is not None:
        held.append(f"{kerberos.item} {json.dumps(dict(kerberos.settings), sort_keys=True)}")
    return digest(key, "stores", held)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` from the server with any credential it might quote masked."""
    for secret in secrets:
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    return text
