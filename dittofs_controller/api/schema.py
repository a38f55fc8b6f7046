"""Declare a Kubernetes API type once, as attrs classes, and derive everything else from it.

The same classes yield the CRD's structural OpenAPI v3 schema (descriptions, defaults, bounds,
list semantics, CEL rules) and parse the API server's JSON back into typed objects with the same
defaults, so the operator's model and the installed CRD cannot drift apart.

Conventions:
- `@model` makes a frozen, keyword-only attrs class; every attribute is declared with `field`,
  whose description becomes the schema's (what `kubectl explain` shows).
- Python type hints choose the schema type: `str`, `int`, `bool`, `int | str` (int-or-string),
  `Literal[...]` (string enum), `list[X]`, `dict[str, X]` (a map), `JSON` (a free-form object,
  `x-kubernetes-preserve-unknown-fields`), another `@model` class, and `X | None` for an
  optional field without a default.
- Wire names are the camelCase form of the attribute names unless `wire_name` says otherwise.
- Object-level CEL rules go in a `__cel__` class attribute; field-level ones in `field(rules=)`.
- A default whose wire form is empty (`[]`, `{}`) is not emitted: absent and empty mean the
  same thing to the operator, and the stored object stays free of noise. Every other default is
  emitted in full, so the API server applies it and validates it (CEL included) at CRD creation.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeVar, dataclass_transform

import attrs

JSON = dict[str, Any]
"""A free-form object: `x-kubernetes-preserve-unknown-fields` in the schema, a dict in Python."""

T = TypeVar("T")

_METADATA_KEY = "dittofs_controller.api.schema"


class ParseError(ValueError):
    """The wire data does not fit the model; `path` points at the offending field."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path or '<root>'}: {problem}")
        self.path = path


@attrs.frozen
class Rule:
    """One CEL validation rule: an entry of `x-kubernetes-validations`."""

    rule: str
    message: str
    field_path: str | None = None

    def to_schema(self) -> dict[str, str]:
        entry = {"rule": self.rule, "message": self.message}
        if self.field_path is not None:
            entry["fieldPath"] = self.field_path
        return entry


@attrs.frozen(kw_only=True)
class FieldSchema:
    """The OpenAPI facts of one attribute that its Python type cannot express."""

    description: str
    wire_name: str | None = None
    minimum: int | None = None
    maximum: int | None = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    format: str | None = None
    min_items: int | None = None
    max_items: int | None = None
    map_key: str | None = None
    unique: bool = False
    rules: tuple[Rule, ...] = ()

    def scalar_keywords(self) -> dict[str, Any]:
        """Keywords about one value; for a list they constrain its items."""
        return _present(
            minimum=self.minimum,
            maximum=self.maximum,
            minLength=self.min_length,
            maxLength=self.max_length,
            pattern=self.pattern,
            format=self.format,
        )

    def array_keywords(self) -> dict[str, Any]:
        keywords = _present(minItems=self.min_items, maxItems=self.max_items)
        if self.map_key is not None:
            keywords["x-kubernetes-list-type"] = "map"
            keywords["x-kubernetes-list-map-keys"] = [self.map_key]
        elif self.unique:
            keywords["x-kubernetes-list-type"] = "set"
        return keywords


def field(
    description: str,
    *,
    default: Any = attrs.NOTHING,
    factory: Callable[[], Any] | None = None,
    wire_name: str | None = None,
    minimum: int | None = None,
    maximum: int | None = None,
    min_length: int | None = None,
    max_length: int | None = None,
    pattern: str | None = None,
    format: str | None = None,
    min_items: int | None = None,
    max_items: int | None = None,
    map_key: str | None = None,
    unique: bool = False,
    rules: Sequence[Rule] = (),
) -> Any:
    """An attrs attribute carrying its schema; without default or factory it is required."""
    schema = FieldSchema(
        description=description,
        wire_name=wire_name,
        minimum=minimum,
        maximum=maximum,
        min_length=min_length,
        max_length=max_length,
        pattern=pattern,
        format=format,
        min_items=min_items,
        max_items=max_items,
        map_key=map_key,
        unique=unique,
        rules=tuple(rules),
    )
    metadata = {_METADATA_KEY: schema}
    if factory is not None:
        return attrs.field(factory=factory, metadata=metadata)
    return attrs.field(default=default, metadata=metadata)


@dataclass_transform(frozen_default=True, kw_only_default=True, field_specifiers=(field,))
def model(cls: type[T]) -> type[T]:
    """Make `cls` an API model: a frozen, keyword-only attrs class."""
    return attrs.frozen(kw_only=True)(cls)


def field_schema(attribute: attrs.Attribute[Any]) -> FieldSchema:
    schema = attribute.metadata.get(_METADATA_KEY)
    if not isinstance(schema, FieldSchema):
        raise TypeError(f"attribute {attribute.name!r} was not declared with schema.field()")
    return schema


def wire_name(attribute: attrs.Attribute[Any]) -> str:
    """The JSON name of an attribute: explicit, or the camelCase form of the Python name."""
    explicit = field_schema(attribute).wire_name
    if explicit is not None:
        return explicit
    head, *rest = attribute.name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def cel_rules(cls: type) -> tuple[Rule, ...]:
    """The object-level rules of a model class (inherited ones included)."""
    rules: tuple[Rule, ...] = getattr(cls, "__cel__", ())
    return rules


def openapi_schema(cls: type) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of a model class, as the API server wants it."""
    hints = _type_hints(cls)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for attribute in attrs.fields(cls):
        meta = field_schema(attribute)
        name = wire_name(attribute)
        tp = hints[attribute.name]
        optional = _is_optional(tp)
        if optional and attribute.default is not None:
            raise TypeError(f"{cls.__name__}.{attribute.name}: an optional field defaults to None")
        prop: dict[str, Any] = {"description": meta.description}
        prop.update(_type_schema(_strip_optional(tp)))
        _apply_keywords(prop, meta, f"{cls.__name__}.{attribute.name}")
        default = wire_default(attribute)
        if default is not None:
            prop["default"] = default
        elif attribute.default is attrs.NOTHING:
            required.append(name)
        properties[name] = prop
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    if rules := cel_rules(cls):
        schema["x-kubernetes-validations"] = [rule.to_schema() for rule in rules]
    return schema


def wire_default(attribute: attrs.Attribute[Any]) -> Any:
    """The default the schema declares for an attribute, or None when it declares none."""
    default = attribute.default
    if default is attrs.NOTHING or default is None:
        return None
    value = default.factory() if isinstance(default, attrs.Factory) else default  # type: ignore[arg-type]
    wire = to_wire(value)
    return None if _is_empty(wire) else wire


def to_wire(value: Any) -> Any:
    """The JSON form of a model instance (or of any value inside one).

    Unset optional fields and empty lists/maps are left out, mirroring what the schema
    declares: absent and empty are the same.
    """
    if attrs.has(type(value)):
        out: dict[str, Any] = {}
        for attribute in attrs.fields(type(value)):
            wire = to_wire(getattr(value, attribute.name))
            if wire is not None and not _is_empty(wire):
                out[wire_name(attribute)] = wire
        return out
    if isinstance(value, list):
        return [to_wire(item) for item in value]
    if isinstance(value, dict):
        return {key: to_wire(item) for key, item in value.items()}
    return value


def parse(cls: type[T], data: Mapping[str, Any]) -> T:
    """Build a model instance from wire data; absent fields take the model's defaults.

    Unknown keys are ignored, like the API server's pruning does, so an operator older than
    the installed CRD still reads objects. Bounds and CEL rules are the API server's job; this
    checks types and enums only, and raises ParseError naming the field.
    """
    result: T = _parse_object(cls, data, "")
    return result


# --- internals -------------------------------------------------------------------------------


_HINTS: dict[type, dict[str, Any]] = {}


def _type_hints(cls: type) -> dict[str, Any]:
    """Resolved annotations of a model class (string annotations included), memoized."""
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


def _present(**keywords: Any) -> dict[str, Any]:
    return {key: value for key, value in keywords.items() if value is not None}


def _is_empty(wire: Any) -> bool:
    return isinstance(wire, list | dict) and not wire


def _union_args(tp: Any) -> tuple[Any, ...] | None:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return typing.get_args(tp)
    return None


def _is_optional(tp: Any) -> bool:
    args = _union_args(tp)
    return args is not None and type(None) in args


def _strip_optional(tp: Any) -> Any:
    args = _union_args(tp)
    if args is None or type(None) not in args:
        return tp
    rest = [arg for arg in args if arg is not type(None)]
    if len(rest) != 1:
        raise TypeError(f"an optional field has exactly one other type: {tp}")
    return rest[0]


def _is_int_or_string(tp: Any) -> bool:
    args = _union_args(tp)
    return args is not None and set(args) == {int, str}


def _is_json(tp: Any) -> bool:
    return typing.get_origin(tp) is dict and typing.get_args(tp) == (str, Any)


def _type_schema(tp: Any) -> dict[str, Any]:
    if tp is str:
        return {"type": "string"}
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer"}
    if _is_int_or_string(tp):
        return {"x-kubernetes-int-or-string": True}
    origin = typing.get_origin(tp)
    if origin is Literal:
        values = list(typing.get_args(tp))
        if not all(isinstance(value, str) for value in values):
            raise TypeError(f"only string Literals are supported: {tp}")
        return {"type": "string", "enum": values}
    if origin is list:
        return {"type": "array", "items": _type_schema(typing.get_args(tp)[0])}
    if _is_json(tp):
        return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    if origin is dict:
        key, value = typing.get_args(tp)
        if key is not str:
            raise TypeError(f"map keys must be strings: {tp}")
        return {"type": "object", "additionalProperties": _type_schema(value)}
    if isinstance(tp, type) and attrs.has(tp):
        return openapi_schema(tp)
    raise TypeError(f"no schema for type {tp!r}")


def _apply_keywords(prop: dict[str, Any], meta: FieldSchema, where: str) -> None:
    """Put each keyword where it belongs: on the array, or on the value (items of a list)."""
    scalar = meta.scalar_keywords()
    array = meta.array_keywords()
    is_array = prop.get("type") == "array"
    if array and not is_array:
        raise TypeError(f"{where}: list keywords on a non-list field")
    target = prop["items"] if is_array else prop
    if scalar and target.get("type") not in ("string", "integer"):
        raise TypeError(f"{where}: value keywords on a non-scalar field")
    target.update(scalar)
    prop.update(array)
    if meta.rules:
        prop["x-kubernetes-validations"] = [
            *prop.get("x-kubernetes-validations", []),
            *(rule.to_schema() for rule in meta.rules),
        ]


def _parse_object(cls: type[Any], data: Any, path: str) -> Any:
    if not isinstance(data, Mapping):
        raise ParseError(path, f"expected an object, got {type(data).__name__}")
    hints = _type_hints(cls)
    kwargs: dict[str, Any] = {}
    for attribute in attrs.fields(cls):
        name = wire_name(attribute)
        value = data.get(name)
        where = f"{path}.{name}" if path else name
        if value is None:
            if attribute.default is attrs.NOTHING:
                raise ParseError(where, "required field is missing")
            continue  # attrs applies the same default the schema declares
        kwargs[attribute.name] = _parse_value(hints[attribute.name], value, where)
    return cls(**kwargs)


def _parse_value(tp: Any, value: Any, path: str) -> Any:
    tp = _strip_optional(tp)
    if tp is str or tp is int or tp is bool:
        # bool is an int subclass: never accept one for the other.
        if type(value) is not tp:
            raise ParseError(path, f"expected {tp.__name__}, got {type(value).__name__}")
        return value
    if _is_int_or_string(tp):
        if type(value) not in (int, str):
            raise ParseError(path, f"expected an integer or a string, got {type(value).__name__}")
        return value
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ParseError(path, f"unsupported value {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ParseError(path, f"expected a list, got {type(value).__name__}")
        (item_type,) = typing.get_args(tp)
        return [_parse_value(item_type, item, f"{path}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ParseError(path, f"expected an object, got {type(value).__name__}")
        if _is_json(tp):
            return dict(value)
        _, value_type = typing.get_args(tp)
        return {k: _parse_value(value_type, v, f"{path}.{k}") for k, v in value.items()}
    return _parse_object(tp, value, path)
