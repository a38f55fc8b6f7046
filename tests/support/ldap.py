"""A real LDAP directory for the identity tests: Debian's OpenLDAP slapd, run by the test in a
temporary directory (slapd.conf, an mdb database, no systemd), seeded with ldapadd.

DittoFS v0.29.0's directory provider speaks Active Directory: it finds users with
`(objectClass=user)`, groups with `(objectClass=group)`, and reads `sAMAccountName`,
`objectSid` and `memberOf` besides RFC 2307's `uidNumber` and `gidNumber`. OpenLDAP has none of
the AD names, so a small schema of auxiliary classes adds them (with equality rules, which the
msuser.schema shipped with slapd lacks), next to inetOrgPerson/posixAccount and posixGroup.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SLAPD = "/usr/sbin/slapd"
SCHEMA_DIR = Path("/etc/ldap/schema")
BASE_DN = "dc=example,dc=com"
ROOT_DN = f"cn=admin,{BASE_DN}"
BIND_DN = f"cn=dittofs,{BASE_DN}"
DOMAIN_SID = (1000, 2000, 3000)  # S-1-5-21-1000-2000-3000

# Private OIDs (1.3.6.1.4.1.99999 is no one's): the Active Directory names DittoFS reads.
AD_SCHEMA = """
attributetype ( 1.3.6.1.4.1.99999.1.1 NAME 'sAMAccountName' EQUALITY caseIgnoreMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.99999.1.2 NAME 'objectSid' EQUALITY octetStringMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.40 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.99999.1.3 NAME 'memberOf' EQUALITY distinguishedNameMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.12 )
objectclass ( 1.3.6.1.4.1.99999.2.1 NAME 'user' AUXILIARY
  MUST sAMAccountName MAY ( objectSid $ memberOf ) )
objectclass ( 1.3.6.1.4.1.99999.2.2 NAME 'group' AUXILIARY
  MUST sAMAccountName MAY objectSid )
"""


def sid(rid: int) -> str:
    """The domain account SID with this RID, as Windows writes it."""
    return "S-1-5-21-" + "-".join(str(part) for part in (*DOMAIN_SID, rid))


def _sid_bytes(rid: int) -> bytes:
    """A SID in its binary form (objectSid): revision, count, authority 5, sub-authorities."""
    parts = (21, *DOMAIN_SID, rid)
    header = bytes([1, len(parts)]) + (5).to_bytes(6, "big")
    return header + b"".join(struct.pack("<I", part) for part in parts)


@dataclass(frozen=True)
class DirectoryUser:
    name: str
    uid: int
    gid: int
    rid: int

    @property
    def sid(self) -> str:
        return sid(self.rid)


@dataclass(frozen=True)
class DirectoryGroup:
    name: str
    gid: int
    rid: int

    @property
    def sid(self) -> str:
        return sid(self.rid)


@dataclass(frozen=True)
class Directory:
    """A running slapd: its URL, the service account DittoFS binds as, what it holds, and the
    certificate it serves ldaps:// with (self-signed, so it is its own CA)."""

    url: str
    bind_dn: str
    bind_password: str
    base_dn: str
    user: DirectoryUser
    group: DirectoryGroup
    certificate: str


def _certificate(address: str) -> tuple[str, str]:
    """(certificate PEM, key PEM) for the IP address clients dial (DittoFS checks the URL's
    host against the certificate)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dittofs-test-directory")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


def _free_port(address: str) -> int:
    with socket.socket() as probe:
        probe.bind((address, 0))
        port: int = probe.getsockname()[1]
        return port


def _seed(user: DirectoryUser, group: DirectoryGroup, bind_password: str) -> str:
    group_dn = f"cn={group.name},{BASE_DN}"
    return f"""dn: {BASE_DN}
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: {BIND_DN}
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: dittofs
userPassword: {bind_password}

dn: {group_dn}
objectClass: posixGroup
objectClass: group
cn: {group.name}
gidNumber: {group.gid}
sAMAccountName: {group.name}
objectSid:: {base64.b64encode(_sid_bytes(group.rid)).decode()}

dn: uid={user.name},{BASE_DN}
objectClass: inetOrgPerson
objectClass: posixAccount
objectClass: user
cn: {user.name}
sn: {user.name}
uid: {user.name}
uidNumber: {user.uid}
gidNumber: {user.gid}
homeDirectory: /home/{user.name}
sAMAccountName: {user.name}
objectSid:: {base64.b64encode(_sid_bytes(user.rid)).decode()}
memberOf: {group_dn}
"""


@contextmanager
def running_ldap(address: str, bind_password: str = "Bind-Passw0rd") -> Iterator[Directory]:
    """slapd on `address` with one user and one group, serving ldaps:// (`url`, with its
    `certificate`) and ldap:// (for the seed) on free ports; stopped after."""
    user = DirectoryUser("carol", uid=7001, gid=7100, rid=1105)
    group = DirectoryGroup("engineers", gid=7100, rid=1201)
    root_password = "Root-Passw0rd"
    with tempfile.TemporaryDirectory(prefix="dittofs-ldap-") as scratch:
        work = Path(scratch)
        (work / "db").mkdir()
        (work / "ad.schema").write_text(AD_SCHEMA)
        certificate, key = _certificate(address)
        (work / "tls.crt").write_text(certificate)
        (work / "tls.key").write_text(key)
        schemas = ["core", "cosine", "inetorgperson", "nis"]
        includes = [f"include {SCHEMA_DIR / name}.schema" for name in schemas]
        (work / "slapd.conf").write_text(
            "\n".join(
                [
                    *includes,
                    f"include {work / 'ad.schema'}",
                    f"pidfile {work / 'slapd.pid'}",
                    f"TLSCertificateFile {work / 'tls.crt'}",
                    f"TLSCertificateKeyFile {work / 'tls.key'}",
                    "modulepath /usr/lib/ldap",
                    "moduleload back_mdb",
                    "database mdb",
                    f'suffix "{BASE_DN}"',
                    f'rootdn "{ROOT_DN}"',
                    f"rootpw {root_password}",
                    f"directory {work / 'db'}",
                    "",
                ]
            )
        )
        plain_url = f"ldap://{address}:{_free_port(address)}"
        url = f"ldaps://{address}:{_free_port(address)}"
        log = (work / "slapd.log").open("w")
        # -d keeps slapd in the foreground (a child the test can stop), logging to stderr.
        listen = f"{plain_url}/ {url}/"
        command = [SLAPD, "-f", str(work / "slapd.conf"), "-h", listen, "-d", "none"]
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            _added(plain_url, root_password, _seed(user, group, bind_password), server, work)
            yield Directory(url, BIND_DN, bind_password, BASE_DN, user, group, certificate)
        finally:
            server.terminate()
            server.wait(timeout=10)
            log.close()


def _added(
    url: str, root_password: str, ldif: str, server: subprocess.Popen[bytes], work: Path
) -> None:
    """ldapadd the seed once slapd answers (it takes a moment to listen)."""
    command = ["ldapadd", "-x", "-H", url, "-D", ROOT_DN, "-w", root_password]
    deadline = time.monotonic() + 15
    while True:
        done = subprocess.run(command, input=ldif.encode(), capture_output=True, check=False)
        if done.returncode == 0:
            return
        if server.poll() is not None or time.monotonic() > deadline:
            log = (work / "slapd.log").read_text()
            raise RuntimeError(
                f"slapd at {url} did not take the seed: {done.stderr.decode()}\nslapd: {log}"
            )
        time.sleep(0.2)
