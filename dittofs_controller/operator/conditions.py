"""Status conditions: one per reconciler, each written only by its owner.

Invariants:
- lastTransitionTime changes only when a condition's status flips.
- A condition is written only when its status, reason, message or observedGeneration changed.
- Each reconciler server-side applies just its own condition (its field manager owns that
  entry of the `type`-keyed list), so reconcilers never overwrite each other's status.
"""

from __future__ import annotations

import datetime
from typing import Any, Literal, get_args

import attrs

from dittofs_controller.operator.events import EventType

Obj = dict[str, Any]
Status = Literal["True", "False", "Unknown"]
STATUSES: tuple[Status, ...] = get_args(Status)
# status.phase, the summariser's one-word verdict.
Phase = Literal["Pending", "Progressing", "Running", "Degraded", "Stopped", "Failed"]
PHASES: tuple[Phase, ...] = get_args(Phase)

CONFIG_READY = "ConfigReady"
STORAGE_READY = "StorageReady"
DATABASE_READY = "DatabaseReady"
NETWORK_READY = "NetworkReady"
AVAILABLE = "Available"
PROGRESSING = "Progressing"
SERVER_CONFIGURED = "ServerConfigured"
READY = "Ready"


# Steps of a normal start or of a stop the spec asked for: a condition not True for one of
# these is not a problem by itself (what it waits for carries its own condition), so its
# Event is Normal. Platform teams alert on Warning Events.
PROGRESS_REASONS = frozenset(
    {"Reconciling", "WaitingForDependencies", "WaitingForServer", "Starting", "Stopping", "Stopped"}
)


def event_type(entry: Obj) -> EventType:
    """The type of the Event announcing a condition entry."""
    if entry.get("status") == "True" or entry.get("reason") in PROGRESS_REASONS:
        return "Normal"
    return "Warning"


def announced(entry: Obj, previous: Obj | None) -> bool:
    """Whether a sub-reconciler's condition change gets an Event: a problem, or its end.

    The steps of a normal start or change (Rendered, Bound, Exposed, Starting...) show in the
    conditions only; an Event for each cost a write per step, and the one milestone a user
    waits for is Ready's (see `ready_announced`).
    """
    if previous is not None and (previous.get("status"), previous.get("reason")) == (
        entry.get("status"),
        entry.get("reason"),
    ):
        return False
    if event_type(entry) == "Warning":
        return True
    return previous is not None and event_type(previous) == "Warning"


def ready_announced(entry: Obj, previous: Obj | None) -> bool:
    """Whether the summary's Ready change gets an Event: each time it flips, but not its first
    report while a new server starts (nothing happened to it yet)."""
    if previous is None:
        return event_type(entry) == "Warning"
    return previous.get("status") != entry.get("status")


@attrs.frozen
class Outcome:
    """A reconciler's verdict on its concern: the condition it should show."""

    status: Status
    reason: str
    message: str

    @classmethod
    def true(cls, reason: str, message: str) -> Outcome:
        return cls("True", reason, message)

    @classmethod
    def false(cls, reason: str, message: str) -> Outcome:
        return cls("False", reason, message)

    @classmethod
    def unknown(cls, reason: str, message: str) -> Outcome:
        return cls("Unknown", reason, message)


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def find(obj: Obj, condition_type: str) -> Obj | None:
    for condition in (obj.get("status") or {}).get("conditions") or ():
        if condition.get("type") == condition_type:
            return dict(condition)
    return None


def desired_condition(obj: Obj, condition_type: str, outcome: Outcome) -> Obj:
    """The condition entry to publish, keeping lastTransitionTime unless the status flips."""
    current = find(obj, condition_type)
    unchanged_status = current is not None and current.get("status") == outcome.status
    return {
        "type": condition_type,
        "status": outcome.status,
        "reason": outcome.reason,
        "message": outcome.message,
        "observedGeneration": obj["metadata"].get("generation", 0),
        "lastTransitionTime": (
            current["lastTransitionTime"]
            if unchanged_status and current and current.get("lastTransitionTime")
            else now_rfc3339()
        ),
    }


def differs(obj: Obj, entry: Obj) -> bool:
    """Whether publishing `entry` would change the object's condition of the same type."""
    current = find(obj, entry["type"])
    return current is None or any(current.get(key) != value for key, value in entry.items())
