"""The DittoServer operator: one sub-reconciler per concern, wired onto the runtime.

DittoServer ─┬─ config       -> ConfigMap, generated Secrets         -> ConfigReady
             ├─ storage      -> PersistentVolumeClaims                -> StorageReady
             ├─ database     -> PerconaPGCluster / external Secret   -> DatabaseReady
             ├─ network      -> Services, Ingress, NetworkPolicies    -> NetworkReady
             ├─ workload     -> StatefulSet (once the above are True) -> Available, Progressing
             │                  (its uploads drained over REST before each stop)
             ├─ serverconfig -> stores, shares, users over REST       -> ServerConfigured
             └─ summary      -> Ready, phase, observedGeneration

(In logs, metrics and field managers the workload controller is named `server`, with
`upload-drain` beside it, and the serverconfig one `runtime`.)
The command line (cli.py) hands `setup` to the runtime's manager, which never imports this.
"""

from __future__ import annotations

from collections.abc import Callable

from dittofs_controller.kube.resources import DITTOSERVERS, PODS, SECRETS
from dittofs_controller.operator import (
    config,
    database,
    metrics,
    network,
    serverconfig,
    specs,
    storage,
    workload,
)
from dittofs_controller.operator.base import Context, server_controller
from dittofs_controller.operator.children import POD_SELECTOR, Obj
from dittofs_controller.operator.events import EventRecorder
from dittofs_controller.operator.references import BY_SECRET, SecretReader, secret_index
from dittofs_controller.operator.summary import SummaryReconciler
from dittofs_controller.runtime.informer import EventType, Handler
from dittofs_controller.runtime.manager import Manager


def on_deletion(forget: Callable[[Obj], None]) -> Handler:
    """A cache handler calling `forget` with each object deleted: per-object state of the
    operator goes with the object, so a churn of short-lived objects does not grow it."""

    def handler(kind: EventType, obj: Obj, _old: Obj | None) -> None:
        if kind is EventType.DELETED:
            forget(obj)

    return handler


def setup(manager: Manager) -> None:
    """Register the DittoServer caches and controllers on `manager`."""
    servers = manager.cache(DITTOSERVERS)
    servers.add_index(BY_SECRET, secret_index)
    servers.add_handler(on_deletion(specs.forget))
    metrics.SERVERS.source = servers.objects
    secrets = manager.cache(SECRETS, metadata_only=True)
    secret_values = SecretReader(manager.client, secrets)
    secrets.add_handler(on_deletion(secret_values.forget))
    ctx = Context(
        client=manager.client,
        servers=servers,
        secrets=secrets,
        pods=manager.cache(PODS, POD_SELECTOR),
        secret_values=secret_values,
        events=EventRecorder(manager.client, manager.settings.leader_election.identity),
        settings=manager.settings,
    )
    network.setup(manager, ctx)
    config.setup(manager, ctx)
    workload.setup(manager, ctx)
    storage.setup(manager, ctx)
    database.setup(manager, ctx)
    serverconfig.setup(manager, ctx)
    server_controller(manager, SummaryReconciler(ctx))
