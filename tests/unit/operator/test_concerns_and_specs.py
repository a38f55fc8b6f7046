"""Which DittoServer updates queue which reconciler, and the parsed-spec memo."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from dittofs_controller.api.schema import ParseError
from dittofs_controller.operator import conditions as c
from dittofs_controller.operator import on_deletion, specs
from dittofs_controller.operator.base import concerns
from dittofs_controller.operator.specs import server_spec
from dittofs_controller.runtime.informer import EventType

SPEC: dict[str, Any] = {
    "metadataStores": [{"name": "meta", "type": "memory"}],
    "localBlockStores": [{"name": "blocks", "type": "memory"}],
    "shares": [{"name": "/export", "metadataStore": "meta", "localBlockStore": "blocks"}],
}


def server(uid: str = "u-1", **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "s",
            "namespace": "n",
            "uid": uid,
            "generation": 1,
            "resourceVersion": "10",
            "finalizers": ["dittofs.io/config"],
        },
        "spec": {**SPEC, **spec},
        "status": {"conditions": []},
    }


def with_condition(obj: dict[str, Any], kind: str, status: str, message: str = "m") -> dict:
    changed = copy.deepcopy(obj)
    changed["metadata"]["resourceVersion"] = str(int(obj["metadata"]["resourceVersion"]) + 1)
    entries = [e for e in changed["status"]["conditions"] if e["type"] != kind]
    entry = {"type": kind, "status": status, "reason": "R", "message": message}
    changed["status"]["conditions"] = [*entries, entry]
    return changed


def test_a_status_write_queues_only_the_reconcilers_that_read_the_condition() -> None:
    old = server()
    new = with_condition(old, c.CONFIG_READY, "True")
    assert not concerns(())(old, new)  # config itself, network, storage...
    assert not concerns((c.AVAILABLE, c.PROGRESSING))(old, new)  # runtime
    assert concerns((c.CONFIG_READY, c.STORAGE_READY))(old, new)  # server, summary


def test_a_new_message_of_a_read_condition_is_a_change() -> None:
    old = with_condition(server(), c.AVAILABLE, "False", "waiting for ConfigReady")
    new = with_condition(old, c.AVAILABLE, "False", "waiting for StorageReady")
    assert concerns((c.AVAILABLE,))(old, new)
    assert not concerns((c.CONFIG_READY,))(old, new)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("generation", 2),
        ("deletionTimestamp", "2026-01-01T00:00:00Z"),
        ("finalizers", []),
        ("labels", {"team": "a"}),
        ("annotations", {"note": "x"}),
    ],
)
def test_spec_deletion_and_metadata_changes_concern_everyone(field: str, value: Any) -> None:
    old = server()
    new = copy.deepcopy(old)
    new["metadata"][field] = value
    assert concerns(())(old, new)


def test_a_resource_version_alone_concerns_nobody() -> None:
    old = server()
    new = copy.deepcopy(old)
    new["metadata"]["resourceVersion"] = "11"
    assert not concerns((c.READY,))(old, new)


def test_the_parsed_spec_follows_the_raw_spec_of_each_server() -> None:
    first = server(uid="spec-1", replicas=1)
    assert server_spec(first).replicas == 1
    assert server_spec(copy.deepcopy(first)) is server_spec(first)  # equal spec: reused
    newer = copy.deepcopy(first)
    server_spec(newer)
    assert specs._parsed["spec-1"][0] is newer["spec"]  # the replaced object's spec can go
    assert server_spec(server(uid="spec-1", replicas=0)).replicas == 0  # changed: parsed again
    assert server_spec(server(uid="spec-2", replicas=1)).replicas == 1


def test_an_invalid_spec_keeps_raising_its_parse_error() -> None:
    bad = server(uid="spec-bad", replicas="many")
    for _ in range(2):
        with pytest.raises(ParseError, match="replicas"):
            server_spec(bad)


def test_a_deleted_servers_parse_goes_with_it() -> None:
    gone = server(uid="spec-gone")
    server_spec(gone)
    kept = server(uid="spec-kept")
    server_spec(kept)
    handler = on_deletion(specs.forget)
    handler(EventType.MODIFIED, gone, None)
    assert "spec-gone" in specs._parsed  # an update keeps it
    handler(EventType.DELETED, gone, None)
    assert "spec-gone" not in specs._parsed
    assert "spec-kept" in specs._parsed
