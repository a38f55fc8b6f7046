"""DittoFS' local key file: the master key of encrypted remote block stores, wrapped with a key
derived from a passphrase (pure apart from the randomness it draws).

The format is DittoFS v0.29.0's (pkg/block/encryption/keyprovider/local.go), which DittoFS reads
but offers no command to write: a PEM block DITTOFS ENCRYPTED MASTER KEY around JSON naming an
Argon2id derivation and the AES-256-GCM-sealed 32-byte master key.
"""

from __future__ import annotations

import base64
import json
import os
import textwrap
import uuid

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

PEM_TYPE = "DITTOFS ENCRYPTED MASTER KEY"
# The least DittoFS accepts. The operator's passphrases are 256 random bits, so a costlier
# derivation would slow every store opening without making a guess any less hopeless.
ARGON2_TIME = 1
ARGON2_MEMORY_KIB = 8 * 1024
ARGON2_THREADS = 1


def key_file(passphrase: str) -> str:
    """A new key file holding a random master key, unlocked by `passphrase`."""
    salt, nonce, master = os.urandom(16), os.urandom(12), os.urandom(32)
    kek = Argon2id(
        salt=salt,
        length=32,
        iterations=ARGON2_TIME,
        lanes=ARGON2_THREADS,
        memory_cost=ARGON2_MEMORY_KIB,
    ).derive(passphrase.encode())
    body = {
        "version": 1,
        "master_key_id": str(uuid.uuid4()),
        "kdf": {
            "algo": "argon2id",
            "salt": _b64(salt),
            "time": ARGON2_TIME,
            "memory_kib": ARGON2_MEMORY_KIB,
            "threads": ARGON2_THREADS,
        },
        "wrap": "aes-256-gcm",
        "nonce": _b64(nonce),
        "wrapped_master_key": _b64(AESGCM(kek).encrypt(nonce, master, None)),
    }
    lines = textwrap.wrap(_b64(json.dumps(body, indent=2).encode()), 64)
    return "\n".join([f"-----BEGIN {PEM_TYPE}-----", *lines, f"-----END {PEM_TYPE}-----", ""])


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
