"""DittoFS itself, as the operator talks to it: the REST client of its control plane."""

from dittofs_controller.dittofs.client import (
    AuthenticationFailed,
    ClientCertificate,
    DittoFSClient,
    DittoFSError,
    DittoFSUnreachable,
    Tokens,
    pinned_ssl_context,
)

__all__ = [
    "AuthenticationFailed",
    "ClientCertificate",
    "DittoFSClient",
    "DittoFSError",
    "DittoFSUnreachable",
    "Tokens",
    "pinned_ssl_context",
]
