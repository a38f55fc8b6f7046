"""Drift detection and child metadata."""

from __future__ import annotations

from decimal import Decimal

import pytest

from dittofs_controller.operator.children import (
    child_metadata,
    is_subset,
    needs_apply,
    quantity_value,
)

SERVER = {"metadata": {"name": "files", "namespace": "team", "uid": "u-1"}}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1Gi", Decimal(2**30)),
        ("1024Mi", Decimal(2**30)),
        ("500m", Decimal("0.5")),
        ("10", Decimal(10)),
        ("1.5G", Decimal(1_500_000_000)),
        ("abc", None),
        ("1Xi", None),
    ],
)
def test_quantities(text: str, value: Decimal | None) -> None:
    assert quantity_value(text) == value


def test_fields_defaulted_by_the_server_do_not_count_as_drift() -> None:
    desired = {"spec": {"ports": [{"port": 2049}], "type": "LoadBalancer"}}
    live = {
        "spec": {
            "ports": [{"port": 2049, "protocol": "TCP"}],
            "type": "LoadBalancer",
            "clusterIP": "10.0.0.5",
        }
    }
    assert is_subset(desired, live)
    assert not needs_apply({"kind": "Service", **desired}, {"kind": "Service", **live})


def test_changed_or_missing_values_are_drift() -> None:
    assert not is_subset({"a": {"b": 1}}, {"a": {"b": 2}})
    assert not is_subset({"a": {"b": 1}}, {"a": {}})
    assert not is_subset({"a": [1, 2]}, {"a": [1]})
    assert not is_subset({"a": [1]}, {"a": [1, 2]})  # a shortened list is a change
    assert needs_apply({"kind": "ConfigMap"}, None)


def test_canonicalised_quantities_are_the_same_value() -> None:
    assert is_subset({"storage": "1024Mi"}, {"storage": "1Gi"})
    assert not is_subset({"storage": "2Gi"}, {"storage": "1Gi"})


def test_child_metadata_carries_labels_and_the_controller_reference() -> None:
    meta = child_metadata(SERVER, "files-config", "config", extra_labels={"team": "x"})
    assert meta["namespace"] == "team"
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "dittofs-operator"
    assert meta["labels"]["app.kubernetes.io/instance"] == "files"
    assert meta["labels"]["team"] == "x"
    (owner,) = meta["ownerReferences"]
    assert owner["uid"] == "u-1" and owner["controller"] is True and owner["kind"] == "DittoServer"
