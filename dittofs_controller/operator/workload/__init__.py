"""The server concern: the StatefulSet that runs DittoFS (Available, Progressing)."""

from dittofs_controller.operator.workload.reconciler import WorkloadReconciler, setup

__all__ = ["WorkloadReconciler", "setup"]
