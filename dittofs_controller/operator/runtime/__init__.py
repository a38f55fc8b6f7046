"""The runtime concern: DittoFS's stores, shares, adapters, users and groups, declared in the
spec and applied over its REST API (see reconciler.py)."""

from dittofs_controller.operator.runtime.reconciler import RuntimeReconciler, setup

__all__ = ["RuntimeReconciler", "setup"]
