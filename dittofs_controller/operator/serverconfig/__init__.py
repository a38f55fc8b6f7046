"""The serverconfig concern: DittoFS's stores, shares, adapters, users and groups, declared in the
spec and applied over its REST API (see reconciler.py)."""

from dittofs_controller.operator.serverconfig.reconciler import ServerConfigReconciler, setup

__all__ = ["ServerConfigReconciler", "setup"]
