"""The DittoServer operator: one sub-reconciler per concern, wired onto the runtime.

DittoServer ─┬─ config       -> ConfigMap, generated Secrets         -> ConfigReady
             ├─ storage      -> PersistentVolumeClaims                -> StorageReady
             ├─ database     -> PerconaPGCluster / external Secret   -> DatabaseReady
             ├─ network      -> Services, Ingress, NetworkPolicies    -> NetworkReady
             ├─ workload     -> StatefulSet (once the above are True) -> Available, Progressing
             ├─ serverconfig -> stores, shares, users over REST       -> ServerConfigured
             └─ summary      -> Ready, phase, observedGeneration

(In logs, metrics and field managers the workload controller is named `server` and the
serverconfig one `runtime`.)
The command line (cli.py) hands `setup` to the runtime's manager, which never imports this.
"""

from __future__ import annotations

from dittofs_controller.kube.resources import DITTOSERVERS, PODS, SECRETS
from dittofs_controller.operator import (
    config,
    database,
    network,
    serverconfig,
    storage,
    workload,
)
from dittofs_controller.operator.base import Context, server_controller
from dittofs_controller.operator.children import POD_SELECTOR
from dittofs_controller.operator.events import EventRecorder
from dittofs_controller.operator.references import BY_SECRET, SecretReader, secret_index
from dittofs_controller.operator.summary import SummaryReconciler
from dittofs_controller.runtime.manager import Manager


def setup(manager: Manager) -> None:
    """Register the DittoServer caches and controllers on `manager`."""
    servers = manager.cache(DITTOSERVERS)
    servers.add_index(BY_SECRET, secret_index)
    secrets = manager.cache(SECRETS, metadata_only=True)
    ctx = Context(
        client=manager.client,
        servers=servers,
        secrets=secrets,
        pods=manager.cache(PODS, POD_SELECTOR),
        secret_values=SecretReader(manager.client, secrets),
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
