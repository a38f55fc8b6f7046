"""The storage concern: the DittoServer's PersistentVolumeClaims (see reconciler.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dittofs_controller.kube.resources import DITTOSERVERS, PVCS
from dittofs_controller.operator.base import Context, owned_children, server_controller
from dittofs_controller.operator.storage.reconciler import StorageReconciler

if TYPE_CHECKING:
    from dittofs_controller.runtime.manager import Manager


def setup(manager: Manager, ctx: Context) -> None:
    """Register the storage controller; claim changes (edited, deleted, Bound, resized)
    re-trigger the owning DittoServer."""
    claims = owned_children(manager, PVCS)
    controller = server_controller(manager, StorageReconciler(ctx, claims))
    controller.owns(claims, DITTOSERVERS)
