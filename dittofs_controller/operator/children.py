"""What every child object of a DittoServer shares: names, labels, ownership, drift detection.

Pure functions only: the reconcilers build desired objects with these and compare them with
the cached live objects before writing anything.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
from decimal import Decimal, InvalidOperation
from typing import Any

from dittofs_controller.api.v1alpha1 import API_VERSION, KIND

Obj = dict[str, Any]

FIELD_MANAGER = "dittofs-operator"
MANAGED_BY = "dittofs-operator"

LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"

# Selects every object the operator manages: children caches use it, so the operator never
# caches other people's objects.
MANAGED_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY}"


# Selects the DittoFS pods. They carry the StatefulSet template's labels, which must not change
# (that would restart every server), so not the managed label: a pod is the operator's only
# when its controller is the server's StatefulSet (see server_pod).
POD_SELECTOR = f"{LABEL_NAME}=dittofs"


def field_manager(controller: str) -> str:
    """Each reconciler applies with its own field manager, so ownership of fields is explicit."""
    return f"{FIELD_MANAGER}/{controller}"


def selector_labels(server_name: str) -> dict[str, str]:
    """The labels that select the server's pod: stable for the life of the DittoServer."""
    return {LABEL_NAME: "dittofs", LABEL_INSTANCE: server_name}


def labels(server_name: str, component: str) -> dict[str, str]:
    return {
        **selector_labels(server_name),
        LABEL_COMPONENT: component,
        LABEL_MANAGED_BY: MANAGED_BY,
    }


def owner_reference(server: Obj) -> Obj:
    meta = server["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_metadata(
    server: Obj,
    name: str,
    component: str,
    *,
    extra_labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> Obj:
    """Metadata of a child: namespace, managed labels and the controller ownerReference."""
    meta: Obj = {
        "name": name,
        "namespace": server["metadata"]["namespace"],
        "labels": {**(extra_labels or {}), **labels(server["metadata"]["name"], component)},
        "ownerReferences": [owner_reference(server)],
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def adoption_problem(server: Obj, live: Obj) -> str | None:
    """Why the operator must not take `live` over for this DittoServer, or None when it may.

    It may when the DittoServer controls it, or when it carries this DittoServer's managed
    labels and no controller: kept by a former DittoServer of the same name under deletionPolicy
    Retain, so a re-created DittoServer gets its data back. Anything else belongs to someone.
    """
    meta = server["metadata"]
    live_meta = live["metadata"]
    owner = next(
        (ref for ref in live_meta.get("ownerReferences") or () if ref.get("controller")), None
    )
    if owner is not None:
        if owner.get("uid") == meta["uid"]:
            return None
        return f"is controlled by {owner.get('kind')} {owner.get('name')} (uid {owner.get('uid')})"
    found = live_meta.get("labels") or {}
    if found.get(LABEL_MANAGED_BY) != MANAGED_BY or found.get(LABEL_INSTANCE) != meta["name"]:
        return "was not created by the operator for this DittoServer"
    return None


def object_for(resource_api_version: str, kind: str, metadata: Obj, **body: Any) -> Obj:
    return {"apiVersion": resource_api_version, "kind": kind, "metadata": metadata, **body}


def age_seconds(obj: Obj, now: datetime.datetime) -> float:
    """How long ago the API server created `obj` (0 when it has no creationTimestamp yet)."""
    created = obj["metadata"].get("creationTimestamp")
    if not created:
        return 0.0
    return (now - datetime.datetime.fromisoformat(created)).total_seconds()


_QUANTITY = re.compile(r"^([+-]?[0-9]+(?:\.[0-9]+)?)([a-zA-Z]*)$")
_SUFFIXES: dict[str, Decimal] = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    **{suffix: Decimal(10) ** (3 * power) for power, suffix in enumerate("kMGTPE", start=1)},
    **{f"{suffix}i": Decimal(2) ** (10 * power) for power, suffix in enumerate("KMGTPE", start=1)},
}


def quantity_value(text: str) -> Decimal | None:
    """The numeric value of a Kubernetes quantity ("1Gi", "500m"), or None if it is not one."""
    match = _QUANTITY.match(text)
    if not match or match.group(2) not in _SUFFIXES:
        return None
    try:
        return Decimal(match.group(1)) * _SUFFIXES[match.group(2)]
    except InvalidOperation:
        return None


def _same_scalar(desired: Any, live: Any) -> bool:
    if desired == live:
        return True
    # The API server canonicalises quantities ("1024Mi" is stored as "1Gi") and int-or-string
    # fields may come back in either form.
    if isinstance(desired, str | int) and isinstance(live, str | int):
        left, right = quantity_value(str(desired)), quantity_value(str(live))
        return left is not None and left == right
    return False


def is_subset(desired: Any, live: Any) -> bool:
    """True when every field `desired` sets has the same value in `live`.

    Fields the API server defaults or other managers own are ignored, so comparing a desired
    object with its live copy says whether applying it would change anything. Lists must match
    item by item (a reordered or shortened list is a change).
    """
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return False
        return all(is_subset(value, live.get(key)) for key, value in desired.items())
    if isinstance(desired, list):
        if not isinstance(live, list) or len(desired) != len(live):
            return False
        return all(is_subset(d, item) for d, item in zip(desired, live, strict=True))
    if desired is None:
        return live is None
    return _same_scalar(desired, live)


APPLIED_HASH_ANNOTATION = "dittofs.io/applied-hash"


def stamped(desired: Obj) -> Obj:
    """`desired` carrying a hash of itself in an annotation.

    `needs_apply` only sees fields `desired` sets, so it cannot notice one we stopped setting
    (an annotation removed from the spec, a policy unset). With the hash, any change of the
    desired state changes the annotation, so it is applied, and server-side apply then removes
    the fields this field manager no longer sets.
    """
    text = json.dumps(desired, sort_keys=True, separators=(",", ":"))
    meta = desired["metadata"]
    annotations = {
        **(meta.get("annotations") or {}),
        APPLIED_HASH_ANNOTATION: hashlib.sha256(text.encode()).hexdigest()[:16],
    }
    return {**desired, "metadata": {**meta, "annotations": annotations}}


def needs_apply(desired: Obj, live: Obj | None) -> bool:
    """Whether server-side applying `desired` would change `live` (or create it)."""
    if live is None:
        return True
    return not is_subset({k: v for k, v in desired.items() if k != "status"}, live)
