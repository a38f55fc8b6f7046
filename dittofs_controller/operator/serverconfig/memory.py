"""What the reconciler remembers of one server between passes, and when a pass would only
repeat itself."""

from __future__ import annotations

import hashlib
import json

import attrs

from dittofs_controller.dittofs import Tokens
from dittofs_controller.operator import conditions
from dittofs_controller.operator.base import Synced
from dittofs_controller.operator.children import Obj
from dittofs_controller.operator.serverconfig.model import SecretValues
from dittofs_controller.operator.serverconfig.report import CATEGORIES


@attrs.define
class Memory:
    """What the operator remembers of one server between passes."""

    uid: str
    applied: dict[str, str]
    managed: dict[str, set[str]]
    stores_revision: str | None = None
    tokens: Tokens = attrs.Factory(Tokens)
    # The last pass: its inputs digest, when it ended, what it concluded.
    inputs: str = ""
    until: float = 0.0
    synced: Synced | None = None

    @classmethod
    def recalled(cls, server: Obj) -> Memory:
        """Start from what the last operator process published (status.server)."""
        published = (server.get("status") or {}).get("server") or {}
        managed_status = published.get("managed") or {}
        managed = {
            category: set(managed_status.get(key) or ()) for category, key in CATEGORIES.items()
        }
        applied = {str(k): str(v) for k, v in (published.get("applied") or {}).items()}
        revision = published.get("storesRevision")
        return cls(
            uid=server["metadata"]["uid"],
            applied=applied,
            managed=managed,
            stores_revision=str(revision) if revision else None,
        )

    def recent(self, inputs: str, now: float) -> Synced | None:
        """The last verdict, while the inputs are the same and its recheck is not due."""
        if self.synced is None or inputs != self.inputs or now >= self.until:
            return None
        return attrs.evolve(self.synced, requeue_after=self.until - now)


def inputs_digest(
    server: Obj, url: str, values: SecretValues, tls: str | None, client: str | None
) -> str:
    """Everything a pass depends on: an unchanged digest within a pass's recheck interval
    means the pass would only repeat itself (`client`: the certificate the operator presents,
    so a renewed one is tried at once). Lives in memory only."""
    available = conditions.find(server, conditions.AVAILABLE) or {}
    document = {
        "uid": server["metadata"].get("uid"),
        "spec": server.get("spec"),
        "url": url,
        "since": available.get("lastTransitionTime"),
        "values": sorted([name, key, value] for (name, key), value in values.items()),
        "tls": tls,
        "client": client,
    }
    text = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
