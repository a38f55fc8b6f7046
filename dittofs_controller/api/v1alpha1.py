"""The DittoServer API, version v1alpha1: the single source of truth for the CRD and the model.

`python -m dittofs_controller.api.crd` turns these classes into the CRD; the operator parses
DittoServer objects into them with `schema.parse`. Descriptions are what `kubectl explain`
shows, so they say what a field does and why, for people who never read this code.

Bounds (maxItems, maxLength) matter beyond input hygiene: the API server estimates the worst-case
cost of every CEL rule from them and rejects the CRD when a rule could exceed its budget.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from dittofs_controller.api.schema import JSON, Rule, field, model

GROUP = "dittofs.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "DittoServer"

DEFAULT_IMAGE = "marmos91c/dittofs:v0.29.0"
DEFAULT_PERCONA_CR_VERSION = "2.8.2"
DEFAULT_PERCONA_IMAGE = "percona/percona-distribution-postgresql:17.7-2"
# DittoFS creates these groups, with these GIDs, at its first boot.
BUILTIN_GROUP_GIDS = {"admins": 0, "operators": 999, "users": 1000}
BUILTIN_GROUPS = tuple(BUILTIN_GROUP_GIDS)
PERCONA_CLUSTER_NAME_MAX = 22

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_KEY = r"^[-._a-zA-Z0-9]+$"
ACCOUNT_NAME = r"^[A-Za-z_][A-Za-z0-9_.-]*$"
# One lowercase path segment: SMB clients ask for \\server\<name>, which DittoFS lower-cases and
# takes as a single segment, and the REST API addresses a share as /shares/<name>.
SHARE_NAME = r"^/[a-z0-9][a-z0-9._-]*$"
# A Go duration of whole hours, minutes and seconds (DittoFS parses intervals and TTLs with
# Go's time.ParseDuration); sub-second units are left out on purpose.
DURATION = r"^([0-9]+(h|m|s))+$"
SNAPSHOT_INTERVAL = r"^(@hourly|@daily|@weekly|([0-9]+(h|m|s))+)$"
# A size in bytes as a Kubernetes quantity: a whole number with an optional binary or decimal
# suffix. No fractions, milli units or exponents, so it is a whole number of bytes (and CEL's
# quantity library cannot tell whether "1.5Ti" is one).
BYTE_QUANTITY = r"^[0-9]+(k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"
HOSTNAME = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
PROMETHEUS_DURATION = r"^(0|(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
S3_BUCKET = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
HTTP_ENDPOINT = r"^https?://[^/\s?#]+/?$"
POSTGRES_IDENTIFIER = r"^[a-z_][a-z0-9_]*$"
SEMVER = r"^[0-9]+\.[0-9]+\.[0-9]+$"

STORE_NAME_MAX = 32
MAX_UPLOAD_DRAIN_TIMEOUT = 3600
ACCOUNT_NAME_MAX = 32
SHARE_NAME_MAX = 64

AccessMode = Literal["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"]
PermissionLevel = Literal["none", "read", "read-write", "admin"]
ServiceType = Literal["LoadBalancer", "NodePort", "ClusterIP"]


def _port(description: str, default: int) -> int:
    """An unprivileged container port: DittoFS runs as a non-root user (UID 65532)."""
    result: int = field(description, default=default, minimum=1024, maximum=65535)
    return result


def _size(default: str) -> str:
    """A PVC size; the default differs per use, the rules do not."""
    result: str = field(
        f"Requested capacity, a Kubernetes quantity such as {default}. It may be increased "
        "later (the PersistentVolumeClaim is expanded, which needs a StorageClass with "
        "allowVolumeExpansion) but never decreased.",
        default=default,
        max_length=32,
        rules=(
            Rule(
                "isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))",
                "size must be a positive Kubernetes quantity such as 10Gi",
            ),
            Rule(
                "!isQuantity(self) || !isQuantity(oldSelf) || "
                "quantity(self).compareTo(quantity(oldSelf)) >= 0",
                "storage size cannot shrink: PersistentVolumeClaims can only grow",
            ),
        ),
    )
    return result


def _bytes(description: str, name: str) -> str | None:
    """An optional size in bytes; DittoFS keeps it in a signed 64-bit integer."""
    result: str | None = field(
        description,
        default=None,
        pattern=BYTE_QUANTITY,
        max_length=32,
        rules=(
            Rule(
                "isQuantity(self) && quantity(self).isGreaterThan(quantity('0')) && "
                "quantity(self).compareTo(quantity('1Ei')) <= 0",
                f"{name} must be from 1 byte to 1Ei, such as 10Gi or 500M",
            ),
        ),
    )
    return result


# --- shared building blocks -----------------------------------------------------------------


@model
class SecretKeySelector:
    """One key of a Secret in the DittoServer's namespace."""

    name: str = field(
        "Name of the Secret, in the DittoServer's namespace.",
        pattern=DNS_SUBDOMAIN,
        max_length=253,
    )
    key: str = field("Key inside the Secret.", pattern=SECRET_KEY, max_length=253)


@model
class LocalObjectReference:
    """A reference to an object by name, in the same namespace."""

    name: str = field("Name of the referenced object.", pattern=DNS_SUBDOMAIN, max_length=253)


@model
class Storage:
    """A PersistentVolumeClaim the operator creates; it may grow but never shrink."""

    __cel__: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "!has(oldSelf.storageClassName) || (has(self.storageClassName) && "
            "self.storageClassName == oldSelf.storageClassName)",
            "storageClassName is immutable once set: a PersistentVolumeClaim cannot change "
            "its storage class",
            field_path=".storageClassName",
        ),
    )

    size: str = _size("10Gi")
    storage_class_name: str | None = field(
        "StorageClass of the PersistentVolumeClaim; omit to use the cluster's default class. "
        "Immutable once set; setting it later only affects volumes not created yet.",
        default=None,
        pattern=DNS_SUBDOMAIN,
        max_length=253,
    )
    access_modes: list[AccessMode] = field(
        "Access modes of the PersistentVolumeClaim. DittoFS runs a single pod, so "
        "ReadWriteOnce is enough.",
        factory=lambda: ["ReadWriteOnce"],
        min_items=1,
        max_items=4,
        unique=True,
    )


@model
class ControlPlaneStorage(Storage):
    """Storage of the control-plane SQLite database: small, so it defaults to 1Gi."""

    size: str = _size("1Gi")


# --- pod ------------------------------------------------------------------------------------

# Why every security rule below exists: the operator creates the pod with its own rights, so
# anything a DittoServer could loosen here would let its editors run pods they may not create
# themselves. The fields are typed (not free-form) so that CEL can see them; each rule holds
# the pod to the restricted Pod Security Standard.
RESTRICTED = "the restricted Pod Security Standard forbids it"
# Namespaced sysctls the baseline and restricted standards allow (Kubernetes 1.29+).
SAFE_SYSCTLS = (
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
)
SELINUX_TYPES = ("container_t", "container_init_t", "container_kvm_t", "container_engine_t")
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"


def _profile_rules(kind: str) -> tuple[Rule, ...]:
    """Seccomp and AppArmor profiles: Localhost needs a profile name, Unconfined is refused."""
    return (
        Rule(
            "self.type != 'Unconfined'",
            f"{kind} type Unconfined is not allowed: {RESTRICTED}, and an unconfined DittoFS "
            "process could use every system call; use RuntimeDefault or a Localhost profile",
            field_path=".type",
        ),
        Rule(
            "(self.type == 'Localhost') == has(self.localhostProfile)",
            f"{kind} localhostProfile is required when type is Localhost, and only then",
            field_path=".localhostProfile",
        ),
    )


@model
class SeccompProfile:
    """The seccomp profile (core/v1 SeccompProfile); Unconfined is refused."""

    __cel__: ClassVar[tuple[Rule, ...]] = _profile_rules("seccompProfile")

    type: Literal["RuntimeDefault", "Localhost", "Unconfined"] = field(
        "RuntimeDefault (the container runtime's profile) or Localhost (a profile file on the "
        "node, named by localhostProfile). Unconfined is refused."
    )
    localhost_profile: str | None = field(
        "Path of the profile, relative to the kubelet's seccomp directory; only for Localhost.",
        default=None,
        max_length=4096,
    )


@model
class AppArmorProfile:
    """The AppArmor profile (core/v1 AppArmorProfile); Unconfined is refused."""

    __cel__: ClassVar[tuple[Rule, ...]] = _profile_rules("appArmorProfile")

    type: Literal["RuntimeDefault", "Localhost", "Unconfined"] = field(
        "RuntimeDefault (the container runtime's profile) or Localhost (a profile loaded on "
        "the node, named by localhostProfile). Unconfined is refused."
    )
    localhost_profile: str | None = field(
        "Name of the profile loaded on the node; only for Localhost.",
        default=None,
        max_length=4096,
    )


@model
class SELinuxOptions:
    """SELinux labels (core/v1 SELinuxOptions without user and role, which the standard forbids)."""

    type: str | None = field(
        "SELinux type; one of the container types the Pod Security Standards allow.",
        default=None,
        max_length=253,
        rules=(
            Rule(
                "self in " + repr(list(SELINUX_TYPES)),
                f"seLinuxOptions.type must be one of {', '.join(SELINUX_TYPES)}: {RESTRICTED} "
                "to use any other type, which could escape the container's confinement",
            ),
        ),
    )
    level: str | None = field(
        "SELinux level (MCS label), e.g. s0:c123,c456.", default=None, max_length=253
    )


@model
class Sysctl:
    """One namespaced kernel parameter (core/v1 Sysctl); only the safe set is allowed."""

    name: str = field(
        f"Name of the parameter; one of {', '.join(SAFE_SYSCTLS)}.",
        max_length=253,
        rules=(
            Rule(
                "self in " + repr(list(SAFE_SYSCTLS)),
                "only safe sysctls are allowed (" + ", ".join(SAFE_SYSCTLS) + "): "
                f"{RESTRICTED} to set others, which can affect the whole node",
            ),
        ),
    )
    value: str = field("Value of the parameter.", max_length=1024)


def _run_as_user(description: str) -> int | None:
    """runAsUser at either level: never root."""
    result: int | None = field(
        description,
        default=None,
        rules=(
            Rule(
                "self != 0",
                f"runAsUser 0 (root) is not allowed: {RESTRICTED}; use a non-zero UID, or omit "
                "it to run as the image's user 65532",
            ),
        ),
    )
    return result


def _run_as_non_root() -> bool | None:
    """runAsNonRoot at either level: it may only be confirmed."""
    result: bool | None = field(
        "Must be true if set: the container must not run as root.",
        default=None,
        rules=(
            Rule(
                "self",
                f"runAsNonRoot false is not allowed: {RESTRICTED}; omit it (the pod runs as "
                "non-root user 65532) or set it to true",
            ),
        ),
    )
    return result


@model
class PodSecurityContext:
    """The pod's security context: the core/v1 PodSecurityContext fields that cannot escalate."""

    run_as_user: int | None = _run_as_user("UID of the pod's processes; default 65532.")
    run_as_group: int | None = field(
        "Primary GID of the pod's processes; default 65532.", default=None, minimum=0
    )
    run_as_non_root: bool | None = _run_as_non_root()
    fs_group: int | None = field(
        "GID that owns the pod's volumes; default 65532.", default=None, minimum=0
    )
    fs_group_change_policy: Literal["OnRootMismatch", "Always"] | None = field(
        "When volume ownership is changed to fsGroup; default OnRootMismatch, which skips the "
        "recursive chown of large volumes whose root already fits.",
        default=None,
    )
    supplemental_groups: list[int] = field(
        "Extra GIDs of the pod's processes.", factory=list, max_items=32, minimum=0
    )
    seccomp_profile: SeccompProfile | None = field(
        "Seccomp profile of the pod; default RuntimeDefault.", default=None
    )
    app_armor_profile: AppArmorProfile | None = field(
        "AppArmor profile of the pod; default the runtime's.", default=None
    )
    se_linux_options: SELinuxOptions | None = field(
        "SELinux labels of the pod's containers.", default=None
    )
    sysctls: list[Sysctl] = field(
        "Namespaced kernel parameters of the pod; only the safe set is allowed.",
        factory=list,
        max_items=16,
    )


@model
class Capabilities:
    """Linux capabilities of the DittoFS container: they may only be dropped."""

    __cel__: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "has(self.drop) && self.drop.exists(c, c == 'ALL')",
            "capabilities.drop must include ALL: the restricted Pod Security Standard "
            "requires every capability dropped, and DittoFS needs none",
            field_path=".drop",
        ),
    )

    add: list[str] = field(
        "Refused: DittoFS needs no capability, and adding one weakens the container.",
        factory=list,
        max_items=64,
        max_length=64,
        rules=(
            Rule(
                "size(self) == 0",
                "adding capabilities is not allowed: a DittoServer may only drop them, because "
                "the operator would grant them with its own rights; remove capabilities.add",
            ),
        ),
    )
    drop: list[str] = field(
        "Capabilities to drop; must include ALL.", factory=list, max_items=64, max_length=64
    )


@model
class ContainerSecurityContext:
    """The DittoFS container's security context: the core/v1 SecurityContext fields, refused
    where they would make the container less safe than the restricted standard."""

    privileged: bool | None = field(
        "Refused when true: a privileged container has full access to the node.",
        default=None,
        rules=(
            Rule(
                "!self",
                "privileged containers are not allowed: a privileged container controls the "
                "node, and the operator would create it with its own rights; remove privileged",
            ),
        ),
    )
    allow_privilege_escalation: bool | None = field(
        "Must be false if set (the default): no process may gain more privileges than its parent.",
        default=None,
        rules=(
            Rule(
                "!self",
                f"allowPrivilegeEscalation true is not allowed: {RESTRICTED}, so setuid "
                "binaries cannot gain root; remove it or set it to false",
            ),
        ),
    )
    capabilities: Capabilities | None = field(
        "Capabilities to drop; default drop ALL. Adding any is refused.", default=None
    )
    run_as_user: int | None = _run_as_user("UID of the container's processes.")
    run_as_group: int | None = field(
        "Primary GID of the container's processes.", default=None, minimum=0
    )
    run_as_non_root: bool | None = _run_as_non_root()
    read_only_root_filesystem: bool | None = field(
        "Mount the root filesystem read-only; default true.", default=None
    )
    proc_mount: Literal["Default", "Unmasked"] | None = field(
        "How /proc is mounted; only Default is allowed.",
        default=None,
        rules=(
            Rule(
                "self == 'Default'",
                f"procMount Unmasked is not allowed: {RESTRICTED}, since an unmasked /proc "
                "exposes the node's kernel interfaces; remove procMount",
            ),
        ),
    )
    seccomp_profile: SeccompProfile | None = field(
        "Seccomp profile of the container; default the pod's.", default=None
    )
    app_armor_profile: AppArmorProfile | None = field(
        "AppArmor profile of the container; default the pod's.", default=None
    )
    se_linux_options: SELinuxOptions | None = field(
        "SELinux labels of the container.", default=None
    )


@model
class Resources:
    """Compute resources of the DittoFS container (core/v1 ResourceRequirements, without claims)."""

    limits: dict[str, int | str] = field(
        "Maximum resources, e.g. {cpu: '2', memory: 4Gi}. Set a memory limit deliberately: "
        "DittoFS sizes its caches from the container's memory limit.",
        factory=dict,
    )
    requests: dict[str, int | str] = field(
        "Minimum resources the scheduler reserves, e.g. {cpu: 500m, memory: 1Gi}.",
        factory=dict,
    )


@model
class PodOptions:
    """How the DittoFS pod is labelled, scheduled and run."""

    labels: dict[str, str] = field("Extra labels for the DittoFS pod.", factory=dict)
    annotations: dict[str, str] = field(
        "Extra annotations for the DittoFS pod. An AppArmor annotation may only name "
        "runtime/default or a localhost/ profile.",
        factory=dict,
        rules=(
            Rule(
                f"self.all(k, !k.startsWith('{APPARMOR_ANNOTATION}') || "
                "self[k] == 'runtime/default' || self[k].startsWith('localhost/'))",
                f"an AppArmor annotation ({APPARMOR_ANNOTATION}<container>) must be "
                f"runtime/default or localhost/<profile>: {RESTRICTED} to run unconfined; use "
                "spec.pod.securityContext.appArmorProfile instead",
            ),
        ),
    )
    node_selector: dict[str, str] = field(
        "Node labels the pod must match (core/v1 PodSpec.nodeSelector).", factory=dict
    )
    tolerations: list[JSON] = field(
        "Tolerations of the pod; each entry is a core/v1 Toleration "
        "(see `kubectl explain pod.spec.tolerations`).",
        factory=list,
    )
    affinity: JSON | None = field(
        "Scheduling affinity of the pod, a core/v1 Affinity "
        "(see `kubectl explain pod.spec.affinity`).",
        default=None,
    )
    topology_spread_constraints: list[JSON] = field(
        "Topology spread constraints of the pod; each entry is a core/v1 "
        "TopologySpreadConstraint (see `kubectl explain pod.spec.topologySpreadConstraints`).",
        factory=list,
    )
    priority_class_name: str | None = field(
        "PriorityClass of the pod.", default=None, pattern=DNS_SUBDOMAIN, max_length=253
    )
    service_account_name: str | None = field(
        "ServiceAccount the pod runs as; omit to use the namespace's `default` account. "
        "Either way its token is not mounted: DittoFS does not call the Kubernetes API.",
        default=None,
        pattern=DNS_SUBDOMAIN,
        max_length=253,
    )
    resources: Resources = field(
        "CPU and memory requests and limits of the DittoFS container.", factory=Resources
    )
    env: list[JSON] = field(
        "Extra environment variables of the DittoFS container; each entry is a core/v1 EnvVar "
        "(see `kubectl explain pod.spec.containers.env`). Every DittoFS config key can be set "
        "as DITTOFS_<UPPER_DOTTED_PATH>; these override what the operator sets.",
        factory=list,
    )
    security_context: PodSecurityContext | None = field(
        "Overrides fields of the pod's security context. The default runs as the image's "
        "non-root user 65532 under the restricted Pod Security Standard, and no field may "
        "loosen it.",
        default=None,
    )
    container_security_context: ContainerSecurityContext | None = field(
        "Overrides fields of the DittoFS container's security context. The default drops all "
        "capabilities, forbids privilege escalation and mounts the root filesystem read-only; "
        "no field may loosen the restricted Pod Security Standard.",
        default=None,
    )


# --- control plane --------------------------------------------------------------------------


@model
class ClientCA:
    """The CA bundle DittoFS verifies client certificates against (mutual TLS)."""

    secret_name: str = field(
        "Name of a Secret in the DittoServer's namespace holding PEM CA certificates; "
        "a cert-manager CA Issuer's Secret or any Certificate's Secret carries ca.crt.",
        pattern=DNS_SUBDOMAIN,
        max_length=253,
    )
    key: str = field(
        "Key of the PEM bundle inside the Secret.",
        default="ca.crt",
        pattern=SECRET_KEY,
        max_length=253,
    )


@model
class OperatorCertificate:
    """The client certificate the operator presents to a REST API that requires one."""

    secret_name: str = field(
        "Name of a kubernetes.io/tls Secret (keys tls.crt and tls.key) in the DittoServer's "
        "namespace, issued by a CA of clientCA for client authentication (a cert-manager "
        "Certificate with usage `client auth` writes one). A renewed certificate is used from "
        "the operator's next call on.",
        pattern=DNS_SUBDOMAIN,
        max_length=253,
    )


@model
class TLS:
    """TLS for the DittoFS REST API, optionally with client certificates (mutual TLS)."""

    __cel__: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "has(self.clientCA) == has(self.operatorCertificate)",
            "controlPlane.tls.clientCA and controlPlane.tls.operatorCertificate go together: "
            "with clientCA DittoFS refuses every client without a certificate of that CA, the "
            "operator included, so it needs operatorCertificate to keep managing the server",
        ),
    )

    secret_name: str = field(
        "Name of a kubernetes.io/tls Secret (keys tls.crt and tls.key) in the DittoServer's "
        "namespace; DittoFS serves its REST API over HTTPS with it. Client certificates are "
        "required only with clientCA.",
        pattern=DNS_SUBDOMAIN,
        max_length=253,
    )
    client_ca: ClientCA | None = field(
        "Require and verify client certificates signed by a CA of this bundle on the REST API "
        "(mutual TLS); DittoFS reads the bundle when it starts, so a changed bundle restarts "
        "the pod. Requires operatorCertificate, and no expose.ingress.",
        default=None,
        wire_name="clientCA",
    )
    operator_certificate: OperatorCertificate | None = field(
        "The client certificate the operator presents when clientCA is set.", default=None
    )
    min_version: Literal["1.2", "1.3"] | None = field(
        "Lowest TLS version the REST API accepts; omit for DittoFS' default of 1.2.",
        default=None,
    )


@model
class ServiceMonitor:
    """A Prometheus Operator ServiceMonitor for the metrics endpoint."""

    enabled: bool = field(
        "Create a monitoring.coreos.com/v1 ServiceMonitor (needs the Prometheus Operator's "
        "CRDs in the cluster).",
        default=False,
    )
    interval: str | None = field(
        "Scrape interval such as 30s; omit to use Prometheus' default.",
        default=None,
        pattern=PROMETHEUS_DURATION,
        max_length=32,
    )
    labels: dict[str, str] = field(
        "Extra labels of the ServiceMonitor, e.g. the one your Prometheus selects on.",
        factory=dict,
    )


@model
class Metrics:
    """The Prometheus metrics endpoint of DittoFS."""

    enabled: bool = field(
        "Serve Prometheus metrics and create a ClusterIP metrics Service.", default=True
    )
    port: int = _port("Container port of the metrics endpoint.", 9090)
    service_monitor: ServiceMonitor = field(
        "Optional Prometheus Operator ServiceMonitor.", factory=ServiceMonitor
    )


@model
class SQLite:
    """The embedded SQLite control-plane database."""

    storage: ControlPlaneStorage = field(
        "Volume holding the SQLite database file.", factory=ControlPlaneStorage
    )


@model
class Database:
    """Where DittoFS keeps its control-plane state (users, stores, shares, adapters)."""

    type: Literal["sqlite", "postgres"] = field(
        "sqlite keeps the state in a file on a volume; postgres uses the PostgreSQL that "
        "spec.postgres describes (required then).",
        default="sqlite",
    )
    sqlite: SQLite = field("Settings for type sqlite; ignored for type postgres.", factory=SQLite)


@model
class ControlPlane:
    """The DittoFS control plane: its REST API, logging, secrets and database."""

    __cel__: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "self.port != self.metrics.port",
            "controlPlane.port and controlPlane.metrics.port must differ",
        ),
    )

    port: int = _port(
        "Container port of the REST API (and its /health endpoints), which the operator uses "
        "to manage the server.",
        8080,
    )
    log_level: Literal["DEBUG", "INFO", "WARN", "ERROR"] = field(
        "Server log level.", default="INFO"
    )
    log_format: Literal["text", "json"] = field(
        "Server log format, written to stdout.", default="json"
    )
    shutdown_timeout: int = field(
        "Seconds DittoFS may spend on each shutdown phase (draining, flushing metadata). The "
        "pod's termination grace period is derived from it: DittoFS may take up to "
        "3 x shutdownTimeout + 5 s to stop.",
        default=30,
        minimum=1,
        maximum=600,
    )
    upload_drain_timeout: int = field(
        "Seconds the operator waits, before it stops the pod (spec.replicas 0, a change that "
        "restarts it, the DittoServer's deletion), for DittoFS to upload what its remote block "
        "stores do not hold yet (POST /api/v1/system/drain-uploads): DittoFS uploads nothing "
        "once it is told to stop. When the time is up or DittoFS cannot be asked, the pod "
        "stops anyway, status.uploadDrain and a Warning Event say how many bytes were not "
        "uploaded, and they wait in the local block store. 0 stops at once. Only servers with "
        "remote block stores wait.",
        default=600,
        minimum=0,
        maximum=MAX_UPLOAD_DRAIN_TIMEOUT,
    )
    jwt_secret_ref: SecretKeySelector | None = field(
        "Secret key holding the JWT signing secret of the REST API (at least 32 characters). "
        "When omitted the operator generates a Secret.",
        default=None,
    )
    admin_password_secret_ref: SecretKeySelector | None = field(
        "Secret key holding the password of DittoFS' built-in `admin` account, which the "
        "operator uses to manage the server. DittoFS reads it at first boot only. When omitted "
        "the operator generates a Secret.",
        default=None,
    )
    tls: TLS | None = field(
        "Serve the REST API over HTTPS. Required to expose the API through a LoadBalancer.",
        default=None,
    )
    metrics: Metrics = field("Prometheus metrics.", factory=Metrics)
    database: Database = field("The control-plane database.", factory=Database)
    snapshot_check_interval: int | None = field(
        "Seconds between DittoFS' looks for due scheduled snapshots (shares[].snapshots); "
        "omit for its default of 60. Lower it only for snapshot intervals under a few minutes.",
        default=None,
        minimum=1,
        maximum=3600,
    )


# --- PostgreSQL -----------------------------------------------------------------------------


@model
class PerconaBackups:
    """pgBackRest backups of the Percona cluster."""

    __cel__: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "!self.enabled || has(self.pgbackrest)",
            "percona.backups.pgbackrest is required when backups are enabled",
            field_path=".pgbackrest",
        ),
    )

    enabled: bool = field(
        "Configure pgBackRest backups. When false the cluster gets `backups: {enabled: false}`.",
        default=False,
    )
    pgbackrest: JSON | None = field(
        "The PerconaPGCluster's spec.backups.pgbackrest (repos, global, manual, image...), "
        "copied as is; see the Percona Operator for PostgreSQL documentation.",
        default=None,
    )


@model
class Percona:
    """A PostgreSQL cluster the operator creates through the Percona Operator for PostgreSQL."""

    __cel__: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "!self.image.matches('percona-distribution-postgresql:[0-9]+[.]') || "
            "int(self.image.split('percona-distribution-postgresql:')[1].split('.')[0]) == "
            "self.postgresVersion",
            "percona.image must be a percona-distribution-postgresql image of postgresVersion: "
            "set image when you change postgresVersion",
            field_path=".image",
        ),
    )

    postgres_version: int = field("Major PostgreSQL version.", default=17, minimum=12, maximum=18)
    cr_version: str = field(
        "crVersion of the PerconaPGCluster; must match the installed Percona operator.",
        default=DEFAULT_PERCONA_CR_VERSION,
        pattern=SEMVER,
        max_length=16,
    )
    image: str = field(
        "PostgreSQL image. The default fits postgresVersion 17; set it together with "
        "postgresVersion.",
        default=DEFAULT_PERCONA_IMAGE,
        max_length=512,
    )
    instances: int = field(
        "Number of PostgreSQL pods (one primary plus replicas).",
        default=1,
        minimum=1,
        maximum=5,
    )
    storage: Storage = field("Data volume of each PostgreSQL pod.", factory=Storage)
    cluster_name: str | None = field(
        "Name of the PerconaPGCluster. Defaults to one derived from the DittoServer's name. "
        f"At most {PERCONA_CLUSTER_NAME_MAX} characters (a Percona limit).",
        default=None,
        pattern=DNS_1035_LABEL,
        max_length=63,
        rules=(
            Rule(
                f"size(self) <= {PERCONA_CLUSTER_NAME_MAX}",
                f"percona.clusterName must be at most {PERCONA_CLUSTER_NAME_MAX} characters "
                "(a Percona Operator limit)",
            ),
        ),
    )
    backups: PerconaBackups = field("Backups of the cluster.", factory=PerconaBackups)


@model
class ExternalPostgres:
    """A PostgreSQL server managed elsewhere, reached with credentials from a Secret."""

    secret_name: str = field(
        "Secret with the connection settings (keys host, port, user, password and dbname "
        "unless renamed below). A Percona `<cluster>-pguser-<user>` Secret fits as is.",
        pattern=DNS_SUBDOMAIN,
        max_length=253,
    )
    host_key: str = field(
        "Secret key holding the host name.", default="host", pattern=SECRET_KEY, max_length=253
    )
    port_key: str = field(
        "Secret key holding the port.", default="port", pattern=SECRET_KEY, max_length=253
    )
    user_key: str = field(
        "Secret key holding the user name.", default="user", pattern=SECRET_KEY, max_length=253
    )
    password_key: str = field(
        "Secret key holding the password.",
        default="password",
        pattern=SECRET_KEY,
        max_length=253,
    )
    database_key: str = field(
        "Secret key holding the database name.",
        default="dbname",
        pattern=SECRET_KEY,
        max_length=253,
    )
    ssl_mode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = field(
        "libpq sslmode of the connection.", default="require"
    )
    ssl_root_cert_secret_ref: SecretKeySelector | None = field(
        "Secret key holding the CA certificate (PEM) that signs the server's certificate, for "
        "sslMode verify-ca and verify-full.",
        default=None,
    )


@model
class Postgres:
    """Where PostgreSQL comes from: exactly one of percona or external."""

    __cel__: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "has(self.percona) != has(self.external)",
            "postgres must set exactly one of percona or external",
        ),
    )

    percona: Percona | None = field(
        "Create a PerconaPGCluster next to the DittoServer (needs the Percona Operator for "
        "PostgreSQL in the cluster).",
        default=None,
    )
    external: ExternalPostgres | None = field("Use an existing PostgreSQL server.", default=None)


# --- stores ---------------------------------------------------------------------------------


@model
class BadgerMetadata:
    """An embedded BadgerDB metadata store on its own volume."""

    storage: Storage = field("Volume holding the Badger database.", factory=Storage)
    block_cache_mb: int | None = field(
        "Badger block cache in MiB; omit (or 0) to size it from the container's memory limit.",
        default=None,
        wire_name="blockCacheMB",
        minimum=0,
        maximum=1048576,
    )
    index_cache_mb: int | None = field(
        "Badger index cache in MiB; omit (or 0) to size it from the container's memory limit.",
        default=None,
        wire_name="indexCacheMB",
        minimum=0,
        maximum=1048576,
    )


@model
class PostgresMetadata:
    """A metadata store in PostgreSQL (from spec.postgres)."""

    database: str | None = field(
        "Database holding this store's tables. Defaults to one derived from the store name.",
        default=None,
        pattern=POSTGRES_IDENTIFIER,
        max_length=63,
    )


@model
class MetadataStore:
    """A metadata store: where the file system tree, attributes and block maps live."""

    __cel__: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "!has(self.badger) || self.type == 'badger'",
            "metadataStores[].badger is only allowed when type is badger",
            field_path=".badger",
        ),
        Rule(
            "!has(self.postgres) || self.type == 'postgres'",
            "metadataStores[].postgres is only allowed when type is postgres",
            field_path=".postgres",
        ),
        Rule(
            "self.type == oldSelf.type",
            "metadataStores[].type is immutable: add a new store instead",
            field_path=".type",
        ),
    )

    name: str = field(
        "Name of the metadata store, unique in its list; shares refer to it by this name. "
        "A DNS-1123 label (lowercase letters, digits and '-').",
        pattern=DNS_LABEL,
        max_length=STORE_NAME_MAX,
    )
    type: Literal["memory", "badger", "postgres"] = field(
        "memory loses everything on restart (tests only); badger is an embedded database on a "
        "volume; postgres uses spec.postgres (required then)."
    )
    badger: BadgerMetadata | None = field(
        "Settings for type badger (defaults apply when omitted).", default=None
    )
    postgres: PostgresMetadata | None = field(
        "Settings for type postgres (defaults apply when omitted).", default=None
    )


@model
class FilesystemBlocks:
    """A local block store on a volume."""

    storage: Storage = field("Volume holding the blocks.", factory=Storage)


@model
class LocalBlockStore:
    """A local block store: the on-node cache (or the only copy) of file contents."""

    __cel__: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "!has(self.filesystem) || self.type == 'filesystem'",
            "localBlockStores[].filesystem is only allowed when type is filesystem",
            field_path=".filesystem",
        ),
        Rule(
            "self.type == oldSelf.type",
            "localBlockStores[].type is immutable: add a new store instead",
            field_path=".type",
        ),
    )

    name: str = field(
        "Name of the local block store, unique in its list; shares refer to it by this name. "
        "A DNS-1123 label (lowercase letters, digits and '-').",
        pattern=DNS_LABEL,
        max_length=STORE_NAME_MAX,
    )
    type: Literal["memory", "filesystem"] = field(
        "memory loses everything on restart (tests only); filesystem keeps blocks on a volume."
    )
    filesystem: FilesystemBlocks | None = field(
        "Settings for type filesystem (defaults apply when omitted).", default=None
    )


@model
class S3Credentials:
    """Static S3 access keys (DittoFS has no IAM/IRSA credential chain)."""

    name: str = field(
        "Name of the Secret holding the access keys.", pattern=DNS_SUBDOMAIN, max_length=253
    )
    access_key_id_key: str = field(
        "Secret key holding the access key ID.",
        default="accessKeyId",
        pattern=SECRET_KEY,
        max_length=253,
    )
    secret_access_key_key: str = field(
        "Secret key holding the secret access key.",
        default="secretAccessKey",
        pattern=SECRET_KEY,
        max_length=253,
    )


@model
class S3:
    """An S3-compatible bucket. The defaults point at Cubbit DS3."""

    endpoint: str = field(
        "S3 endpoint URL (scheme and host, no path).",
        default="https://s3.cubbit.eu",
        pattern=HTTP_ENDPOINT,
        max_length=253,
    )
    region: str = field("S3 region.", default="eu-west-1", pattern=r"^[a-z0-9-]+$", max_length=63)
    bucket: str = field("Bucket name.", pattern=S3_BUCKET, max_length=63)
    prefix: str | None = field(
        "Key prefix for every object DittoFS writes, to share a bucket.",
        default=None,
        max_length=512,
    )
    force_path_style: bool = field(
        "Address the bucket as <endpoint>/<bucket> instead of <bucket>.<endpoint>.",
        default=True,
    )
    allow_private_endpoint: bool = field(
        "Allow an endpoint that resolves to a private, loopback or in-cluster address "
        "(DittoFS refuses those by default as an SSRF guard).",
        default=False,
    )
    credentials_secret_ref: S3Credentials = field("Secret holding the S3 access keys.")


@model
class RemoteEncryption:
    """Client-side encryption of the blocks a remote store uploads."""

    aead: Literal["aes-256-gcm", "chacha20-poly1305", "xchacha20-poly1305"] = field(
        "The authenticated cipher sealing each block. Every block gets its own key, wrapped "
        "with the server's master key (spec.encryptionKey).",
        default="aes-256-gcm",
    )


@model
class RemoteBlockStore:
    """A remote block store: durable storage of file contents behind the local cache."""

    __cel__: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "self.type != 's3' || has(self.s3)",
            "remoteBlockStores[].s3 is required when type is s3",
            field_path=".s3",
        ),
        Rule(
            "!has(self.s3) || self.type == 's3'",
            "remoteBlockStores[].s3 is only allowed when type is s3",
            field_path=".s3",
        ),
        Rule(
            "self.type == oldSelf.type",
            "remoteBlockStores[].type is immutable: add a new store instead",
            field_path=".type",
        ),
        Rule(
            "has(self.encryption) == has(oldSelf.encryption) && (!has(self.encryption) || "
            "self.encryption.aead == oldSelf.encryption.aead)",
            "remoteBlockStores[].encryption cannot be added, removed or changed on an existing "
            "store: the objects already in its bucket were written without it or with another "
            "cipher; add a new store instead",
            field_path=".encryption",
        ),
    )

    name: str = field(
        "Name of the remote block store, unique in its list; shares refer to it by this name. "
        "A DNS-1123 label (lowercase letters, digits and '-').",
        pattern=DNS_LABEL,
        max_length=STORE_NAME_MAX,
    )
    type: Literal["s3", "memory"] = field(
        "s3 stores blocks in an S3-compatible bucket; memory is for tests only."
    )
    s3: S3 | None = field("Settings for type s3.", default=None)
    compression: Literal["none", "zstd", "lz4"] = field(
        "Compress blocks before they are uploaded (and encrypted): zstd saves more, lz4 costs "
        "less CPU. Blocks are tagged with how they were written, so changing this affects new "
        "uploads only and old blocks stay readable.",
        default="none",
    )
    encryption: RemoteEncryption | None = field(
        "Encrypt blocks on the server before they leave it, so the bucket's provider never "
        "sees file contents. The master key comes from spec.encryptionKey; lose it and the "
        "bucket's contents are lost. Fixed once the store exists.",
        default=None,
    )


# --- shares ---------------------------------------------------------------------------------


@model
class SharePermission:
    """A permission on a share, for one user or one group."""

    __cel__: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "has(self.user) != has(self.group)",
            "a share permission names exactly one of user or group",
        ),
    )

    user: str | None = field(
        "A user of spec.users.", default=None, pattern=ACCOUNT_NAME, max_length=ACCOUNT_NAME_MAX
    )
    group: str | None = field(
        "A group of spec.groups, or one of the built-in groups admins, operators, users.",
        default=None,
        pattern=ACCOUNT_NAME,
        max_length=ACCOUNT_NAME_MAX,
    )
    level: PermissionLevel = field("The access granted.")


@model
class ShareNFS:
    """NFS export options of a share."""

    squash: Literal["none", "root_to_admin", "root_to_guest", "all_to_admin", "all_to_guest"] = (
        field(
            "Identity mapping: none passes UIDs through; root_to_admin keeps root's rights "
            "(no_root_squash); root_to_guest maps root to the anonymous identity (root_squash, "
            "the DittoFS default); all_to_admin maps everyone to root; all_to_guest maps "
            "everyone to the anonymous identity (all_squash).",
            default="root_to_guest",
        )
    )
    anon_uid: int | None = field(
        "UID of the anonymous identity; omit for the server default (65534).",
        default=None,
        minimum=0,
        maximum=4294967295,
    )
    anon_gid: int | None = field(
        "GID of the anonymous identity; omit for the server default (65534).",
        default=None,
        minimum=0,
        maximum=4294967295,
    )
    netgroup: str | None = field(
        "Admit only clients in this entry of adapters.nfs.netgroups; omit to admit every "
        "client the NFS Service lets through. The server sees the client's address only when "
        "the Service keeps it (externalTrafficPolicy Local, docs/exposing.md).",
        default=None,
        pattern=DNS_LABEL,
        max_length=63,
    )


@model
class ShareSMB:
    """SMB behaviour of a share."""

    encrypt_data: bool = field(
        "Demand SMB 3 encryption on this share: clients that do not encrypt are refused. "
        "adapters.smb.encryption required demands it on every share.",
        default=False,
    )
    access_based_enumeration: bool = field(
        "List only the files and folders the user may open.", default=False
    )
    change_notify: bool = field(
        "Tell clients when a directory changes (Windows Explorer refreshes by it); false "
        "saves work on busy shares.",
        default=True,
    )
    alternate_data_streams: bool = field(
        "Keep NTFS alternate data streams (Zone.Identifier and others) that Windows writes.",
        default=True,
    )
    continuous_availability: bool = field(
        "Persistent handles: a client's open files survive its reconnection.", default=False
    )
    mf_symlinks: bool = field(
        "Turn the Minshall-French symlink files macOS and Linux clients write into real "
        "symbolic links.",
        default=False,
    )


@model
class ShareTrash:
    """A recycle bin: deleted files are kept for a while instead of removed at once."""

    enabled: bool = field("Keep deleted files in the share's trash.", default=True)
    retention_days: int | None = field(
        "Days a deleted file stays in the trash; omit to keep it until the trash is full.",
        default=None,
        minimum=1,
        maximum=3650,
    )
    restrict_to_admin: bool = field("Only admins may see and restore the trash.", default=False)
    max_size: str | None = field(
        "Most the trash may hold (oldest files go first); omit for no limit.",
        default=None,
        pattern=BYTE_QUANTITY,
        max_length=32,
    )
    exclude_patterns: list[str] = field(
        "Glob patterns of files deleted for good (e.g. *.tmp).",
        factory=list,
        max_items=32,
        max_length=256,
    )


@model
class ShareLocalCache:
    """How the share uses its local block store when a remote one holds its contents."""

    __cel__: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "(self.retention == 'ttl') == has(self.ttl)",
            "localCache.ttl is required with retention ttl, and only with it",
            field_path=".ttl",
        ),
    )

    retention: Literal["lru", "pin", "ttl"] = field(
        "lru evicts the least recently used blocks when space is needed; pin keeps every "
        "block locally; ttl evicts blocks older than ttl.",
        default="lru",
    )
    ttl: str | None = field(
        "Age after which blocks are evicted, with retention ttl.",
        default=None,
        pattern=DURATION,
        max_length=32,
    )
    size: str | None = field(
        "Most this share keeps on its local block store; omit for tuning.localTier."
        "remoteCacheSize (shares with a remote store) or DittoFS' own choice.",
        default=None,
        pattern=BYTE_QUANTITY,
        max_length=32,
    )
    read_buffer_size: str | None = field(
        "Memory for blocks read ahead from the remote store; omit for DittoFS' choice.",
        default=None,
        pattern=BYTE_QUANTITY,
        max_length=32,
    )


def _byte_size(description: str) -> str | None:
    """An optional amount of bytes (memory or disk) as a Kubernetes quantity."""
    result: str | None = field(
        description,
        default=None,
        pattern=BYTE_QUANTITY,
        max_length=32,
        rules=(
            Rule(
                "quantity(self).isGreaterThan(quantity('0'))",
                "must be a positive amount of bytes such as 10Gi",
            ),
        ),
    )
    return result


@model
class GarbageCollection:
    """Reclaiming blocks no file refers to any more, in the local and the remote tier."""

    __cel__: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "!has(self.interval) || duration(self.interval) >= duration('1m')",
            "gc.interval must be at least 1m: DittoFS refuses shorter ones to spare the stores",
            field_path=".interval",
        ),
        Rule(
            "!has(self.gracePeriod) || duration(self.gracePeriod) >= duration('5m')",
            "gc.gracePeriod must be at least 5m: a shorter one could reap an upload in flight "
            "when the server's and the bucket's clocks differ",
            field_path=".gracePeriod",
        ),
    )

    automatic: bool = field(
        "Collect in the background; false leaves it to `dfsctl store block gc`.", default=True
    )
    interval: str | None = field(
        "Time between background collections; omit for DittoFS' 15m.",
        default=None,
        pattern=DURATION,
        max_length=32,
    )
    grace_period: str | None = field(
        "Blocks younger than this are never collected, so an upload racing a collection is "
        "kept; omit for DittoFS' 1h (under 10m draws a warning in its log).",
        default=None,
        pattern=DURATION,
        max_length=32,
    )
    compaction_threshold: int | None = field(
        "Repack a block once less than this percentage of it is still referenced, reclaiming "
        "the rest; omit to never repack (DittoFS' default). 50 is a sensible value.",
        default=None,
        minimum=1,
        maximum=100,
    )


@model
class LocalTier:
    """The local block stores, where writes land before they are uploaded to a remote store."""

    remote_cache_size: str | None = _byte_size(
        "Most a share with a remote block store may keep on its local block store, a "
        "write-through cache; omit for DittoFS' 10Gi. Size the local volume above it."
    )
    backpressure_wait: str | None = field(
        "How long a write waits for uploads to free cache space before it fails as if the disk "
        "were full; omit for DittoFS' 60s.",
        default=None,
        pattern=DURATION,
        max_length=32,
    )
    append_log_size: str | None = _byte_size(
        "Per share, how much freshly written data may wait to be folded into blocks before "
        "writes stall; omit for DittoFS' choice of a quarter of the container's memory limit "
        "(at least 1Gi)."
    )


@model
class Tuning:
    """Server-wide storage tunables that matter in production. Each is a setting of DittoFS'
    config file, read at start: changing one restarts the server."""

    gc: GarbageCollection = field("Garbage collection of blocks.", factory=GarbageCollection)
    local_tier: LocalTier = field("The local block stores' limits.", factory=LocalTier)


@model
class EncryptionKey:
    """The master key of encrypted remote block stores."""

    secret_name: str = field(
        "Name of a Secret in the DittoServer's namespace with keys `passphrase` and `key.pem`: "
        "a DittoFS local key file (PEM block DITTOFS ENCRYPTED MASTER KEY) and the passphrase "
        "that unlocks it. Omitted, the operator generates Secret <name>-encryption-key, which "
        "deletionPolicy Retain keeps. Never change it once blocks were written with it.",
        pattern=DNS_SUBDOMAIN,
        max_length=253,
    )


@model
class SnapshotPolicy:
    """Scheduled snapshots of a share, taken and pruned by DittoFS itself."""

    __cel__: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "self.interval.startsWith('@') || duration(self.interval) > duration('0s')",
            "snapshots.interval must be longer than zero",
            field_path=".interval",
        ),
        Rule(
            "has(self.keepLast) || has(self.ttl)",
            "snapshots needs keepLast, ttl or both: without a bound, scheduled snapshots are "
            "never pruned and fill the share's local block store",
        ),
        Rule(
            "!has(self.ttl) || duration(self.ttl) > duration('0s')",
            "snapshots.ttl must be longer than zero",
            field_path=".ttl",
        ),
    )

    interval: str = field(
        "How often a snapshot is taken: a duration such as 30m, 6h or 1h30m, or one of "
        "@hourly, @daily, @weekly. DittoFS looks for due snapshots every "
        "controlPlane.snapshotCheckInterval seconds, so that is the finest grain.",
        pattern=SNAPSHOT_INTERVAL,
        max_length=32,
    )
    keep_last: int | None = field(
        "Keep this many of the newest scheduled snapshots and delete older ones (DittoFS "
        "prunes as it starts the next one, so one more exists while that is being taken). "
        "Snapshots taken by hand are never pruned.",
        default=None,
        minimum=1,
        maximum=10000,
    )
    ttl: str | None = field(
        "Delete scheduled snapshots older than this duration (e.g. 168h).",
        default=None,
        pattern=DURATION,
        max_length=32,
    )
    name_prefix: str | None = field(
        "Prefix of the snapshots' names (prefix-timestamp); omit for DittoFS' default.",
        default=None,
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        max_length=64,
    )
    enabled: bool = field(
        "false keeps the policy and the snapshots it took, but takes and prunes none.",
        default=True,
    )


GRACE_PERIOD_MAX = "8760h"


def _soft_within_hard(kind: str) -> Rule:
    soft, hard = f"self.soft{kind}", f"self.hard{kind}"
    if kind == "Bytes":
        within = (
            f"!isQuantity({soft}) || !isQuantity({hard}) || "
            f"quantity({soft}).compareTo(quantity({hard})) <= 0"
        )
    else:
        within = f"{soft} <= {hard}"
    return Rule(
        f"!has({soft}) || !has({hard}) || {within}",
        f"soft{kind} must not exceed hard{kind}",
        field_path=f".soft{kind}",
    )


@model
class QuotaLimits:
    """Limits on the files one identity owns in a share. DittoFS charges a file to its owner
    (not to whoever writes it) and counts regular files only."""

    __cel__: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "has(self.hardBytes) || has(self.softBytes) || has(self.hardFiles) || "
            "has(self.softFiles)",
            "a quota needs at least one of hardBytes, softBytes, hardFiles, softFiles",
        ),
        _soft_within_hard("Bytes"),
        _soft_within_hard("Files"),
        Rule(
            "has(self.gracePeriod) == (has(self.softBytes) || has(self.softFiles))",
            "gracePeriod goes with softBytes or softFiles, and they with it: DittoFS enforces "
            "nothing for a soft limit without a grace period",
            field_path=".gracePeriod",
        ),
    )

    hard_bytes: str | None = _bytes(
        "Hard limit on the bytes of the owner's files, a whole number with an optional "
        "Kubernetes quantity suffix such as 10Gi or 500M. A "
        'write that would go past it fails: NFS clients get EDQUOT (NFS3ERR_DQUOT, "Disk quota '
        'exceeded"), SMB clients STATUS_QUOTA_EXCEEDED. Clients that ask for free space (df, '
        "Explorer) see the limit as the size of the share.",
        "hardBytes",
    )
    soft_bytes: str | None = _bytes(
        "Soft limit on the bytes of the owner's files (needs gracePeriod). Writes past it "
        "succeed and start the grace period; when it runs out with the owner still over, "
        "writes that grow a file fail as at hardBytes until usage drops below. DittoFS v0.29.0 "
        "restarts the grace period whenever the owner creates a file while under softFiles, "
        "so in practice it stops growing existing files but not writing new ones: use "
        "hardBytes for a limit that holds.",
        "softBytes",
    )
    hard_files: int | None = field(
        "Hard limit on the number of the owner's files. Creating one more fails with EDQUOT "
        "over NFS and STATUS_QUOTA_EXCEEDED over SMB.",
        default=None,
        minimum=1,
        maximum=1_000_000_000_000,
    )
    soft_files: int | None = field(
        "Soft limit on the number of the owner's files (needs gracePeriod); past it for longer "
        "than the grace period, creating files fails as at hardFiles. DittoFS v0.29.0 restarts "
        "the grace period at every write while under softBytes, so only files created and "
        "left empty are refused: use hardFiles for a limit that holds.",
        default=None,
        minimum=1,
        maximum=1_000_000_000_000,
    )
    grace_period: str | None = field(
        "How long the owner may stay over softBytes or softFiles before they act as hard "
        "limits, a duration such as 168h (at most 8760h). Required with a soft limit, and "
        "only with one.",
        default=None,
        pattern=DURATION,
        max_length=32,
        rules=(
            Rule(
                f"duration(self) > duration('0s') && duration(self) <= "
                f"duration('{GRACE_PERIOD_MAX}')",
                f"gracePeriod must be longer than zero and at most {GRACE_PERIOD_MAX}",
            ),
        ),
    )


@model
class UserQuota(QuotaLimits):
    """A quota of one user: the files its uid owns."""

    name: str = field(
        "A user of spec.users that has a uid. Its files are those owned by its uid: written "
        "over NFS as that uid, or over SMB by the user.",
        pattern=ACCOUNT_NAME,
        max_length=ACCOUNT_NAME_MAX,
    )


@model
class GroupQuota(QuotaLimits):
    """A quota of one group: the files whose group is its gid."""

    name: str = field(
        "A group of spec.groups that has a gid, or one of the built-in groups admins (gid 0), "
        "operators (999), users (1000). Its files are those whose group is that gid: over NFS "
        "the client's gid when it creates them, over SMB the gid of the first of the user's "
        "groups (users[].groups) that has one, else 1000. Being a member of the group does "
        "not count by itself.",
        pattern=ACCOUNT_NAME,
        max_length=ACCOUNT_NAME_MAX,
    )


@model
class ShareQuotas:
    """Per-identity quotas of a share, each counted on its own. A write or a new file must fit
    every quota that applies to its owner: the user's (or defaultUser) and the group's."""

    default_user: QuotaLimits | None = field(
        "The quota of every uid without an entry in users, each counted alone (root and NFS "
        "uids that match no user of spec.users included).",
        default=None,
    )
    users: list[UserQuota] = field(
        "Quotas of users of spec.users.", factory=list, max_items=16, map_key="name"
    )
    groups: list[GroupQuota] = field(
        "Quotas of groups.", factory=list, max_items=16, map_key="name"
    )


@model
class Share:
    """A share, exported over every enabled protocol (NFS and SMB)."""

    __cel__: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "self.metadataStore == oldSelf.metadataStore",
            "shares[].metadataStore is immutable: the share's files live in that store",
            field_path=".metadataStore",
        ),
    )

    name: str = field(
        "Share name, one lowercase path segment with a leading slash, e.g. /export. NFS "
        "clients mount server:/export; SMB clients open \\\\server\\export.",
        pattern=SHARE_NAME,
        max_length=SHARE_NAME_MAX,
    )
    metadata_store: str = field(
        "Name of the metadataStores entry holding the share's file system tree.",
        max_length=STORE_NAME_MAX,
    )
    local_block_store: str = field(
        "Name of the localBlockStores entry caching (or holding) the share's contents.",
        max_length=STORE_NAME_MAX,
    )
    remote_block_store: str | None = field(
        "Name of the remoteBlockStores entry holding the share's contents durably; omit to keep "
        "contents only in the local block store.",
        default=None,
        max_length=STORE_NAME_MAX,
    )
    read_only: bool = field("Export the share read-only.", default=False)
    enabled: bool = field(
        "false disables the share: DittoFS stops serving it over every protocol and keeps its "
        "files and settings. A share is disabled to restore a snapshot into it "
        "(docs/snapshots.md).",
        default=True,
    )
    default_permission: PermissionLevel = field(
        "Access for everyone without an explicit permission: NFS UIDs that match no user, "
        "squashed root, and SMB guests (see adapters.smb.guest). none lets only users and "
        "groups of permissions in; read-write opens the share to any client that can connect.",
        default="none",
    )
    owner: str | None = field(
        "A user of spec.users whose UID/GID own the share's root directory; omit to leave it "
        "owned by root, which only root (see nfs.squash) can write to.",
        default=None,
        pattern=ACCOUNT_NAME,
        max_length=ACCOUNT_NAME_MAX,
    )
    permissions: list[SharePermission] = field(
        "Explicit permissions of users and groups.", factory=list, max_items=16
    )
    nfs: ShareNFS = field("NFS export options.", factory=ShareNFS)
    smb: ShareSMB = field("SMB options.", factory=ShareSMB)
    trash: ShareTrash | None = field(
        "Keep deleted files in a recycle bin; omit to remove them at once.", default=None
    )
    local_cache: ShareLocalCache = field("Use of the local block store.", factory=ShareLocalCache)
    snapshots: SnapshotPolicy | None = field(
        "Scheduled snapshots of the share (its metadata and the blocks they point at). Needs a "
        "local block store of type filesystem: DittoFS writes snapshots beside its blocks. "
        "Omitted, the share has no snapshot policy: one set by hand (dfsctl) is removed.",
        default=None,
    )
    quota: str | None = _bytes(
        "Limit on the bytes of all files in the share together: a whole number with an "
        "optional Kubernetes quantity suffix, such as 100Gi, 1536Gi or 500G. A write that "
        "would go past it fails as on a full disk: NFS clients get ENOSPC (NFS3ERR_NOSPC, "
        '"No space left on device"), SMB clients STATUS_DISK_FULL. Clients that ask for free '
        "space see it as the size of the share. Omitted, the share has no limit (one set by "
        "hand is removed).",
        "quota",
    )
    quotas: ShareQuotas | None = field(
        "Quotas per user and per group. The spec owns them: quotas set by hand (dfsctl quota) "
        "that it does not declare are removed, and changed ones are put back.",
        default=None,
    )


# --- adapters -------------------------------------------------------------------------------


@model
class Portmapper:
    """The embedded portmapper (rpcbind) of the NFS adapter."""

    enabled: bool = field(
        "Run the portmapper, for NFSv3 clients that cannot be told the port. Not needed when "
        "clients mount with port=2049,mountport=2049 (MOUNT shares the NFS port).",
        default=False,
    )
    port: int = _port("Container port of the portmapper.", 10111)
    service_port: int = field(
        "Port the NFS Service publishes for the portmapper.",
        default=111,
        minimum=1,
        maximum=65535,
    )


@model
class NFSTLS:
    """NFS over TLS (RFC 9289): a client asks for TLS with an AUTH_TLS probe on its connection,
    then speaks TLS 1.3 on it (Linux: mount -o xprtsec=tls, with the tlshd daemon)."""

    secret_name: str = field(
        "Name of a kubernetes.io/tls Secret (keys tls.crt and tls.key) in the DittoServer's "
        "namespace, mounted into the pod as files: DittoFS reads them again when they change, "
        "so a renewed certificate (cert-manager's, say) is used without a restart.",
        pattern=DNS_SUBDOMAIN,
        max_length=253,
    )
    mode: Literal["require", "opportunistic"] = field(
        "require: a connection must switch to TLS before its first request, and a client "
        "that does not is disconnected (NFSv3's MOUNT, NLM and NSM share the port, so they "
        "need TLS too). opportunistic: clients that ask for TLS get it, the others are "
        "served in clear text.",
        default="require",
    )


@model
class Netgroup:
    """A named set of NFS clients, which shares can admit alone (shares[].nfs.netgroup)."""

    name: str = field("Netgroup name.", pattern=DNS_LABEL, max_length=63)
    members: list[str] = field(
        "Clients: IP addresses (10.0.0.7), CIDR ranges (10.0.0.0/24) or host names, with "
        "* for a leading label (*.lab.example.com).",
        min_items=1,
        max_items=64,
        unique=True,
        pattern=r"^[0-9A-Za-z.:*/_-]+$",
        max_length=253,
    )


@model
class NFSAdapter:
    """The NFS adapter (NFSv3, v4.0, v4.1 and v4.2 with MOUNT, NLM and NSM on one port)."""

    enabled: bool = field("Serve NFS.", default=True)
    port: int = _port("Container port DittoFS listens on for NFS.", 12049)
    service_port: int = field(
        "Port the NFS Service publishes (mapped to the container port).",
        default=2049,
        minimum=1,
        maximum=65535,
    )
    portmapper: Portmapper = field("The embedded portmapper.", factory=Portmapper)
    netgroups: list[Netgroup] = field(
        "Named sets of clients that shares can restrict themselves to.",
        factory=list,
        max_items=32,
        map_key="name",
    )
    lease_seconds: int = field(
        "NFSv4 lease time in seconds: how long a client's opens, locks and delegations "
        "live without a renewal. A shorter lease frees a vanished client's locks sooner; "
        "a longer one tolerates longer network outages. Applied live.",
        default=90,
        minimum=10,
        maximum=3600,
    )
    grace_period_seconds: int = field(
        "NFSv4 grace period in seconds: after DittoFS starts, clients may only reclaim the "
        "state they held for this long, so no new lock takes a reclaiming client's. Used "
        "from the next start of DittoFS on.",
        default=90,
        minimum=10,
        maximum=3600,
    )
    tls: NFSTLS | None = field(
        "NFS over TLS with a certificate from a Secret. Omitted, NFS is clear text. Changing "
        "it restarts the NFS listener (its connections are dropped; clients reconnect).",
        default=None,
    )


SMB_DIALECTS = ("2.0.2", "2.1", "3.0", "3.0.2", "3.1.1")
SMBDialect = Literal["2.0.2", "2.1", "3.0", "3.0.2", "3.1.1"]
# CEL's view of the order of SMB_DIALECTS, for rules that compare two dialects.
_SMB_DIALECT_RANK = "{" + ", ".join(f"'{d}': {i}" for i, d in enumerate(SMB_DIALECTS)) + "}"


@model
class SMBAdapter:
    """The SMB adapter (SMB 2.0 through 3.1.1, NTLM logins with DittoFS users)."""

    __cel__: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "!(self.guest && has(self.signing) && self.signing == 'required')",
            "adapters.smb.signing required cannot go with guest: true: a guest session has no "
            "key to sign with, so DittoFS refuses every guest login while signing is required; "
            "set guest: false, or leave signing unset (it follows guest)",
            field_path=".signing",
        ),
        Rule(
            "self.guest || !has(self.signing) || self.signing == 'required'",
            "adapters.smb.signing enabled needs guest: true: DittoFS 0.29 has no guest switch "
            "of its own and admits guests exactly when signing is not required, so signing "
            "enabled would let in the guests that guest: false refuses; set guest: true to "
            "allow them, or leave signing unset (it follows guest)",
            field_path=".signing",
        ),
        Rule(
            f"{_SMB_DIALECT_RANK}[self.minDialect] <= {_SMB_DIALECT_RANK}[self.maxDialect]",
            "adapters.smb.minDialect must not be newer than adapters.smb.maxDialect",
            field_path=".minDialect",
        ),
        Rule(
            "self.encryption != 'required' || !self.guest",
            "adapters.smb.encryption required cannot go with guest: true: DittoFS exempts "
            "guest sessions from encryption (they have no session key), so guests would use "
            "the shares in clear text",
            field_path=".encryption",
        ),
        Rule(
            f"self.encryption != 'required' || {_SMB_DIALECT_RANK}[self.maxDialect] >= 2",
            "adapters.smb.encryption required needs maxDialect 3.0 or newer: SMB 2.x cannot "
            "encrypt, so no client could use a share",
            field_path=".encryption",
        ),
    )

    enabled: bool = field("Serve SMB.", default=True)
    guest: bool = field(
        "Let clients in without a DittoFS account, as guest: anonymous logins and names that "
        "match no user get the shares' defaultPermission. Off, both are refused at login. "
        "DittoFS 0.29 has no switch of its own for this: it refuses guests exactly when SMB "
        "signing is required, so off makes signing required (every session signed) and on "
        "makes it enabled (offered, not required); see signing.",
        default=False,
    )
    signing: Literal["enabled", "required"] | None = field(
        "SMB message signing. required: every request and answer of a logged-in session is "
        "signed, and a client that does not sign is disconnected. enabled: signing is offered "
        "and used when the client asks for it (SMB 3.1.1 sessions of users are always signed). "
        "Unset, it follows guest: required when guest is false, enabled when it is true; "
        "DittoFS 0.29 refuses guests exactly when signing is required, so the other pairs "
        "are rejected. DittoFS's third mode, disabled, is not offered: with it DittoFS "
        "refuses the signed requests Samba's and Windows' clients send after a login.",
        default=None,
    )
    encryption: Literal["preferred", "required"] = field(
        "SMB 3 encryption. preferred: sessions of SMB 3.0 and newer can encrypt, and clients "
        "that ask for it get it, but a client that does not encrypt is served in clear text. "
        "required: every share demands encryption (its SMB2_SHAREFLAG_ENCRYPT_DATA is set), "
        "so a client that does not encrypt, or speaks SMB 2.x, can log in but cannot use "
        "any share. Windows and Linux's kernel client encrypt by themselves for such shares. "
        "DittoFS applies a share's encryption when it starts, so changing this on a running "
        "server restarts the pod (ServerConfigured says StoresReopening meanwhile). DittoFS "
        "0.29 cannot turn SMB encryption off.",
        default="preferred",
    )
    min_dialect: SMBDialect = field(
        "Oldest SMB dialect served: 2.0.2, 2.1, 3.0, 3.0.2 or 3.1.1. A client whose newest "
        "dialect is older cannot connect. Applied live (within DittoFS's 10 s settings poll).",
        default="2.0.2",
    )
    max_dialect: SMBDialect = field(
        "Newest SMB dialect served; a client whose oldest dialect is newer cannot connect. "
        "Applied live.",
        default="3.1.1",
    )
    port: int = _port("Container port DittoFS listens on for SMB.", 12445)
    service_port: int = field(
        "Port the SMB Service publishes (mapped to the container port).",
        default=445,
        minimum=1,
        maximum=65535,
    )


@model
class Adapters:
    """The file protocols DittoFS serves."""

    __cel__: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "self.nfs.port != self.smb.port",
            "adapters.nfs.port and adapters.smb.port must differ",
        ),
        Rule(
            "self.nfs.portmapper.port != self.nfs.port && "
            "self.nfs.portmapper.port != self.smb.port",
            "adapters.nfs.portmapper.port must differ from the NFS and SMB ports",
        ),
    )

    nfs: NFSAdapter = field("The NFS adapter.", factory=NFSAdapter)
    smb: SMBAdapter = field("The SMB adapter.", factory=SMBAdapter)


# --- users ----------------------------------------------------------------------------------


@model
class User:
    """A DittoFS user (role user), for NFS identity mapping, SMB logins and share permissions."""

    __cel__: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "self.name != 'admin'",
            "the user name admin is reserved for the operator",
            field_path=".name",
        ),
    )

    name: str = field("User name.", pattern=ACCOUNT_NAME, max_length=ACCOUNT_NAME_MAX)
    password_secret_ref: SecretKeySelector = field(
        "Secret key holding the user's password (SMB logins use NTLM derived from it)."
    )
    groups: list[str] = field(
        "Groups of the user: entries of spec.groups or the built-in admins, operators, users.",
        factory=list,
        max_items=16,
        unique=True,
        pattern=ACCOUNT_NAME,
        max_length=ACCOUNT_NAME_MAX,
    )
    uid: int | None = field(
        "Unix UID for NFS identity mapping. DittoFS assigns none by itself: set it for a user "
        "who owns a share or files written over NFS.",
        default=None,
        minimum=0,
        maximum=4294967295,
    )
    gid: int | None = field(
        "Unix primary GID for NFS identity mapping (DittoFS assigns none by itself).",
        default=None,
        minimum=0,
        maximum=4294967295,
    )


@model
class Group:
    """A DittoFS group."""

    __cel__: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "!(self.name in " + repr(list(BUILTIN_GROUPS)) + ")",
            "admins, operators and users are built-in groups: do not declare them",
            field_path=".name",
        ),
    )

    name: str = field("Group name.", pattern=ACCOUNT_NAME, max_length=ACCOUNT_NAME_MAX)
    gid: int | None = field(
        "Unix GID (DittoFS assigns none by itself).",
        default=None,
        minimum=0,
        maximum=4294967295,
    )


# --- identity -------------------------------------------------------------------------------

# A distinguished name such as DC=example,DC=com: no line breaks (DittoFS writes them into
# search requests and logs).
DISTINGUISHED_NAME = r"^[^\r\n]+$"


@model
class LDAPTLS:
    """How DittoFS verifies the directory's certificate (ldaps:// or startTLS)."""

    ca_secret_ref: SecretKeySelector | None = field(
        "Secret key holding the PEM CA bundle that signed the directory's certificate; "
        "mounted into the pod. Omit to trust the image's system roots.",
        default=None,
    )
    insecure_skip_verify: bool = field(
        "Accept any certificate the directory presents. For a lab only: anyone on the path "
        "could then read the bind password.",
        default=False,
    )
    min_version: Literal["1.2", "1.3"] = field("Lowest TLS version accepted.", default="1.2")


@model
class LDAP:
    """An LDAP or Active Directory directory that DittoFS resolves domain identities in."""

    __cel__: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "!self.url.startsWith('ldap://') || self.startTLS || self.allowPlaintext",
            "identity.ldap.url uses plaintext ldap://: set startTLS: true to upgrade the "
            "connection to TLS, or allowPlaintext: true to send the bind password unencrypted "
            "(DittoFS refuses a plaintext bind otherwise)",
            field_path=".url",
        ),
        Rule(
            "!self.startTLS || self.url.startsWith('ldap://')",
            "identity.ldap.startTLS only applies to ldap:// URLs (ldaps:// is TLS already)",
            field_path=".startTLS",
        ),
        Rule(
            "!self.allowPlaintext || !self.startTLS",
            "identity.ldap.allowPlaintext and startTLS contradict each other: choose one",
            field_path=".allowPlaintext",
        ),
        Rule(
            "!has(self.tls) || self.url.startsWith('ldaps://') || self.startTLS",
            "identity.ldap.tls needs an encrypted connection: an ldaps:// URL or startTLS: true",
            field_path=".tls",
        ),
    )

    url: str = field(
        "Directory URL: ldaps://host:636 (TLS), or ldap://host:389 with startTLS or "
        "allowPlaintext.",
        pattern=r"^ldaps?://[^/\s?#]+/?$",
        max_length=253,
    )
    start_tls: bool = field(
        "Upgrade an ldap:// connection to TLS (the StartTLS operation) before binding.",
        default=False,
        wire_name="startTLS",
    )
    allow_plaintext: bool = field(
        "Bind over an unencrypted ldap:// connection. DittoFS refuses this unless asked: the "
        "bind password would cross the network in the clear.",
        default=False,
    )
    base_dn: str = field(
        "Search base of user and group lookups, e.g. DC=example,DC=com.",
        pattern=DISTINGUISHED_NAME,
        max_length=1024,
        wire_name="baseDN",
    )
    bind_dn: str = field(
        "Distinguished name of the service account DittoFS binds as before it searches.",
        pattern=DISTINGUISHED_NAME,
        max_length=1024,
        wire_name="bindDN",
    )
    bind_password_secret_ref: SecretKeySelector = field(
        "Secret key holding the service account's password. It reaches DittoFS through its "
        "REST API only; when the Secret changes, the operator sends the new password."
    )
    user_attribute: str = field(
        "Attribute matched against a user's name (the part of user@REALM before the @); "
        "sAMAccountName in Active Directory.",
        default="sAMAccountName",
        pattern=r"^[A-Za-z][A-Za-z0-9-]*$",
        max_length=64,
    )
    realm: str | None = field(
        "The directory's realm (e.g. EXAMPLE.COM): only principals user@REALM of this realm "
        "are looked up here. Omit to look up principals of any realm.",
        default=None,
        pattern=r"^[^@/\s]+$",
        max_length=253,
    )
    idmap: Literal["rfc2307", "rid"] = field(
        "Where a user's Unix UID and GID come from: rfc2307 reads uidNumber and gidNumber "
        "(falling back to rid when an entry has none); rid derives them from the last part "
        "of the objectSid, as Samba's idmap_rid does.",
        default="rfc2307",
    )
    nested_groups: bool = field(
        "Resolve groups of groups (Active Directory's LDAP_MATCHING_RULE_IN_CHAIN); otherwise "
        "only a user's direct memberOf groups count.",
        default=False,
    )
    max_group_results: int = field(
        "At most this many groups are resolved for one user.",
        default=200,
        minimum=1,
        maximum=100000,
    )
    timeout: str = field(
        "Time limit of each directory operation (dial, bind, search), e.g. 10s.",
        default="10s",
        pattern=DURATION,
        max_length=32,
        rules=(
            Rule(
                "duration(self) > duration('0s')",
                "identity.ldap.timeout must be longer than zero",
            ),
        ),
    )
    tls: LDAPTLS | None = field(
        "Certificate verification of an ldaps:// or startTLS connection; omit for the system "
        "roots and TLS 1.2 or later.",
        default=None,
    )


@model
class ConfigMapKeySelector:
    """One key of a ConfigMap in the DittoServer's namespace."""

    name: str = field(
        "Name of the ConfigMap, in the DittoServer's namespace.",
        pattern=DNS_SUBDOMAIN,
        max_length=253,
    )
    key: str = field("Key inside the ConfigMap.", pattern=SECRET_KEY, max_length=253)


@model
class Kerberos:
    """Kerberos for NFS (RPCSEC_GSS) and SMB (SPNEGO): DittoFS' service principal and keytab."""

    service_principal: str = field(
        "The service principal DittoFS accepts tickets for, e.g. "
        "nfs/files.example.com@EXAMPLE.COM; its key must be in the keytab.",
        pattern=r"^[^@\s]+@[^@/\s]+$",
        max_length=253,
    )
    keytab_secret_ref: SecretKeySelector = field(
        "Secret key holding the keytab (binary) with the service principal's keys; mounted "
        "into the pod."
    )
    krb5_conf_config_map_ref: ConfigMapKeySelector = field(
        "ConfigMap key holding the krb5.conf (realms, KDCs); mounted into the pod. DittoFS "
        "loads one when its adapters start, and the image has none."
    )
    realm: str | None = field(
        "The Kerberos realm; omit to take it from the service principal.",
        default=None,
        pattern=r"^[^@/\s]+$",
        max_length=253,
    )
    netbios_domain: str | None = field(
        "The Active Directory domain's NetBIOS name (e.g. EXAMPLE), advertised to SMB clients.",
        default=None,
        pattern=r"^[^.@/\s]+$",
        max_length=15,
    )
    dns_domain: str | None = field(
        "The Active Directory domain's DNS name (e.g. example.com).",
        default=None,
        pattern=HOSTNAME,
        max_length=253,
    )
    max_clock_skew: str | None = field(
        "Largest clock difference accepted between client and server (DittoFS: 5m).",
        default=None,
        pattern=DURATION,
        max_length=32,
    )
    context_ttl: str | None = field(
        "Lifetime of an established security context (DittoFS: 8h).",
        default=None,
        pattern=DURATION,
        max_length=32,
    )
    max_contexts: int | None = field(
        "At most this many security contexts are kept (DittoFS: 10000).",
        default=None,
        minimum=1,
        maximum=10000000,
    )
    enabled: bool = field(
        "false turns Kerberos off on the server (the keytab stays mounted); do this, and wait "
        "for ServerConfigured, before removing spec.identity.kerberos: DittoFS exits at start "
        "when Kerberos is on and its keytab is missing.",
        default=True,
    )


@model
class Identity:
    """Directory services DittoFS resolves users and groups in, besides its own users."""

    ldap: LDAP | None = field(
        "An LDAP or Active Directory directory. Removing it disables the directory on the "
        "server (the operator turns off what it configured).",
        default=None,
    )
    kerberos: Kerberos | None = field(
        "Kerberos for NFS and SMB. DittoFS reads it when it starts, so the operator restarts "
        "the pod after a change. Turn it off with enabled: false before removing it.",
        default=None,
    )


# --- exposure -------------------------------------------------------------------------------


@model
class ServiceSpec:
    """A Service publishing one protocol."""

    __cel__: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "!has(self.nodePort) || self.type != 'ClusterIP'",
            "nodePort requires type NodePort or LoadBalancer",
            field_path=".nodePort",
        ),
        Rule(
            "!has(self.loadBalancerClass) || self.type == 'LoadBalancer'",
            "loadBalancerClass requires type LoadBalancer",
            field_path=".loadBalancerClass",
        ),
        Rule(
            "!has(self.externalTrafficPolicy) || self.type != 'ClusterIP'",
            "externalTrafficPolicy requires type NodePort or LoadBalancer",
            field_path=".externalTrafficPolicy",
        ),
    )

    type: ServiceType = field(
        "Service type. ClusterIP (the default) keeps the protocol inside the cluster; a "
        "LoadBalancer gives it its own external address, NodePort a port on every node. Either "
        "must say who may connect (loadBalancerSourceRanges, networkPolicy.fileFrom or "
        "allowAllSources).",
        default="ClusterIP",
    )
    allow_all_sources: bool = field(
        "Serve every client that reaches a LoadBalancer or NodePort Service, with no source "
        "restriction. Off by default, so that a file server is never open to the internet by "
        "accident: prefer loadBalancerSourceRanges.",
        default=False,
    )
    annotations: dict[str, str] = field(
        "Annotations of the Service, e.g. cloud load-balancer settings (on Scaleway raise "
        "service.beta.kubernetes.io/scw-loadbalancer-timeout-server for idle NFS/SMB sessions).",
        factory=dict,
    )
    labels: dict[str, str] = field("Extra labels of the Service.", factory=dict)
    load_balancer_class: str | None = field(
        "loadBalancerClass of a LoadBalancer Service.", default=None, max_length=253
    )
    load_balancer_source_ranges: list[str] = field(
        "Client CIDRs allowed through the load balancer, e.g. 203.0.113.0/24 (kube-proxy and "
        "cloud load balancers drop other sources). It does not restrict a NodePort.",
        factory=list,
        max_items=64,
        max_length=64,
        rules=(
            Rule(
                "self.all(c, isCIDR(c))",
                "loadBalancerSourceRanges entries must be CIDRs such as 10.0.0.0/8",
            ),
        ),
    )
    external_traffic_policy: Literal["Cluster", "Local"] | None = field(
        "Local keeps client source addresses (traffic only reaches the node running DittoFS).",
        default=None,
    )
    node_port: int | None = field(
        "Static node port (type NodePort or LoadBalancer); omit to let Kubernetes pick one.",
        default=None,
        minimum=30000,
        maximum=32767,
    )


@model
class ApiServiceSpec(ServiceSpec):
    """The Service of the REST API: cluster-internal unless you decide otherwise."""

    type: ServiceType = field(
        "Service type. LoadBalancer and NodePort require controlPlane.tls: the admin REST API "
        "must never be reachable over plain HTTP from outside the cluster.",
        default="ClusterIP",
    )


@model
class Ingress:
    """An Ingress for the REST API (HTTP only: NFS and SMB cannot use Ingress)."""

    __cel__: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "!self.enabled || has(self.host)",
            "expose.ingress.host is required when the ingress is enabled",
            field_path=".host",
        ),
        Rule(
            "!(has(self.clusterIssuer) && has(self.issuer))",
            "set at most one of expose.ingress.clusterIssuer and expose.ingress.issuer",
        ),
        Rule(
            "!self.enabled || has(self.tlsSecretName) || has(self.clusterIssuer) || "
            "has(self.issuer)",
            "an enabled ingress must serve HTTPS: set tlsSecretName, clusterIssuer or issuer "
            "(the admin REST API must not be exposed over plain HTTP)",
        ),
    )

    enabled: bool = field("Create the Ingress.", default=False)
    class_name: str = field("ingressClassName of the Ingress.", default="nginx", max_length=253)
    host: str | None = field(
        "Host name the Ingress serves, e.g. dittofs.example.com.",
        default=None,
        pattern=HOSTNAME,
        max_length=253,
    )
    path: str = field("Path prefix of the API.", default="/", pattern=r"^/", max_length=253)
    tls_secret_name: str | None = field(
        "TLS Secret of the Ingress; with clusterIssuer or issuer cert-manager fills it "
        "(default name derived from the DittoServer's).",
        default=None,
        pattern=DNS_SUBDOMAIN,
        max_length=253,
    )
    cluster_issuer: str | None = field(
        "cert-manager ClusterIssuer that issues the certificate.",
        default=None,
        max_length=253,
    )
    issuer: str | None = field(
        "cert-manager Issuer (in the DittoServer's namespace) that issues the certificate.",
        default=None,
        max_length=253,
    )
    annotations: dict[str, str] = field(
        "Annotations of the Ingress (controller-specific settings).", factory=dict
    )


@model
class NetworkPolicy:
    """NetworkPolicies restricting who reaches the DittoFS pod."""

    enabled: bool = field(
        "Create NetworkPolicies for the pod: the REST API and metrics ports admit only the "
        "operator's namespace and apiFrom, NFS and SMB admit fileFrom. On by default, so the "
        "admin API is not open to every pod; they hold only where the network plugin enforces "
        "NetworkPolicies.",
        default=True,
    )
    api_from: list[JSON] = field(
        "Peers allowed to reach the REST API and the metrics port, each a networking/v1 "
        "NetworkPolicyPeer (see `kubectl explain networkpolicy.spec.ingress.from`). The "
        "operator's namespace is always allowed; add the namespaces of your ingress controller "
        "and Prometheus here (a NetworkPolicy cannot find them by itself). Empty allows only "
        "the operator.",
        factory=list,
    )
    file_from: list[JSON] = field(
        "Peers allowed to reach NFS and SMB, each a networking/v1 NetworkPolicyPeer; empty "
        "allows everyone.",
        factory=list,
    )


def _api_peers_listed(policy: str) -> str:
    """CEL: the API NetworkPolicy at `policy` admits more than the operator, or there is none
    (an Ingress controller or a Prometheus it does not list could not reach the pod)."""
    return f"!{policy}.enabled || (has({policy}.apiFrom) && size({policy}.apiFrom) > 0)"


def _sources_chosen(protocol: str) -> Rule:
    """CEL: an NFS or SMB Service reachable from outside the cluster says who may connect."""
    service = f"self.{protocol}"
    ranges = f"{service}.loadBalancerSourceRanges"
    peers = "self.networkPolicy.fileFrom"
    return Rule(
        f"{service}.type == 'ClusterIP' || {service}.allowAllSources || "
        f"({service}.type == 'LoadBalancer' && has({ranges}) && size({ranges}) > 0) || "
        f"(self.networkPolicy.enabled && has({peers}) && size({peers}) > 0)",
        f"expose.{protocol}: a LoadBalancer or NodePort Service serves every client that "
        "reaches it; say who may connect with loadBalancerSourceRanges (LoadBalancer), or "
        "networkPolicy.enabled with networkPolicy.fileFrom, or set allowAllSources: true to "
        "serve everyone knowingly",
        field_path=f".{protocol}",
    )


@model
class Expose:
    """How NFS, SMB and the REST API are reached."""

    __cel__: ClassVar[tuple[Rule, ...]] = (
        _sources_chosen("nfs"),
        _sources_chosen("smb"),
        Rule(
            f"!self.ingress.enabled || {_api_peers_listed('self.networkPolicy')}",
            "expose.ingress: the API NetworkPolicy (networkPolicy.enabled, the default) admits "
            "only the operator's namespace, so the ingress controller could not reach the API; "
            "list its namespace in networkPolicy.apiFrom, or set networkPolicy.enabled: false",
            field_path=".networkPolicy.apiFrom",
        ),
    )

    nfs: ServiceSpec = field("The NFS Service.", factory=ServiceSpec)
    smb: ServiceSpec = field("The SMB Service.", factory=ServiceSpec)
    api: ApiServiceSpec = field("The REST API Service.", factory=ApiServiceSpec)
    ingress: Ingress = field("An Ingress for the REST API.", factory=Ingress)
    network_policy: NetworkPolicy = field("NetworkPolicies.", factory=NetworkPolicy)


# --- spec -----------------------------------------------------------------------------------


def _refs(list_name: str, ref: str, target: str, *, optional: bool) -> str:
    """CEL: every share's `ref` names an entry of `target` (when set, if optional)."""
    exists = f"self.{target}.exists(t, t.name == s.{ref})"
    if optional:
        exists = f"!has(s.{ref}) || (has(self.{target}) && {exists})"
    return f"!has(self.{list_name}) || self.{list_name}.all(s, {exists})"


_BUILTIN_GROUPS_CEL = repr(list(BUILTIN_GROUPS))


@model
class DittoServerSpec:
    """The desired state of a DittoFS server."""

    __cel__: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "!has(oldSelf.identity) || !has(oldSelf.identity.kerberos) || "
            "!oldSelf.identity.kerberos.enabled || "
            "(has(self.identity) && has(self.identity.kerberos))",
            "identity.kerberos can only be removed once it is off: set "
            "identity.kerberos.enabled: false first and wait for ServerConfigured (DittoFS "
            "exits at start when Kerberos is on and its keytab is no longer mounted)",
            field_path=".identity",
        ),
        Rule(
            "self.replicas <= 1",
            "replicas must be 0 (stopped) or 1: DittoFS is a single-node server and two "
            "replicas would corrupt its data",
            field_path=".replicas",
        ),
        Rule(
            "self.controlPlane.database.type != 'postgres' || has(self.postgres)",
            "controlPlane.database.type postgres requires spec.postgres",
            field_path=".controlPlane.database.type",
        ),
        Rule(
            "self.metadataStores.all(s, s.type != 'postgres') || has(self.postgres)",
            "metadata stores of type postgres require spec.postgres",
            field_path=".metadataStores",
        ),
        Rule(
            _refs("shares", "metadataStore", "metadataStores", optional=False),
            "every shares[].metadataStore must name an entry of metadataStores",
            field_path=".shares",
        ),
        Rule(
            _refs("shares", "localBlockStore", "localBlockStores", optional=False),
            "every shares[].localBlockStore must name an entry of localBlockStores",
            field_path=".shares",
        ),
        Rule(
            _refs("shares", "remoteBlockStore", "remoteBlockStores", optional=True),
            "every shares[].remoteBlockStore must name an entry of remoteBlockStores",
            field_path=".shares",
        ),
        Rule(
            "!has(self.shares) || self.shares.all(s, !has(s.snapshots) || "
            "self.localBlockStores.exists(l, l.name == s.localBlockStore && "
            "l.type == 'filesystem'))",
            "shares[].snapshots needs the share's localBlockStore to be of type filesystem: "
            "DittoFS writes snapshots beside the blocks and cannot snapshot a memory store",
            field_path=".shares",
        ),
        Rule(
            "!has(self.shares) || self.shares.all(s, !has(s.nfs) || !has(s.nfs.netgroup) || "
            "(has(self.adapters.nfs.netgroups) && "
            "self.adapters.nfs.netgroups.exists(n, n.name == s.nfs.netgroup)))",
            "every shares[].nfs.netgroup must name an entry of adapters.nfs.netgroups",
            field_path=".shares",
        ),
        Rule(
            _refs("shares", "owner", "users", optional=True),
            "every shares[].owner must name an entry of users",
            field_path=".shares",
        ),
        Rule(
            "!has(self.shares) || self.shares.all(s, !has(s.permissions) || "
            "s.permissions.all(p, !has(p.user) || "
            "(has(self.users) && self.users.exists(u, u.name == p.user))))",
            "every shares[].permissions[].user must name an entry of users",
            field_path=".shares",
        ),
        Rule(
            "!has(self.shares) || self.shares.all(s, !has(s.permissions) || "
            f"s.permissions.all(p, !has(p.group) || p.group in {_BUILTIN_GROUPS_CEL} || "
            "(has(self.groups) && self.groups.exists(g, g.name == p.group))))",
            "every shares[].permissions[].group must name an entry of groups or a built-in "
            "group (admins, operators, users)",
            field_path=".shares",
        ),
        Rule(
            "!has(self.shares) || self.shares.all(s, !has(s.quotas) || "
            "!has(s.quotas.users) || s.quotas.users.all(q, has(self.users) && "
            "self.users.exists(u, u.name == q.name && has(u.uid))))",
            "every shares[].quotas.users[].name must name an entry of users that has a uid: "
            "DittoFS counts a user's files by uid",
            field_path=".shares",
        ),
        Rule(
            "!has(self.shares) || self.shares.all(s, !has(s.quotas) || "
            f"!has(s.quotas.groups) || s.quotas.groups.all(q, q.name in {_BUILTIN_GROUPS_CEL} || "
            "(has(self.groups) && self.groups.exists(g, g.name == q.name && has(g.gid)))))",
            "every shares[].quotas.groups[].name must name an entry of groups that has a gid, "
            "or a built-in group (admins, operators, users): DittoFS counts a group's files by "
            "gid",
            field_path=".shares",
        ),
        Rule(
            "!has(self.users) || self.users.all(u, !has(u.groups) || "
            f"u.groups.all(n, n in {_BUILTIN_GROUPS_CEL} || "
            "(has(self.groups) && self.groups.exists(g, g.name == n))))",
            "every users[].groups entry must name an entry of groups or a built-in group "
            "(admins, operators, users)",
            field_path=".users",
        ),
        Rule(
            "!(self.controlPlane.port in [self.adapters.nfs.port, self.adapters.smb.port, "
            "self.adapters.nfs.portmapper.port])",
            "controlPlane.port must differ from the adapters' container ports",
            field_path=".controlPlane.port",
        ),
        Rule(
            "!(self.controlPlane.metrics.port in [self.adapters.nfs.port, "
            "self.adapters.smb.port, self.adapters.nfs.portmapper.port])",
            "controlPlane.metrics.port must differ from the adapters' container ports",
            field_path=".controlPlane.metrics.port",
        ),
        Rule(
            "self.expose.api.type == 'ClusterIP' || has(self.controlPlane.tls)",
            "expose.api.type LoadBalancer or NodePort requires controlPlane.tls: the admin REST "
            "API must not be exposed over plain HTTP",
            field_path=".expose.api.type",
        ),
        Rule(
            "!self.expose.ingress.enabled || !has(self.controlPlane.tls) || "
            "!has(self.controlPlane.tls.clientCA)",
            "expose.ingress cannot be enabled with controlPlane.tls.clientCA: the ingress "
            "controller would terminate the clients' TLS and present no certificate of its own "
            "to DittoFS, so every request would be refused; expose the API through "
            "expose.api (LoadBalancer or NodePort) to keep mutual TLS end to end",
            field_path=".expose.ingress.enabled",
        ),
        Rule(
            "!self.controlPlane.metrics.enabled || "
            "!self.controlPlane.metrics.serviceMonitor.enabled || "
            f"{_api_peers_listed('self.expose.networkPolicy')}",
            "controlPlane.metrics.serviceMonitor: the API NetworkPolicy (expose.networkPolicy."
            "enabled, the default) admits only the operator's namespace to the metrics port, so "
            "Prometheus could not scrape it; list Prometheus' namespace in "
            "expose.networkPolicy.apiFrom, or set expose.networkPolicy.enabled: false",
            field_path=".expose.networkPolicy.apiFrom",
        ),
    )

    def needs_postgres(self) -> bool:
        """The control plane or a metadata store lives in PostgreSQL."""
        return self.control_plane.database.type == "postgres" or any(
            store.type == "postgres" for store in self.metadata_stores
        )

    image: str = field("DittoFS server image.", default=DEFAULT_IMAGE, max_length=512)
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = field(
        "Pull policy of the DittoFS image.", default="IfNotPresent"
    )
    image_pull_secrets: list[LocalObjectReference] = field(
        "Secrets for pulling the images from private registries.", factory=list, max_items=16
    )
    replicas: int = field(
        "1 runs the server; 0 stops it and keeps every volume and its data. Never more than 1: "
        "DittoFS is a single-node server, and two pods on the same data would corrupt it.",
        default=1,
        minimum=0,
        maximum=1,
    )
    pod: PodOptions = field(
        "Labels, scheduling and runtime options of the pod.", factory=PodOptions
    )
    control_plane: ControlPlane = field(
        "The control plane: REST API, logging, secrets, metrics and database.",
        factory=ControlPlane,
    )
    postgres: Postgres | None = field(
        "PostgreSQL for controlPlane.database.type postgres and for metadata stores of type "
        "postgres: created through Percona, or external.",
        default=None,
    )
    metadata_stores: list[MetadataStore] = field(
        "Metadata stores (file system trees and attributes).",
        min_items=1,
        max_items=16,
        map_key="name",
    )
    local_block_stores: list[LocalBlockStore] = field(
        "Local block stores (file contents on the node, or their cache).",
        min_items=1,
        max_items=16,
        map_key="name",
    )
    remote_block_stores: list[RemoteBlockStore] = field(
        "Remote block stores (durable file contents, e.g. in S3).",
        factory=list,
        max_items=16,
        map_key="name",
    )
    encryption_key: EncryptionKey | None = field(
        "Where the master key of remoteBlockStores[].encryption comes from; omit to have the "
        "operator generate one. Only read when a remote store is encrypted.",
        default=None,
    )
    shares: list[Share] = field(
        "Shares, each exported over NFS and SMB.", factory=list, max_items=64, map_key="name"
    )
    adapters: Adapters = field("The NFS and SMB protocol adapters.", factory=Adapters)
    users: list[User] = field(
        "DittoFS users besides the built-in admin.", factory=list, max_items=64, map_key="name"
    )
    groups: list[Group] = field(
        "DittoFS groups besides the built-in admins, operators and users.",
        factory=list,
        max_items=32,
        map_key="name",
    )
    identity: Identity = field(
        "Directory services (LDAP, Active Directory) that resolve domain users to Unix identities.",
        factory=Identity,
    )
    expose: Expose = field(
        "Services, Ingress and NetworkPolicies that make the server reachable.", factory=Expose
    )
    tuning: Tuning = field(
        "Garbage collection and local block store limits. Badger's caches and the append log "
        "are sized from the container's memory limit (pod.resources.limits.memory): set one.",
        factory=Tuning,
    )
    deletion_policy: Literal["Retain", "Delete"] = field(
        "What deleting the DittoServer does to its data. Retain keeps the PersistentVolumeClaims "
        "(control plane, metadata and block stores), the generated Secrets and the Percona "
        "cluster with its data; Delete removes them too. Remote buckets are never emptied.",
        default="Retain",
    )


# --- status ---------------------------------------------------------------------------------


@model
class Condition:
    """A metav1.Condition."""

    type: str = field(
        "Condition type in CamelCase, e.g. Ready.",
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
        r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
    )
    status: Literal["True", "False", "Unknown"] = field("Status of the condition.")
    reason: str = field(
        "Machine-readable CamelCase reason of the last transition.",
        min_length=1,
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
    )
    message: str = field("Human-readable details.", max_length=32768)
    last_transition_time: str = field(
        "When the status last changed (RFC 3339).", format="date-time"
    )
    observed_generation: int | None = field(
        "metadata.generation the condition was computed from.", default=None, minimum=0
    )


@model
class Endpoints:
    """Where clients reach the server."""

    nfs: str | None = field("NFS address, host:port.", default=None)
    smb: str | None = field("SMB address, host:port.", default=None)
    api: str | None = field("REST API URL.", default=None)
    mount_hint: str | None = field(
        "An example NFS mount command for the first share.", default=None
    )


@model
class UploadDrain:
    """The operator's last wait for DittoFS' uploads to the remote block stores before it
    stopped the pod (spec.controlPlane.uploadDrainTimeout)."""

    outcome: Literal["Drained", "TimedOut", "Failed"] = field(
        "Drained: DittoFS said every byte queued for the remote block stores was uploaded. "
        "TimedOut: it was still uploading, or its uploads stalled, when the time was up. "
        "Failed: DittoFS could not be asked (the message says why)."
    )
    cause: Literal["Stop", "Restart"] = field(
        "Why the pod stopped: spec.replicas 0, or a change of its template. (A deletion's wait "
        "is told by an Event only: the status goes with the DittoServer.)"
    )
    started_at: str = field("When the wait began (RFC 3339).", format="date-time")
    finished_at: str = field("When it ended (RFC 3339).", format="date-time")
    unsynced_bytes: int | None = field(
        "Bytes the local block stores held that the remote ones did not when the wait ended, "
        "as DittoFS counts them (GET /api/v1/blockstore/stats); absent when it could not say.",
        default=None,
        minimum=0,
    )
    message: str = field("What happened, in a sentence.", max_length=4096)


@model
class DittoServerStatus:
    """The observed state of a DittoFS server, written by the operator."""

    observed_generation: int | None = field(
        "metadata.generation the status was computed from.", default=None, minimum=0
    )
    phase: str | None = field(
        "One-word summary of the server's state, for `kubectl get`.", default=None
    )
    conditions: list[Condition] = field(
        "Conditions of the server; Ready summarizes them.",
        factory=list,
        max_items=32,
        map_key="type",
    )
    endpoints: Endpoints | None = field("Client endpoints.", default=None)
    upload_drain: UploadDrain | None = field(
        "The last wait for uploads to the remote block stores before the pod stopped.",
        default=None,
    )
    server: JSON | None = field(
        "Runtime state as the DittoFS server reports it over its REST API (stores, shares, "
        "adapters and their ports, health), for troubleshooting. Informational: its shape "
        "follows the server's and may change between DittoFS versions.",
        default=None,
    )


@model
class DittoServer:
    """A DittoFS NFS/SMB file server."""

    api_version: str = field(
        "APIVersion defines the versioned schema of this representation of an object."
    )
    kind: str = field("Kind is a string value representing the REST resource of this object.")
    metadata: JSON = field("Standard object metadata.")
    spec: DittoServerSpec = field("Desired state of the DittoFS server.")
    status: DittoServerStatus | None = field(
        "Observed state of the DittoFS server, written by the operator.", default=None
    )
