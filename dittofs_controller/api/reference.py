"""Generate the DittoServer API reference (Markdown) from the CRD's schema.

Every field path with its type, requirement, default, limits and description, then every CEL
rule with the message the API server answers. The committed file is checked by a test;
regenerate it after any change to the model:

    python -m dittofs_controller.api.reference > docs/reference/dittoserver.md
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import attrs

from dittofs_controller.api import crd, v1alpha1

REGENERATE = "python -m dittofs_controller.api.reference > docs/reference/dittoserver.md"
Schema = Mapping[str, Any]


@attrs.frozen
class Row:
    path: str
    kind: str
    required: bool
    default: Any
    limits: str
    description: str


@attrs.frozen
class CelRule:
    path: str
    rule: str
    message: str


def _kind(schema: Schema) -> str:
    if schema.get("x-kubernetes-int-or-string"):
        return "integer or string"
    kind = schema.get("type", "")
    if kind == "array":
        return f"list of {_kind(schema.get('items') or {})}"
    if kind == "object":
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return "object (free-form)"
        if isinstance(schema.get("additionalProperties"), Mapping):
            return f"map of {_kind(schema['additionalProperties'])}"
        return "object"
    if schema.get("format"):
        return f"{kind} ({schema['format']})"
    return str(kind)


def _limits(schema: Schema) -> str:
    """Enum, bounds, lengths, pattern and list semantics, in words."""
    parts = []
    items = schema.get("items") or {}
    scalar = items if schema.get("type") == "array" else schema
    if "enum" in scalar:
        parts.append("one of " + ", ".join(f"`{value}`" for value in scalar["enum"]))
    if "minimum" in scalar or "maximum" in scalar:
        low, high = scalar.get("minimum"), scalar.get("maximum")
        if low is not None and high is not None:
            parts.append(f"{low} to {high}")
        elif low is not None:
            parts.append(f"at least {low}")
        else:
            parts.append(f"at most {high}")
    if "minLength" in scalar:
        parts.append(f"at least {scalar['minLength']} characters")
    if "maxLength" in scalar:
        parts.append(f"at most {scalar['maxLength']} characters")
    if "pattern" in scalar:
        parts.append(f"matches `{scalar['pattern']}`")
    if "minItems" in schema:
        parts.append(f"at least {_items(schema['minItems'])}")
    if "maxItems" in schema:
        parts.append(f"at most {_items(schema['maxItems'])}")
    list_type = schema.get("x-kubernetes-list-type")
    if list_type == "map":
        keys = ", ".join(schema.get("x-kubernetes-list-map-keys") or ())
        parts.append(f"unique by {keys}")
    elif list_type == "set":
        parts.append("unique items")
    return "; ".join(parts)


def _items(count: int) -> str:
    return f"{count} item" if count == 1 else f"{count} items"


def walk(schema: Schema, path: str = "", required: bool = True) -> Iterator[Row | CelRule]:
    """Rows (and CEL rules) of `schema` and everything under it, depth first."""
    if path:
        yield Row(
            path=path,
            kind=_kind(schema),
            required=required,
            default=schema.get("default"),
            limits=_limits(schema),
            description=" ".join(str(schema.get("description", "")).split()),
        )
    for rule in schema.get("x-kubernetes-validations") or ():
        where = path + rule.get("fieldPath", "") if path else rule.get("fieldPath", "") or "."
        yield CelRule(where, rule["rule"], rule["message"])
    if schema.get("type") == "array":
        yield from _nested(schema.get("items") or {}, f"{path}[]")
    elif isinstance(schema.get("additionalProperties"), Mapping):
        yield from _nested(schema["additionalProperties"], f"{path}.<key>")
    needed = set(schema.get("required") or ())
    for name, child in (schema.get("properties") or {}).items():
        yield from walk(child, f"{path}.{name}" if path else name, name in needed)


def _nested(schema: Schema, path: str) -> Iterator[Row | CelRule]:
    """Items of a list or values of a map: their own rules and fields, not another row."""
    for rule in schema.get("x-kubernetes-validations") or ():
        yield CelRule(path + rule.get("fieldPath", ""), rule["rule"], rule["message"])
    needed = set(schema.get("required") or ())
    for name, child in (schema.get("properties") or {}).items():
        yield from walk(child, f"{path}.{name}", name in needed)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _default(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):  # spelled out field by field below
        return "present, with its fields' defaults"
    return f"`{json.dumps(value, separators=(', ', ': '))}`"


def markdown() -> str:
    """The reference document."""
    schema = crd.openapi_v3_schema()
    entries = list(walk(schema))
    rows = [entry for entry in entries if isinstance(entry, Row)]
    rules = [entry for entry in entries if isinstance(entry, CelRule)]
    lines = [
        f"# {v1alpha1.KIND} reference ({v1alpha1.API_VERSION})",
        "",
        "<!-- GENERATED from dittofs_controller/api/v1alpha1.py; do not edit. -->",
        "",
        "Generated from the CRD's schema, the single source of the operator's model. "
        "Regenerate it after changing the model:",
        "",
        "<!-- check: run -->",
        "```sh",
        REGENERATE,
        "```",
        "",
        f"{' '.join(str(schema.get('description', '')).split())} "
        "`kubectl explain dittoserver.spec` shows the same descriptions in a cluster.",
        "",
        "A field marked required is required when its parent object is present. `[]` stands "
        "for every item of a list, `<key>` for every key of a map. Defaults are applied by the "
        "API server; an absent list or map means empty.",
        "",
        "## Fields",
        "",
        "| Field | Type | Required | Default | Limits | Description |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| `{row.path}` | {_cell(row.kind)} | {'yes' if row.required else 'no'} | "
        f"{_cell(_default(row.default))} | {_cell(row.limits)} | {_cell(row.description)} |"
        for row in rows
    ]
    lines += [
        "",
        "## Validation rules",
        "",
        "CEL rules the API server evaluates on every create and update; a violation is "
        "rejected with the message shown. `oldSelf` is the stored object, so rules using it "
        "restrict changes (transition rules).",
        "",
        "| Applies to | Rule | Message |",
        "| --- | --- | --- |",
    ]
    lines += [
        f"| `{_cell(rule.path)}` | `{_cell(rule.rule)}` | {_cell(rule.message)} |" for rule in rules
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown())
