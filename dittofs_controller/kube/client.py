"""A thin, typed Kubernetes REST client on top of kubernetes-asyncio's transport.

The operator works on plain dicts (the wire format) rather than generated models: it keeps
memory low in the informer caches, makes server-side apply bodies trivial, and lets one client
serve built-in kinds and custom resources alike. kubernetes-asyncio still does what it is good
at: kubeconfig / in-cluster loading, TLS, token refresh and the aiohttp connection pool.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import aiohttp
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config
from prometheus_client import Counter

from dittofs_controller.kube.resources import Resource
from dittofs_controller.runtime.metrics import REGISTRY

JSON = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
JSON_ACCEPT = "application/json"
# Lists and watches of only the objects' metadata: an informer that must notice Secrets appear
# caches their names and versions, never their values.
METADATA_ACCEPT = (
    "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
)
METADATA_WATCH_ACCEPT = (
    "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"
)

# client-go's name for the same counter, so dashboards built for Go operators work unchanged.
REQUESTS = Counter(
    "rest_client_requests_total",
    "Kubernetes API requests by method and HTTP status code.",
    ["method", "code"],
    registry=REGISTRY,
)

DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=30, sock_connect=10)
# A watch event carries a whole object: up to etcd's 1.5 MiB request limit (kubernetes-asyncio's
# own session uses the same buffer).
WATCH_READ_BUFFER = 2**21
# A WebSocket waits this long for the other end's close frame before dropping the connection.
WEBSOCKET_CLOSE_TIMEOUT = 2.0


class ApiError(Exception):
    """A non-2xx answer from the API server, carrying its Status reason and message."""

    def __init__(self, status: int, reason: str, message: str, kind: str = "") -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.kind = kind  # Status.details.kind: the kind of object the answer is about

    @classmethod
    def from_status(cls, http_status: int, body: str) -> ApiError:
        try:
            status = json.loads(body)
        except ValueError:
            return cls(http_status, "", body[:500])
        if not isinstance(status, dict):
            return cls(http_status, "", body[:500])
        return cls(
            int(status.get("code") or http_status),
            str(status.get("reason") or ""),
            str(status.get("message") or ""),
            str((status.get("details") or {}).get("kind") or ""),
        )

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def gone(self) -> bool:
        return self.status == 410

    @property
    def invalid(self) -> bool:
        """The request was refused as a whole: a field's value, or a JSON patch's failed test."""
        return self.status == 422


class KubeClient:
    """Requests against the API server; every call has an explicit timeout."""

    def __init__(self, api_client: k8s_client.ApiClient) -> None:
        self._api = api_client

    @property
    def host(self) -> str:
        return str(self._api.configuration.host)

    async def close(self) -> None:
        await self._api.close()

    async def _send(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        accept: str = JSON_ACCEPT,
        timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT,
    ) -> aiohttp.ClientResponse:
        response: aiohttp.ClientResponse = await self._api.call_api(
            path,
            method,
            query_params=[(k, v) for k, v in (query or {}).items() if v is not None],
            header_params={"Content-Type": content_type, "Accept": accept},
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=timeout,
        )
        REQUESTS.labels(method, str(response.status)).inc()
        return response

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        accept: str = JSON_ACCEPT,
        timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT,
    ) -> JSON:
        """Send one request and return the decoded JSON body; raise ApiError on non-2xx."""
        response = await self._send(
            method,
            path,
            query=query,
            body=body,
            content_type=content_type,
            accept=accept,
            timeout=timeout,
        )
        async with response:
            text = await response.text()
            if response.status >= 300:
                raise ApiError.from_status(response.status, text)
        decoded = json.loads(text) if text else {}
        return decoded if isinstance(decoded, dict) else {}

    async def stream_lines(
        self,
        path: str,
        *,
        query: Mapping[str, Any],
        timeout: aiohttp.ClientTimeout,
        accept: str = JSON_ACCEPT,
    ) -> AsyncIterator[JSON]:
        """Yield one decoded JSON document per line of a streaming (watch) response.

        `timeout.sock_read` doubles as an inactivity watchdog: a watch that goes silent for
        longer raises instead of hanging forever.
        """
        response = await self._send("GET", path, query=query, accept=accept, timeout=timeout)
        async with response:
            if response.status >= 300:
                raise ApiError.from_status(response.status, await response.text())
            async for line in response.content:
                if line.strip():
                    yield json.loads(line)

    async def websocket(
        self, path: str, *, query: Mapping[str, str], protocols: Sequence[str]
    ) -> aiohttp.ClientWebSocketResponse:
        """Upgrade a GET of `path` to a WebSocket, with the credentials, TLS settings and
        connection pool of every other request (the caller bounds the handshake's duration).

        Raises aiohttp.WSServerHandshakeError when the API server answers anything but 101.
        """
        headers: dict[str, str] = {}
        params = list(query.items())
        await self._api.update_params_for_auth(headers, params, ["BearerToken"])
        rest = self._api.rest_client
        options: dict[str, Any] = {}
        if rest.server_hostname:
            options["server_hostname"] = rest.server_hostname
        if rest.proxy:
            options["proxy"] = rest.proxy
            options["proxy_headers"] = rest.proxy_headers
        try:
            ws: aiohttp.ClientWebSocketResponse = await rest.pool_manager.ws_connect(
                f"{self.host}{path}?{urllib.parse.urlencode(params)}",
                protocols=tuple(protocols),
                headers=headers,
                timeout=aiohttp.ClientWSTimeout(ws_close=WEBSOCKET_CLOSE_TIMEOUT),
                **options,
            )
        except aiohttp.WSServerHandshakeError as error:
            REQUESTS.labels("GET", str(error.status)).inc()
            raise
        REQUESTS.labels("GET", "101").inc()
        return ws

    # Convenience verbs, all keyed by Resource so paths are built in one place.

    async def get(self, resource: Resource, name: str, namespace: str | None = None) -> JSON:
        return await self.request("GET", resource.path(namespace, name))

    async def get_or_none(
        self, resource: Resource, name: str, namespace: str | None = None
    ) -> JSON | None:
        try:
            return await self.get(resource, name, namespace)
        except ApiError as error:
            if error.not_found:
                return None
            raise

    async def create(self, resource: Resource, body: JSON, namespace: str | None = None) -> JSON:
        return await self.request("POST", resource.path(namespace), body=body)

    async def replace(self, resource: Resource, body: JSON) -> JSON:
        meta = body["metadata"]
        return await self.request(
            "PUT", resource.path(meta.get("namespace"), meta["name"]), body=body
        )

    async def delete(
        self,
        resource: Resource,
        name: str,
        namespace: str | None = None,
        *,
        propagation: str = "Background",
    ) -> None:
        """Delete an object; deleting one that is already gone is not an error."""
        try:
            await self.request(
                "DELETE",
                resource.path(namespace, name),
                body={"propagationPolicy": propagation},
            )
        except ApiError as error:
            if not error.not_found:
                raise

    async def apply(
        self,
        resource: Resource,
        body: JSON,
        *,
        field_manager: str,
        subresource: str | None = None,
        force: bool = True,
    ) -> JSON:
        """Server-side apply `body` as `field_manager` (the object's full desired state)."""
        meta = body["metadata"]
        return await self.request(
            "PATCH",
            resource.path(meta.get("namespace"), meta["name"], subresource),
            query={"fieldManager": field_manager, "force": "true" if force else None},
            body=body,
            content_type=APPLY_PATCH,
        )

    async def merge_patch(
        self,
        resource: Resource,
        name: str,
        patch: JSON,
        namespace: str | None = None,
        *,
        subresource: str | None = None,
    ) -> JSON:
        return await self.request(
            "PATCH",
            resource.path(namespace, name, subresource),
            body=patch,
            content_type=MERGE_PATCH,
        )

    async def json_patch(
        self, resource: Resource, name: str, operations: list[JSON], namespace: str | None = None
    ) -> JSON:
        """RFC 6902 operations, applied all or none: a failed `test` refuses the lot (422)."""
        return await self.request(
            "PATCH", resource.path(namespace, name), body=operations, content_type=JSON_PATCH
        )


async def connect(kubeconfig: str | None, context: str | None) -> KubeClient:
    """Build a client from a kubeconfig file, or from the pod's service account when None."""
    configuration = k8s_client.Configuration()
    if kubeconfig:
        await k8s_config.load_kube_config(
            config_file=kubeconfig, context=context, client_configuration=configuration
        )
    else:
        k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    if not configuration.proxy:
        configuration.proxy = environment_proxy(str(configuration.host))
    api = k8s_client.ApiClient(configuration)
    _stop_per_request_environment_lookups(api.rest_client)
    return KubeClient(api)


def environment_proxy(url: str) -> str | None:
    """The proxy HTTPS_PROXY / HTTP_PROXY name for `url`, unless NO_PROXY exempts its host
    (what client-go honours), looked up once."""
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname or urllib.request.proxy_bypass(parts.hostname):
        return None
    return urllib.request.getproxies().get(parts.scheme)


def _stop_per_request_environment_lookups(rest: Any) -> None:
    """Swap kubernetes-asyncio's session (trust_env=True) for one that does not trust the
    environment, on the same connection pool.

    Trusting it, aiohttp looks up proxy variables and ~/.netrc in a worker thread on every
    request: about a third of the operator's CPU in a py-spy profile at N = 100. The proxy is
    resolved once in `connect` instead; a netrc file holds no Kubernetes credential.
    """
    trusting: aiohttp.ClientSession = rest.pool_manager
    rest.pool_manager = aiohttp.ClientSession(
        connector=trusting.connector,
        trust_env=False,
        read_bufsize=WATCH_READ_BUFFER,
    )
    trusting.detach()  # it never sent a request; the connector is the new session's now
