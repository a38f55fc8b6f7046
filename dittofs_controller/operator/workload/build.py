"""The StatefulSet that runs DittoFS, and the verdict on its rollout, as pure functions.

Why a StatefulSet and not a Deployment with strategy Recreate: DittoFS is a single-node server
and two processes on the same metadata and blocks would corrupt them. A StatefulSet gives the
pod one identity (`<name>-0`) and never creates it again while the previous one still exists
in the API, even when its node stops answering: the replacement waits until the kubelet
confirms the old pod is dead or an administrator deletes it. A Deployment's ReplicaSet does not
count a terminating pod, so after a node failure (or an eviction) it starts a second pod at
once, and with a ReadWriteMany volume both would write. The claims are standalone (made by the
storage reconciler), not volumeClaimTemplates, because templates are immutable: resizing or
adding a store would wedge the StatefulSet forever. podManagementPolicy Parallel matters even
with one replica: under OrderedReady a pod that never becomes ready blocks the rollout of a
fixed template, so a bad change could not be rolled back.

Shutdown, and why there is no preStop hook: on SIGTERM DittoFS drains by itself (API, snapshots,
adapters, metadata flush) and exits on its own after at most 3 x shutdown_timeout + 5 s, so the
grace period is that plus a margin. It uploads nothing more to its remote block stores then, so
no grace period would get queued uploads out: the operator drains them over the REST API before
each stop it makes (see drain.py). The drain endpoint (POST /api/v1/system/drain-uploads) needs
an admin token, and the image has no client we may rely on for a hook (`dfs` has no such
command; the Alpine image happens to carry busybox wget, a mirrored or rebuilt image need not;
an httpGet hook can only GET). A `sleep` hook only helps when another replica takes over the
traffic, which never exists here, so it would only delay the restart.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from typing import Any, Literal

from dittofs_controller.api import v1alpha1
from dittofs_controller.api.schema import to_wire
from dittofs_controller.api.v1alpha1 import SecretKeySelector
from dittofs_controller.operator import conditions, names
from dittofs_controller.operator.children import (
    Obj,
    age_seconds,
    child_metadata,
    is_subset,
    object_for,
    selector_labels,
    stamped,
)
from dittofs_controller.operator.conditions import Outcome
from dittofs_controller.operator.config import build as config

COMPONENT = "server"
CONTAINER = "dittofs"
BINARY = "/app/dfs"  # the image's entrypoint
ENV_GO_MEMORY_LIMIT = "GOMEMLIMIT"  # bytes: resourceFieldRef gives them without a unit
UID = 65532  # the image's non-root user and group
TMP_DIR = "/tmp"  # the only writable path besides the volumes (the root filesystem is read-only)
SHUTDOWN_STAGES = 3  # DittoFS' own deadline is 3 x shutdown_timeout + 5 s
SHUTDOWN_SLACK = 5
GRACE_MARGIN = 10
Spec = v1alpha1.DittoServerSpec
DEPENDENCIES = (conditions.CONFIG_READY, conditions.STORAGE_READY, conditions.DATABASE_READY)


def statefulset(server: Obj, spec: Spec, restart_hash: str) -> Obj:
    """Stamped with a hash of itself, so a field the spec stops setting is applied away too.

    The pod is started for the stores revision the serverconfig reconciler published, if any: a
    store changed over the API is used only by a DittoFS started after the change.
    """
    name = server["metadata"]["name"]
    revision = ((server.get("status") or {}).get("server") or {}).get("storesRevision")
    template = pod_template(name, spec, restart_hash, revision)
    annotations = {names.TEMPLATE_HASH_ANNOTATION: _digest(template)}
    sts = object_for(
        "apps/v1",
        "StatefulSet",
        child_metadata(server, names.statefulset(name), COMPONENT, annotations=annotations),
        spec={
            "replicas": spec.replicas,
            "serviceName": names.service(name, "api"),
            "podManagementPolicy": "Parallel",
            # The partition, though 0 is the default, keeps the StatefulSet controller from
            # making a missing pod from the old revision while its status is stale, deleting it
            # for the update and looping on that forever (kubernetes#58347).
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
            "selector": {"matchLabels": selector_labels(name)},
            "template": template,
        },
    )
    return stamped(sts)


def _digest(template: Obj) -> str:
    text = json.dumps(template, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def pod_template(
    server_name: str, spec: Spec, restart_hash: str, stores_revision: str | None = None
) -> Obj:
    """The pod: labels select it, the restart hash annotation restarts it on a config change."""
    pod = spec.pod
    volumes, mounts = _volumes(server_name, spec)
    pod_spec: Obj = {
        # DittoFS never calls the Kubernetes API, and Service links would inject variables
        # such as DITTOFS_METRICS_PORT=tcp://... that DittoFS reads as config overrides.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": _overridden(
            {
                "runAsNonRoot": True,
                "runAsUser": UID,
                "runAsGroup": UID,
                "fsGroup": UID,
                # Skip the recursive chown of large block volumes when they already fit.
                "fsGroupChangePolicy": "OnRootMismatch",
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            pod.security_context,
        ),
        "terminationGracePeriodSeconds": termination_grace_seconds(spec),
        "containers": [_container(server_name, spec, mounts)],
        "volumes": volumes,
        **_present(
            serviceAccountName=pod.service_account_name,
            imagePullSecrets=[{"name": ref.name} for ref in spec.image_pull_secrets],
            nodeSelector=pod.node_selector,
            tolerations=pod.tolerations,
            affinity=pod.affinity,
            topologySpreadConstraints=pod.topology_spread_constraints,
            priorityClassName=pod.priority_class_name,
        ),
    }
    return {
        "metadata": {
            "labels": {**pod.labels, **selector_labels(server_name)},
            "annotations": {
                **pod.annotations,
                names.RESTART_HASH_ANNOTATION: restart_hash,
                **({names.STORES_REVISION_ANNOTATION: stores_revision} if stores_revision else {}),
            },
        },
        "spec": pod_spec,
    }


def termination_grace_seconds(spec: Spec) -> int:
    timeout = spec.control_plane.shutdown_timeout
    return SHUTDOWN_STAGES * timeout + SHUTDOWN_SLACK + GRACE_MARGIN


def _container(server_name: str, spec: Spec, mounts: list[Obj]) -> Obj:
    cp = spec.control_plane
    resources = _present(limits=spec.pod.resources.limits, requests=spec.pod.resources.requests)
    return {
        "name": CONTAINER,
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": [BINARY],
        # --foreground: without it dfs daemonizes and the container's main process exits.
        "args": ["start", "--foreground", "--config", names.CONFIG_FILE],
        "ports": [
            {"name": port, "containerPort": number, "protocol": "TCP"}
            for port, number in container_ports(spec).items()
        ],
        "env": env(server_name, spec),
        "securityContext": _overridden(
            {
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
                "readOnlyRootFilesystem": True,
            },
            spec.pod.container_security_context,
        ),
        "volumeMounts": mounts,
        **_present(resources=resources),
        **_probes(cp.tls),
    }


def container_ports(spec: Spec) -> dict[str, int]:
    """Named container ports (the names the Services and NetworkPolicies use too)."""
    cp, nfs, smb = spec.control_plane, spec.adapters.nfs, spec.adapters.smb
    ports = {"api": cp.port}
    if cp.metrics.enabled:
        ports["metrics"] = cp.metrics.port
    if nfs.enabled:
        ports["nfs"] = nfs.port
        if nfs.portmapper.enabled:
            ports["portmapper"] = nfs.portmapper.port
    if smb.enabled:
        ports["smb"] = smb.port
    return ports


def env(server_name: str, spec: Spec) -> list[Obj]:
    """Secrets as environment variables (never in the ConfigMap), then spec.pod.env.

    A variable of spec.pod.env replaces the operator's of the same name instead of following
    it: duplicate names are ambiguous to readers and draw warnings from the API server.
    """
    ours = [
        _from_secret(config.ENV_JWT_SECRET, config.jwt_secret_ref(server_name, spec)),
        _from_secret(config.ENV_ADMIN_PASSWORD, config.admin_secret_ref(server_name, spec)),
        *(
            _from_secret(variable, ref)
            for variable, ref in config.postgres_env(server_name, spec).items()
        ),
    ]
    if (ca_file := config.postgres_ca_file(spec)) is not None:
        # The config file gives the control plane its CA; the metadata stores' connections
        # (pgx, and lib/pq for migrations) find it through libpq's variable.
        ours.append({"name": config.ENV_POSTGRES_CA, "value": ca_file})
    if (secret := config.encryption_key_secret(server_name, spec)) is not None:
        passphrase = SecretKeySelector(name=secret, key=names.ENCRYPTION_PASSPHRASE_KEY)
        ours.append(_from_secret(config.ENV_ENCRYPTION_PASSPHRASE, passphrase))
    if "memory" in spec.pod.resources.limits:
        # Go's collector then works harder as the heap nears the limit instead of letting the
        # kernel kill the pod; DittoFS sets no memory limit of its own.
        limit = {"containerName": CONTAINER, "resource": "limits.memory"}
        ours.append({"name": ENV_GO_MEMORY_LIMIT, "valueFrom": {"resourceFieldRef": limit}})
    overridden = {variable.get("name") for variable in spec.pod.env}
    return [v for v in ours if v["name"] not in overridden] + list(spec.pod.env)


def _from_secret(variable: str, ref: SecretKeySelector) -> Obj:
    return {"name": variable, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}


def _volumes(server_name: str, spec: Spec) -> tuple[list[Obj], list[Obj]]:
    """Volumes and their mounts: config, TLS, CAs, the storage reconciler's claims, /tmp."""
    volumes: list[Obj] = []
    mounts: list[Obj] = []

    def add(name: str, source: Obj, path: str, *, read_only: bool = False) -> None:
        volumes.append({"name": name, **source})
        mounts.append(
            {"name": name, "mountPath": path, **({"readOnly": True} if read_only else {})}
        )

    def claim(name: str) -> Obj:
        return {"persistentVolumeClaim": {"claimName": name}}

    def secret_keys(secret: str, *keys: str) -> Obj:
        items = [{"key": key, "path": key} for key in keys]
        return {"secret": {"secretName": secret, "items": items}}

    cp = spec.control_plane
    config_map = {"configMap": {"name": names.config_map(server_name)}}
    add("config", config_map, names.CONFIG_DIR, read_only=True)
    if cp.tls is not None:
        source = secret_keys(cp.tls.secret_name, config.TLS_CERT_KEY, config.TLS_KEY_KEY)
        add("tls", source, names.TLS_DIR, read_only=True)
        if (client_ca := cp.tls.client_ca) is not None:
            source = secret_keys(client_ca.secret_name, client_ca.key)
            add("tls-client-ca", source, names.CLIENT_CA_DIR, read_only=True)
    if (nfs_tls := spec.adapters.nfs.tls) is not None:
        source = secret_keys(nfs_tls.secret_name, config.TLS_CERT_KEY, config.TLS_KEY_KEY)
        add("nfs-tls", source, names.NFS_TLS_DIR, read_only=True)
    if (ca := config.postgres_ca(server_name, spec)) is not None:
        add("postgres-ca", secret_keys(ca.name, ca.key), names.POSTGRES_CA_DIR, read_only=True)
    if (ldap_ca := config.ldap_ca(spec)) is not None:
        add("ldap-ca", secret_keys(ldap_ca.name, ldap_ca.key), names.LDAP_CA_DIR, read_only=True)
    if (kerberos := spec.identity.kerberos) is not None:
        keytab = kerberos.keytab_secret_ref
        items = [{"key": keytab.key, "path": names.KEYTAB_FILE}]
        add(
            "keytab",
            {"secret": {"secretName": keytab.name, "items": items}},
            names.KERBEROS_DIR,
            read_only=True,
        )
        conf = kerberos.krb5_conf_config_map_ref
        items = [{"key": conf.key, "path": names.KRB5_CONF_FILE}]
        source = {"configMap": {"name": conf.name, "items": items}}
        add("krb5-conf", source, names.KRB5_CONF_DIR, read_only=True)
    if (secret := config.encryption_key_secret(server_name, spec)) is not None:
        source = secret_keys(secret, names.ENCRYPTION_KEY_FILE_KEY)
        add("encryption", source, names.ENCRYPTION_DIR, read_only=True)
    if not config.uses_postgres(spec):
        add("controlplane", claim(names.controlplane_claim(server_name)), names.CONTROLPLANE_DIR)
    for meta in spec.metadata_stores:
        if meta.type == "badger":
            add(
                f"meta-{meta.name}",
                claim(names.metadata_claim(server_name, meta.name)),
                names.metadata_dir(meta.name),
            )
    for blocks in spec.local_block_stores:
        if blocks.type == "filesystem":
            add(
                f"blocks-{blocks.name}",
                claim(names.blocks_claim(server_name, blocks.name)),
                names.blocks_dir(blocks.name),
            )
    add("tmp", {"emptyDir": {}}, TMP_DIR)
    return volumes, mounts


# Opening large stores or migrating the database may take minutes: allow 10 before a restart.
STARTUP_PROBE_PERIOD = 5
STARTUP_PROBE_FAILURES = 120
STARTUP_ALLOWANCE_SECONDS = STARTUP_PROBE_PERIOD * STARTUP_PROBE_FAILURES


def _probes(tls: v1alpha1.TLS | None) -> Obj:
    """/health/ready answers 200 once the server has fully started; /health while it serves.

    With mutual TLS (tls.clientCA) DittoFS refuses every handshake without a client
    certificate, and the kubelet's HTTPS probes cannot present one; the metrics port serves
    /metrics only, and the image has no client an exec probe could rely on. So the probes
    then only connect to the API port: DittoFS opens it after its stores and adapters are set
    up, which is when /health/ready would answer 200 anyway (it checks nothing more), and
    whether the API answers is what the operator's own calls (ServerConfigured) tell. Servers
    without clientCA keep their HTTP probes, and so their pod template.
    """
    mutual = tls is not None and tls.client_ca is not None

    def get(path: str, **timing: int) -> Obj:
        if mutual:
            return {"tcpSocket": {"port": "api"}, **timing}
        scheme = "HTTPS" if tls is not None else "HTTP"  # the kubelet verifies no certificate
        return {"httpGet": {"path": path, "port": "api", "scheme": scheme}, **timing}

    return {
        "startupProbe": get(
            "/health/ready",
            periodSeconds=STARTUP_PROBE_PERIOD,
            timeoutSeconds=5,
            failureThreshold=STARTUP_PROBE_FAILURES,
        ),
        "readinessProbe": get(
            "/health/ready", periodSeconds=10, timeoutSeconds=5, failureThreshold=3
        ),
        "livenessProbe": get("/health", periodSeconds=10, timeoutSeconds=5, failureThreshold=6),
    }


def _overridden(defaults: Obj, override: object | None) -> Obj:
    """The defaults with the spec's fields on top; the API refuses any that would loosen them."""
    return {**defaults, **(to_wire(override) if override is not None else {})}


def _present(**fields: Any) -> Obj:
    """Only the fields that are set: an empty one would never match the live object."""
    return {key: value for key, value in fields.items() if value not in (None, [], {})}


# --- stopping the pod -----------------------------------------------------------------------

StopCause = Literal["Stop", "Restart", "Deletion"]
STOP_WHY: dict[StopCause, str] = {
    "Stop": "spec.replicas is 0",
    "Restart": "its pod template changed",
    "Deletion": "the DittoServer is being deleted",
}


def stopping(live: Obj | None, desired: Obj) -> StopCause | None:
    """Whether applying `desired` stops the pod of `live`, and why; None when it does not."""
    if live is None or not live["spec"].get("replicas"):
        return None
    if desired["spec"]["replicas"] == 0:
        return "Stop"
    applied = (live["metadata"].get("annotations") or {}).get(names.TEMPLATE_HASH_ANNOTATION)
    if applied is None:  # applied before the annotation existed: compare the fields it sets
        same = is_subset(desired["spec"]["template"], live["spec"].get("template"))
    else:
        same = applied == desired["metadata"]["annotations"][names.TEMPLATE_HASH_ANNOTATION]
    return None if same else "Restart"


def serving(pod: Obj | None) -> bool:
    """Whether the pod runs a DittoFS that has started (its startup probe passed) and is not
    being deleted: one that can be asked to drain its uploads."""
    if pod is None or pod["metadata"].get("deletionTimestamp"):
        return False
    for container in (pod.get("status") or {}).get("containerStatuses") or ():
        if container.get("name") == CONTAINER:
            return bool(container.get("started")) and "running" in (container.get("state") or {})
    return False


def drain_wanted(server: Obj, spec: Spec, pod: Obj | None) -> bool:
    """Whether to wait for uploads before stopping the pod: a wait is allowed, the server has
    remote block stores (in the spec, or still on the server as its status reports), and its
    pod serves."""
    published = ((server.get("status") or {}).get("server") or {}).get("remoteBlockStores")
    remote = bool(spec.remote_block_stores) or bool(published)
    return spec.control_plane.upload_drain_timeout > 0 and remote and serving(pod)


def draining(spec: Spec, cause: StopCause, pod_name: str) -> Outcome:
    """Progressing while the operator waits for the uploads."""
    timeout = spec.control_plane.upload_drain_timeout
    return Outcome.true(
        "DrainingUploads",
        f"waiting up to {timeout} s for DittoFS in pod {pod_name} to upload what the remote "
        f"block stores lack before the pod stops ({STOP_WHY[cause]})",
    )


# --- judging the rollout --------------------------------------------------------------------


def waiting_for(server: Obj) -> list[str]:
    """The dependencies not yet True for the current generation, each with why."""
    generation = server["metadata"].get("generation", 0)
    waiting = []
    for kind in DEPENDENCIES:
        found = conditions.find(server, kind)
        if found is None or found.get("observedGeneration") != generation:
            waiting.append(f"{kind} (not reported for generation {generation} yet)")
        elif found.get("status") != "True":
            waiting.append(f"{kind} ({found.get('reason')}: {found.get('message')})")
    return waiting


def rollout(
    live: Obj, replicas: int, pod: Obj | None, now: datetime.datetime
) -> tuple[Outcome, Outcome]:
    """Available and Progressing from the StatefulSet's status (and its pod's, if not ready).

    Available means a pod serves, even one of the previous template while the next one is
    not rolled out yet; Progressing means the StatefulSet has not converged on the latest
    template or replica count. A pod on its normal way up is Starting (a Normal Event); one
    held up by something that needs a person is PodNotReady (a Warning).
    """
    status = live.get("status") or {}
    pod_name = f"{live['metadata']['name']}-0"
    observed = status.get("observedGeneration") == live["metadata"].get("generation")
    converged = (
        observed
        and status.get("replicas", 0) == replicas
        and status.get("updatedReplicas", 0) == replicas
        and status.get("currentRevision") == status.get("updateRevision")
    )
    if replicas == 0:
        available = Outcome.false("Stopped", "spec.replicas is 0: the server is stopped")
        if converged:
            return available, Outcome.false("Stopped", "no pod runs; every volume is kept")
        return available, Outcome.true("Stopping", f"waiting for pod {pod_name} to terminate")
    if status.get("readyReplicas", 0) >= 1:
        available = Outcome.true("Running", f"pod {pod_name} is ready")
        if converged and status.get("readyReplicas") == replicas:
            return available, Outcome.false("RolloutComplete", "the latest pod template runs")
        return available, Outcome.true("RollingOut", "rolling out the latest pod template")
    progressing = Outcome.true("RollingOut", f"waiting for pod {pod_name} to become ready")
    if pod is None or not status.get("replicas"):
        return Outcome.false("Starting", f"pod {pod_name} is being created"), progressing
    trouble = pod_trouble(pod, now)
    if trouble:
        return Outcome.false("PodNotReady", trouble), progressing
    return Outcome.false("Starting", pod_progress(pod)), progressing


# Container waiting reasons on a pod's normal way up; any other one (ErrImagePull,
# CrashLoopBackOff, CreateContainerConfigError, ...) needs a person.
STARTING_WAITING_REASONS = frozenset({"ContainerCreating", "PodInitializing"})


def pod_trouble(pod: Obj, now: datetime.datetime) -> str | None:
    """Why a pod that is not ready will not become ready by itself, in one line; None while it
    is on its normal way up: scheduled, pulled and started within the startup allowance."""
    name = pod["metadata"]["name"]
    status = pod.get("status") or {}
    phase = status.get("phase", "Pending")
    if phase in ("Failed", "Succeeded"):
        why = status.get("message") or status.get("reason")
        return f"pod {name} is {phase}: {why}" if why else f"pod {name} is {phase}"
    for condition in status.get("conditions") or ():
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            why = condition.get("message") or condition.get("reason")
            return f"pod {name} is not scheduled: {why}"
    for container in status.get("containerStatuses") or ():
        state = container.get("state") or {}
        waiting = state.get("waiting") or {}
        last = (container.get("lastState") or {}).get("terminated") or {}
        where = f"pod {name}: container {container['name']}"
        exit_note = (
            f" (last exit code {last.get('exitCode')}, {last.get('reason')})" if last else ""
        )
        if waiting.get("reason") and waiting["reason"] not in STARTING_WAITING_REASONS:
            detail = f"{where} is {waiting['reason']}{exit_note}"
            message = waiting.get("message")
            return f"{detail}: {message}" if message else detail
        if container.get("restartCount"):
            return f"{where} has restarted{exit_note}"
        started_at = (state.get("running") or {}).get("startedAt")
        if started_at and _unready_since(status, started_at):
            return f"{where} runs but its readiness probe fails"
    if age_seconds(pod, now) > STARTUP_ALLOWANCE_SECONDS:
        minutes = STARTUP_ALLOWANCE_SECONDS // 60
        return f"pod {name} has not started within {minutes} minutes: {pod_progress(pod)}"
    return None


def _unready_since(status: Obj, started_at: str) -> bool:
    """Whether the pod's Ready condition turned False after its container started: it served,
    then stopped answering. Not ready since before the start is the way up (the first
    readiness probe runs up to a period after the startup probe passed)."""
    for condition in status.get("conditions") or ():
        if condition.get("type") == "Ready" and condition.get("status") == "False":
            turned = condition.get("lastTransitionTime")
            parse = datetime.datetime.fromisoformat
            return bool(turned) and parse(turned) > parse(started_at)
    return False


def pod_progress(pod: Obj) -> str:
    """Where a pod on its way up is: its phase, and what its containers wait for."""
    name = pod["metadata"]["name"]
    status = pod.get("status") or {}
    steps = []
    for container in status.get("containerStatuses") or ():
        state = container.get("state") or {}
        if reason := (state.get("waiting") or {}).get("reason"):
            steps.append(f"container {container['name']} is {reason}")
        elif "running" in state:
            probe = "first readiness" if container.get("started") else "startup"
            steps.append(f"container {container['name']} awaits its {probe} probe")
    phase = status.get("phase", "Pending")
    return f"pod {name} is {phase}: {'; '.join(steps)}" if steps else f"pod {name} is {phase}"


def startup_deadline_seconds(pod: Obj | None, now: datetime.datetime) -> float | None:
    """When a pod on its way up turns PodNotReady by the mere passing of time (its startup
    allowance running out), or None: every other change of the pod comes through its watch."""
    if pod is None or pod_trouble(pod, now) is not None:
        return None
    return max(1.0, STARTUP_ALLOWANCE_SECONDS - age_seconds(pod, now))
