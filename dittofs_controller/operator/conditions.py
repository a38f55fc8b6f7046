"""Status conditions: one per reconciler, each written only by its owner.

Invariants:
- lastTransitionTime changes only when a condition's status flips.
- A condition is written only when its status, reason, message or observedGeneration changed.
- Each reconciler server-side applies just its own condition (its field manager owns that
  entry of the `type`-keyed list), so reconcilers never overwrite each other's status.
"""

from __future__ import annotations

import datetime
from typing import Any, Literal

import attrs

from dittofs_controller.operator.events import EventType

Obj = dict[str, Any]
Status = Literal["True", "False", "Unknown"]

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
