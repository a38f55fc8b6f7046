"""The committed API reference is the one the schema generates, and it misses nothing."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from dittofs_controller.api import crd, reference

COMMITTED = Path(__file__).resolve().parents[3] / "docs/reference/dittoserver.md"


def test_committed_reference_is_current() -> None:
    assert COMMITTED.read_text() == reference.markdown(), (
        f"docs/reference/dittoserver.md is stale; regenerate it with: {reference.REGENERATE}"
    )


def _schemas(schema: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    yield schema
    for child in (schema.get("properties") or {}).values():
        yield from _schemas(child)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), Mapping):
            yield from _schemas(schema[key])


def test_every_field_and_rule_is_listed() -> None:
    schema = crd.openapi_v3_schema()
    entries = list(reference.walk(schema))
    rows = [e for e in entries if isinstance(e, reference.Row)]
    rules = [e for e in entries if isinstance(e, reference.CelRule)]
    assert len(rows) == sum(len(s.get("properties") or {}) for s in _schemas(schema))
    expected = [r for s in _schemas(schema) for r in s.get("x-kubernetes-validations") or ()]
    assert sorted(r.message for r in rules) == sorted(r["message"] for r in expected)
    text = COMMITTED.read_text()
    for row in rows:
        assert f"| `{row.path}` |" in text


def test_rows_say_type_default_requirement_and_limits() -> None:
    rows = {
        row.path: row
        for row in reference.walk(crd.openapi_v3_schema())
        if isinstance(row, reference.Row)
    }
    port = rows["spec.controlPlane.port"]
    assert (port.kind, port.default, port.required, port.limits) == (
        "integer",
        8080,
        False,
        "1024 to 65535",
    )
    stores = rows["spec.metadataStores"]
    assert stores.required and stores.kind == "list of object"
    assert stores.limits == "at least 1 item; at most 16 items; unique by name"
    assert rows["spec.metadataStores[].type"].limits == "one of `memory`, `badger`, `postgres`"
    assert rows["spec.pod.labels"].kind == "map of string"
    storage_rule = [
        rule
        for rule in reference.walk(crd.openapi_v3_schema())
        if isinstance(rule, reference.CelRule) and "storageClassName is immutable" in rule.message
    ]
    assert "spec.controlPlane.database.sqlite.storage.storageClassName" in {
        rule.path for rule in storage_rule
    }
