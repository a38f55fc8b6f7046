"""UnseenWrites: a status apply is skipped only while the cache still shows the version it
was based on."""

from __future__ import annotations

from typing import Any

from dittofs_controller.kube.resources import ObjectKey
from dittofs_controller.operator.unseen import UnseenWrites

MANAGER = "dittofs-operator/network"


def server(version: str, name: str = "files") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": version}}


def patch(reason: str, stamped: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    condition = {"type": "NetworkReady", "reason": reason, "lastTransitionTime": stamped}
    return {"status": {"conditions": [condition], "endpoints": {"nfs": "files-nfs:2049"}}}


def test_the_same_apply_on_the_same_cached_version_is_skipped() -> None:
    unseen = UnseenWrites()
    assert not unseen.already_applied(server("7"), MANAGER, patch("Exposed"))
    unseen.record(server("7"), MANAGER, patch("Exposed"))
    # Judged again from the same stale copy: the same patch, stamped a second later.
    assert unseen.already_applied(server("7"), MANAGER, patch("Exposed", "2026-01-01T00:00:01Z"))
    assert not unseen.already_applied(server("7"), MANAGER, patch("Pending"))
    assert not unseen.already_applied(server("7"), "dittofs-operator/config", patch("Exposed"))
    assert not unseen.already_applied(server("7", "other"), MANAGER, patch("Exposed"))


def test_once_the_cache_moves_on_it_is_the_truth_and_the_record_goes() -> None:
    unseen = UnseenWrites()
    unseen.record(server("7"), MANAGER, patch("Exposed"))
    # Someone else's write (or ours, seen): the cache decides, even for the very same patch.
    assert not unseen.already_applied(server("9"), MANAGER, patch("Exposed"))
    assert len(unseen) == 0
    assert not unseen.already_applied(server("7"), MANAGER, patch("Exposed"))


def test_forget_drops_every_manager_of_a_deleted_server() -> None:
    unseen = UnseenWrites()
    unseen.record(server("7"), MANAGER, patch("Exposed"))
    unseen.record(server("7"), "dittofs-operator/config", patch("Rendered"))
    unseen.record(server("3", "other"), MANAGER, patch("Exposed"))
    unseen.forget(ObjectKey("ns", "files"))
    assert len(unseen) == 1


def test_a_last_write_that_said_otherwise_is_known_whatever_the_cache_shows() -> None:
    unseen = UnseenWrites()
    assert not unseen.wrote_otherwise(server("7"), MANAGER, patch("Exposed"))
    unseen.record(server("7"), MANAGER, patch("Pending"))
    assert unseen.wrote_otherwise(server("7"), MANAGER, patch("Exposed"))
    # Another manager's write moved the cache on, ours may still be behind it.
    assert unseen.wrote_otherwise(server("9"), MANAGER, patch("Exposed"))
    assert not unseen.wrote_otherwise(
        server("9"), MANAGER, patch("Pending", "2026-01-02T00:00:00Z")
    )
    assert not unseen.wrote_otherwise(server("7"), "dittofs-operator/config", patch("Exposed"))
