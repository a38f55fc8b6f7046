"""Condition bookkeeping and the Ready summary, as pure functions."""

from __future__ import annotations

from typing import Any

from dittofs_controller.operator import conditions as c
from dittofs_controller.operator.conditions import Outcome
from dittofs_controller.operator.summary import REQUIRED, summarise
from tests.support.conditions import Reported, status_of

SPEC: dict[str, Any] = {
    "metadataStores": [{"name": "meta", "type": "memory"}],
    "localBlockStores": [{"name": "blocks", "type": "memory"}],
}


def server(generation: int = 2, replicas: int = 1, **conds: Reported) -> dict:
    return {
        "metadata": {"name": "s", "namespace": "n", "generation": generation},
        "spec": {**SPEC, "replicas": replicas},
        "status": status_of(**conds),
    }


def all_true(generation: int = 2) -> dict[str, tuple[str, str, int]]:
    return {kind: ("True", "Fine", generation) for kind in REQUIRED}


def test_transition_time_is_kept_while_the_status_stays() -> None:
    obj = server(ConfigReady=("True", "Rendered", 2))
    same = c.desired_condition(obj, "ConfigReady", Outcome.true("Rendered", "ConfigReady says"))
    assert same["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert not c.differs(obj, same)
    flipped = c.desired_condition(obj, "ConfigReady", Outcome.false("SecretNotFound", "x"))
    assert flipped["lastTransitionTime"] != "2026-01-01T00:00:00Z"
    assert c.differs(obj, flipped)


def test_a_new_message_alone_is_a_change_but_keeps_the_transition_time() -> None:
    obj = server(ConfigReady=("True", "Rendered", 2))
    entry = c.desired_condition(obj, "ConfigReady", Outcome.true("Rendered", "other words"))
    assert c.differs(obj, entry)
    assert entry["lastTransitionTime"] == "2026-01-01T00:00:00Z"


def test_ready_when_every_concern_is_true_for_this_generation() -> None:
    summary = summarise(server(**all_true()))
    assert (summary.outcome.status, summary.phase, summary.caught_up) == ("True", "Running", True)


def test_stale_conditions_mean_reconciling() -> None:
    conds = all_true()
    conds["NetworkReady"] = ("True", "Exposed", 1)
    summary = summarise(server(**conds))
    assert summary.outcome.status == "Unknown"
    assert "NetworkReady" in summary.outcome.message
    assert summary.phase == "Progressing" and not summary.caught_up


def test_a_false_concern_gives_its_reason_and_message() -> None:
    conds = all_true()
    conds["ConfigReady"] = ("False", "SecretNotFound", 2)
    summary = summarise(server(**conds))
    assert summary.outcome.status == "False"
    assert summary.outcome.reason == "SecretNotFound"
    assert "ConfigReady: ConfigReady says" in summary.outcome.message
    assert summary.phase == "Degraded"  # Available is still True


def test_invalid_spec_is_failed() -> None:
    conds = all_true()
    conds["StorageReady"] = ("False", "InvalidSpec", 2)
    summary = summarise(server(**conds))
    assert (summary.outcome.reason, summary.phase) == ("InvalidSpec", "Failed")


def test_zero_replicas_is_stopped() -> None:
    conds = all_true()
    conds["Available"] = ("False", "Stopped", 2)
    conds["ServerConfigured"] = ("Unknown", "ServerStopped", 2)
    summary = summarise(server(replicas=0, **conds))
    assert (summary.outcome.reason, summary.phase) == ("Stopped", "Stopped")


def test_ready_needs_the_server_configured_over_its_api() -> None:
    assert "ServerConfigured" in REQUIRED
    conds = all_true()
    del conds["ServerConfigured"]
    waiting = summarise(server(**conds))
    assert (waiting.outcome.status, waiting.phase) == ("Unknown", "Progressing")
    assert "ServerConfigured" in waiting.outcome.message
    conds["ServerConfigured"] = ("False", "StoreRejected", 2)
    rejected = summarise(server(**conds))
    assert (rejected.outcome.status, rejected.outcome.reason) == ("False", "StoreRejected")
    assert rejected.phase == "Degraded"  # the pod serves; its runtime state does not match


def test_a_stopped_server_still_reports_other_failures() -> None:
    conds = all_true()
    conds["Available"] = ("False", "Stopped", 2)
    conds["ServerConfigured"] = ("Unknown", "ServerStopped", 2)
    conds["ConfigReady"] = ("False", "SecretNotFound", 2)
    summary = summarise(server(replicas=0, **conds))
    assert summary.outcome.reason == "SecretNotFound"


def entry(status: str, reason: str) -> dict[str, str]:
    return {"type": "Available", "status": status, "reason": reason}


def test_steps_of_a_normal_start_or_stop_are_normal_events_problems_are_warnings() -> None:
    assert c.event_type(entry("True", "Running")) == "Normal"
    for reason in ("WaitingForDependencies", "WaitingForServer", "Starting", "Stopped"):
        assert c.event_type(entry("False", reason)) == "Normal"
    assert c.event_type(entry("Unknown", "Reconciling")) == "Normal"
    for reason in ("PodNotReady", "SecretNotFound", "ClaimPending", "InvalidSpec"):
        assert c.event_type(entry("False", reason)) == "Warning"


def test_only_problems_and_their_end_are_announced_by_the_sub_reconcilers() -> None:
    start = [entry("False", "WaitingForDependencies"), entry("False", "Starting")]
    assert not c.announced(start[0], None)  # a first report that is a step
    assert not c.announced(start[1], start[0])  # the next step
    assert not c.announced(entry("True", "Running"), start[1])  # the goal: Ready announces it
    problem = entry("False", "PodNotReady")
    assert c.announced(problem, None)
    assert c.announced(problem, start[1])
    assert not c.announced(problem, problem)  # only once, however long it lasts
    assert c.announced(entry("False", "SecretNotFound"), problem)  # another problem
    assert c.announced(entry("True", "Running"), problem)  # its end
    assert c.announced(entry("False", "Starting"), problem)


def test_ready_is_announced_when_it_flips_but_not_on_a_new_servers_first_report() -> None:
    waiting = {"type": "Ready", "status": "False", "reason": "WaitingForDependencies"}
    ready = {"type": "Ready", "status": "True", "reason": "Ready"}
    broken = {"type": "Ready", "status": "False", "reason": "SecretNotFound"}
    assert not c.ready_announced(waiting, None)
    assert c.ready_announced(broken, None)
    assert c.ready_announced(ready, waiting)
    assert c.ready_announced(waiting, ready)
    assert not c.ready_announced({**broken, "message": "other"}, waiting)  # Ready stays False
