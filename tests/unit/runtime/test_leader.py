"""Leader election on a fast-forwarded loop clock (looptime), as client-go's fake-clock tests.

The Lease lives in an in-memory stand-in with the API server's optimistic concurrency; the
loop's time starts at 0 and jumps to the next timer whenever every task waits, so a test can
assert exactly when something happened without sleeping.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from dittofs_controller.kube.client import ApiError
from dittofs_controller.kube.resources import LEASES, Resource
from dittofs_controller.runtime.leader import LeaderElector

pytestmark = pytest.mark.looptime

Obj = dict[str, Any]


class Leases:
    """One namespace's Leases with resourceVersion preconditions; `down` fails every call."""

    def __init__(self) -> None:
        self.leases: dict[str, Obj] = {}
        self.version = 0
        self.down = False

    def put(self, name: str, **spec: Any) -> None:
        """Write a Lease as another replica would."""
        self.version += 1
        self.leases[name] = {
            "metadata": {"name": name, "resourceVersion": str(self.version)},
            "spec": spec,
        }

    def _check(self, resource: Resource) -> None:
        assert resource is LEASES
        if self.down:
            raise ApiError(503, "ServiceUnavailable", "the API server is down")

    async def get_or_none(self, resource: Resource, name: str, namespace: str) -> Obj | None:
        self._check(resource)
        lease = self.leases.get(name)
        return copy.deepcopy(lease) if lease is not None else None

    async def create(self, resource: Resource, body: Obj, namespace: str) -> Obj:
        self._check(resource)
        name = body["metadata"]["name"]
        if name in self.leases:
            raise ApiError(409, "AlreadyExists", name)
        self.put(name, **body["spec"])
        return copy.deepcopy(self.leases[name])

    async def replace(self, resource: Resource, body: Obj) -> Obj:
        self._check(resource)
        name = body["metadata"]["name"]
        current = self.leases[name]["metadata"]["resourceVersion"]
        if body["metadata"].get("resourceVersion") != current:
            raise ApiError(409, "Conflict", "the object has been modified")
        self.put(name, **body["spec"])
        return copy.deepcopy(self.leases[name])

    def holder(self, name: str = "lease") -> str | None:
        holder: str | None = self.leases[name]["spec"].get("holderIdentity")
        return holder


def elector(leases: Leases, identity: str = "me") -> LeaderElector:
    return LeaderElector(
        leases,  # type: ignore[arg-type]
        name="lease",
        namespace="ns",
        identity=identity,
        lease_duration=15,
        renew_deadline=10,
        retry_period=2,
    )


async def test_a_missing_lease_is_created_at_once() -> None:
    leases = Leases()
    loop = asyncio.get_running_loop()
    await elector(leases).acquire()
    assert loop.time() == 0
    assert leases.holder() == "me"
    assert leases.leases["lease"]["spec"]["leaseDurationSeconds"] == 15


async def test_a_live_holder_is_waited_out_for_its_own_lease_duration() -> None:
    leases = Leases()
    leases.put("lease", holderIdentity="other", leaseDurationSeconds=40, renewTime="t0")
    loop = asyncio.get_running_loop()
    await elector(leases).acquire()
    # Not after our 15 s: after the holder's 40 s (plus at most one jittered retry period).
    assert 40 <= loop.time() <= 40 + 2 * 1.2
    assert leases.holder() == "me"


async def test_a_holder_that_keeps_renewing_is_never_taken_over() -> None:
    leases = Leases()
    candidate = asyncio.create_task(elector(leases).acquire())
    leases.put("lease", holderIdentity="other", leaseDurationSeconds=15, renewTime="0")
    for renewal in range(1, 30):
        await asyncio.sleep(5)
        leases.put("lease", holderIdentity="other", leaseDurationSeconds=15, renewTime=f"{renewal}")
    assert not candidate.done()
    assert leases.holder() == "other"
    candidate.cancel()


async def test_a_released_lease_is_taken_on_the_next_retry() -> None:
    leases = Leases()
    first, second = elector(leases, "first"), elector(leases, "second")
    await first.acquire()
    candidate = asyncio.create_task(second.acquire())
    await asyncio.sleep(10)
    assert not candidate.done()
    await first.release()
    released_at = asyncio.get_running_loop().time()
    await candidate
    assert asyncio.get_running_loop().time() - released_at <= 2 * 1.2
    assert leases.holder() == "second"


async def test_a_leader_renews_every_retry_period_and_gives_up_at_the_renew_deadline() -> None:
    leases = Leases()
    leader = elector(leases)
    await leader.acquire()
    loop = asyncio.get_running_loop()
    renewing = asyncio.create_task(leader.keep_renewing())
    await asyncio.sleep(7)
    assert leases.version == 4  # created at 0, renewed at 2, 4 and 6
    leases.down = True
    down_at = loop.time()
    await renewing
    # The last renewal was at 6; the deadline is 10 s later, checked on a 2 s retry.
    assert 16 <= loop.time() <= 16 + 2
    assert loop.time() - down_at < 15  # before our lease could expire for the others


async def test_a_lease_taken_by_another_is_lost_at_the_renew_deadline() -> None:
    leases = Leases()
    leader = elector(leases)
    await leader.acquire()
    renewing = asyncio.create_task(leader.keep_renewing())
    await asyncio.sleep(3)
    leases.put("lease", holderIdentity="thief", leaseDurationSeconds=60, renewTime="x")
    await renewing
    assert asyncio.get_running_loop().time() <= 2 + 10 + 2
    assert leases.holder() == "thief"
