"""Real local test components: a Kubernetes control plane and the binaries it runs.

See /work/shared/notes/testbed.md for why these are real processes instead of fakes, and
build-binaries.sh for how the binaries are built from the Go module proxy.
"""

from . import binaries, pki
from .binaries import BinaryBuildError, ensure
from .controlplane import Cluster, ControlPlane, ControlPlaneError, ExternalCluster

__all__ = [
    "BinaryBuildError",
    "Cluster",
    "ControlPlane",
    "ControlPlaneError",
    "ExternalCluster",
    "binaries",
    "ensure",
    "pki",
]
