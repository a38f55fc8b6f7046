"""The database concern: PostgreSQL through Percona, or an external server (see reconciler.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dittofs_controller.kube.resources import DITTOSERVERS, PERCONA_PG_CLUSTERS
from dittofs_controller.operator.base import Context, server_controller
from dittofs_controller.operator.children import MANAGED_SELECTOR
from dittofs_controller.operator.database.reconciler import (
    BY_PERCONA_SECRET,
    DatabaseReconciler,
    percona_secret_index,
    percona_servers,
    secret_mapper,
)

if TYPE_CHECKING:
    from dittofs_controller.runtime.manager import Manager


def setup(manager: Manager, ctx: Context) -> None:
    """Register the database controller. It is re-triggered by its clusters (status.state), the
    Percona CRD appearing or going, and the Secrets it reads (external, or Percona's user
    Secret, which the metadata-only Secret cache sees without the operator owning it)."""
    clusters = manager.optional_cache(PERCONA_PG_CLUSTERS, MANAGED_SELECTOR)
    ctx.servers.add_index(BY_PERCONA_SECRET, percona_secret_index)
    controller = server_controller(manager, DatabaseReconciler(ctx, clusters))
    controller.owns(clusters, DITTOSERVERS)
    controller.watch(clusters.crd, percona_servers(ctx.servers))
    controller.watch(ctx.secrets, secret_mapper(ctx.servers))
