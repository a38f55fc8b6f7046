"""Offline structural validation of a DittoServer against the CRD's OpenAPI schema.

`schema.parse` checks types and enums only, because the API server has already enforced the
rest by the time the operator reads an object. A manifest read from a file (`render`) has been
through no API server, so this applies the schema's structural keywords the way the API server
does with strict field validation: unknown fields, required fields, types, enums, bounds,
lengths, patterns, item counts and duplicate list keys. Messages follow the API server's
wording, so a manifest fails here with the same words `kubectl apply` would print.

CEL rules (`x-kubernetes-validations`) are not evaluated: they use Kubernetes' own CEL
libraries (quantities, transition rules against the old object). The API server checks them;
`kubectl apply --dry-run=server` shows their messages without creating anything.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from dittofs_controller.api import crd

Schema = Mapping[str, Any]

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}


def dittoserver_errors(document: Any) -> list[str]:
    """Every structural error of a DittoServer manifest, in the API server's words."""
    return errors(crd.openapi_v3_schema(), document, "")


def errors(schema: Schema, value: Any, path: str) -> list[str]:
    """Structural errors of `value` under `schema`; `path` is its dotted field path."""
    if value is None:
        return []  # absent: the parent's `required` speaks for it
    if schema.get("x-kubernetes-int-or-string"):
        if not _is(value, "integer") and not _is(value, "string"):
            return [_invalid(path, value, "must be of type integer or string")]
        return _scalar(schema, value, path)
    kind = schema.get("type")
    if kind is not None and not _is(value, kind):
        found = _type_name(value)
        return [
            f"{path}: Invalid value: {json.dumps(found)}: {path} in body must be of type "
            f"{kind}: {json.dumps(found)}"
        ]
    if kind == "object":
        return _object(schema, value, path)
    if kind == "array":
        return _array(schema, value, path)
    return _scalar(schema, value, path)


def _is(value: Any, kind: str) -> bool:
    # bool is an int subclass in Python, never in JSON.
    if kind == "integer" and isinstance(value, bool):
        return False
    return isinstance(value, _TYPES.get(kind, (object,)))


def _type_name(value: Any) -> str:
    for name in _TYPES:
        if _is(value, name):
            return name
    return "number" if isinstance(value, float) else type(value).__name__


def _show(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _invalid(path: str, value: Any, problem: str) -> str:
    return f"{path}: Invalid value: {_show(value)}: {path} in body {problem}"


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _object(schema: Schema, value: dict[str, Any], path: str) -> list[str]:
    found: list[str] = []
    properties: Schema = schema.get("properties") or {}
    for name in schema.get("required") or ():
        if value.get(name) is None:
            found.append(f"{_child(path, name)}: Required value")
    if properties and not schema.get("x-kubernetes-preserve-unknown-fields"):
        found += [f'unknown field "{_child(path, key)}"' for key in value if key not in properties]
    for key, item in value.items():
        if key in properties:
            found += errors(properties[key], item, _child(path, key))
        elif isinstance(schema.get("additionalProperties"), Mapping):
            found += errors(schema["additionalProperties"], item, _child(path, key))
    return found


def _array(schema: Schema, value: list[Any], path: str) -> list[str]:
    found: list[str] = []
    if "minItems" in schema and len(value) < schema["minItems"]:
        found.append(_invalid(path, len(value), f"should have at least {schema['minItems']} items"))
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        found.append(
            f"{path}: Too many: {len(value)}: must have at most {schema['maxItems']} items"
        )
    found += _duplicates(schema, value, path)
    items = schema.get("items") or {}
    for index, item in enumerate(value):
        found += errors(items, item, f"{path}[{index}]")
    return found


def _duplicates(schema: Schema, value: list[Any], path: str) -> list[str]:
    """`x-kubernetes-list-type` map (unique keys) and set (unique items)."""
    list_type = schema.get("x-kubernetes-list-type")
    if list_type not in ("map", "set"):
        return []
    keys = schema.get("x-kubernetes-list-map-keys") or ()
    seen: set[str] = set()
    found = []
    for index, item in enumerate(value):
        if list_type == "map":
            if not isinstance(item, dict):
                continue
            identity: Any = {key: item.get(key) for key in keys}
        else:
            identity = item
        text = _show(identity)
        if text in seen:
            found.append(f"{path}[{index}]: Duplicate value: {text}")
        seen.add(text)
    return found


def _scalar(schema: Schema, value: Any, path: str) -> list[str]:
    found: list[str] = []
    enum = schema.get("enum")
    if enum is not None and value not in enum:
        supported = ", ".join(json.dumps(option) for option in enum)
        found.append(
            f"{path}: Unsupported value: {json.dumps(value)}: supported values: {supported}"
        )
    if _is(value, "integer"):
        if "minimum" in schema and value < schema["minimum"]:
            found.append(
                _invalid(path, value, f"should be greater than or equal to {schema['minimum']}")
            )
        if "maximum" in schema and value > schema["maximum"]:
            found.append(
                _invalid(path, value, f"should be less than or equal to {schema['maximum']}")
            )
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            found.append(
                _invalid(path, value, f"should be at least {schema['minLength']} chars long")
            )
        if "maxLength" in schema and len(value.encode()) > schema["maxLength"]:
            found.append(f"{path}: Too long: may not be more than {schema['maxLength']} bytes")
        pattern = schema.get("pattern")
        if pattern is not None and not re.search(pattern, value):
            found.append(_invalid(path, value, f"should match '{pattern}'"))
    return found
