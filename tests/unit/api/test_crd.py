"""The generated CRD: committed copy up to date, documented, bounded, and in step with the model."""

from __future__ import annotations

import subprocess
import sys
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import attrs
import pytest
import yaml

from dittofs_controller.api import crd, v1alpha1
from dittofs_controller.api.schema import (
    cel_rules,
    field_schema,
    parse,
    to_wire,
    wire_name,
)

REPO = Path(__file__).resolve().parents[3]
COMMITTED = REPO / "crd" / "dittoservers.dittofs.io.yaml"


def root_schema() -> dict[str, Any]:
    return crd.openapi_v3_schema()


def walk(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node below `node`, with a readable path."""
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


def all_fields(node: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    for node_path, sub in walk(node, path):
        for name, child in sub.get("properties", {}).items():
            found.append((f"{node_path}.{name}", child))
    return found


# --- the committed file ---------------------------------------------------------------------


def test_committed_crd_is_up_to_date() -> None:
    assert COMMITTED.exists(), f"missing {COMMITTED}; generate it with: {crd.REGENERATE}"
    assert COMMITTED.read_text() == crd.crd_yaml(), (
        f"{COMMITTED.relative_to(REPO)} is stale; regenerate it with: {crd.REGENERATE}"
    )


def test_module_main_prints_the_crd() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dittofs_controller.api.crd"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout == crd.crd_yaml()
    assert yaml.safe_load(result.stdout) == crd.crd()


# --- identity of the resource ---------------------------------------------------------------


def test_names_scope_and_version() -> None:
    spec = crd.crd()["spec"]
    assert crd.crd()["metadata"]["name"] == "dittoservers.dittofs.io"
    assert spec["group"] == "dittofs.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": "DittoServer",
        "listKind": "DittoServerList",
        "plural": "dittoservers",
        "singular": "dittoserver",
        "shortNames": ["dittosrv"],
        "categories": ["dittofs"],
    }
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}


def test_printer_columns() -> None:
    (version,) = crd.crd()["spec"]["versions"]
    columns = {
        c["name"]: (c["jsonPath"], c.get("priority", 0))
        for c in version["additionalPrinterColumns"]
    }
    assert columns == {
        "Ready": ('.status.conditions[?(@.type=="Ready")].status', 0),
        "Phase": (".status.phase", 0),
        "NFS": (".status.endpoints.nfs", 0),
        "SMB": (".status.endpoints.smb", 0),
        # Only under -o wide.
        "Reason": ('.status.conditions[?(@.type=="Ready")].reason', 1),
        "Age": (".metadata.creationTimestamp", 0),
    }


# --- schema hygiene -------------------------------------------------------------------------


def test_every_field_has_a_description() -> None:
    schema = root_schema()
    missing = [
        path
        for path, node in all_fields(schema, "")
        if path != ".metadata" and not node.get("description", "").strip()
    ]
    assert not missing, f"fields without description: {missing}"


def test_metadata_is_left_to_the_api_server() -> None:
    assert root_schema()["properties"]["metadata"] == {"type": "object"}
    assert root_schema()["required"] == ["apiVersion", "kind", "metadata", "spec"]


def test_spec_strings_and_lists_are_bounded_for_cel_cost() -> None:
    """The API server prices each CEL rule by these bounds; unbounded ones blow the budget."""
    unbounded = []
    for path, node in walk(root_schema()["properties"]["spec"], "spec"):
        if path.endswith("{}"):
            continue  # map values: no rule iterates over them
        if node.get("type") == "string" and "maxLength" not in node and "enum" not in node:
            unbounded.append(path)
        free_form = node.get("items", {}).get("x-kubernetes-preserve-unknown-fields")
        if node.get("type") == "array" and "maxItems" not in node and not free_form:
            unbounded.append(path)
    assert not unbounded


def test_no_default_under_free_form_objects() -> None:
    for path, node in walk(root_schema(), ""):
        if node.get("x-kubernetes-preserve-unknown-fields"):
            nested = [p for p, n in walk(node, path) if "default" in n]
            assert not nested, nested


def test_list_map_keys_are_required_in_items() -> None:
    for path, node in walk(root_schema(), ""):
        if node.get("x-kubernetes-list-type") == "map":
            keys = node["x-kubernetes-list-map-keys"]
            assert set(keys) <= set(node["items"].get("required", [])), path


def test_rules_count() -> None:
    rules = [
        rule
        for _, node in walk(root_schema(), "")
        for rule in node.get("x-kubernetes-validations", [])
    ]
    assert len(rules) >= 40
    assert all(rule["message"] for rule in rules)


# --- model and schema agree field by field --------------------------------------------------


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) < len(typing.get_args(tp)):
            assert len(args) == 1
            return args[0], True
    return tp, False


def _check_type(tp: Any, node: dict[str, Any], path: str) -> None:
    origin = typing.get_origin(tp)
    if tp is str:
        assert node["type"] == "string", path
    elif tp is int:
        assert node["type"] == "integer", path
    elif tp is bool:
        assert node["type"] == "boolean", path
    elif origin in (typing.Union, types.UnionType):
        assert set(typing.get_args(tp)) == {int, str}, path
        assert node["x-kubernetes-int-or-string"] is True, path
    elif origin is Literal:
        assert node["type"] == "string" and node["enum"] == list(typing.get_args(tp)), path
    elif origin is list:
        assert node["type"] == "array", path
        _check_type(typing.get_args(tp)[0], node["items"], f"{path}[]")
    elif origin is dict and typing.get_args(tp)[1] is Any:
        assert node == {**node, "type": "object", "x-kubernetes-preserve-unknown-fields": True}
    elif origin is dict:
        assert node["type"] == "object", path
        _check_type(typing.get_args(tp)[1], node["additionalProperties"], f"{path}{{}}")
    else:
        assert attrs.has(tp), f"{path}: unexpected type {tp}"
        _check_model(tp, node, path)


def _check_model(cls: type, node: dict[str, Any], path: str) -> None:
    hints = typing.get_type_hints(cls)
    fields = attrs.fields(cls)
    assert node["type"] == "object", path
    assert set(node["properties"]) == {wire_name(a) for a in fields}, path
    required = set(node.get("required", []))
    declared_rules = [rule.to_schema() for rule in cel_rules(cls)]
    assert node.get("x-kubernetes-validations", [])[: len(declared_rules)] == declared_rules, path
    for attribute in fields:
        name = wire_name(attribute)
        prop = node["properties"][name]
        where = f"{path}.{name}"
        tp, optional = _strip_optional(hints[attribute.name])
        if name == "metadata" and cls is v1alpha1.DittoServer:
            continue  # replaced by a bare object on purpose
        assert prop["description"] == field_schema(attribute).description, where
        _check_type(tp, prop, where)
        default = attribute.default
        assert (name in required) == (default is attrs.NOTHING), where
        if default is attrs.NOTHING or default is None:
            assert "default" not in prop, where
            assert default is None or not optional, where
            continue
        value = default.factory() if isinstance(default, attrs.Factory) else default  # type: ignore[arg-type]
        wire = to_wire(value)
        if wire in ([], {}):
            assert "default" not in prop, f"{where}: empty defaults stay implicit"
        else:
            assert prop["default"] == wire, where
            if attrs.has(type(value)):
                assert parse(type(value), prop["default"]) == value, where


def test_model_and_schema_agree_field_by_field() -> None:
    _check_model(v1alpha1.DittoServer, root_schema(), "")


@pytest.mark.parametrize(
    ("path", "default"),
    [
        ("spec.image", "marmos91c/dittofs:v0.29.0"),
        ("spec.imagePullPolicy", "IfNotPresent"),
        ("spec.replicas", 1),
        ("spec.deletionPolicy", "Retain"),
        ("spec.controlPlane.port", 8080),
        ("spec.controlPlane.logLevel", "INFO"),
        ("spec.controlPlane.logFormat", "json"),
        ("spec.controlPlane.shutdownTimeout", 30),
        ("spec.controlPlane.metrics.port", 9090),
        ("spec.controlPlane.database.type", "sqlite"),
        ("spec.controlPlane.database.sqlite.storage.size", "1Gi"),
        ("spec.postgres.percona.postgresVersion", 17),
        ("spec.postgres.percona.crVersion", "2.8.2"),
        ("spec.postgres.percona.storage.size", "10Gi"),
        ("spec.postgres.external.sslMode", "require"),
        ("spec.metadataStores[].badger.storage.size", "10Gi"),
        ("spec.localBlockStores[].filesystem.storage.accessModes", ["ReadWriteOnce"]),
        ("spec.remoteBlockStores[].s3.endpoint", "https://s3.cubbit.eu"),
        ("spec.remoteBlockStores[].s3.region", "eu-west-1"),
        ("spec.remoteBlockStores[].s3.forcePathStyle", True),
        ("spec.remoteBlockStores[].s3.credentialsSecretRef.accessKeyIdKey", "accessKeyId"),
        ("spec.shares[].defaultPermission", "none"),
        ("spec.adapters.smb.guest", False),
        ("spec.shares[].nfs.squash", "root_to_guest"),
        ("spec.adapters.nfs.port", 12049),
        ("spec.adapters.nfs.servicePort", 2049),
        ("spec.adapters.nfs.portmapper.port", 10111),
        ("spec.adapters.smb.port", 12445),
        ("spec.adapters.smb.servicePort", 445),
        ("spec.expose.nfs.type", "ClusterIP"),
        ("spec.expose.smb.allowAllSources", False),
        ("spec.expose.api.type", "ClusterIP"),
        ("spec.expose.ingress.className", "nginx"),
        ("spec.expose.ingress.path", "/"),
    ],
)
def test_documented_defaults(path: str, default: Any) -> None:
    nodes = dict(walk(root_schema(), ""))
    assert nodes["." + path]["default"] == default
