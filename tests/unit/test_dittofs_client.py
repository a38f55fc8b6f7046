"""The DittoFS REST client against a small aiohttp server that answers the way DittoFS v0.29.0
does: problem+json from handlers, text/plain 401/403 from its auth middleware, a token pair
with expires_in. The real server is exercised by the operator's integration tests."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import ssl
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dittofs_controller.dittofs import (
    AuthenticationFailed,
    ClientCertificate,
    DittoFSClient,
    DittoFSError,
    DittoFSUnreachable,
    Tokens,
    pinned_ssl_context,
)
from dittofs_controller.dittofs.client import ATTEMPTS

PASSWORD = "Admin-Passw0rd-unit"
PROBLEM = "application/problem+json"


def problem(status: int, title: str, detail: str, code: str | None = None) -> web.Response:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    body["detail"] = detail
    if code:
        body["code"] = code
    return web.Response(status=status, text=json.dumps(body), content_type=PROBLEM)


class FakeDittoFS:
    """Login, refresh, token checks and a few routes; counts what clients did."""

    def __init__(self) -> None:
        self.logins = 0
        self.refreshes = 0
        self.valid: set[str] = set()
        self.refresh_tokens: set[str] = set()
        self.role = "admin"
        self.must_change = False
        self.seen_auth: list[str] = []
        self.app = web.Application(middlewares=[self.auth])
        self.app.router.add_post("/api/v1/auth/login", self.login)
        self.app.router.add_post("/api/v1/auth/refresh", self.refresh)
        self.app.router.add_get("/api/v1/users", self.users)
        self.app.router.add_post("/api/v1/store/metadata", self.bad_store)
        self.app.router.add_get("/api/v1/settings", self.forbidden)
        self.app.router.add_delete("/api/v1/shares/export", self.no_content)
        self.app.router.add_get("/api/v1/slow", self.slow)
        self.app.router.add_get("/api/v1/flaky", self.flaky)
        self.app.router.add_post("/api/v1/flaky", self.flaky)
        self.unavailable = 0  # how many more calls of /flaky answer 503
        self.flaky_calls = 0

    def issue(self) -> dict[str, Any]:
        n = self.logins + self.refreshes
        access, refresh = f"access-{n}", f"refresh-{n}"
        self.valid.add(access)
        self.refresh_tokens.add(refresh)
        user = {"username": "admin", "role": self.role, "must_change_password": self.must_change}
        return {
            "access_token": access,
            "refresh_token": refresh,
            "token_type": "Bearer",
            "expires_in": 900,
            "user": user,
        }

    @web.middleware
    async def auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/api/v1/auth/"):
            return await handler(request)
        header = request.headers.get("Authorization", "")
        self.seen_auth.append(header)
        if not header:
            return web.Response(status=401, text="Authorization header required\n")
        if header.removeprefix("Bearer ") not in self.valid:
            return web.Response(status=401, text="Invalid or expired token\n")
        return await handler(request)

    async def login(self, request: web.Request) -> web.Response:
        body = await request.json()
        if not body.get("password"):
            return problem(400, "Bad Request", "Username and password are required")
        if (body.get("username"), body.get("password")) != ("admin", PASSWORD):
            return problem(401, "Unauthorized", "Invalid username or password")
        self.logins += 1
        return web.json_response(self.issue())

    async def refresh(self, request: web.Request) -> web.Response:
        token = (await request.json()).get("refresh_token")
        if token not in self.refresh_tokens:
            return problem(401, "Unauthorized", "Invalid refresh token")
        self.refreshes += 1
        return web.json_response(self.issue())

    async def users(self, request: web.Request) -> web.Response:
        return web.json_response([{"username": "admin", "role": "admin"}])

    async def bad_store(self, request: web.Request) -> web.Response:
        return problem(
            400, "Bad Request", "Failed to create metadata store: path must be absolute", "E_PATH"
        )

    async def forbidden(self, request: web.Request) -> web.Response:
        return web.Response(status=403, text="Admin access required\n")

    async def no_content(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def flaky(self, request: web.Request) -> web.Response:
        self.flaky_calls += 1
        if self.unavailable > 0:
            self.unavailable -= 1
            return web.Response(status=503, text="no backend yet\n")
        return web.json_response({"ok": True})

    async def slow(self, request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response({})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeDittoFS, str]]:
    dittofs = FakeDittoFS()
    server = TestServer(dittofs.app, host="127.0.0.1")
    await server.start_server()
    try:
        yield dittofs, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_logs_in_once_and_sends_the_bearer_token(
    fake: tuple[FakeDittoFS, str], http: aiohttp.ClientSession
) -> None:
    dittofs, url = fake
    client = DittoFSClient(http, url, PASSWORD)
    assert await client.get("/users") == [{"username": "admin", "role": "admin"}]
    await client.get("/users")
    assert dittofs.logins == 1
    assert dittofs.seen_auth == ["Bearer access-1", "Bearer access-1"]
    assert await client.delete("/shares/export") is None  # 204


async def test_refreshes_before_expiry_and_logs_in_when_refresh_is_refused(
    fake: tuple[FakeDittoFS, str], http: aiohttp.ClientSession
) -> None:
    dittofs, url = fake
    clock = Clock()
    client = DittoFSClient(http, url, PASSWORD, clock=clock)
    await client.get("/users")
    clock.now += 850  # 900 s tokens: still valid, but within the 60 s refresh margin
    await client.get("/users")
    assert (dittofs.logins, dittofs.refreshes) == (1, 1)
    assert dittofs.seen_auth[-1] == "Bearer access-2"
    dittofs.refresh_tokens.clear()  # e.g. the refresh token expired too
    clock.now += 900
    await client.get("/users")
    assert (dittofs.logins, dittofs.refreshes) == (2, 1)


async def test_a_refused_token_logs_in_again_once(
    fake: tuple[FakeDittoFS, str], http: aiohttp.ClientSession
) -> None:
    dittofs, url = fake
    tokens = Tokens()
    await DittoFSClient(http, url, PASSWORD, tokens=tokens).get("/users")
    dittofs.valid.clear()  # the server restarted with another JWT secret
    assert await DittoFSClient(http, url, PASSWORD, tokens=tokens).get("/users")
    assert dittofs.logins == 2
    assert dittofs.seen_auth == ["Bearer access-1", "Bearer access-1", "Bearer access-2"]


async def test_tokens_are_bound_to_the_password_they_were_issued_for(
    fake: tuple[FakeDittoFS, str], http: aiohttp.ClientSession
) -> None:
    _, url = fake
    tokens = Tokens()
    await DittoFSClient(http, url, PASSWORD, tokens=tokens).get("/users")
    with pytest.raises(AuthenticationFailed):  # a wrong new password is noticed at once
        await DittoFSClient(http, url, "changed-in-the-secret", tokens=tokens).get("/users")
    assert tokens.access is None


async def test_a_wrong_password_is_authentication_failed_without_the_password(
    fake: tuple[FakeDittoFS, str], http: aiohttp.ClientSession
) -> None:
    _, url = fake
    wrong = "Wrong-Passw0rd-do-not-print"
    with structlog.testing.capture_logs() as logs, pytest.raises(AuthenticationFailed) as raised:
        await DittoFSClient(http, url, wrong).get("/users")
    error = raised.value
    assert (error.status, error.title, error.detail) == (
        401,
        "Unauthorized",
        "Invalid username or password",
    )
    shown = f"{error} {error!r} {logs} {DittoFSClient(http, url, wrong)!r}"
    assert wrong not in shown and PASSWORD not in shown
    with pytest.raises(AuthenticationFailed) as empty:
        await DittoFSClient(http, url, "").get("/users")
    assert empty.value.status == 400


@pytest.mark.parametrize(("role", "must_change"), [("operator", False), ("admin", True)])
async def test_an_account_that_cannot_manage_is_authentication_failed(
    fake: tuple[FakeDittoFS, str], http: aiohttp.ClientSession, role: str, must_change: bool
) -> None:
    dittofs, url = fake
    dittofs.role, dittofs.must_change = role, must_change
    with pytest.raises(AuthenticationFailed, match="cannot manage the server"):
        await DittoFSClient(http, url, PASSWORD).get("/users")


async def test_problem_json_and_plain_text_errors_are_typed(
    fake: tuple[FakeDittoFS, str], http: aiohttp.ClientSession
) -> None:
    _, url = fake
    client = DittoFSClient(http, url, PASSWORD)
    with pytest.raises(DittoFSError) as rejected:
        await client.post("/store/metadata", {"name": "m", "type": "badger", "config": "{}"})
    assert (rejected.value.status, rejected.value.title, rejected.value.code) == (
        400,
        "Bad Request",
        "E_PATH",
    )
    assert rejected.value.detail == "Failed to create metadata store: path must be absolute"
    with pytest.raises(DittoFSError) as forbidden:
        await client.get("/settings")
    assert (forbidden.value.status, forbidden.value.title, forbidden.value.detail) == (
        403,
        "Forbidden",
        "Admin access required",
    )
    assert not isinstance(forbidden.value, AuthenticationFailed)
    with pytest.raises(DittoFSError) as missing:
        await client.get("/nothing-here")
    assert missing.value.status == 404


def test_error_bodies_of_every_shape_parse() -> None:
    problem_json = json.dumps({"title": "Conflict", "status": 409, "detail": "exists"})
    assert (
        str(DittoFSError.from_response(409, PROBLEM, problem_json)) == "HTTP 409 Conflict: exists"
    )
    broken = DittoFSError.from_response(500, "application/json", "{not json")
    assert (broken.title, broken.detail) == ("Internal Server Error", "{not json")
    plain = DittoFSError.from_response(401, "text/plain", "Invalid or expired token\n")
    assert (plain.title, plain.detail, plain.code) == (
        "Unauthorized",
        "Invalid or expired token",
        None,
    )


async def test_unreachable_and_slow_servers(
    fake: tuple[FakeDittoFS, str], http: aiohttp.ClientSession
) -> None:
    _, url = fake
    closed = await _closed_port()
    with pytest.raises(DittoFSUnreachable, match=f"127.0.0.1:{closed}"):
        await DittoFSClient(http, f"http://127.0.0.1:{closed}", PASSWORD).get("/users")
    quick = aiohttp.ClientTimeout(total=0.3)
    with pytest.raises(DittoFSUnreachable, match=r"no answer within 0\.3 s"):
        await DittoFSClient(http, url, PASSWORD, timeout=quick).get("/slow")


async def test_not_now_answers_are_tried_again_for_repeatable_calls_only(
    fake: tuple[FakeDittoFS, str], http: aiohttp.ClientSession
) -> None:
    dittofs, url = fake
    client = DittoFSClient(http, url, PASSWORD)
    dittofs.unavailable = ATTEMPTS - 1
    assert await client.get("/flaky") == {"ok": True}
    assert dittofs.flaky_calls == ATTEMPTS

    dittofs.unavailable, dittofs.flaky_calls = ATTEMPTS, 0
    with pytest.raises(DittoFSError, match="503"):
        await client.get("/flaky")
    assert dittofs.flaky_calls == ATTEMPTS  # then it gives up, with the last answer

    dittofs.unavailable, dittofs.flaky_calls = 1, 0
    with pytest.raises(DittoFSError, match="503"):
        await client.post("/flaky", {})  # a create might have happened: never twice
    assert dittofs.flaky_calls == 1


async def test_a_server_that_starts_listening_between_attempts_is_reached(
    http: aiohttp.ClientSession,
) -> None:
    """A refused connection never carried the request, whatever the method: tried again."""
    port = await _closed_port()
    dittofs = FakeDittoFS()
    server = TestServer(dittofs.app, host="127.0.0.1", port=port)
    refused = DittoFSClient(http, f"http://127.0.0.1:{port}", PASSWORD)

    async def start_soon() -> None:
        await asyncio.sleep(0.05)  # before the first retry waits out (0.2 s at least)
        await server.start_server()

    starting = asyncio.create_task(start_soon())
    try:
        assert await refused.post("/flaky", {}) == {"ok": True}
        assert dittofs.logins == 1 and dittofs.flaky_calls == 1
    finally:
        await starting
        await server.close()


async def _closed_port() -> int:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port: int = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    return port


# --- TLS: the operator trusts exactly the certificate of the server's TLS Secret --------------


def self_signed(name: str) -> tuple[str, str]:
    """(certificate PEM, key PEM) for a name no client would dial (the pod IP differs)."""
    return issued(name)


def issued(
    name: str, issuer: tuple[str, str] | None = None, *, ca: bool = False, client: bool = False
) -> tuple[str, str]:
    """(certificate PEM, key PEM) signed by `issuer` (certificate and key PEM), else by itself;
    `ca`: a CA that signs others; `client`: for client authentication only, as cert-manager
    issues a Certificate with usages [client auth]."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name[:64])])
    signer_name, signer_key = subject, key
    if issuer is not None:
        signer = x509.load_pem_x509_certificate(issuer[0].encode())
        loaded = serialization.load_pem_private_key(issuer[1].encode(), password=None)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey)
        signer_name, signer_key = signer.subject, loaded
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(signer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
    )
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
    if client:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False
        )
    cert = builder.sign(signer_key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


async def test_https_trusts_the_pinned_certificate_only(tmp_path: Path) -> None:
    cert, key = self_signed("files-api.example.svc")
    (tmp_path / "tls.crt").write_text(cert)
    (tmp_path / "tls.key").write_text(key)
    serving = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    serving.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    dittofs = FakeDittoFS()
    server = TestServer(dittofs.app, host="127.0.0.1")
    await server.start_server(ssl=serving)
    url = f"https://127.0.0.1:{server.port}"
    try:
        pinned = aiohttp.TCPConnector(ssl=pinned_ssl_context(cert))
        async with aiohttp.ClientSession(connector=pinned) as http:
            assert await DittoFSClient(http, url, PASSWORD).get("/users")
        other, _ = self_signed("files-api.example.svc")
        wrong = aiohttp.TCPConnector(ssl=pinned_ssl_context(other))
        async with aiohttp.ClientSession(connector=wrong) as http:
            with pytest.raises(DittoFSUnreachable, match="certificate verify failed"):
                await DittoFSClient(http, url, PASSWORD).get("/users")
    finally:
        await server.close()


@pytest.mark.parametrize("memfd", [True, False], ids=["memfd", "temporary-files"])
async def test_a_client_certificate_is_presented_to_a_server_that_requires_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, memfd: bool
) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    if not memfd:  # as where os.memfd_create does not exist (not Linux)
        monkeypatch.delattr(os, "memfd_create")
    server_cert, server_key = self_signed("files-api.example.svc")
    (tmp_path / "tls.crt").write_text(server_cert)
    (tmp_path / "tls.key").write_text(server_key)
    ca = issued("clients", ca=True)
    serving = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cadata=ca[0])
    serving.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    serving.verify_mode = ssl.CERT_REQUIRED
    server = TestServer(FakeDittoFS().app, host="127.0.0.1")
    await server.start_server(ssl=serving)
    url = f"https://127.0.0.1:{server.port}"
    operator = ClientCertificate(*issued("dittofs-operator", ca, client=True))
    try:
        for client in (None, operator):
            context = pinned_ssl_context(server_cert, client)
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as http:
                api = DittoFSClient(http, url, PASSWORD)
                if client is None:
                    with pytest.raises(DittoFSUnreachable):
                        await api.get("/users")
                else:
                    assert await api.get("/users")
    finally:
        await server.close()
    assert not any(scratch.iterdir())  # the key files are gone (or never were files)


def test_a_client_certificate_that_does_not_load_is_an_ssl_error() -> None:
    ca = issued("clients", ca=True)
    certificate, _ = issued("dittofs-operator", ca, client=True)
    _, other_key = issued("dittofs-operator", ca, client=True)
    server_cert, _ = self_signed("files-api.example.svc")
    with pytest.raises(ssl.SSLError):
        pinned_ssl_context(server_cert, ClientCertificate(certificate, other_key))
    with pytest.raises(ssl.SSLError):
        pinned_ssl_context(server_cert, ClientCertificate("not a certificate", other_key))
