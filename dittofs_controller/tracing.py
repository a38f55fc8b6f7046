"""OpenTelemetry tracing, exported over OTLP/HTTP only when an endpoint is configured.

Without an endpoint the global no-op provider stays in place: spans cost next to nothing and the
SDK is never imported. Code creates spans through ``tracer()`` (or the OpenTelemetry API's
global ``trace.get_tracer``); both pick up the provider installed here, even when obtained
before ``configure_tracing`` ran.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from opentelemetry import trace

import dittofs_controller
from dittofs_controller.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

SERVICE_NAME = "dittofs-controller"
TRACER_NAME = "dittofs_controller"
_TRACES_PATH = "/v1/traces"

_provider: TracerProvider | None = None


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL for a collector base URL, as OTEL_EXPORTER_OTLP_ENDPOINT means."""
    if urlsplit(endpoint).path.rstrip("/").endswith(_TRACES_PATH):
        return endpoint
    return endpoint.rstrip("/") + _TRACES_PATH


def configure_tracing(settings: Settings, exporter: SpanExporter | None = None) -> None:
    """Install a batching SDK provider if ``settings.otlp_endpoint`` is set; else do nothing.

    ``exporter`` replaces the OTLP/HTTP exporter (for example an in-memory one in tests).
    The global provider can be set once per process, so call this once, at startup.
    """
    global _provider
    if settings.otlp_endpoint is None:
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    if exporter is None:
        exporter = OTLPSpanExporter(endpoint=traces_url(settings.otlp_endpoint))
    resource = Resource.create(
        {"service.name": SERVICE_NAME, "service.version": dittofs_controller.__version__}
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _provider = provider


def tracer() -> trace.Tracer:
    """The project's tracer (a no-op one while tracing is off)."""
    return trace.get_tracer(TRACER_NAME, dittofs_controller.__version__)


def shutdown_tracing() -> None:
    """Export the spans still buffered and stop the exporter; safe to call when tracing is off."""
    global _provider
    if _provider is not None:
        _provider.shutdown()
        _provider = None
