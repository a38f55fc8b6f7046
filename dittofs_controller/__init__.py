"""Kubernetes operator for the DittoFS NFS/SMB file server."""

__version__ = "0.1.0"
