"""Names and in-pod paths of everything the operator creates for a DittoServer.

The one contract between the sub-reconcilers: the config reconciler renders paths the server
reconciler mounts, the storage reconciler creates claims the server reconciler mounts, and so on.
Pure functions of the DittoServer's name and spec.
"""

from __future__ import annotations

from dittofs_controller.api import v1alpha1


# Object names
def config_map(server: str) -> str:
    return f"{server}-config"


def jwt_secret(server: str) -> str:
    """Generated when spec.controlPlane.jwtSecretRef is not set."""
    return f"{server}-jwt"


def admin_secret(server: str) -> str:
    """Generated when spec.controlPlane.adminPasswordSecretRef is not set."""
    return f"{server}-admin"


def encryption_key_secret(server: str) -> str:
    """Generated when a remote store is encrypted and spec.encryptionKey is not set."""
    return f"{server}-encryption-key"


def digest_key_secret(server: str) -> str:
    """Always generated: the HMAC key of the credential digests in status.server.applied."""
    return f"{server}-digest-key"


GENERATED_JWT_KEY = "secret"
GENERATED_ADMIN_KEY = "password"
GENERATED_DIGEST_KEY = "key"


def controlplane_claim(server: str) -> str:
    return f"{server}-controlplane"


def metadata_claim(server: str, store: str) -> str:
    return f"{server}-meta-{store}"


def blocks_claim(server: str, store: str) -> str:
    return f"{server}-blocks-{store}"


def statefulset(server: str) -> str:
    return server


def pod(server: str) -> str:
    """The StatefulSet's only pod (DittoFS runs one replica at most)."""
    return f"{statefulset(server)}-0"


def service(server: str, purpose: str) -> str:
    """purpose: nfs, smb or api."""
    return f"{server}-{purpose}"


def ingress(server: str) -> str:
    return f"{server}-api"


def ingress_tls_secret(server: str) -> str:
    """The Ingress' TLS Secret when spec.expose.ingress.tlsSecretName is not set (cert-manager
    fills it from the issuer)."""
    return f"{server}-api-tls"


def network_policy(server: str, purpose: str) -> str:
    """purpose: api or files."""
    return f"{server}-{purpose}"


def service_monitor(server: str) -> str:
    """The Prometheus Operator ServiceMonitor of the metrics port."""
    return f"{server}-metrics"


def percona_cluster(server: str, spec: v1alpha1.DittoServerSpec) -> str:
    """The PerconaPGCluster's name: the spec's override, else `<server>-pg` cut to 22 chars."""
    percona = spec.postgres.percona if spec.postgres else None
    if percona and percona.cluster_name:
        return percona.cluster_name
    return f"{server[: v1alpha1.PERCONA_CLUSTER_NAME_MAX - 3].rstrip('-')}-pg"


PERCONA_USER = "dittofs"
PERCONA_CONTROLPLANE_DATABASE = "dittofs"


def percona_user_secret(cluster: str) -> str:
    """The Secret the Percona operator writes for PERCONA_USER (keys host, port, user, ...)."""
    return f"{cluster}-pguser-{PERCONA_USER}"


def percona_ca_secret(cluster: str) -> str:
    """The Secret holding the root CA the Percona operator (2.5+) makes for each cluster."""
    return f"{cluster}-cluster-ca-cert"


PERCONA_CA_KEY = "root.crt"


def metadata_database(store: v1alpha1.MetadataStore) -> str:
    """The PostgreSQL database of a postgres metadata store: its override or `dittofs_<name>`."""
    if store.postgres and store.postgres.database:
        return store.postgres.database
    return f"dittofs_{store.name.replace('-', '_')}"


# Paths inside the DittoFS container
CONFIG_DIR = "/config"
CONFIG_KEY = "config.yaml"
CONFIG_FILE = f"{CONFIG_DIR}/{CONFIG_KEY}"
CONTROLPLANE_DIR = "/data/controlplane"
SQLITE_PATH = f"{CONTROLPLANE_DIR}/controlplane.db"
TLS_DIR = "/tls"
CLIENT_CA_DIR = "/tls-client-ca"
ENCRYPTION_DIR = "/encryption"
ENCRYPTION_PASSPHRASE_KEY = "passphrase"
ENCRYPTION_KEY_FILE_KEY = "key.pem"
NFS_TLS_DIR = "/nfs-tls"
POSTGRES_CA_DIR = "/postgres-ca"
LDAP_CA_DIR = "/ldap-ca"
KERBEROS_DIR = "/kerberos"
KEYTAB_FILE = "krb5.keytab"
KRB5_CONF_DIR = "/kerberos-conf"
KRB5_CONF_FILE = "krb5.conf"


def metadata_dir(store: str) -> str:
    return f"/data/metadata/{store}"


def blocks_dir(store: str) -> str:
    return f"/data/blocks/{store}"


# Annotation on the ConfigMap (written by config) copied onto the pod template (by server): it
# changes only when something the server reads at start changed, so only that restarts the pod.
RESTART_HASH_ANNOTATION = "dittofs.io/restart-hash"
# On the StatefulSet (not its template): a hash of the pod template it was applied with, so the
# operator knows before applying a change whether it restarts the pod (and drains uploads first).
TEMPLATE_HASH_ANNOTATION = "dittofs.io/pod-template-hash"
# The stores revision (status.server.storesRevision) the pod was started for: DittoFS opens
# a store when it starts, so a store changed over its API needs a new pod.
STORES_REVISION_ANNOTATION = "dittofs.io/stores-revision"
