"""An async client for the DittoFS control-plane REST API (checked against DittoFS v0.29.0).

It talks as the bootstrap `admin` account: almost every route needs role admin, and accounts
made over the API with that role must change their password before they may call anything.

Errors: the handlers answer `application/problem+json` ({type, title, status, detail, code});
the authentication middleware answers `text/plain` 401/403. Both become a DittoFSError. A
server that cannot be reached (connection refused, DNS, TLS, timeout) is DittoFSUnreachable.
A call that fails in a way both safe and likely to pass on a second try (a refused
connection; for GET, PUT, DELETE and the login also a dropped one or 502/503/504) is tried
again within the call, ATTEMPTS in all, with jittered backoff (tenacity).

Tokens: a login returns an access token valid `expires_in` seconds (900 by default) and a
refresh token. The client refreshes shortly before expiry, logs in again when the refresh is
refused, and retries a call once after a 401 (the server restarted with another JWT secret).
Tokens live in a `Tokens` object the caller keeps between sessions, bound to the credentials
they were issued for: a changed password logs in afresh, so a wrong one is noticed at once.

Passwords and tokens never appear in logs or exception messages.
"""

from __future__ import annotations

import hashlib
import json
import os
import ssl
import tempfile
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import aiohttp
import attrs
import structlog
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

log = structlog.get_logger("dittofs_controller.dittofs")

API_PREFIX = "/api/v1"
ADMIN = "admin"
# Every call is bounded; the server's own handler deadline is 30 s, a store creation that
# probes S3 or PostgreSQL takes up to its 5 s health-check budget.
DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=20, sock_connect=5)
# Refresh this long before the access token expires, so a call never races its expiry.
REFRESH_MARGIN = 60.0
# A request that fails for a moment (a proxy or port-forward without a backend yet, a server
# restarting) is tried again within the same pass, up to ATTEMPTS in all, when that is safe:
# methods that mean the same however often they arrive (and the login, which only issues a
# token), answers that say "not now".
ATTEMPTS = 3
RETRY_WAIT = wait_exponential(multiplier=0.2, max=2) + wait_random(0, 0.2)
REPEATABLE_METHODS = frozenset({"GET", "PUT", "DELETE"})
REPEATABLE_POSTS = frozenset({"/auth/login", "/auth/refresh"})
NOT_NOW = frozenset(
    {HTTPStatus.BAD_GATEWAY, HTTPStatus.SERVICE_UNAVAILABLE, HTTPStatus.GATEWAY_TIMEOUT}
)


class DittoFSError(Exception):
    """A non-2xx answer of the DittoFS API."""

    def __init__(self, status: int, title: str, detail: str, code: str | None = None) -> None:
        super().__init__(f"HTTP {status} {title}: {detail}" if detail else f"HTTP {status} {title}")
        self.status = status
        self.title = title
        self.detail = detail
        self.code = code

    @classmethod
    def from_response(cls, status: int, content_type: str, text: str) -> DittoFSError:
        """Parse a problem+json (or plain JSON) body; anything else is the detail as text."""
        if "json" in content_type:
            try:
                problem = json.loads(text)
            except ValueError:
                problem = None
            if isinstance(problem, dict):
                code = problem.get("code")
                return cls(
                    status,
                    str(problem.get("title") or _reason(status)),
                    str(problem.get("detail") or ""),
                    str(code) if code else None,
                )
        return cls(status, _reason(status), text.strip()[:500])


class AuthenticationFailed(DittoFSError):
    """The admin credentials were refused, or the account cannot manage the server."""


class DittoFSUnreachable(Exception):
    """No answer from the server: connection refused, name not resolved, TLS, timeout.

    `repeatable`: trying again cannot do anything twice (the request never left, or repeating
    it is harmless) and is not bound to wait as long again (not a timeout).
    """

    def __init__(self, message: str, *, repeatable: bool) -> None:
        super().__init__(message)
        self.repeatable = repeatable


def _failure(error: BaseException | None) -> str:
    """A failed call in a word: its HTTP status, or the kind of error."""
    if isinstance(error, DittoFSError):
        return str(error.status)
    return type(error).__name__


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


@attrs.define
class Tokens:
    """The token pair of one server, kept across sessions; never logged (repr hides it)."""

    access: str | None = attrs.field(default=None, repr=False)
    refresh: str | None = attrs.field(default=None, repr=False)
    expires_at: float = 0.0  # on the client's monotonic clock
    credentials: str = attrs.field(default="", repr=False)  # digest of what they were issued for

    def clear(self) -> None:
        self.access = self.refresh = None
        self.expires_at = 0.0


@attrs.frozen
class ClientCertificate:
    """A client certificate (PEM, chain allowed) and its private key (PEM); never logged."""

    certificate: str = attrs.field(repr=False)
    key: str = attrs.field(repr=False)


def pinned_ssl_context(pem: str, client: ClientCertificate | None = None) -> ssl.SSLContext:
    """A TLS context that trusts exactly the certificates in `pem`, whatever names they carry,
    and presents `client` to a server that asks for a certificate (mutual TLS).

    The operator reaches a server by its Service name or pod IP, which a certificate made for
    its clients need not list, so the host name is not checked; instead only the server's own
    certificate (and the CA of its TLS Secret, which keeps a renewed certificate trusted while
    the running server still presents the previous one) are trust anchors.
    ssl.SSLError when `client` does not parse or its key does not match it.
    """
    context = ssl.create_default_context(cadata=pem)
    context.check_hostname = False
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    if client is not None:
        _load_client_certificate(context, client)
    return context


def _load_client_certificate(context: ssl.SSLContext, client: ClientCertificate) -> None:
    """ssl loads a certificate chain from files only. The operator's root filesystem is
    read-only and a key should touch no disk, so the files are anonymous memory (memfd),
    opened through /proc and closed once loaded; without memfd (not Linux), files in a private
    temporary directory removed at once."""
    if not hasattr(os, "memfd_create"):
        with tempfile.TemporaryDirectory(prefix="dittofs-client-") as directory:  # mode 0700
            paths = [os.path.join(directory, name) for name in ("tls.crt", "tls.key")]
            for path, text in zip(paths, (client.certificate, client.key), strict=True):
                with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
                    f.write(text)
            context.load_cert_chain(*paths)
        return
    descriptors = []
    try:
        for name, text in (("tls.crt", client.certificate), ("tls.key", client.key)):
            descriptor = os.memfd_create(name, os.MFD_CLOEXEC)
            descriptors.append(descriptor)
            os.write(descriptor, text.encode())
        context.load_cert_chain(*(f"/proc/self/fd/{d}" for d in descriptors))
    finally:
        for descriptor in descriptors:
            os.close(descriptor)


class DittoFSClient:
    """One DittoFS server's REST API as its admin, over the caller's aiohttp session."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        password: str,
        *,
        tokens: Tokens | None = None,
        username: str = ADMIN,
        timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.username = username
        self._password = password
        self.timeout = timeout
        self.clock = clock
        self.tokens = tokens if tokens is not None else Tokens()
        credentials = hashlib.sha256(f"{username}\0{password}".encode()).hexdigest()
        if self.tokens.credentials != credentials:
            self.tokens.clear()
            self.tokens.credentials = credentials

    def __repr__(self) -> str:
        return f"DittoFSClient({self.base_url!r}, username={self.username!r})"

    async def get(self, path: str) -> Any:
        return await self.request("GET", path)

    async def post(self, path: str, body: Any = None) -> Any:
        return await self.request("POST", path, body)

    async def put(self, path: str, body: Any = None) -> Any:
        return await self.request("PUT", path, body)

    async def patch(self, path: str, body: Any = None) -> Any:
        return await self.request("PATCH", path, body)

    async def delete(self, path: str) -> Any:
        return await self.request("DELETE", path)

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        """Call `/api/v1<path>` as admin; the decoded JSON answer (None when empty)."""
        token = await self._token()
        try:
            return await self._send(method, path, body, token)
        except DittoFSError as error:
            if error.status != 401:
                raise
        # The token was refused (a restarted server with another JWT secret): once more.
        self.tokens.clear()
        return await self._send(method, path, body, await self._token())

    async def login(self) -> Any:
        """Log in as admin; AuthenticationFailed when refused or the account cannot manage."""
        body = {"username": self.username, "password": self._password}
        try:
            reply = await self._send("POST", "/auth/login", body, None)
        except DittoFSError as error:
            if error.status in (400, 401, 403):  # 400: an empty password
                raise AuthenticationFailed(error.status, error.title, error.detail) from None
            raise
        self._keep(reply)
        user = reply.get("user") or {}
        if user.get("role") != "admin" or user.get("must_change_password"):
            raise AuthenticationFailed(
                403,
                "Forbidden",
                f"user {self.username!r} has role {user.get('role')!r}"
                + (" and must change its password" if user.get("must_change_password") else "")
                + ": it cannot manage the server",
            )
        return reply

    async def _token(self) -> str:
        tokens = self.tokens
        if tokens.access and self.clock() < tokens.expires_at - REFRESH_MARGIN:
            return tokens.access
        if tokens.refresh:
            try:
                body = {"refresh_token": tokens.refresh}
                self._keep(await self._send("POST", "/auth/refresh", body, None))
            except DittoFSError as error:
                if error.status not in (400, 401, 403):
                    raise
                tokens.clear()  # expired or from another server: log in again
        if not tokens.access:
            await self.login()
        assert tokens.access is not None
        return tokens.access

    def _keep(self, reply: Any) -> None:
        if not isinstance(reply, dict) or not reply.get("access_token"):
            raise DittoFSError(502, "Bad Gateway", "the token answer has no access_token")
        self.tokens.access = str(reply["access_token"])
        self.tokens.refresh = str(reply.get("refresh_token") or "") or None
        self.tokens.expires_at = self.clock() + float(reply.get("expires_in") or 0)

    async def _send(self, method: str, path: str, body: Any, token: str | None) -> Any:
        """One call, tried again (ATTEMPTS in all) while it fails in a way that is safe and
        likely to pass on a second try."""
        repeatable = method in REPEATABLE_METHODS or (method == "POST" and path in REPEATABLE_POSTS)

        def transient(error: BaseException) -> bool:
            if isinstance(error, DittoFSUnreachable):
                return error.repeatable
            return repeatable and isinstance(error, DittoFSError) and error.status in NOT_NOW

        async for attempt in AsyncRetrying(
            retry=retry_if_exception(transient),
            stop=stop_after_attempt(ATTEMPTS),
            wait=RETRY_WAIT,
            # The status or the kind of failure only: an answer's text is the server's own words,
            # which this module never logs (it may quote what a request carried).
            before_sleep=lambda state: log.info(
                "dittofs request retried",
                method=method,
                path=path,
                attempt=state.attempt_number,
                failure=_failure(state.outcome.exception() if state.outcome else None),
            ),
            reraise=True,
        ):
            with attempt:
                return await self._send_once(method, path, body, token, repeatable=repeatable)
        raise AssertionError("unreachable: tenacity reraises the last error")

    async def _send_once(
        self, method: str, path: str, body: Any, token: str | None, *, repeatable: bool
    ) -> Any:
        url = f"{self.base_url}{API_PREFIX}{path}"
        headers = {"Accept": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        try:
            async with self.session.request(
                method, url, json=body, headers=headers, timeout=self.timeout
            ) as response:
                text = await response.text()
                status, content_type = response.status, response.content_type
        except TimeoutError:
            raise DittoFSUnreachable(
                f"{method} {url}: no answer within {self.timeout.total:g} s", repeatable=False
            ) from None
        except aiohttp.ClientError as error:
            # A refused connection never carried the request; a refused certificate is refused
            # again.
            never_sent = isinstance(error, aiohttp.ClientConnectorError)
            refused_tls = isinstance(error, aiohttp.ClientSSLError)
            raise DittoFSUnreachable(
                f"{method} {url}: {error or type(error).__name__}",
                repeatable=(never_sent or repeatable) and not refused_tls,
            ) from None
        log.debug("dittofs request", method=method, path=path, status=status)
        if status >= 400:
            raise DittoFSError.from_response(status, content_type, text)
        if not text.strip():
            return None
        try:
            return json.loads(text)
        except ValueError:
            raise DittoFSError(
                502, "Bad Gateway", f"{method} {path}: the answer is not JSON"
            ) from None
