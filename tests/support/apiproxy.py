"""A plain-HTTP reverse proxy in front of the API server whose answers a test can replace.

It stands for whatever sits between an operator and its API server (a corporate proxy, a load
balancer) and misbehaves: answering HTML, closing every watch at once, sending a malformed
event. Requests go upstream with the given client's credentials and TLS settings, so the
operator under test needs no certificate: `kubeconfig` writes one pointing at the proxy.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import yaml
from aiohttp import web

from dittofs_controller.kube.client import KubeClient

# An answer of the test's instead of the API server's, or None to forward the request.
Intercept = Callable[[web.Request], Awaitable[web.StreamResponse | None]]


class ApiProxy:
    def __init__(self, upstream: KubeClient, intercept: Intercept | None = None) -> None:
        self._upstream = upstream
        self.intercept = intercept
        self.requests: list[web.Request] = []  # every request, answered or forwarded
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def kubeconfig(self, path: Path) -> Path:
        """A kubeconfig for the proxy (which authenticates upstream itself)."""
        return token_kubeconfig(path, self.url, "unused")

    def watches(self, path: str) -> int:
        """How many watches of `path` came through."""
        return sum(1 for r in self.requests if r.path == path and r.query.get("watch") == "true")

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request)
        if self.intercept is not None:
            answer = await self.intercept(request)
            if answer is not None:
                return answer
        return await self._forward(request)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        api = self._upstream._api
        headers = {
            name: request.headers[name]
            for name in ("Content-Type", "Accept")
            if name in request.headers
        }
        await api.update_params_for_auth(headers, [], ["BearerToken"])
        body = await request.read()
        session: aiohttp.ClientSession = api.rest_client.pool_manager
        async with session.request(
            request.method,
            f"{self._upstream.host}{request.path_qs}",
            data=body or None,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        ) as upstream:
            response = web.StreamResponse(
                status=upstream.status,
                headers={"Content-Type": upstream.headers.get("Content-Type", "")},
            )
            await response.prepare(request)
            with contextlib.suppress(ConnectionError):
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
            return response


@contextlib.asynccontextmanager
async def running_proxy(
    upstream: KubeClient, intercept: Intercept | None = None
) -> AsyncIterator[ApiProxy]:
    proxy = ApiProxy(upstream, intercept)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()


def token_kubeconfig(path: Path, server: str, token: str) -> Path:
    """A kubeconfig that authenticates to `server` with a bearer token (and trusts its TLS
    certificate, whoever signed it: tests only)."""
    cluster = {"server": server, "insecure-skip-tls-verify": True}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": cluster}],
        "users": [{"name": "test", "user": {"token": token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
        "current-context": "test",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def is_watch(request: web.Request, path: str) -> bool:
    return request.path == path and request.query.get("watch") == "true"


def html_page() -> web.Response:
    """What a misconfigured proxy or captive portal answers: 200 with an HTML page."""
    return web.Response(text="<html><body>Please log in</body></html>", content_type="text/html")
