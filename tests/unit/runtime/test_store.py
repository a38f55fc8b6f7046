"""The informer store: indexes stay consistent with the objects."""

from __future__ import annotations

import json

from dittofs_controller.kube.resources import ObjectKey
from dittofs_controller.runtime.store import (
    BY_CONTROLLER_UID,
    BY_NAMESPACE,
    Store,
    controller_owner,
)


def obj(namespace: str, name: str, owner: str | None = None, rv: str = "1") -> dict:
    meta: dict = {
        "namespace": namespace,
        "name": name,
        "resourceVersion": rv,
        "managedFields": [{}],
    }
    if owner:
        meta["ownerReferences"] = [
            {"uid": "other", "controller": False},
            {"uid": owner, "controller": True},
        ]
    return {"metadata": meta}


def names(objects: list[dict]) -> set[str]:
    return {o["metadata"]["name"] for o in objects}


def test_upsert_strips_managed_fields_and_returns_the_replaced_object() -> None:
    store = Store()
    assert store.upsert(obj("a", "x"))[1] is None
    _, replaced = store.upsert(obj("a", "x", rv="2"))
    assert replaced is not None and replaced["metadata"]["resourceVersion"] == "1"
    stored = store.get(ObjectKey("a", "x"))
    assert stored is not None and "managedFields" not in stored["metadata"]


def test_stored_objects_share_keys_and_short_strings_and_keep_their_content() -> None:
    store = Store()
    spec = {"kind": "Service", "big": "x" * 200, "list": [1, None, True, "b"]}
    for name in ("x", "y"):
        # Separate decodes: equal strings, distinct objects (as JSON decoding makes them).
        stored, _ = store.upsert(json.loads(json.dumps({**obj("a", name), "spec": spec})))
        meta = {"namespace": "a", "name": name, "resourceVersion": "1"}
        assert stored == {"metadata": meta, "spec": spec}
    first, second = store.get(ObjectKey("a", "x")), store.get(ObjectKey("a", "y"))
    assert first is not None and second is not None
    assert first["spec"]["kind"] is second["spec"]["kind"]
    assert next(iter(first["spec"])) is next(iter(second["spec"]))  # the key "kind"
    assert first["spec"]["big"] is not second["spec"]["big"]  # long strings stay apart


def test_indexes_follow_updates_and_removals() -> None:
    store = Store()
    store.upsert(obj("a", "x", owner="u1"))
    store.upsert(obj("a", "y", owner="u1"))
    store.upsert(obj("b", "z"))
    assert names(store.by_index(BY_NAMESPACE, "a")) == {"x", "y"}
    assert names(store.by_index(BY_CONTROLLER_UID, "u1")) == {"x", "y"}
    store.upsert(obj("a", "y", owner="u2"))  # ownership moved
    assert names(store.by_index(BY_CONTROLLER_UID, "u1")) == {"x"}
    assert names(store.by_index(BY_CONTROLLER_UID, "u2")) == {"y"}
    store.remove(ObjectKey("a", "x"))
    assert store.by_index(BY_CONTROLLER_UID, "u1") == []
    assert names(store.by_index(BY_NAMESPACE, "a")) == {"y"}
    assert store.remove(ObjectKey("a", "missing")) is None


def test_a_custom_index_covers_objects_stored_before_it_was_added() -> None:
    store = Store()
    store.upsert(obj("a", "x"))
    store.add_index("name-length", lambda o: [str(len(o["metadata"]["name"]))])
    store.upsert(obj("a", "yy"))
    assert names(store.by_index("name-length", "1")) == {"x"}
    assert names(store.by_index("name-length", "2")) == {"yy"}


def test_controller_owner_is_the_reference_marked_controller() -> None:
    owner = controller_owner(obj("a", "x", owner="u1"))
    assert owner is not None and owner["uid"] == "u1"
    assert controller_owner(obj("a", "x")) is None
