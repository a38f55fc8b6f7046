"""The config concern: the DittoFS config file (ConfigMap) and the generated Secrets."""

from dittofs_controller.operator.config.reconciler import ConfigReconciler, setup

__all__ = ["ConfigReconciler", "setup"]
