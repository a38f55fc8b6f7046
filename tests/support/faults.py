"""Runtime faults, table-driven: DittoServers broken in known ways, each checked for

1. a False condition with the fault's specific reason (for the current generation) and an
   Event with that reason about the DittoServer;
2. what being broken costs: the Kubernetes API requests the operator makes for that
   DittoServer, the Events it records about it and (when a pod runs) the calls its DittoFS
   REST API receives, over one minute; a hot loop makes thousands, backoff a handful;
3. recovery once the fault is fixed: the condition True and the DittoServer Ready.

Every fault of a table runs at the same time in one namespace, under one operator, so the
minute of observation is spent once per table, not once per fault.

Requests are attributed to a DittoServer through the reconcile key the controller binds into
the log context of every pass (`CountingKubeClient`); list/watch traffic of the informers is
shared by all DittoServers and is not counted.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from dittofs_controller.kube.client import KubeClient
from dittofs_controller.kube.resources import DITTOSERVERS, EVENTS, ObjectKey

Obj = dict[str, Any]
Step = Callable[[], Awaitable[Any]]

WINDOW = 60.0
# Per DittoServer and minute while broken. A pass costs a few requests; backoff leaves a
# handful of passes in the window, a watch-driven wait none at all.
MAX_REQUESTS = 60
MAX_EVENTS = 4
MAX_DITTOFS_CALLS = 60


class CountingKubeClient(KubeClient):
    """The operator's client, counting each request under the DittoServer being reconciled."""

    def __init__(self, api: Any) -> None:
        super().__init__(api)
        self.requests: collections.Counter[str] = collections.Counter()

    async def _send(self, method: str, path: str, **options: Any) -> Any:
        key = structlog.contextvars.get_contextvars().get("key")
        if key:
            self.requests[str(key)] += 1
        return await super()._send(method, path, **options)


async def _nothing() -> None:
    return None


@dataclass
class Fault:
    """One broken DittoServer: how it is broken, what it must report, how it is fixed."""

    name: str  # the DittoServer's name
    condition: str
    reason: str
    server: Obj  # its manifest; the namespace is filled in
    fix: Step
    before: Step = _nothing  # breaks something before the DittoServer is created
    after: Step | None = None  # breaks something once the DittoServer is Ready
    message: str = ""  # a fragment the condition's message must contain
    # Observed, for the report.
    seen: Obj = field(default_factory=dict)
    costs: dict[str, int] = field(default_factory=dict)
    recovered_after: float | None = None


@dataclass
class Observed:
    """What the harness reads: the API, and the DittoFS calls of a server if a pod runs."""

    kube: KubeClient
    namespace: str
    client: CountingKubeClient
    dittofs_calls: Callable[[str], int] | None = None
    failures: list[str] = field(default_factory=list)

    async def condition(self, name: str, kind: str) -> Obj | None:
        """The condition if it is computed for the DittoServer's current generation."""
        server = await self.kube.get(DITTOSERVERS, name, self.namespace)
        generation = server["metadata"]["generation"]
        for found in (server.get("status") or {}).get("conditions") or ():
            if found["type"] == kind and found.get("observedGeneration") == generation:
                return dict(found)
        return None

    async def events(self, name: str) -> list[Obj]:
        listed = await self.kube.request("GET", EVENTS.path(self.namespace))
        return [
            event
            for event in listed.get("items") or ()
            if (event.get("regarding") or {}).get("name") == name
            and (event.get("regarding") or {}).get("kind") == "DittoServer"
        ]

    async def until(self, what: str, check: Step, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            result = await check()
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
            await asyncio.sleep(0.5)


async def break_all(observed: Observed, faults: Sequence[Fault], timeout: float) -> None:
    """Break what each fault breaks before its DittoServer is created, create them all, then
    break what breaks a running server once it is Ready."""
    for fault in faults:
        await fault.before()
        body = {**fault.server, "metadata": {**fault.server["metadata"], "name": fault.name}}
        await observed.kube.create(DITTOSERVERS, body, observed.namespace)

    async def when_ready(fault: Fault) -> None:
        assert fault.after is not None
        await observed.until(f"{fault.name} Ready", lambda: _ready(observed, fault.name), timeout)
        await fault.after()

    await asyncio.gather(*(when_ready(fault) for fault in faults if fault.after is not None))


async def _ready(observed: Observed, name: str) -> bool:
    found = await observed.condition(name, "Ready")
    return bool(found and found["status"] == "True")


async def reported(observed: Observed, fault: Fault, timeout: float) -> None:
    """The fault's condition False with its reason (and message), and an Event with it; then
    wait until the DittoServer has settled."""

    async def condition() -> Obj | None:
        found = await observed.condition(fault.name, fault.condition)
        ok = found and (found["status"], found["reason"]) == ("False", fault.reason)
        return found if ok and fault.message in found["message"] else None

    async def event() -> Obj | None:
        events = await observed.events(fault.name)
        return next((e for e in events if e.get("reason") == fault.reason), None)

    async def settled() -> bool:
        """Every concern has reported on this generation: what follows is steady state, not
        the creation of the children."""
        server = await observed.kube.get(DITTOSERVERS, fault.name, observed.namespace)
        generation = server["metadata"]["generation"]
        return bool((server.get("status") or {}).get("observedGeneration") == generation)

    try:
        fault.seen = await observed.until(f"{fault.condition} {fault.reason}", condition, timeout)
        recorded = await observed.until(f"an Event {fault.reason}", event, 30)
        assert recorded["type"] == "Warning", recorded
        await observed.until("every condition to be reported", settled, 60)
    except AssertionError as error:
        last = await observed.condition(fault.name, fault.condition)
        observed.failures.append(f"{fault.name}: {error}; last {fault.condition}: {last}")


async def cost_of_one_minute(observed: Observed, faults: Sequence[Fault]) -> None:
    """What each broken DittoServer costs over WINDOW seconds, checked against the bounds."""
    before = {}
    for fault in faults:
        key = str(ObjectKey(observed.namespace, fault.name))
        before[fault.name] = (
            observed.client.requests[key],
            len(await observed.events(fault.name)),
            _dittofs_calls(observed, fault.name),
        )
    await asyncio.sleep(WINDOW)
    for fault in faults:
        key = str(ObjectKey(observed.namespace, fault.name))
        requests, events, calls = before[fault.name]
        fault.costs = {
            "requests": observed.client.requests[key] - requests,
            "events": len(await observed.events(fault.name)) - events,
            # A restarted pod logs afresh: count from zero then.
            "dittofs": max(0, _dittofs_calls(observed, fault.name) - calls),
        }
        bounds = {"requests": MAX_REQUESTS, "events": MAX_EVENTS, "dittofs": MAX_DITTOFS_CALLS}
        for what, bound in bounds.items():
            if fault.costs[what] > bound:
                observed.failures.append(
                    f"{fault.name}: {fault.costs[what]} {what} in {WINDOW:g} s (at most {bound})"
                )


def _dittofs_calls(observed: Observed, name: str) -> int:
    return observed.dittofs_calls(name) if observed.dittofs_calls else 0


async def recovered(observed: Observed, fault: Fault, started: float, timeout: float) -> None:
    """After the fix: the fault's condition True and Ready True, for the current generation."""

    async def ready() -> bool:
        found = await observed.condition(fault.name, fault.condition)
        return bool(found and found["status"] == "True" and await _ready(observed, fault.name))

    try:
        await observed.until(f"{fault.name} to recover", ready, timeout)
        fault.recovered_after = round(time.monotonic() - started, 1)
    except AssertionError as error:
        server = await observed.kube.get(DITTOSERVERS, fault.name, observed.namespace)
        conditions = [
            f"{c['type']}={c['status']} {c['reason']}: {c['message'][:300]}"
            for c in (server.get("status") or {}).get("conditions") or ()
        ]
        observed.failures.append(f"{fault.name}: {error}; conditions: {conditions}")


async def run_table(
    observed: Observed,
    faults: Sequence[Fault],
    *,
    report_timeout: float = 90,
    recover_timeout: float = 300,
    before_fixes: Step = _nothing,
) -> str:
    """Break, observe, fix and watch every fault recover; fail listing every fault that did
    not behave. `before_fixes` runs once before the fixes (e.g. a node starts)."""
    began = time.monotonic()

    def progress(step: str) -> None:  # shown live with `pytest -s`
        print(f"[faults] {time.monotonic() - began:6.1f} s: {step}", flush=True)

    await break_all(observed, faults, recover_timeout)
    progress("broken")
    await asyncio.gather(*(reported(observed, fault, report_timeout) for fault in faults))
    progress("reported")
    await cost_of_one_minute(observed, faults)
    progress("observed for a minute")
    await before_fixes()
    started = time.monotonic()
    for fault in faults:
        await fault.fix()
    progress("fixed")
    await asyncio.gather(
        *(recovered(observed, fault, started, recover_timeout) for fault in faults)
    )
    progress("recovered")
    report = table(faults)
    print(report)
    assert not observed.failures, "\n".join([*observed.failures, report])
    return report


def table(faults: Sequence[Fault]) -> str:
    """One line per fault: reason, what a minute of it cost, seconds to recover."""
    lines = [f"{'fault':<26} {'condition':<17} {'reason':<28} req/min ev/min dfs/min recovered(s)"]
    for fault in faults:
        costs = fault.costs or {}
        lines.append(
            f"{fault.name:<26} {fault.condition:<17} {fault.reason:<28} "
            f"{costs.get('requests', '-')!s:>7} {costs.get('events', '-')!s:>6} "
            f"{costs.get('dittofs', '-')!s:>7} {fault.recovered_after or '-'!s:>12}"
        )
    return "\n".join(lines)


def memory_server(**spec: Any) -> Obj:
    """A DittoServer with memory stores and one share, reachable through ClusterIP Services
    (no load balancer is needed for NetworkReady); `spec` keys replace the defaults."""
    return {
        "apiVersion": "dittofs.io/v1alpha1",
        "kind": "DittoServer",
        "metadata": {"name": "unnamed"},
        "spec": {
            "metadataStores": [{"name": "mem", "type": "memory"}],
            "localBlockStores": [{"name": "mem", "type": "memory"}],
            "shares": [{"name": "/export", "metadataStore": "mem", "localBlockStore": "mem"}],
            "expose": {"nfs": {"type": "ClusterIP"}, "smb": {"type": "ClusterIP"}},
            **copy.deepcopy(spec),
        },
    }


def secret(name: str, **data: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data}
