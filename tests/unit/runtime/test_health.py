"""The probe and metrics endpoints, over real HTTP on free ports."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry, Counter

from dittofs_controller.runtime import manager
from dittofs_controller.runtime.health import HealthServer
from dittofs_controller.runtime.metrics import REGISTRY
from dittofs_controller.settings import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("reconciles", "Reconciles done.", registry=registry).inc(3)
    return registry


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session


@pytest.fixture
async def server(registry: CollectorRegistry) -> AsyncIterator[HealthServer]:
    server = HealthServer(host="127.0.0.1", health_port=0, metrics_port=0, registry=registry)
    yield server
    await server.stop()


async def get(http: aiohttp.ClientSession, port: int, path: str) -> tuple[int, str]:
    async with http.get(f"http://127.0.0.1:{port}{path}") as response:
        return response.status, await response.text()


async def test_healthz_and_readyz_pass_without_checks(
    server: HealthServer, http: aiohttp.ClientSession
) -> None:
    await server.start()
    assert await get(http, server.health_port, "/healthz") == (200, "ok\n")
    assert await get(http, server.health_port, "/readyz") == (200, "ok\n")


async def test_readyz_waits_for_every_readiness_check(
    server: HealthServer, http: aiohttp.ClientSession
) -> None:
    synced = False
    server.add_readiness_check("caches-synced", lambda: synced)
    server.add_readiness_check("always", lambda: True)
    await server.start()

    assert await get(http, server.health_port, "/readyz") == (503, "[-]caches-synced failed\n")
    assert (await get(http, server.health_port, "/healthz"))[0] == 200
    synced = True
    assert await get(http, server.health_port, "/readyz") == (200, "ok\n")


async def test_a_raising_check_fails_with_its_error(
    server: HealthServer, http: aiohttp.ClientSession
) -> None:
    def broken() -> bool:
        raise RuntimeError("informer crashed")

    server.add_readiness_check("informers", broken)
    server.add_readiness_check("caches-synced", lambda: False)
    await server.start()
    status, body = await get(http, server.health_port, "/readyz")
    assert status == 503
    assert body.splitlines() == [
        "[-]informers failed: RuntimeError('informer crashed')",
        "[-]caches-synced failed",
    ]


async def test_healthz_runs_liveness_checks(
    server: HealthServer, http: aiohttp.ClientSession
) -> None:
    server.add_liveness_check("workers-alive", lambda: False)
    await server.start()
    assert await get(http, server.health_port, "/healthz") == (503, "[-]workers-alive failed\n")
    assert (await get(http, server.health_port, "/readyz"))[0] == 200


async def test_metrics_on_their_own_port(server: HealthServer, http: aiohttp.ClientSession) -> None:
    await server.start()
    assert server.metrics_port != server.health_port
    async with http.get(f"http://127.0.0.1:{server.metrics_port}/metrics") as response:
        assert response.status == 200
        assert response.content_type == "text/plain"
        assert "reconciles_total 3.0" in await response.text()
    assert (await get(http, server.health_port, "/metrics"))[0] == 404
    assert (await get(http, server.metrics_port, "/healthz"))[0] == 404


async def test_metrics_listen_on_their_own_address(
    registry: CollectorRegistry, http: aiohttp.ClientSession
) -> None:
    """/metrics on loopback only, the probes on another address (127.0.0.2 stands in for the
    pod IP): each answers on its own address and nothing listens on the other's."""
    server = HealthServer(
        host="127.0.0.2", metrics_host="127.0.0.1", health_port=0, metrics_port=0, registry=registry
    )
    await server.start()
    try:
        health, metrics = server.health_port, server.metrics_port
        async with http.get(f"http://127.0.0.1:{metrics}/metrics") as response:
            assert response.status == 200
            assert "reconciles_total 3.0" in await response.text()
        async with http.get(f"http://127.0.0.2:{health}/healthz") as response:
            assert response.status == 200
        with pytest.raises(aiohttp.ClientConnectionError):
            await http.get(f"http://127.0.0.2:{metrics}/metrics")
        with pytest.raises(aiohttp.ClientConnectionError):
            await http.get(f"http://127.0.0.1:{health}/healthz")
    finally:
        await server.stop()


def test_a_shared_port_needs_one_address() -> None:
    with pytest.raises(ValueError, match="share port 8080"):
        HealthServer(host="0.0.0.0", metrics_host="127.0.0.1", health_port=8080, metrics_port=8080)


async def test_the_manager_binds_each_server_where_the_settings_say(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """manager.run hands --bind-address and --metrics-bind-address to the health server."""
    created: list[dict[str, object]] = []

    class Recording(HealthServer):
        def __init__(self, **kwargs: Any) -> None:
            created.append(kwargs)
            super().__init__(**kwargs)

        async def start(self) -> None:
            raise OSError("stop here: the manager would run next")

    class Client:
        async def close(self) -> None:
            pass

    async def connect(*_: object) -> Client:
        return Client()

    monkeypatch.setattr(manager, "connect", connect)
    monkeypatch.setattr(manager, "HealthServer", Recording)
    settings = Settings(kubeconfig=None, bind_address="10.1.2.3", metrics_bind_address="127.0.0.1")
    assert await manager.run(settings, setup=lambda _: None) == manager.EXIT_FAILED
    [kwargs] = created
    assert (kwargs["host"], kwargs["metrics_host"]) == ("10.1.2.3", "127.0.0.1")
    assert (kwargs["health_port"], kwargs["metrics_port"]) == (8081, 8080)


async def test_metrics_negotiate_openmetrics(
    server: HealthServer, http: aiohttp.ClientSession
) -> None:
    await server.start()
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    headers = {"Accept": "application/openmetrics-text; version=1.0.0"}
    async with http.get(url, headers=headers) as response:
        assert response.content_type == "application/openmetrics-text"
        assert (await response.text()).endswith("# EOF\n")


async def test_equal_ports_share_one_server(
    registry: CollectorRegistry, http: aiohttp.ClientSession
) -> None:
    port = free_port()
    server = HealthServer(host="127.0.0.1", health_port=port, metrics_port=port, registry=registry)
    await server.start()
    try:
        assert server.health_port == server.metrics_port == port
        assert (await get(http, port, "/healthz"))[0] == 200
        assert (await get(http, port, "/readyz"))[0] == 200
        assert "reconciles_total 3.0" in (await get(http, port, "/metrics"))[1]
    finally:
        await server.stop()


async def test_stop_closes_the_ports(server: HealthServer, http: aiohttp.ClientSession) -> None:
    await server.start()
    port = server.health_port
    await server.stop()
    await server.stop()
    with pytest.raises(aiohttp.ClientConnectionError):
        await get(http, port, "/healthz")
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.health_port


async def test_bind_failure_releases_what_was_bound(registry: CollectorRegistry) -> None:
    health_port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = HealthServer(
            host="127.0.0.1",
            health_port=health_port,
            metrics_port=taken.getsockname()[1],
            registry=registry,
        )
        with pytest.raises(OSError):
            await server.start()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", health_port))  # free again


async def test_start_twice_and_duplicate_checks_are_errors(server: HealthServer) -> None:
    server.add_readiness_check("caches-synced", lambda: True)
    with pytest.raises(ValueError, match="already registered"):
        server.add_readiness_check("caches-synced", lambda: True)
    await server.start()
    with pytest.raises(RuntimeError, match="already running"):
        await server.start()


async def test_default_registry_is_the_project_registry(http: aiohttp.ClientSession) -> None:
    probe = Counter("health_test_probe", "Registered only by this test.", registry=REGISTRY)
    server = HealthServer(host="127.0.0.1", health_port=0, metrics_port=0)
    try:
        await server.start()
        assert (
            "health_test_probe_total 0.0" in (await get(http, server.metrics_port, "/metrics"))[1]
        )
    finally:
        await server.stop()
        REGISTRY.unregister(probe)
