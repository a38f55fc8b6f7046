"""A throw-away PostgreSQL server for end-to-end tests, reachable from the testbed's pods.

Debian's `postgresql` package provides the binaries (/usr/lib/postgresql/<major>/bin). The
cluster is created with initdb in a fresh directory owned by the `postgres` OS user (PostgreSQL
refuses to run as root) and listens on 127.0.0.1, for the harness, and on the node's bridge
address, for pods. Like a Percona cluster it only lets pods in over TLS (`hostssl`, with a
certificate from a CA of its own that DittoFS verifies), with SCRAM passwords.
The harness logs in over TCP as a password-authenticated superuser and runs SQL with psql.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.process import free_port

OS_USER = "postgres"
SUPERUSER = "harness"


class PostgresError(AssertionError):
    """A psql command failed; the message carries its output."""


def bin_dir() -> Path:
    """The newest installed PostgreSQL's binaries (Debian layout)."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if not found:
        raise PostgresError("PostgreSQL is not installed: apt-get install -y postgresql")
    return found[-1].parent


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class PostgresServer:
    """A running server: where pods reach it, and the harness' superuser."""

    host: str  # the address pods use
    port: int
    password: str  # of SUPERUSER
    bin: Path
    log: Path
    ca: bytes  # PEM of the CA that signed the server's certificate
    superuser: str = SUPERUSER

    async def sql(self, statement: str, database: str = "postgres") -> str:
        """Run SQL as the superuser over 127.0.0.1; unaligned, tuples-only output."""
        argv = [
            str(self.bin / "psql"),
            *("-h", "127.0.0.1", "-p", str(self.port), "-U", self.superuser, "-d", database),
            *("-v", "ON_ERROR_STOP=1", "-X", "-A", "-t", "-c", statement),
        ]
        env = {**os.environ, "PGPASSWORD": self.password, "PGCONNECT_TIMEOUT": "5"}
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
        )
        output, _ = await proc.communicate()
        text = output.decode(errors="replace")
        if proc.returncode != 0:
            raise PostgresError(f"psql -d {database} failed ({proc.returncode}): {text}")
        return text.strip()

    async def ensure_user(self, name: str, password: str) -> None:
        """Create the login role, or set its password if it exists."""
        exists = await self.sql(f"SELECT 1 FROM pg_roles WHERE rolname = {quote_literal(name)}")
        verb = "ALTER" if exists else "CREATE"
        await self.sql(f"{verb} ROLE {quote_ident(name)} LOGIN PASSWORD {quote_literal(password)}")

    async def ensure_database(self, name: str, user: str) -> None:
        """Create the database if missing; let `user` connect and create tables in `public`
        (what Percona's grantPublicSchemaAccess does: PostgreSQL >= 15 grants nobody CREATE
        there by default)."""
        exists = await self.sql(f"SELECT 1 FROM pg_database WHERE datname = {quote_literal(name)}")
        if not exists:
            await self.sql(f"CREATE DATABASE {quote_ident(name)}")
        await self.sql(
            f"GRANT ALL PRIVILEGES ON DATABASE {quote_ident(name)} TO {quote_ident(user)}"
        )
        await self.sql(f"GRANT ALL ON SCHEMA public TO {quote_ident(user)}", database=name)

    async def tables(self, database: str) -> list[str]:
        """Names of the tables in the database's public schema."""
        out = await self.sql(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1", database
        )
        return out.splitlines()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError as error:
            return f"(no log: {error})"


def _certificates(directory: Path, address: str, owner: pwd.struct_passwd) -> bytes:
    """server.crt/server.key for ssl=on, signed by a CA of their own, whose PEM is returned:
    like Percona's cluster CA, which DittoFS verifies the server against (verify-full, so the
    certificate names the address pods dial)."""
    now = dt.datetime.now(dt.UTC)

    def certificate(
        subject: str,
        public: ec.EllipticCurvePublicKey,
        issuer: str,
        signer: ec.EllipticCurvePrivateKey,
    ) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=7))
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = "dittofs-e2e-postgres-ca"
    ca = (
        certificate(ca_name, ca_key.public_key(), ca_name, ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(address))]
    cert = (
        certificate("dittofs-e2e-postgres", key.public_key(), ca_name, ca_key)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    for file, data, mode in (
        ("server.crt", cert.public_bytes(serialization.Encoding.PEM), 0o644),
        ("server.key", pem_key, 0o600),
    ):
        path = directory / file
        path.write_bytes(data)
        path.chmod(mode)
        os.chown(path, owner.pw_uid, owner.pw_gid)
    return ca.public_bytes(serialization.Encoding.PEM)


def _as_postgres(argv: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            argv,
            user=OS_USER,
            group=pwd.getpwnam(OS_USER).pw_gid,
            extra_groups=[],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd="/",
        )


async def _wait_accepting(server: PostgresServer, proc: subprocess.Popen[bytes]) -> None:
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        if proc.poll() is not None:
            raise PostgresError(f"postgres exited with {proc.returncode}:\n{server.log_tail()}")
        try:
            await server.sql("SELECT 1")
            return
        except PostgresError:
            if asyncio.get_running_loop().time() > deadline:
                raise PostgresError(f"postgres not accepting:\n{server.log_tail()}") from None
            await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def running_postgres(address: str, pod_network: str) -> AsyncIterator[PostgresServer]:
    """A new cluster serving 127.0.0.1 and `address`, open to `pod_network` over TLS only."""
    if os.geteuid() != 0:
        raise PostgresError("the PostgreSQL harness needs root (it runs postgres as its OS user)")
    owner = pwd.getpwnam(OS_USER)
    binaries = bin_dir()
    root = Path(tempfile.mkdtemp(prefix="dittofs-e2e-pg-"))
    os.chown(root, owner.pw_uid, owner.pw_gid)
    data, log, password = root / "data", root / "postgres.log", secrets.token_urlsafe(18)
    pwfile = root / "pwfile"
    pwfile.write_text(password + "\n")
    os.chown(pwfile, owner.pw_uid, owner.pw_gid)
    proc: subprocess.Popen[bytes] | None = None
    try:
        initdb = _as_postgres(
            [
                str(binaries / "initdb"),
                *("-D", str(data), "-U", SUPERUSER, f"--pwfile={pwfile}"),
                *("--auth=scram-sha-256", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync"),
            ],
            log,
        )
        if await asyncio.to_thread(initdb.wait) != 0:
            raise PostgresError(f"initdb failed:\n{log.read_text(errors='replace')[-3000:]}")
        pwfile.unlink()
        (data / "pg_hba.conf").write_text(
            "# TYPE  DATABASE USER ADDRESS METHOD\n"
            "local   all      all          scram-sha-256\n"
            "host    all      all  127.0.0.1/32 scram-sha-256\n"
            f"hostssl all      all  {pod_network} scram-sha-256\n"
        )
        ca = _certificates(data, address, owner)
        server = PostgresServer(
            host=address, port=free_port(), password=password, bin=binaries, log=log, ca=ca
        )
        settings = {
            "listen_addresses": f"127.0.0.1,{address}",
            "port": str(server.port),
            "unix_socket_directories": str(root),
            "ssl": "on",
            "fsync": "off",  # throw-away data: durability is not under test here
            "max_connections": "200",
        }
        argv = [str(binaries / "postgres"), "-D", str(data)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        proc = _as_postgres(argv, log)
        await _wait_accepting(server, proc)
        yield server
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(2)  # SIGINT: fast shutdown, disconnects the pods' sessions
            try:
                await asyncio.wait_for(asyncio.to_thread(proc.wait), 15)
            except TimeoutError:
                proc.kill()
                await asyncio.to_thread(proc.wait)
        shutil.rmtree(root, ignore_errors=True)
