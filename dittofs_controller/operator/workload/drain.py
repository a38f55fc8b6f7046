"""Uploads drained before the pod stops: DittoFS asked to upload everything at once, as admin.

Why the operator does it and not the pod: on SIGTERM DittoFS v0.29.0 stops its adapters, flushes
its metadata and exits within a fraction of a second, uploading nothing more (measured: 128 MiB
written over NFS, SIGTERM at once, not a byte in the bucket; the uploads resume only when a
server starts again on the same local block store). No grace period helps, and a preStop hook
has no client to run (build.py). So before each stop it makes (spec.replicas 0, a pod template
change, the DittoServer's deletion) the operator calls POST /api/v1/system/drain-uploads, which
returns once every byte queued reached the remote block stores (504 when the uploads stall for
DittoFS' controlplane.drain_stall_timeout, 5 minutes by default), and stops the pod then, or
when spec.controlPlane.uploadDrainTimeout is up. Bytes written after the drain began may still
be pending: GET /api/v1/blockstore/stats says how many, for status.uploadDrain and the Warning
Event of a drain that did not end well. Stops the operator does not make (a pod deleted by
hand, an eviction, a node drain) are not waited for; what they leave behind is uploaded when
the server starts again from its block store volume.

A drain may take minutes, longer than a reconcile may, so it runs on a controller of its own
(`upload-drain`), whose workers are not the server controller's: the server reconciler records
a Drain here and waits (Progressing DrainingUploads) without holding a worker; the drainer
answers it and queues the server again. Drains live in memory: an operator restarted during
one starts it again.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import aiohttp
import attrs
import structlog

from dittofs_controller.api.v1alpha1 import MAX_UPLOAD_DRAIN_TIMEOUT
from dittofs_controller.dittofs import DittoFSClient, DittoFSError, DittoFSUnreachable
from dittofs_controller.dittofs.client import DEFAULT_TIMEOUT
from dittofs_controller.kube.resources import ObjectKey
from dittofs_controller.operator import conditions, serverapi
from dittofs_controller.operator.base import Context, server_pod
from dittofs_controller.operator.children import Obj
from dittofs_controller.operator.config import build as config
from dittofs_controller.operator.problems import Problem
from dittofs_controller.operator.specs import server_spec
from dittofs_controller.operator.workload.build import STOP_WHY, StopCause
from dittofs_controller.runtime.controller import DONE, Result

log = structlog.get_logger("dittofs_controller.operator.drain")

DRAIN_PATH = "/system/drain-uploads"
STATS_PATH = "/blockstore/stats"
# The drainer's reconciles may last as long as the longest drain allowed, plus the login and the
# stats call around it.
RECONCILE_TIMEOUT = MAX_UPLOAD_DRAIN_TIMEOUT + 60.0
# A result older than this is not taken for a stop: uploads may have queued up again since.
FRESH_SECONDS = 60.0
# How long past its deadline the server reconciler waits for the drainer's answer before it
# takes the drain as timed out (the answer normally queues it at once).
ANSWER_GRACE = 30.0


@attrs.define(eq=False)
class Drain:
    """One wait for the uploads of one server, before one stop."""

    cause: StopCause
    deadline: float  # on the monotonic clock
    started_at: str = attrs.field(factory=conditions.now_rfc3339)
    outcome: str | None = None  # Drained, TimedOut, Failed: set once done
    message: str = ""
    unsynced_bytes: int | None = None
    finished_at: str = ""
    finished: float = 0.0  # on the monotonic clock

    @property
    def done(self) -> bool:
        return self.outcome is not None

    def finish(self, outcome: str, message: str, unsynced: int | None, now: float) -> None:
        if self.done:
            return
        self.outcome, self.message, self.unsynced_bytes = outcome, message, unsynced
        self.finished_at, self.finished = conditions.now_rfc3339(), now

    def status(self) -> Obj:
        """status.uploadDrain."""
        report: Obj = {
            "outcome": self.outcome,
            "cause": self.cause,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
            "message": self.message,
        }
        if self.unsynced_bytes is not None:
            report["unsyncedBytes"] = self.unsynced_bytes
        return report

    def warning(self, pod_name: str, deletion_policy: str) -> str:
        """The note of the Warning Event of a drain that did not end well."""
        unsynced = (
            "an unknown number of bytes"
            if self.unsynced_bytes is None
            else f"{self.unsynced_bytes} bytes"
        )
        where = (
            "they are lost with the local block store volumes (deletionPolicy Delete)"
            if self.cause == "Deletion" and deletion_policy == "Delete"
            else "they stay in the local block stores and are uploaded when a server starts "
            "again on their volumes (memory local stores lose them)"
        )
        return (
            f"pod {pod_name} stops ({STOP_WHY[self.cause]}) with {unsynced} not yet in the "
            f"remote block stores: {self.message}; {where}"
        )


class Drains:
    """The drains of the servers, shared by the server reconciler and the drainer."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._drains: dict[ObjectKey, Drain] = {}

    def get(self, key: ObjectKey) -> Drain | None:
        return self._drains.get(key)

    def start(self, key: ObjectKey, cause: StopCause, timeout: float) -> Drain:
        drain = self._drains[key] = Drain(cause, self.clock() + timeout)
        return drain

    def forget(self, key: ObjectKey) -> None:
        self._drains.pop(key, None)

    def usable(self, drain: Drain) -> bool:
        """Done recently enough for the stop at hand (a stop that failed to apply and comes
        back much later drains again)."""
        return drain.done and self.clock() - drain.finished < FRESH_SECONDS

    def overdue(self, drain: Drain) -> bool:
        """Not answered long after its deadline: the drainer is taken to have failed."""
        return not drain.done and self.clock() > drain.deadline + ANSWER_GRACE


class UploadDrainer:
    """The `upload-drain` controller's reconciler: asks DittoFS to drain, records the answer in
    the server's Drain, then queues the server for the server reconciler (`wake`)."""

    name = "upload-drain"

    def __init__(self, ctx: Context, drains: Drains, access: serverapi.Access) -> None:
        self.ctx = ctx
        self.drains = drains
        self.access = access
        self.wake: Callable[[ObjectKey], None] = lambda key: None

    async def reconcile(self, key: ObjectKey) -> Result:
        drain = self.drains.get(key)
        if drain is None or drain.done:
            return DONE
        outcome, message, unsynced = "Failed", "the drain was interrupted", None
        try:
            outcome, message, unsynced = await self._drain(key, drain)
        except Problem as problem:  # a Secret or certificate the request needs is missing
            message = problem.message
        except Exception as error:
            message = f"the drain failed: {error or type(error).__name__}"
            raise
        finally:
            drain.finish(outcome, message, unsynced, self.drains.clock())
            log.info(
                "upload drain ended", outcome=outcome, unsynced_bytes=unsynced, message=message
            )
            self.wake(key)
        return DONE

    async def _drain(self, key: ObjectKey, drain: Drain) -> tuple[str, str, int | None]:
        server = self.ctx.servers.get(key)
        if server is None:
            return "Failed", "the DittoServer is gone", None
        spec = server_spec(server)
        ref = config.admin_secret_ref(key.name, spec)
        password = await self.ctx.secret_values.value(
            key.namespace, ref.name, ref.key, what="password of DittoFS's admin account"
        )
        tls = await serverapi.trusted_certificates(self.ctx.secret_values, server, spec)
        client = await serverapi.operator_certificate(self.ctx.secret_values, server, spec)
        pod_ip = serverapi.pod_ip(server_pod(self.ctx.pods, server))
        if self.access == "pod" and pod_ip is None:
            return "Failed", "the pod has no IP address", None
        url = serverapi.api_url(server, spec, self.access, pod_ip)
        forward = serverapi.port_forward(self.ctx.client, server, spec, self.access)
        started = self.drains.clock()
        budget = max(1.0, drain.deadline - started)
        timeout = aiohttp.ClientTimeout(total=budget, sock_connect=DEFAULT_TIMEOUT.sock_connect)
        session = serverapi.session(
            spec, url, password, tls, forward, client=client, timeout=timeout
        )
        async with session as api:
            try:
                await api.post(DRAIN_PATH)
                took = self.drains.clock() - started
                outcome, message = "Drained", f"DittoFS uploaded what was queued in {took:.1f} s"
            except DittoFSError as error:
                stalled = error.status == 504
                outcome = "TimedOut" if stalled else "Failed"
                message = f"DittoFS answered {error}"
            except DittoFSUnreachable as error:
                if self.drains.clock() >= drain.deadline - 1:
                    outcome = "TimedOut"
                    message = f"DittoFS was still uploading when the {budget:.0f} s were up"
                else:
                    outcome = "Failed"
                    cause = forward.failure if forward is not None and forward.failure else error
                    message = f"DittoFS could not be asked at {url}: {cause}"
            api.timeout = DEFAULT_TIMEOUT  # the stats are asked for after the budget too
            return outcome, message, await unsynced_bytes(api)


async def unsynced_bytes(api: DittoFSClient) -> int | None:
    """The bytes the local block stores hold and the remote ones lack, as DittoFS counts them;
    None when it does not say."""
    try:
        stats = await api.get(STATS_PATH)
        return int(stats["totals"]["unsynced_bytes"])
    except (DittoFSError, DittoFSUnreachable, KeyError, TypeError, ValueError):
        return None
