"""The storage concern's desired PersistentVolumeClaims and its verdict on the live ones (pure).

The claims are standalone, never StatefulSet volumeClaimTemplates: templates are immutable, so
the authors' Go operator could neither resize nor add a volume (go-operator-lessons.md, 5). A
claim grows when its spec size grows, never shrinks, and is never deleted or re-created to
change what Kubernetes does not let a claim change (storage class, access modes).
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from decimal import Decimal

import attrs

from dittofs_controller.api import v1alpha1
from dittofs_controller.operator import names
from dittofs_controller.operator.children import (
    Obj,
    age_seconds,
    child_metadata,
    object_for,
    quantity_value,
)
from dittofs_controller.operator.conditions import Outcome

COMPONENT = "storage"
WAIT_FOR_FIRST_CONSUMER = "WaitForFirstConsumer"
SELECTED_NODE_ANNOTATION = "volume.kubernetes.io/selected-node"
# StorageClasses are not watched (cluster-scoped, rarely changed): poll one that blocks growth.
EXPANSION_RECHECK = 300.0

# Ready reasons, least settled first: the condition shows the first that applies to any claim.
READY_ORDER = ("Resizing", "Provisioning", "WaitingForFirstConsumer", "Bound")
# Failure reasons, most urgent first.
FAILURE_ORDER = (
    "ClaimLost",
    "ClaimImmutableFieldChanged",
    "NameConflict",
    "ClaimResizeFailed",
    "ClaimExpansionNotSupported",
    "ClaimTerminating",
    "ClaimPending",
)


@attrs.frozen
class Claim:
    """One volume the spec asks for."""

    name: str
    purpose: str  # what it holds, for messages
    storage: v1alpha1.Storage


@attrs.frozen
class Verdict:
    """How one claim stands; `ready` claims let StorageReady be True."""

    claim: str
    reason: str
    ready: bool
    message: str
    recheck_after: float | None = None


def claims(server_name: str, spec: v1alpha1.DittoServerSpec) -> list[Claim]:
    """The control-plane SQLite volume, one per badger store and one per filesystem store."""
    result: list[Claim] = []
    database = spec.control_plane.database
    if database.type == "sqlite":
        result.append(
            Claim(
                names.controlplane_claim(server_name),
                "the control-plane database",
                database.sqlite.storage,
            )
        )
    for meta in spec.metadata_stores:
        if meta.type == "badger":
            storage = meta.badger.storage if meta.badger else v1alpha1.Storage()
            result.append(
                Claim(
                    names.metadata_claim(server_name, meta.name),
                    f"metadata store {meta.name}",
                    storage,
                )
            )
    for blocks in spec.local_block_stores:
        if blocks.type == "filesystem":
            storage = blocks.filesystem.storage if blocks.filesystem else v1alpha1.Storage()
            result.append(
                Claim(
                    names.blocks_claim(server_name, blocks.name),
                    f"block store {blocks.name}",
                    storage,
                )
            )
    return result


# --- reading live claims ---------------------------------------------------------------------


def phase(live: Obj) -> str:
    return str((live.get("status") or {}).get("phase") or "Pending")


def requested(live: Obj) -> str:
    return str(live["spec"].get("resources", {}).get("requests", {}).get("storage", ""))


def storage_class_name(live: Obj) -> str | None:
    name = live["spec"].get("storageClassName")
    return str(name) if name else None


def _value(size: str) -> Decimal | None:
    return quantity_value(size) if size else None


def larger(left: str, right: str) -> bool:
    """Whether quantity `left` is larger than `right` (False when either is not a quantity)."""
    a, b = _value(left), _value(right)
    return a is not None and b is not None and a > b


def can_expand(storage_class: Obj | None) -> bool:
    """Only a StorageClass with allowVolumeExpansion lets a claim grow (admission enforces it)."""
    return storage_class is not None and storage_class.get("allowVolumeExpansion") is True


# --- desired ---------------------------------------------------------------------------------


def target_size(claim: Claim, live: Obj | None, storage_class: Obj | None) -> str:
    """The size to ask for: the spec's, but never less than the claim already has (claims do not
    shrink; one expanded by hand is kept), and more only for a bound claim whose StorageClass
    allows expansion (the API server rejects anything else)."""
    wanted = claim.storage.size
    if live is None:
        return wanted
    current = requested(live)
    if larger(current, wanted):
        return current
    if larger(wanted, current) and not (phase(live) == "Bound" and can_expand(storage_class)):
        return current
    return wanted


def claim_manifest(server: Obj, claim: Claim, live: Obj | None, storage_class: Obj | None) -> Obj:
    storage = claim.storage
    modes = list(storage.access_modes)
    live_modes = list((live or {}).get("spec", {}).get("accessModes") or ())
    if set(live_modes) == set(modes):
        modes = live_modes  # same set in another order is no change (the list is atomic)
    spec: Obj = {
        "accessModes": modes,
        "resources": {"requests": {"storage": target_size(claim, live, storage_class)}},
    }
    # An existing claim keeps its class: a storageClassName set later is for new volumes only.
    if storage.storage_class_name and (
        live is None or storage_class_name(live) == storage.storage_class_name
    ):
        spec["storageClassName"] = storage.storage_class_name
    metadata = child_metadata(server, claim.name, COMPONENT)
    return object_for("v1", "PersistentVolumeClaim", metadata, spec=spec)


def class_differs(claim: Claim, live: Obj) -> bool:
    wanted = claim.storage.storage_class_name
    return wanted is not None and wanted != storage_class_name(live)


def manages_class(live: Obj, manager: str) -> bool:
    """Whether `manager` server-side applied the claim's storageClassName (from managedFields,
    which only a GET returns: the cache strips them)."""
    return any(
        entry.get("manager") == manager
        and "f:storageClassName" in (entry.get("fieldsV1") or {}).get("f:spec", {})
        for entry in live["metadata"].get("managedFields") or ()
    )


def immutable_changes(claim: Claim, live: Obj, *, class_was_set: bool) -> list[str]:
    """What the spec asks of a live claim that Kubernetes does not let a claim change.

    A storageClassName differs legitimately when the spec set it only after the claim was made
    with the cluster's default class (`class_was_set` False): the API documents that it then
    applies to new volumes only. One the operator did set is a real change.
    """
    changes = []
    if class_was_set and class_differs(claim, live):
        changes.append(
            f"storageClassName {storage_class_name(live) or '(none)'} -> "
            f"{claim.storage.storage_class_name}"
        )
    live_modes = list(live["spec"].get("accessModes") or ())
    if set(live_modes) != set(claim.storage.access_modes):
        changes.append(f"accessModes {live_modes} -> {list(claim.storage.access_modes)}")
    return changes


# --- verdicts --------------------------------------------------------------------------------


def _resizing(live: Obj) -> bool:
    status = live.get("status") or {}
    capacity = str((status.get("capacity") or {}).get("storage", ""))
    if larger(requested(live), capacity):
        return True
    return any(
        cond.get("type") in ("Resizing", "FileSystemResizePending") and cond.get("status") == "True"
        for cond in status.get("conditions") or ()
    )


def _pending_hint(live: Obj, storage_class: Obj | None) -> str:
    class_name = storage_class_name(live)
    if class_name is None:
        return (
            "it has no StorageClass (the cluster has no default one) and no PersistentVolume "
            "matches it"
        )
    if storage_class is None:
        return f"its StorageClass {class_name} does not exist"
    return (
        f"StorageClass {class_name} (provisioner {storage_class.get('provisioner')}) has not "
        "provided a volume"
    )


def judge(
    claim: Claim,
    live: Obj,
    storage_class: Obj | None,
    *,
    now: datetime.datetime,
    grace: float,
) -> Verdict:
    """The verdict on one live claim. `storage_class` is the live claim's class (None: none or
    missing); a Pending claim counts as provisioning for `grace` seconds after its creation."""
    name = claim.name
    wanted, current = claim.storage.size, requested(live)
    namespace = live["metadata"].get("namespace", "")
    events = f"see its events: kubectl describe pvc {name} -n {namespace}"
    state = phase(live)
    if state == "Lost":
        return Verdict(
            name,
            "ClaimLost",
            False,
            f"PersistentVolumeClaim {name} ({claim.purpose}) lost its PersistentVolume "
            f"{live['spec'].get('volumeName')}: the volume and its data are gone. Delete the "
            "claim to let the operator create an empty one, or restore the volume.",
        )
    if state == "Bound":
        allocation = str(
            ((live.get("status") or {}).get("allocatedResourceStatuses") or {}).get("storage", "")
        )
        if allocation.endswith("Infeasible"):
            return Verdict(
                name,
                "ClaimResizeFailed",
                False,
                f"expanding PersistentVolumeClaim {name} to {current} failed ({allocation}); "
                f"{events}",
            )
        if larger(wanted, current):
            return Verdict(
                name,
                "ClaimExpansionNotSupported",
                False,
                f"PersistentVolumeClaim {name} cannot grow from {current} to {wanted}: its "
                f"StorageClass {storage_class_name(live) or '(none)'} does not set "
                "allowVolumeExpansion: true. Allow expansion on the StorageClass (it is "
                "re-checked every few minutes).",
                recheck_after=EXPANSION_RECHECK,
            )
        if _resizing(live):
            capacity = (live.get("status") or {}).get("capacity", {}).get("storage", "?")
            return Verdict(
                name,
                "Resizing",
                True,
                f"PersistentVolumeClaim {name} is being expanded from {capacity} to {current}",
            )
        notes = []
        if larger(current, wanted):
            notes.append(f"kept at {current}, more than the {wanted} asked for")
        if class_differs(claim, live):
            notes.append(
                f"keeps StorageClass {storage_class_name(live) or '(none)'}: a storageClassName "
                "set later applies to new volumes only"
            )
        return Verdict(name, "Bound", True, name + (f" ({'; '.join(notes)})" if notes else ""))
    later = (
        f"; it is expanded to {wanted} once bound (an unbound claim cannot grow)"
        if larger(wanted, current)
        else ""
    )
    if (
        storage_class is not None
        and storage_class.get("volumeBindingMode") == WAIT_FOR_FIRST_CONSUMER
        and SELECTED_NODE_ANNOTATION not in (live["metadata"].get("annotations") or {})
    ):
        return Verdict(
            name,
            "WaitingForFirstConsumer",
            True,
            f"PersistentVolumeClaim {name} is bound when the DittoFS pod is scheduled "
            f"(StorageClass {storage_class_name(live)} waits for the first consumer){later}",
        )
    age = age_seconds(live, now)
    if age < grace:
        return Verdict(
            name,
            "Provisioning",
            True,
            f"PersistentVolumeClaim {name} is waiting for a volume{later}",
            recheck_after=grace - age + 1,
        )
    return Verdict(
        name,
        "ClaimPending",
        False,
        # The creation time, not an age: a message that changed on every pass would rewrite the
        # status on every pass, and each write would trigger the next pass.
        f"PersistentVolumeClaim {name} ({claim.purpose}) has been Pending since "
        f"{live['metadata'].get('creationTimestamp')}: "
        f"{_pending_hint(live, storage_class)}; {events}{later}",
    )


def summarise(verdicts: Sequence[Verdict], kept: Sequence[str]) -> tuple[Outcome, float | None]:
    """StorageReady from every claim's verdict, and when to look again (if ever).

    `kept` are claims of stores no longer in the spec: never deleted while the DittoServer
    lives (their data may still be wanted), only mentioned, and deleted with the DittoServer
    under deletionPolicy Delete.
    """
    note = (
        f" Kept PersistentVolumeClaims no longer in the spec: {', '.join(sorted(kept))} (the "
        "operator never deletes data; delete them by hand to free the space)."
        if kept
        else ""
    )
    rechecks = [v.recheck_after for v in verdicts if v.recheck_after is not None]
    requeue = min(rechecks) if rechecks else None
    failures = sorted(
        (v for v in verdicts if not v.ready),
        key=lambda v: FAILURE_ORDER.index(v.reason) if v.reason in FAILURE_ORDER else 99,
    )
    if failures:
        message = "; ".join(v.message for v in failures)
        return Outcome.false(failures[0].reason, message + note), requeue
    if not verdicts:
        return Outcome.true("NotRequired", "no store needs a volume" + note), None
    reason = next(r for r in READY_ORDER if any(v.reason == r for v in verdicts))
    if reason == "Bound":
        message = "PersistentVolumeClaims bound: " + ", ".join(v.message for v in verdicts)
    else:
        message = "; ".join(v.message for v in verdicts if v.reason != "Bound")
    return Outcome.true(reason, message + note), requeue
