"""The per-server gauges, computed from DittoServers as the cache holds them."""

from __future__ import annotations

from typing import Any

from dittofs_controller.operator.metrics import server_families


def server(name: str, generation: int, status: dict[str, Any]) -> dict[str, Any]:
    meta = {"namespace": "files", "name": name, "generation": generation}
    return {"metadata": meta, "status": status}


def samples(servers: list[dict[str, Any]]) -> dict[tuple[str, tuple[str, ...]], float]:
    return {
        (sample.name, tuple(sample.labels.values())): sample.value
        for family in server_families(servers)
        for sample in family.samples
    }


def test_each_condition_and_phase_is_one_series_per_value_set_to_one_for_the_current() -> None:
    ready = {"type": "Ready", "status": "False", "observedGeneration": 2, "reason": "X"}
    config = {"type": "ConfigReady", "status": "True", "observedGeneration": 2}
    found = samples([server("a", 2, {"phase": "Degraded", "conditions": [ready, config]})])
    condition = {
        labels[2:]: value
        for (name, labels), value in found.items()
        if name == "dittofs_server_condition"
    }
    assert condition == {
        ("Ready", "True"): 0.0,
        ("Ready", "False"): 1.0,
        ("Ready", "Unknown"): 0.0,
        ("ConfigReady", "True"): 1.0,
        ("ConfigReady", "False"): 0.0,
        ("ConfigReady", "Unknown"): 0.0,
    }
    phases = {labels[2]: value for (name, labels), value in found.items() if name.endswith("phase")}
    assert phases == {
        "Pending": 0.0,
        "Progressing": 0.0,
        "Running": 0.0,
        "Degraded": 1.0,
        "Stopped": 0.0,
        "Failed": 0.0,
    }
    assert found[("dittofs_server_generation_pending", ("files", "a"))] == 0.0


def test_an_edit_ready_has_not_judged_yet_is_pending() -> None:
    judged_before = {"type": "Ready", "status": "True", "observedGeneration": 1}
    found = samples(
        [
            server("edited", 2, {"phase": "Running", "conditions": [judged_before]}),
            server("new", 1, {}),
        ]
    )
    assert found[("dittofs_server_generation_pending", ("files", "edited"))] == 1.0
    assert found[("dittofs_server_generation_pending", ("files", "new"))] == 1.0
    # A server without status yet has no condition series and no phase set.
    new = [key for key in found if key[1][:2] == ("files", "new")]
    assert all(found[key] == 0.0 for key in new if key[0] == "dittofs_server_phase")
    assert not [key for key in new if key[0] == "dittofs_server_condition"]


def test_no_servers_no_series() -> None:
    assert samples([]) == {}


def test_stores_and_shares_report_the_health_dittofs_gives_them() -> None:
    reported = {
        "remoteBlockStores": [{"name": "s3", "type": "s3", "health": "unhealthy"}],
        "shares": [{"name": "/export", "enabled": True, "health": "healthy"}],
        "users": ["alice"],
        "applied": {"user/alice": "digest"},
    }
    found = samples([server("a", 1, {"server": reported})])
    health = {
        labels[2:]: value
        for (name, labels), value in found.items()
        if name == "dittofs_server_health" and value
    }
    assert health == {
        ("remoteBlockStores", "s3", "unhealthy"): 1.0,
        ("shares", "/export", "healthy"): 1.0,
    }
    assert len([key for key in found if key[0] == "dittofs_server_health"]) == 8
