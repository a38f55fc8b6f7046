"""The schema toolkit on small example models: generated OpenAPI, parse() and to_wire()."""

from __future__ import annotations

from typing import Any, ClassVar, Literal, cast

import attrs
import pytest

from dittofs_controller.api.schema import (
    JSON,
    ParseError,
    Rule,
    field,
    model,
    openapi_schema,
    parse,
    to_wire,
    wire_name,
)


@model
class Volume:
    __cel__: ClassVar[tuple[Rule, ...]] = (Rule("self.size != ''", "size must be set"),)

    size: str = field("Capacity.", default="10Gi", max_length=32)
    class_name: str | None = field("Storage class.", default=None)


@model
class SmallVolume(Volume):
    size: str = field("Capacity.", default="1Gi", max_length=32)


@model
class Item:
    name: str = field("Key.", pattern=r"^[a-z]+$", max_length=8)
    weight: int = field("Weight.", default=1, minimum=0, maximum=9)


@model
class Example:
    name: str = field("A required string.", min_length=1, max_length=63)
    mode: Literal["fast", "safe"] = field("An enum.", default="safe")
    count: int = field("A bounded integer.", default=3, minimum=1, maximum=5)
    enabled: bool = field("A flag.", default=False)
    note: str | None = field("An optional string.", default=None)
    block_cache_mb: int | None = field("Renamed.", default=None, wire_name="blockCacheMB")
    quantity: int | str = field("Int or string.", default="1Gi")
    volume: Volume = field("Nested, defaulted.", factory=Volume)
    small: SmallVolume = field("Nested subclass.", factory=SmallVolume)
    optional_volume: Volume | None = field("Nested, optional.", default=None)
    items: list[Item] = field("Keyed list.", factory=list, max_items=4, map_key="name")
    tags: list[str] = field(
        "Set of strings.",
        factory=list,
        max_items=3,
        unique=True,
        max_length=10,
        rules=(Rule("self.all(t, t != 'x')", "no x"),),
    )
    modes: list[Literal["a", "b"]] = field("Defaulted list.", factory=lambda: ["a"])
    labels: dict[str, str] = field("A map.", factory=dict)
    limits: dict[str, int | str] = field("A map of int-or-string.", factory=dict)
    extra: JSON | None = field("Free-form.", default=None)
    extras: list[JSON] = field("Free-form list.", factory=list)


def schema_of(cls: type) -> dict[str, Any]:
    return openapi_schema(cls)


def test_scalar_fields_carry_description_type_bounds_and_default() -> None:
    props = schema_of(Example)["properties"]
    assert props["name"] == {
        "description": "A required string.",
        "type": "string",
        "minLength": 1,
        "maxLength": 63,
    }
    assert props["mode"] == {
        "description": "An enum.",
        "type": "string",
        "enum": ["fast", "safe"],
        "default": "safe",
    }
    assert props["count"] == {
        "description": "A bounded integer.",
        "type": "integer",
        "minimum": 1,
        "maximum": 5,
        "default": 3,
    }
    assert props["enabled"]["default"] is False
    assert props["quantity"] == {
        "description": "Int or string.",
        "x-kubernetes-int-or-string": True,
        "default": "1Gi",
    }


def test_required_lists_exactly_the_fields_without_default() -> None:
    assert schema_of(Example)["required"] == ["name"]
    assert "required" not in schema_of(Volume)
    assert schema_of(Item)["required"] == ["name"]


def test_optional_fields_have_no_default_and_are_not_required() -> None:
    props = schema_of(Example)["properties"]
    assert "default" not in props["note"]
    assert "default" not in props["optionalVolume"]


def test_wire_names_are_camel_case_unless_overridden() -> None:
    props = schema_of(Example)["properties"]
    assert "optionalVolume" in props
    assert "blockCacheMB" in props
    fields = {a.name: wire_name(a) for a in attrs.fields(cast(Any, Example))}
    assert fields["block_cache_mb"] == "blockCacheMB"
    assert fields["optional_volume"] == "optionalVolume"


def test_nested_defaults_are_emitted_in_full() -> None:
    """A `{}` default would be validated by CEL before nested defaults apply: spell it out."""
    props = schema_of(Example)["properties"]
    assert props["volume"]["default"] == {"size": "10Gi"}
    assert props["small"]["default"] == {"size": "1Gi"}
    assert props["modes"]["default"] == ["a"]


def test_empty_container_defaults_are_not_emitted() -> None:
    props = schema_of(Example)["properties"]
    for name in ("items", "tags", "labels", "limits", "extras"):
        assert "default" not in props[name], name


def test_subclass_overrides_the_default_and_inherits_rules() -> None:
    small = schema_of(SmallVolume)
    assert small["properties"]["size"]["default"] == "1Gi"
    assert small["x-kubernetes-validations"] == [
        {"rule": "self.size != ''", "message": "size must be set"}
    ]


def test_nested_models_become_objects_with_their_rules() -> None:
    volume = schema_of(Example)["properties"]["volume"]
    assert volume["type"] == "object"
    assert volume["description"] == "Nested, defaulted."
    assert volume["x-kubernetes-validations"] == [
        {"rule": "self.size != ''", "message": "size must be set"}
    ]
    assert set(volume["properties"]) == {"size", "className"}


def test_keyed_list_is_a_list_map() -> None:
    items = schema_of(Example)["properties"]["items"]
    assert items["type"] == "array"
    assert items["maxItems"] == 4
    assert items["x-kubernetes-list-type"] == "map"
    assert items["x-kubernetes-list-map-keys"] == ["name"]
    assert items["items"]["required"] == ["name"]


def test_value_keywords_of_a_list_constrain_its_items() -> None:
    tags = schema_of(Example)["properties"]["tags"]
    assert tags["x-kubernetes-list-type"] == "set"
    assert tags["maxItems"] == 3
    assert tags["items"] == {"type": "string", "maxLength": 10}
    assert tags["x-kubernetes-validations"] == [
        {"rule": "self.all(t, t != 'x')", "message": "no x"}
    ]


def test_maps_and_free_form_objects() -> None:
    props = schema_of(Example)["properties"]
    assert props["labels"]["additionalProperties"] == {"type": "string"}
    assert props["limits"]["additionalProperties"] == {"x-kubernetes-int-or-string": True}
    assert props["extra"] == {
        "description": "Free-form.",
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
    }
    assert props["extras"]["items"] == {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
    }


def test_field_path_is_emitted_when_set() -> None:
    assert Rule("true", "m", field_path=".x").to_schema() == {
        "rule": "true",
        "message": "m",
        "fieldPath": ".x",
    }


def test_attributes_without_schema_field_are_rejected() -> None:
    @attrs.frozen
    class Plain:
        x: int = 1

    with pytest.raises(TypeError, match=r"schema\.field"):
        openapi_schema(Plain)


def test_unsupported_declarations_are_rejected() -> None:
    @model
    class FloatField:
        x: float = field("No floats in Kubernetes APIs.", default=1.0)

    @model
    class ListKeywordOnScalar:
        x: str = field("x", default="a", max_items=3)

    @model
    class ValueKeywordOnObject:
        x: Volume = field("x", factory=Volume, max_length=3)

    @model
    class OptionalWithDefault:
        x: str | None = field("x", default="a")

    for cls in (FloatField, ListKeywordOnScalar, ValueKeywordOnObject, OptionalWithDefault):
        with pytest.raises(TypeError):
            openapi_schema(cls)


def test_models_are_frozen_and_keyword_only() -> None:
    item = Item(name="a")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        item.name = "b"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Item("a")  # type: ignore[call-arg]


# --- parse and to_wire -----------------------------------------------------------------------


def test_parse_applies_the_model_defaults() -> None:
    parsed = parse(Example, {"name": "n"})
    assert parsed == Example(name="n")
    assert parsed.volume == Volume(size="10Gi")
    assert parsed.small.size == "1Gi"
    assert parsed.modes == ["a"]
    assert parsed.optional_volume is None


def test_parse_reads_every_kind_of_field() -> None:
    data = {
        "name": "n",
        "mode": "fast",
        "count": 5,
        "enabled": True,
        "note": "hi",
        "blockCacheMB": 64,
        "quantity": 2,
        "volume": {"size": "5Gi", "className": "ssd"},
        "optionalVolume": {},
        "items": [{"name": "a", "weight": 2}, {"name": "b"}],
        "tags": ["t"],
        "modes": ["b"],
        "labels": {"k": "v"},
        "limits": {"cpu": "500m", "memory": 1024},
        "extra": {"any": {"thing": [1, 2]}},
        "extras": [{"a": 1}],
    }
    parsed = parse(Example, data)
    assert parsed.block_cache_mb == 64
    assert parsed.volume == Volume(size="5Gi", class_name="ssd")
    assert parsed.optional_volume == Volume()
    assert parsed.items == [Item(name="a", weight=2), Item(name="b", weight=1)]
    assert parsed.limits == {"cpu": "500m", "memory": 1024}
    assert parsed.extra == {"any": {"thing": [1, 2]}}


def test_parse_treats_null_as_absent_and_ignores_unknown_keys() -> None:
    assert parse(Example, {"name": "n", "note": None, "count": None, "future": 1}) == Example(
        name="n"
    )


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({}, "name"),
        ({"name": 1}, "name"),
        ({"name": "n", "count": True}, "count"),
        ({"name": "n", "enabled": 1}, "enabled"),
        ({"name": "n", "mode": "slow"}, "mode"),
        ({"name": "n", "quantity": 1.5}, "quantity"),
        ({"name": "n", "volume": "big"}, "volume"),
        ({"name": "n", "volume": {"size": 10}}, "volume.size"),
        ({"name": "n", "items": {"name": "a"}}, "items"),
        ({"name": "n", "items": [{"name": "a"}, {}]}, "items[1].name"),
        ({"name": "n", "labels": {"k": 1}}, "labels.k"),
        ({"name": "n", "labels": []}, "labels"),
    ],
)
def test_parse_errors_name_the_field(data: dict[str, Any], path: str) -> None:
    with pytest.raises(ParseError) as info:
        parse(Example, data)
    assert info.value.path == path


def test_to_wire_leaves_out_unset_and_empty_fields() -> None:
    assert to_wire(Example(name="n")) == {
        "name": "n",
        "mode": "safe",
        "count": 3,
        "enabled": False,
        "quantity": "1Gi",
        "volume": {"size": "10Gi"},
        "small": {"size": "1Gi"},
        "modes": ["a"],
    }


def test_to_wire_and_parse_round_trip() -> None:
    original = Example(
        name="n",
        block_cache_mb=0,
        optional_volume=Volume(class_name="x"),
        items=[Item(name="a", weight=0)],
        labels={"k": "v"},
        extra={"nested": {"empty": {}}},
    )
    wire = to_wire(original)
    assert wire["blockCacheMB"] == 0
    assert wire["extra"] == {"nested": {"empty": {}}}  # free-form content is kept verbatim
    assert parse(Example, wire) == original
