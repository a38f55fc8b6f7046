"""Kerberos files for the identity tests, made without a KDC: a keytab in MIT's format
(version 0x502) holding one key for a service principal, and a krb5.conf naming its realm.

DittoFS loads both when its adapters start (the keytab's entries are parsed, the key is only
used to decrypt tickets), so a random AES key is enough to show they were mounted and read.
"""

from __future__ import annotations

import os
import struct
import time

AES256_CTS_HMAC_SHA1 = 18  # the enctype number of aes256-cts-hmac-sha1-96
PRINCIPAL_NAME_TYPE = 1  # KRB5_NT_PRINCIPAL


def _counted(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def keytab(principal: str, kvno: int = 1) -> bytes:
    """A keytab with one random aes256 key for `principal` (service/host@REALM)."""
    name, realm = principal.rsplit("@", 1)
    components = name.split("/")
    entry = struct.pack(">H", len(components)) + _counted(realm.encode())
    entry += b"".join(_counted(part.encode()) for part in components)
    entry += struct.pack(">IIB", PRINCIPAL_NAME_TYPE, int(time.time()), kvno % 256)
    entry += struct.pack(">H", AES256_CTS_HMAC_SHA1) + _counted(os.urandom(32))
    entry += struct.pack(">I", kvno)
    return b"\x05\x02" + struct.pack(">i", len(entry)) + entry


def krb5_conf(realm: str, kdc: str) -> str:
    return (
        f"[libdefaults]\n  default_realm = {realm}\n\n"
        f"[realms]\n  {realm} = {{\n    kdc = {kdc}\n  }}\n"
    )
