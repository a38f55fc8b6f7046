"""Tracing records and exports spans only when an OTLP endpoint is configured."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once

from dittofs_controller import tracing
from dittofs_controller.settings import Settings


def reset_global_provider() -> None:
    """OpenTelemetry lets a process set its provider once; tests need a fresh one each."""
    trace._TRACER_PROVIDER = None
    trace._TRACER_PROVIDER_SET_ONCE = Once()


@pytest.fixture(autouse=True)
def fresh_tracing(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    reset_global_provider()
    yield
    tracing.shutdown_tracing()
    reset_global_provider()


def test_spans_are_exported_when_an_endpoint_is_configured() -> None:
    exporter = InMemorySpanExporter()
    early_tracer = tracing.tracer()  # obtained before configuration, as module globals are
    tracing.configure_tracing(Settings(otlp_endpoint="http://collector:4318"), exporter)

    with tracing.tracer().start_as_current_span("reconcile") as span:
        assert span.is_recording()
        with early_tracer.start_as_current_span("apply"):
            pass
    tracing.shutdown_tracing()

    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["apply", "reconcile"]
    assert spans[0].parent is not None
    assert spans[0].parent.span_id == spans[1].context.span_id
    resource = spans[1].resource.attributes
    assert resource["service.name"] == "dittofs-controller"
    assert spans[1].instrumentation_scope is not None
    assert spans[1].instrumentation_scope.name == "dittofs_controller"


def test_nothing_is_recorded_or_exported_without_an_endpoint() -> None:
    exporter = InMemorySpanExporter()
    tracing.configure_tracing(Settings(), exporter)

    assert not isinstance(trace.get_tracer_provider(), TracerProvider)
    with tracing.tracer().start_as_current_span("reconcile") as span:
        assert not span.is_recording()
    tracing.shutdown_tracing()
    assert exporter.get_finished_spans() == ()


def test_default_exporter_is_otlp_http() -> None:
    tracing.configure_tracing(Settings(otlp_endpoint="http://127.0.0.1:9/"))
    assert isinstance(trace.get_tracer_provider(), TracerProvider)
    tracing.shutdown_tracing()  # nothing buffered: no connection attempted
    tracing.shutdown_tracing()  # idempotent


@pytest.mark.parametrize(
    ("endpoint", "url"),
    [
        ("http://collector:4318", "http://collector:4318/v1/traces"),
        ("http://collector:4318/", "http://collector:4318/v1/traces"),
        ("https://gw.example/otlp", "https://gw.example/otlp/v1/traces"),
        ("http://collector:4318/v1/traces", "http://collector:4318/v1/traces"),
    ],
)
def test_traces_url(endpoint: str, url: str) -> None:
    assert tracing.traces_url(endpoint) == url
