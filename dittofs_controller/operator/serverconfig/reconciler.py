"""The serverconfig reconciler: DittoFS's own state (adapters, groups, users, stores, shares,
identity providers) made to match the spec over its REST API -> ServerConfigured and
status.server.

It starts once Available is True for the current generation (a pod is ready) and logs in as
the bootstrap `admin` with the password of the admin Secret. A pass creates what is missing and
updates what differs from what the server reports, in dependency order: adapters, groups,
users, stores, shares (options, NFS settings, permissions); then it deletes what it created
earlier and the spec no longer names, shares first. Objects the spec never named (made through
the API by hand) are left alone; status.server.managed lists what the operator manages.

A share removed from the spec is deleted from the server: its export, permissions and NFS
options go, never its files, which stay in its stores (DittoFS's DELETE /shares leaves them,
and a share of the same name declared again on the same metadata store finds them). They go
with the stores' volumes only (deletionPolicy Delete, or a store deleted by hand).

Credentials read back as `********`, so the digests of the values last sent are kept, in memory
and in status.server.applied (never a value): HMAC-SHA256 keyed with the Secret the config
reconciler generates (names.digest_key_secret), so readers of DittoServers cannot test guessed
passwords against them. A rotated Secret changes the digest and the value is sent again (a
user's password, S3 keys, a PostgreSQL password); so does a new digest key, once, and so did
the move from the former unkeyed digests.
DittoFS keeps a store's new settings in its database but opens a store only when it starts:
after a change over the API, status.server.storesRevision (a keyed digest of the stores as
sent) is what the pod must be started for, the workload reconciler puts it into the pod
template, and ServerConfigured says StoresReopening until the running pod carries it. (A
crash between such a change and the status write leaves a credential change to be sent again,
its digest being unrecorded; a change of another setting would wait for the next restart.)

A pass whose inputs (spec, Secret values, address, pod) did not change is not repeated within
its recheck interval; a converged server is compared again every 5 minutes to notice changes
made through its API by hand.

Where the API is (--dittofs-api-access): the API Service in the cluster; out of it a
port-forward through the API server (kube/portforward.py), opened for each pass and closed
after it; or the pod IP when the machine routes to the pod network.

Failures: the server unreachable or erring (5xx) -> ServerUnreachable/ServerError, retried
with backoff; a port-forward the API server refuses or the kubelet cannot make ->
PortForwardForbidden/PodNotFound/PortForwardRejected/PortForwardFailed, retried with backoff;
the admin login refused -> AuthenticationFailed; a store, share, user, group or adapter the
server rejects -> a False condition naming it and the server's words, and the rest of the pass
goes on; a store the server accepted but reports unhealthy (its S3 endpoint or PostgreSQL
unreachable) -> StoreUnhealthy, looked at again every 30 s; an LDAP directory DittoFS cannot
dial or bind to (its own test, asked for after each comparison) -> IdentityProviderUnreachable,
looked at again every 30 s.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from dittofs_controller.dittofs import AuthenticationFailed, DittoFSError, DittoFSUnreachable
from dittofs_controller.kube.resources import DITTOSERVERS, ObjectKey
from dittofs_controller.operator import conditions, metrics, names, serverapi
from dittofs_controller.operator.base import (
    Context,
    ServerReconciler,
    Spec,
    Synced,
    pod_server,
    server_controller,
    server_pod,
)
from dittofs_controller.operator.children import Obj
from dittofs_controller.operator.problems import Problem
from dittofs_controller.operator.references import percona_user_servers, servers_referencing
from dittofs_controller.operator.serverconfig import credentials, gates, model, report
from dittofs_controller.operator.serverconfig.converge import Converge
from dittofs_controller.operator.serverconfig.memory import Memory, inputs_digest
from dittofs_controller.runtime.controller import DONE, Result

if TYPE_CHECKING:
    from dittofs_controller.runtime.manager import Manager


class ServerConfigReconciler(ServerReconciler):
    # Its former name, kept: it is the field manager of ServerConfigured and status.server.
    name = "runtime"
    condition = conditions.SERVER_CONFIGURED
    reads = (conditions.AVAILABLE, conditions.PROGRESSING)
    status_fields = ("server",)

    def __init__(self, ctx: Context, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(ctx)
        settings = ctx.settings
        self.access = serverapi.resolve_access(
            settings.dittofs_api_access, settings.kubeconfig, os.environ
        )
        self.clock = clock
        self.memory: dict[ObjectKey, Memory] = {}

    async def reconcile(self, key: ObjectKey) -> Result:
        server = self.ctx.servers.get(key)
        if server is None:
            self.memory.pop(key, None)  # deleted: nothing left to talk to
            metrics.forget_server(key)
        elif not gates.judged(server):
            return DONE  # Available for this generation is still to come: its update re-queues
        return await super().reconcile(key)

    async def sync(self, server: Obj, spec: Spec) -> Synced:
        if waiting := gates.waiting_for_server(server, spec):
            return Synced(waiting)
        meta = server["metadata"]
        values = await self._secret_values(server, spec)
        tls = await serverapi.trusted_certificates(self.ctx.secret_values, server, spec)
        client = await serverapi.operator_certificate(self.ctx.secret_values, server, spec)
        running = server_pod(self.ctx.pods, server)
        pod_ip = serverapi.pod_ip(running) if self.access == "pod" else None
        if self.access == "pod" and not pod_ip:
            pod = names.pod(meta["name"])
            return Synced(gates.waiting(f"pod {pod} has no IP address yet"))
        url = serverapi.api_url(server, spec, self.access, pod_ip)
        desired = model.desired(meta["name"], spec, values)
        memory = self._memory(server)
        inputs = inputs_digest(server, url, values, tls, client.certificate if client else None)
        if recent := memory.recent(inputs, self.clock()):
            return recent
        admin = credentials.admin_key(meta["name"], spec)
        password = values[(admin.name, admin.key)]
        digest_key = credentials.digest_key(meta["name"])
        key = values[(digest_key.name, digest_key.key)]
        secrets = [password, *desired.credentials()]
        forward = serverapi.port_forward(self.client, server, spec, self.access)
        try:
            async with serverapi.session(
                spec, url, password, tls, forward, client=client, tokens=memory.tokens
            ) as api:
                converge = Converge(api, desired, memory, digest_key=key, secrets=secrets)
                observed = await converge.run()
        except AuthenticationFailed as error:
            metrics.count_api_error(meta, "authentication")
            raise Problem(
                "AuthenticationFailed",
                f"DittoFS at {url} refused the admin login ({error.detail or error.title}): the "
                f"password in Secret {admin.name!r} (key {admin.key!r}) does not match the "
                "server's stored admin password. DittoFS reads that Secret only at its first "
                "boot, so changing it later changes nothing in the server: restore the "
                "original password, or reset the admin password through the DittoFS API and "
                "put the new one in the Secret",
                requeue_after=report.DRIFT_INTERVAL,
            ) from None
        except DittoFSUnreachable as error:
            metrics.count_api_error(meta, "unreachable")
            if forward is not None and forward.failure is not None:
                reason, message = serverapi.forward_problem(forward.failure)
                raise Problem(reason, f"{forward}: {message}", retry=True) from None
            raise Problem(
                "ServerUnreachable",
                f"cannot reach the DittoFS REST API ({error}); the operator reaches it "
                f"through {serverapi.ACCESS_WHAT[self.access]} (--dittofs-api-access)",
                retry=True,
            ) from None
        except DittoFSError as error:
            metrics.count_api_error(meta, "server_error")
            raise Problem(
                "ServerError",
                f"DittoFS at {url}: {credentials.scrub(str(error), secrets)}",
                retry=True,
            ) from None
        running = server_pod(self.ctx.pods, server) if memory.stores_revision else None
        issues = [
            *converge.issues,
            *report.reopen_pending(memory.stores_revision, running),
            *report.not_running(desired, observed),
            *report.unhealthy_stores(desired, observed, secrets),
        ]
        outcome, recheck = report.verdict(desired, issues)
        status = report.server_status(
            observed, memory.managed, memory.applied, memory.stores_revision
        )
        synced = Synced(outcome, requeue_after=recheck, status={"server": status})
        memory.inputs, memory.until, memory.synced = inputs, self.clock() + recheck, synced
        return synced

    def _memory(self, server: Obj) -> Memory:
        key = ObjectKey.of(server)
        memory = self.memory.get(key)
        if memory is None or memory.uid != server["metadata"]["uid"]:
            memory = self.memory[key] = Memory.recalled(server)
        return memory

    async def _secret_values(self, server: Obj, spec: Spec) -> dict[tuple[str, str], str]:
        """The Secret values the desired state is made of; a missing one is a Problem."""
        namespace = server["metadata"]["namespace"]
        values = {}
        for ref in credentials.secret_keys(server["metadata"]["name"], spec):
            values[(ref.name, ref.key)] = await self.ctx.secret_values.value(
                namespace, ref.name, ref.key, what=ref.what
            )
        return values


def setup(manager: Manager, ctx: Context) -> None:
    """The serverconfig controller: DittoServers (Available above all) and every Secret whose value
    it sends or keys its digests with: referenced ones, the generated admin Secret and digest key,
    Percona's user Secret; and the servers' pods."""
    controller = server_controller(manager, ServerConfigReconciler(ctx))
    controller.owns(ctx.secrets, DITTOSERVERS)
    controller.watch(ctx.secrets, servers_referencing(ctx.servers))
    controller.watch(ctx.secrets, percona_user_servers(ctx.servers))
    controller.watch(ctx.pods, pod_server)  # its IP, and the stores revision it runs with
