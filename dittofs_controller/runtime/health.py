"""Probe and metrics HTTP endpoints, laid out as controller-runtime does.

``/healthz`` (liveness) and ``/readyz`` (readiness) are served on the health port, ``/metrics``
(Prometheus exposition) on the metrics port; equal ports share one server. The metrics server
may listen on its own address (``metrics_host``, e.g. 127.0.0.1 to keep /metrics off the pod
network while the kubelet still reaches the probes); a shared server needs one address. Port 0
picks a free port per server. Checks are plain callables returning True when healthy; one that
raises counts as failing. ``/healthz`` answering at all proves the event loop is alive.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from dittofs_controller.runtime.metrics import REGISTRY

Check = Callable[[], bool]

# Handlers answer instantly; never let a lingering connection hold up process exit.
_SHUTDOWN_TIMEOUT = 2.0


def _failures(checks: dict[str, Check]) -> list[str]:
    failures = []
    for name, check in checks.items():
        try:
            healthy = check()
        except Exception as error:
            failures.append(f"[-]{name} failed: {error!r}")
        else:
            if not healthy:
                failures.append(f"[-]{name} failed")
    return failures


class HealthServer:
    """Serves /healthz, /readyz and /metrics until stopped."""

    def __init__(
        self,
        *,
        host: str,
        health_port: int,
        metrics_port: int,
        metrics_host: str | None = None,
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        """`metrics_host` defaults to `host`."""
        metrics_host = host if metrics_host is None else metrics_host
        if health_port == metrics_port != 0 and metrics_host != host:
            raise ValueError(
                f"health and metrics share port {health_port}, so they cannot listen on "
                f"different addresses ({host} and {metrics_host})"
            )
        self._hosts = (host, metrics_host)
        self._requested_ports = (health_port, metrics_port)
        self._registry = registry
        self._liveness: dict[str, Check] = {}
        self._readiness: dict[str, Check] = {}
        self._runners: list[web.AppRunner] = []

    def add_liveness_check(self, name: str, check: Check) -> None:
        """/healthz fails while `check` fails: the kubelet restarts the container."""
        self._add(self._liveness, name, check)

    def add_readiness_check(self, name: str, check: Check) -> None:
        """/readyz fails while `check` fails (e.g. caches not synced yet)."""
        self._add(self._readiness, name, check)

    @staticmethod
    def _add(checks: dict[str, Check], name: str, check: Check) -> None:
        if name in checks:
            raise ValueError(f"check {name!r} is already registered")
        checks[name] = check

    @property
    def health_port(self) -> int:
        """The bound health port (resolves port 0); only valid once started."""
        return self._bound_port(0)

    @property
    def metrics_port(self) -> int:
        """The bound metrics port (resolves port 0); only valid once started."""
        return self._bound_port(-1)

    def _bound_port(self, index: int) -> int:
        if not self._runners:
            raise RuntimeError("the health server is not running")
        port: int = self._runners[index].addresses[0][1]
        return port

    async def start(self) -> None:
        """Bind and serve; on a bind error nothing stays open and the OSError propagates."""
        if self._runners:
            raise RuntimeError("the health server is already running")
        health_port, metrics_port = self._requested_ports
        health_host, metrics_host = self._hosts
        health = web.Application()
        health.router.add_get("/healthz", self._healthz)
        health.router.add_get("/readyz", self._readyz)
        if health_port == metrics_port != 0:
            health.router.add_get("/metrics", self._metrics)
            servers = [(health, health_host, health_port)]
        else:
            metrics = web.Application()
            metrics.router.add_get("/metrics", self._metrics)
            servers = [(health, health_host, health_port), (metrics, metrics_host, metrics_port)]
        try:
            for app, host, port in servers:
                runner = web.AppRunner(app, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT)
                await runner.setup()
                self._runners.append(runner)
                await web.TCPSite(runner, host, port).start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Close the listeners; safe to call more than once."""
        runners, self._runners = self._runners, []
        for runner in runners:
            await runner.cleanup()

    async def _healthz(self, _: web.Request) -> web.Response:
        return self._verdict(self._liveness)

    async def _readyz(self, _: web.Request) -> web.Response:
        return self._verdict(self._readiness)

    @staticmethod
    def _verdict(checks: dict[str, Check]) -> web.Response:
        failures = _failures(checks)
        if failures:
            return web.Response(status=503, text="\n".join(failures) + "\n")
        return web.Response(text="ok\n")

    async def _metrics(self, request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(self._registry), headers={"Content-Type": content_type})
