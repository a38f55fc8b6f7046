"""Leader election on a coordination.k8s.io/v1 Lease, with client-go's semantics.

Invariants:
- Another holder's lease counts as expired only when its record has not changed for the
  holder's `leaseDurationSeconds` (not ours: replicas may disagree during a rollout) as measured
  on OUR monotonic clock since we first saw that record, so clock skew between replicas cannot
  make two leaders.
- Every write carries the resourceVersion we read (optimistic concurrency): two candidates racing
  for an expired lease cannot both win.
- A leader that cannot renew within `renew_deadline` gives up leadership before its lease
  (lease_duration > renew_deadline) can expire for the others.
- On a clean stop the leader releases the lease so a standby takes over without waiting.
"""

from __future__ import annotations

import asyncio
import datetime
import random
from typing import Any

import aiohttp
import structlog

from dittofs_controller.kube.client import ApiError, KubeClient
from dittofs_controller.kube.resources import LEASES
from dittofs_controller.runtime import metrics

log = structlog.get_logger("dittofs_controller.leader")

JITTER = 1.2


def _monotonic() -> float:
    """The event loop's clock (time.monotonic, unless a test fast-forwards it)."""
    return asyncio.get_running_loop().time()


def _now_micro() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self,
        client: KubeClient,
        *,
        name: str,
        namespace: str,
        identity: str,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
    ) -> None:
        if not lease_duration > renew_deadline > retry_period * JITTER > 0:
            raise ValueError("need lease_duration > renew_deadline > retry_period * 1.2 > 0")
        self.client = client
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self._observed: tuple[str, str] | None = None
        self._observed_at = 0.0
        self._log = log.bind(lease=f"{namespace}/{name}", identity=identity)
        self._status = metrics.LEADER_ELECTION_MASTER_STATUS.labels(name)

    async def acquire(self) -> None:
        """Return once this replica holds the lease (cancel to give up waiting)."""
        self._log.info("waiting for leadership")
        while not await self._try_acquire_or_renew():  # noqa: ASYNC110 - polling the API is the point
            await asyncio.sleep(self.retry_period * random.uniform(1, JITTER))
        self._status.set(1)
        self._log.info("became leader")

    async def keep_renewing(self) -> None:
        """Renew every retry period; return when leadership is lost (renew deadline missed)."""
        last_renewal = _monotonic()
        while True:
            await asyncio.sleep(self.retry_period)
            remaining = self.renew_deadline - (_monotonic() - last_renewal)
            try:
                async with asyncio.timeout(max(remaining, 0.001)):
                    renewed = await self._try_acquire_or_renew()
            except TimeoutError:
                renewed = False
            if renewed:
                last_renewal = _monotonic()
            elif _monotonic() - last_renewal >= self.renew_deadline:
                self._log.error("lost leadership: could not renew the lease in time")
                self._status.set(0)
                return

    async def _try_acquire_or_renew(self) -> bool:
        """One attempt; True when we hold the lease afterwards. Errors count as a failed try."""
        try:
            lease = await self.client.get_or_none(LEASES, self.name, self.namespace)
            if lease is None:
                await self.client.create(LEASES, self._lease_body(None), self.namespace)
                return True
            spec = lease.get("spec") or {}
            holder = spec.get("holderIdentity") or ""
            record = (holder, str(spec.get("renewTime") or ""))
            now = _monotonic()
            if record != self._observed:
                self._observed, self._observed_at = record, now
            held_by_other = holder not in ("", self.identity)
            holder_duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
            if held_by_other and now - self._observed_at < holder_duration:
                return False
            updated = await self.client.replace(LEASES, self._lease_body(lease))
            new_spec = updated.get("spec") or {}
            self._observed = (self.identity, str(new_spec.get("renewTime") or ""))
            self._observed_at = _monotonic()
            return True
        except (ApiError, aiohttp.ClientError, TimeoutError) as error:
            self._log.info("lease attempt failed", error=str(error))
            return False

    def _lease_body(self, current: dict[str, Any] | None) -> dict[str, Any]:
        now = _now_micro()
        spec: dict[str, Any] = dict((current or {}).get("spec") or {})
        if spec.get("holderIdentity") != self.identity:
            spec["acquireTime"] = now
            if current is not None:
                spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        spec.update(
            holderIdentity=self.identity,
            leaseDurationSeconds=max(1, round(self.lease_duration)),
            renewTime=now,
        )
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if current is not None:
            metadata["resourceVersion"] = current["metadata"]["resourceVersion"]
        return {
            "apiVersion": LEASES.api_version,
            "kind": "Lease",
            "metadata": metadata,
            "spec": spec,
        }

    async def release(self) -> None:
        """Hand the lease back so a standby need not wait for it to expire."""
        self._status.set(0)
        try:
            async with asyncio.timeout(self.retry_period * 2):
                lease = await self.client.get_or_none(LEASES, self.name, self.namespace)
                if (
                    lease is None
                    or (lease.get("spec") or {}).get("holderIdentity") != self.identity
                ):
                    return
                lease["spec"].update(
                    holderIdentity=None, leaseDurationSeconds=1, renewTime=_now_micro()
                )
                await self.client.replace(LEASES, lease)
                self._log.info("released leadership")
        except (ApiError, aiohttp.ClientError, TimeoutError) as error:
            self._log.warning("could not release the lease", error=str(error))
