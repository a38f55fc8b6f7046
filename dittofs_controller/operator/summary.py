"""The readiness summariser: Ready, the phase and status.observedGeneration, from the others'
conditions. It owns no child and judges nothing itself, so every verdict has one author."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import attrs

from dittofs_controller.api.schema import ParseError
from dittofs_controller.kube.resources import ObjectKey
from dittofs_controller.operator import conditions as c
from dittofs_controller.operator import metrics
from dittofs_controller.operator.base import Context, write_condition
from dittofs_controller.operator.children import Obj, field_manager
from dittofs_controller.operator.conditions import Outcome
from dittofs_controller.operator.specs import server_spec
from dittofs_controller.runtime.controller import DONE, Result

NAME = "summary"
OWNED = ("phase", "observedGeneration")  # top-level status fields the summariser writes
REQUIRED = (
    c.CONFIG_READY,
    c.STORAGE_READY,
    c.DATABASE_READY,
    c.NETWORK_READY,
    c.AVAILABLE,
    c.SERVER_CONFIGURED,
)
# What a stopped server (spec.replicas 0) cannot be: running, and configured over its API.
STOPPED_ALLOWS = (c.AVAILABLE, c.SERVER_CONFIGURED)


@attrs.frozen
class Summary:
    outcome: Outcome
    phase: c.Phase
    caught_up: bool


def summarise(server: Obj) -> Summary:
    """Pure: the Ready verdict and phase for a DittoServer as it stands in the cache."""
    generation = server["metadata"].get("generation", 0)
    found = {kind: c.find(server, kind) for kind in REQUIRED}
    current = {
        kind: cond
        for kind, cond in found.items()
        if cond is not None and cond.get("observedGeneration") == generation
    }
    caught_up = len(current) == len(REQUIRED)
    invalid = [cond for cond in current.values() if cond.get("reason") == "InvalidSpec"]
    if invalid:
        return Summary(Outcome.false("InvalidSpec", invalid[0]["message"]), "Failed", caught_up)
    try:
        replicas = server_spec(server).replicas
    except ParseError as error:
        return Summary(Outcome.false("InvalidSpec", str(error)), "Failed", caught_up)
    failing = [cond for cond in current.values() if cond.get("status") != "True"]
    if replicas == 0 and all(f["type"] in STOPPED_ALLOWS for f in failing):
        return Summary(
            Outcome.false("Stopped", "spec.replicas is 0: the server is stopped, its data kept"),
            "Stopped",
            caught_up,
        )
    if failing:
        message = "; ".join(f"{f['type']}: {f['message']}" for f in failing)
        available = current.get(c.AVAILABLE, {}).get("status") == "True"
        return Summary(
            Outcome.false(failing[0]["reason"], message),
            "Degraded" if available else "Pending",
            caught_up,
        )
    if not caught_up:
        waiting = ", ".join(kind for kind in REQUIRED if kind not in current)
        return Summary(
            Outcome.unknown("Reconciling", f"waiting for {waiting} to be reconciled"),
            "Progressing",
            caught_up,
        )
    return Summary(Outcome.true("Ready", "the server is running and reachable"), "Running", True)


class SummaryReconciler:
    name = NAME
    reads = REQUIRED
    # While a server is being created its conditions change in bursts (one write per
    # sub-reconciler, each quoted in Ready's message): summarising once per burst, not once per
    # condition, spares status writes. Ready lags by at most this much.
    coalesce_seconds = 0.5

    def __init__(self, ctx: Context, clock: Callable[[], float] = time.monotonic) -> None:
        self.ctx = ctx
        self.clock = clock
        # (uid, generation, when this process first saw it) of each server whose current
        # generation is not Ready yet: the start of dittofs_server_convergence_seconds.
        self.pending: dict[ObjectKey, tuple[str, int, float]] = {}

    async def reconcile(self, key: ObjectKey) -> Result:
        server = self.ctx.servers.get(key)
        if server is None:
            self.ctx.unseen.forget(key)
            self.pending.pop(key, None)
            return DONE
        if server["metadata"].get("deletionTimestamp"):
            return DONE
        started = self._generation_started(key, server)
        summary = summarise(server)
        status = server.get("status") or {}
        generation = server["metadata"].get("generation", 0)
        observed = generation if summary.caught_up else status.get("observedGeneration")
        fields: dict[str, Any] = {"phase": summary.phase}
        if observed is not None:
            fields["observedGeneration"] = observed
        written = await write_condition(
            self.ctx, server, c.READY, summary.outcome, field_manager(NAME), fields, OWNED
        )
        if written is None:
            return DONE
        entry, previous = written
        if started is not None and entry["status"] == "True":
            metrics.CONVERGENCE.observe(self.clock() - started)
            self.pending.pop(key, None)
        if c.ready_announced(entry, previous):
            await self.ctx.events.record(
                server,
                c.event_type(entry),
                entry["reason"],
                f"Ready={entry['status']}: {entry['message']}",
                action="Summarise",
            )
        return DONE

    def _generation_started(self, key: ObjectKey, server: Obj) -> float | None:
        """When the server's current generation began to converge, as far as this process
        knows; None when Ready already judged it (before a restart, say): not ours to time."""
        meta = server["metadata"]
        uid, generation = meta["uid"], meta.get("generation", 0)
        known = self.pending.get(key)
        if known is not None and known[:2] == (uid, generation):
            return known[2]
        ready = c.find(server, c.READY)
        if ready is not None and ready.get("observedGeneration") == generation:
            self.pending.pop(key, None)
            return None
        self.pending[key] = (uid, generation, self.clock())
        return self.pending[key][2]
