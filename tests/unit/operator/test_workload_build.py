"""The desired StatefulSet and the verdict on its rollout."""

from __future__ import annotations

import copy
import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from dittofs_controller.api.schema import parse
from dittofs_controller.api.v1alpha1 import DittoServerSpec
from dittofs_controller.kube.resources import ObjectKey
from dittofs_controller.operator import names, references
from dittofs_controller.operator.children import needs_apply
from dittofs_controller.operator.config import build as config
from dittofs_controller.operator.workload import build, drain

VALID = Path(__file__).resolve().parents[1] / "api" / "valid"
SERVER = {"metadata": {"name": "files", "namespace": "team", "uid": "u-1", "generation": 3}}
BASE: dict[str, Any] = {
    "metadataStores": [{"name": "meta", "type": "badger"}],
    "localBlockStores": [{"name": "blocks", "type": "filesystem"}],
    "shares": [{"name": "/export", "metadataStore": "meta", "localBlockStore": "blocks"}],
}
SELECTOR = {"app.kubernetes.io/name": "dittofs", "app.kubernetes.io/instance": "files"}
HASH = "f" * 64


def spec_of(**fields: Any) -> DittoServerSpec:
    return parse(DittoServerSpec, {**copy.deepcopy(BASE), **fields})


def sample(name: str) -> DittoServerSpec:
    return parse(DittoServerSpec, yaml.safe_load((VALID / name).read_text())["spec"])


def pod(spec: DittoServerSpec, restart_hash: str = HASH) -> dict[str, Any]:
    template: dict[str, Any] = build.statefulset(SERVER, spec, restart_hash)["spec"]["template"]
    return template


def container(spec: DittoServerSpec) -> dict[str, Any]:
    containers = pod(spec)["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def mounts(spec: DittoServerSpec) -> dict[str, dict[str, Any]]:
    """mountPath -> the volume mounted there, with readOnly."""
    volumes = {v["name"]: v for v in pod(spec)["spec"]["volumes"]}
    return {
        m["mountPath"]: {**volumes[m["name"]], "readOnly": m.get("readOnly", False)}
        for m in container(spec)["volumeMounts"]
    }


def env(spec: DittoServerSpec) -> dict[str, Any]:
    entries = container(spec)["env"]
    assert len({e["name"] for e in entries}) == len(entries), "duplicate variables"
    return {e["name"]: e.get("valueFrom", {}).get("secretKeyRef") or e for e in entries}


# --- the StatefulSet ------------------------------------------------------------------------


def test_statefulset_shape() -> None:
    sts = build.statefulset(SERVER, spec_of(), HASH)
    assert sts["metadata"]["name"] == "files"
    assert sts["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    spec = sts["spec"]
    assert spec["replicas"] == 1
    assert spec["serviceName"] == "files-api"
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}
    assert spec["selector"] == {"matchLabels": SELECTOR}
    assert "volumeClaimTemplates" not in spec  # standalone claims: resizable, addable
    assert build.statefulset(SERVER, sample("stopped.yaml"), HASH)["spec"]["replicas"] == 0


def test_pod_labels_and_annotations_never_lose_the_selector_or_the_hash() -> None:
    spec = spec_of(
        pod={
            "labels": {"team": "storage", "app.kubernetes.io/instance": "hijack"},
            "annotations": {"a": "b", names.RESTART_HASH_ANNOTATION: "hijack"},
        }
    )
    metadata = pod(spec)["metadata"]
    assert metadata["labels"] == {"team": "storage", **SELECTOR}
    assert metadata["annotations"] == {"a": "b", names.RESTART_HASH_ANNOTATION: HASH}


def test_command_runs_the_server_in_the_foreground_on_the_mounted_config() -> None:
    c = container(spec_of())
    assert c["command"] == ["/app/dfs"]
    assert c["args"] == ["start", "--foreground", "--config", names.CONFIG_FILE]
    assert (c["image"], c["imagePullPolicy"]) == ("marmos91c/dittofs:v0.29.0", "IfNotPresent")


def test_only_the_restart_hash_restarts_the_pod_not_shares_users_or_stores_settings() -> None:
    other = spec_of(
        shares=[{"name": "/other", "metadataStore": "meta", "localBlockStore": "blocks"}],
        users=[{"name": "ann", "passwordSecretRef": {"name": "ann", "key": "pw"}}],
        metadataStores=[{"name": "meta", "type": "badger", "badger": {"blockCacheMB": 64}}],
        deletionPolicy="Delete",
    )
    assert pod(other) == pod(spec_of())
    assert pod(spec_of(), "0" * 64) != pod(spec_of())


def test_the_pod_is_started_for_the_published_stores_revision() -> None:
    """A store changed over the API is used only by a new pod: the revision rolls it."""
    spec = spec_of()
    assert names.STORES_REVISION_ANNOTATION not in pod(spec)["metadata"]["annotations"]
    changed = {**SERVER, "status": {"server": {"storesRevision": "abc123"}}}
    template = build.statefulset(changed, spec, HASH)["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert annotations[names.STORES_REVISION_ANNOTATION] == "abc123"
    assert annotations[names.RESTART_HASH_ANNOTATION] == HASH


# --- volumes --------------------------------------------------------------------------------


def test_volumes_for_sqlite_badger_and_filesystem_stores() -> None:
    found = mounts(sample("storage-options.yaml"))
    assert found[names.CONFIG_DIR]["configMap"] == {"name": "files-config"}
    assert found[names.CONFIG_DIR]["readOnly"] is True
    claims = {
        path: volume["persistentVolumeClaim"]["claimName"]
        for path, volume in found.items()
        if "persistentVolumeClaim" in volume
    }
    assert claims == {
        names.CONTROLPLANE_DIR: names.controlplane_claim("files"),
        names.metadata_dir("meta"): names.metadata_claim("files", "meta"),
        names.blocks_dir("blocks"): names.blocks_claim("files", "blocks"),
    }
    assert found["/tmp"]["emptyDir"] == {}  # the only writable path besides the volumes


def test_memory_stores_need_no_claims_and_postgres_needs_no_sqlite_volume() -> None:
    memory = mounts(sample("memory-no-shares.yaml"))
    claims = [path for path, volume in memory.items() if "persistentVolumeClaim" in volume]
    assert claims == [names.CONTROLPLANE_DIR]
    percona = mounts(sample("percona.yaml"))
    assert names.CONTROLPLANE_DIR not in percona
    assert names.blocks_dir("cache") in percona


def test_tls_and_postgres_ca_are_mounted_read_only_from_their_secrets() -> None:
    tls = mounts(sample("api-loadbalancer-tls.yaml"))[names.TLS_DIR]
    assert tls["readOnly"] is True
    assert tls["secret"]["secretName"] == "dittofs-api-tls"
    assert {i["key"] for i in tls["secret"]["items"]} == {"tls.crt", "tls.key"}
    ca = mounts(sample("external-postgres.yaml"))[names.POSTGRES_CA_DIR]
    assert ca["secret"] == {"secretName": "rds-ca", "items": [{"key": "ca.pem", "path": "ca.pem"}]}
    assert names.TLS_DIR not in mounts(spec_of())
    client_ca = mounts(sample("api-mutual-tls.yaml"))[names.CLIENT_CA_DIR]
    assert client_ca["readOnly"] is True
    items = [{"key": "ca.crt", "path": "ca.crt"}]
    assert client_ca["secret"] == {"secretName": "dittofs-client-ca", "items": items}
    assert names.CLIENT_CA_DIR not in mounts(sample("api-loadbalancer-tls.yaml"))


def test_the_ldap_ca_is_mounted_where_the_server_is_told_to_read_it() -> None:
    spec = sample("identity-ldap.yaml")
    ca = mounts(spec)[names.LDAP_CA_DIR]
    assert ca["readOnly"] is True
    assert ca["secret"] == {
        "secretName": "company-ca",
        "items": [{"key": "ca.crt", "path": "ca.crt"}],
    }
    assert config.ldap_ca_file(spec) == f"{names.LDAP_CA_DIR}/ca.crt"
    # The bind password never reaches the pod: DittoFS gets it over its REST API.
    assert "ldap-bind" not in str(pod(spec))
    assert names.LDAP_CA_DIR not in mounts(spec_of())


def test_the_keytab_and_krb5_conf_are_mounted_at_fixed_names() -> None:
    found = mounts(sample("identity-kerberos.yaml"))
    keytab, conf = found[names.KERBEROS_DIR], found[names.KRB5_CONF_DIR]
    assert keytab["readOnly"] is True and conf["readOnly"] is True
    items = [{"key": "krb5.keytab", "path": names.KEYTAB_FILE}]
    assert keytab["secret"] == {"secretName": "files-keytab", "items": items}
    items = [{"key": "krb5.conf", "path": names.KRB5_CONF_FILE}]
    assert conf["configMap"] == {"name": "krb5", "items": items}
    assert f"{names.KERBEROS_DIR}/{names.KEYTAB_FILE}" == config.KEYTAB_PATH
    assert names.KERBEROS_DIR not in mounts(spec_of())


def test_encryption_key_file_is_mounted_and_its_passphrase_is_env() -> None:
    sealed = sample("s3-encrypted.yaml")
    key = mounts(sealed)[names.ENCRYPTION_DIR]
    assert key["readOnly"] is True
    assert key["secret"] == {
        "secretName": "sealed-master-key",
        "items": [{"key": "key.pem", "path": "key.pem"}],
    }
    assert env(sealed)["DITTOFS_ENCRYPTION_PASSPHRASE"] == {
        "name": "sealed-master-key",
        "key": "passphrase",
    }
    unsealed = sample("s3-cubbit.yaml")
    assert names.ENCRYPTION_DIR not in mounts(unsealed)
    assert "DITTOFS_ENCRYPTION_PASSPHRASE" not in env(unsealed)


def test_go_heap_follows_the_memory_limit_when_there_is_one() -> None:
    assert env(sample("tuning.yaml"))["GOMEMLIMIT"] == {
        "name": "GOMEMLIMIT",
        "valueFrom": {
            "resourceFieldRef": {"containerName": "dittofs", "resource": "limits.memory"}
        },
    }
    assert "GOMEMLIMIT" not in env(spec_of())
    own = spec_of(
        pod={
            "resources": {"limits": {"memory": "1Gi"}},
            "env": [{"name": "GOMEMLIMIT", "value": "900MiB"}],
        }
    )
    assert env(own)["GOMEMLIMIT"] == {"name": "GOMEMLIMIT", "value": "900MiB"}


def test_nfs_tls_secret_is_mounted_read_only_as_files() -> None:
    tls = mounts(sample("protocol-security.yaml"))[names.NFS_TLS_DIR]
    assert tls["readOnly"] is True
    assert tls["secret"]["secretName"] == "nfs-tls"
    assert {i["key"] for i in tls["secret"]["items"]} == {"tls.crt", "tls.key"}
    assert names.NFS_TLS_DIR not in mounts(spec_of())
    # Watched, so a Secret created later (or renewed) wakes the reconcilers.
    assert "nfs-tls" in references.referenced_secret_names(sample("protocol-security.yaml"))


def test_percona_root_ca_is_mounted_and_named_to_libpq() -> None:
    spec = sample("percona.yaml")
    ca = mounts(spec)[names.POSTGRES_CA_DIR]
    cluster = names.percona_cluster("files", spec)
    assert ca["readOnly"] is True
    assert ca["secret"] == {  # root.crt only: the Secret's root.key stays out of the pod
        "secretName": f"{cluster}-cluster-ca-cert",
        "items": [{"key": "root.crt", "path": "root.crt"}],
    }
    variables = {e["name"]: e.get("value") for e in container(spec)["env"]}
    assert variables["PGSSLROOTCERT"] == f"{names.POSTGRES_CA_DIR}/root.crt"
    assert names.POSTGRES_CA_DIR not in mounts(sample("minimal.yaml"))  # no PostgreSQL, no CA


def test_volume_names_are_dns_labels() -> None:
    long = "s" * 32
    spec = spec_of(
        metadataStores=[{"name": long, "type": "badger"}],
        localBlockStores=[{"name": long, "type": "filesystem"}],
        shares=[],
    )
    for volume in pod(spec)["spec"]["volumes"]:
        assert len(volume["name"]) <= 63


# --- environment ----------------------------------------------------------------------------


def test_secrets_reach_the_pod_as_env_from_generated_or_referenced_secrets() -> None:
    generated = env(spec_of())
    assert generated == {
        "DITTOFS_CONTROLPLANE_SECRET": {"name": "files-jwt", "key": "secret"},
        "DITTOFS_ADMIN_INITIAL_PASSWORD": {"name": "files-admin", "key": "password"},
    }
    referenced = env(sample("api-loadbalancer-tls.yaml"))
    assert referenced["DITTOFS_CONTROLPLANE_SECRET"] == {"name": "dittofs-jwt", "key": "secret"}
    assert referenced["DITTOFS_ADMIN_INITIAL_PASSWORD"]["name"] == "dittofs-admin"


def test_postgres_connection_comes_from_secret_keys() -> None:
    external = env(sample("external-postgres.yaml"))
    assert external["DITTOFS_DATABASE_POSTGRES_HOST"] == {
        "name": "rds-credentials",
        "key": "endpoint",
    }
    assert external["DITTOFS_DATABASE_POSTGRES_DATABASE"]["key"] == "database"
    percona = env(sample("percona.yaml"))
    assert {percona[f"DITTOFS_DATABASE_POSTGRES_{s}"]["key"] for s in ("HOST", "PORT")} == {
        "host",
        "port",
    }
    assert percona["DITTOFS_DATABASE_POSTGRES_PASSWORD"]["name"] == "files-pg-pguser-dittofs"
    assert not [k for k in env(spec_of()) if k.startswith("DITTOFS_DATABASE")]


def test_spec_env_is_appended_and_replaces_ours_by_name() -> None:
    spec = spec_of(
        pod={
            "env": [
                {"name": "GOMAXPROCS", "value": "2"},
                {"name": "DITTOFS_ADMIN_INITIAL_PASSWORD", "value": "mine"},
            ]
        }
    )
    entries = container(spec)["env"]
    assert [e["name"] for e in entries] == [
        "DITTOFS_CONTROLPLANE_SECRET",
        "GOMAXPROCS",
        "DITTOFS_ADMIN_INITIAL_PASSWORD",
    ]
    assert entries[-1] == {"name": "DITTOFS_ADMIN_INITIAL_PASSWORD", "value": "mine"}


def test_no_secret_value_in_the_pod_template() -> None:
    entries = container(sample("external-postgres.yaml"))["env"]
    plain = {e["name"]: e["value"] for e in entries if "value" in e}
    # Every operator variable is a secretKeyRef but the CA's path (and spec.pod.env, none here).
    assert plain == {"PGSSLROOTCERT": f"{names.POSTGRES_CA_DIR}/ca.pem"}


# --- ports and probes -----------------------------------------------------------------------


def test_container_ports_follow_the_enabled_adapters() -> None:
    ports = {p["name"]: p["containerPort"] for p in container(spec_of())["ports"]}
    assert ports == {"api": 8080, "metrics": 9090, "nfs": 12049, "smb": 12445}
    custom = {
        p["name"]: p["containerPort"]
        for p in container(sample("custom-ports-metrics.yaml"))["ports"]
    }
    assert custom == {"api": 18080, "metrics": 19090, "smb": 10445}
    fenced = {p["name"] for p in container(sample("network-policy.yaml"))["ports"]}
    assert "portmapper" in fenced
    quiet = spec_of(controlPlane={"metrics": {"enabled": False}})
    assert "metrics" not in {p["name"] for p in container(quiet)["ports"]}


@pytest.mark.parametrize(
    ("sample_name", "scheme"), [("minimal.yaml", "HTTP"), ("api-loadbalancer-tls.yaml", "HTTPS")]
)
def test_probes_use_the_health_endpoints_on_the_api_port(sample_name: str, scheme: str) -> None:
    c = container(sample(sample_name))
    for probe, path in (
        ("startupProbe", "/health/ready"),
        ("readinessProbe", "/health/ready"),
        ("livenessProbe", "/health"),
    ):
        assert c[probe]["httpGet"] == {"path": path, "port": "api", "scheme": scheme}
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300


def test_probes_only_connect_when_the_api_requires_client_certificates() -> None:
    # The kubelet presents no client certificate: an HTTPS probe would never pass.
    c = container(sample("api-mutual-tls.yaml"))
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["tcpSocket"] == {"port": "api"}
        assert "httpGet" not in c[probe]
    assert c["startupProbe"]["failureThreshold"] == build.STARTUP_PROBE_FAILURES


def test_grace_period_covers_the_servers_own_shutdown_deadline() -> None:
    assert pod(spec_of())["spec"]["terminationGracePeriodSeconds"] == 3 * 30 + 5 + 10
    slow = pod(sample("custom-ports-metrics.yaml"))["spec"]["terminationGracePeriodSeconds"]
    assert slow == 3 * 60 + 5 + 10
    assert "lifecycle" not in container(spec_of())


# --- security and scheduling ----------------------------------------------------------------


def test_hardened_by_default_to_the_restricted_standard() -> None:
    spec = pod(spec_of())["spec"]
    assert spec["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "fsGroup": 65532,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert spec["containers"][0]["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
    }
    assert spec["automountServiceAccountToken"] is False
    # Service links would inject DITTOFS_<SERVICE>_PORT=tcp://... which DittoFS reads as config.
    assert spec["enableServiceLinks"] is False


def test_security_overrides_replace_fields_and_keep_the_other_defaults() -> None:
    spec = spec_of(
        pod={
            "securityContext": {"runAsUser": 1000, "fsGroupChangePolicy": "Always"},
            "containerSecurityContext": {"readOnlyRootFilesystem": False},
        }
    )
    template = pod(spec)["spec"]
    assert template["securityContext"]["runAsUser"] == 1000
    assert template["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert template["securityContext"]["fsGroupChangePolicy"] == "Always"
    context = template["containers"][0]["securityContext"]
    assert context["readOnlyRootFilesystem"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}


def test_scheduling_and_resources_from_the_spec() -> None:
    spec = sample("pod-scheduling.yaml")
    template = pod(spec)["spec"]
    assert template["nodeSelector"] == {"kubernetes.io/arch": "arm64"}
    assert template["tolerations"][0]["key"] == "dedicated"
    assert "nodeAffinity" in template["affinity"]
    assert template["topologySpreadConstraints"][0]["maxSkew"] == 1
    assert template["priorityClassName"] == "system-cluster-critical"
    assert template["serviceAccountName"] == "dittofs"
    # A named account's token stays unmounted too: DittoFS never calls the Kubernetes API.
    assert template["automountServiceAccountToken"] is False
    assert template["imagePullSecrets"] == [{"name": "registry-credentials"}]
    c = template["containers"][0]
    assert c["resources"] == {
        "limits": {"cpu": 2, "memory": "4Gi"},
        "requests": {"cpu": "500m", "memory": "1Gi"},
    }
    assert (c["image"], c["imagePullPolicy"]) == (
        "registry.example.com/mirror/dittofs:v0.29.0",
        "Always",
    )


def test_unset_options_are_left_out_so_drift_detection_can_match() -> None:
    template = pod(spec_of())["spec"]
    for field in ("nodeSelector", "tolerations", "affinity", "topologySpreadConstraints",
                  "priorityClassName", "serviceAccountName", "imagePullSecrets"):  # fmt: skip
        assert field not in template
    assert "resources" not in template["containers"][0]


def test_removing_an_option_changes_the_desired_object() -> None:
    with_selector = build.statefulset(SERVER, spec_of(pod={"nodeSelector": {"a": "b"}}), HASH)
    without = build.statefulset(SERVER, spec_of(), HASH)
    # `without` is a subset of `with_selector`: only the stamp tells them apart.
    assert needs_apply(without, with_selector)


# --- dependencies and rollout ---------------------------------------------------------------


def with_conditions(*entries: tuple[str, str, int]) -> dict[str, Any]:
    server = copy.deepcopy(SERVER)
    server["status"] = {
        "conditions": [
            {"type": t, "status": s, "reason": "R", "message": "m", "observedGeneration": g}
            for t, s, g in entries
        ]
    }
    return server


def test_waiting_for_names_missing_stale_and_false_dependencies() -> None:
    assert build.waiting_for(with_conditions(
        ("ConfigReady", "True", 3), ("StorageReady", "True", 3), ("DatabaseReady", "True", 3)
    )) == []  # fmt: skip
    waiting = build.waiting_for(
        with_conditions(("ConfigReady", "False", 3), ("StorageReady", "True", 2))
    )
    assert waiting == [
        "ConfigReady (R: m)",
        "StorageReady (not reported for generation 3 yet)",
        "DatabaseReady (not reported for generation 3 yet)",
    ]


NOW = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)
CREATED = "2026-01-01T11:59:00+00:00"  # a minute before NOW
STARTED = "2026-01-01T11:59:20+00:00"
Obj = dict[str, Any]


def sts(generation: int = 2, **status: Any) -> dict[str, Any]:
    defaults = {"observedGeneration": 2, "currentRevision": "r1", "updateRevision": "r1"}
    return {
        "metadata": {"name": "files", "namespace": "team", "generation": generation},
        "status": {**defaults, **status},
    }


def test_running_when_the_pod_is_ready_and_rolled_out() -> None:
    available, progressing = build.rollout(
        sts(replicas=1, readyReplicas=1, updatedReplicas=1), 1, None, NOW
    )
    assert (available.status, available.reason) == ("True", "Running")
    assert (progressing.status, progressing.reason) == ("False", "RolloutComplete")


def test_a_ready_old_pod_is_available_while_the_new_template_rolls_out() -> None:
    for live in (
        sts(generation=3, replicas=1, readyReplicas=1, updatedReplicas=1),  # not observed yet
        sts(replicas=1, readyReplicas=1, updatedReplicas=0, updateRevision="r2"),
    ):
        available, progressing = build.rollout(live, 1, None, NOW)
        assert available.status == "True"
        assert (progressing.status, progressing.reason) == ("True", "RollingOut")


def live_pod(created: str = CREATED, conditions: tuple[Obj, ...] = (), **container: Any) -> Obj:
    """files-0 with one dittofs container in the given state (none reported when empty)."""
    statuses = [{"name": "dittofs", "restartCount": 0, **container}] if container else []
    return {
        "metadata": {"name": "files-0", "creationTimestamp": created},
        "status": {
            "phase": "Running" if "running" in container.get("state", {}) else "Pending",
            "conditions": list(conditions),
            "containerStatuses": statuses,
        },
    }


def ready_turned_false(at: str) -> Obj:
    return {"type": "Ready", "status": "False", "lastTransitionTime": at}


def available_for(pod_now: Obj | None) -> tuple[str, str]:
    available, progressing = build.rollout(sts(replicas=1, readyReplicas=0), 1, pod_now, NOW)
    assert (progressing.status, progressing.reason) == ("True", "RollingOut")
    return available.reason, available.message


def test_a_pod_on_its_normal_way_up_is_starting() -> None:
    available, _ = build.rollout(sts(replicas=0), 1, None, NOW)
    assert (available.status, available.reason) == ("False", "Starting")
    assert available_for(live_pod()) == ("Starting", "pod files-0 is Pending")
    creating = live_pod(state={"waiting": {"reason": "ContainerCreating"}})
    assert available_for(creating) == (
        "Starting",
        "pod files-0 is Pending: container dittofs is ContainerCreating",
    )
    running = {"running": {"startedAt": STARTED}}
    assert available_for(live_pod(state=running, started=False)) == (
        "Starting",
        "pod files-0 is Running: container dittofs awaits its startup probe",
    )
    # Started, and not ready since before it started: the first readiness probe is still due.
    awaiting = live_pod(state=running, started=True, conditions=(ready_turned_false(CREATED),))
    assert available_for(awaiting) == (
        "Starting",
        "pod files-0 is Running: container dittofs awaits its first readiness probe",
    )


def test_a_pod_held_up_by_something_that_needs_a_person_is_not_ready() -> None:
    crashing = live_pod(
        state={"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
        lastState={"terminated": {"exitCode": 1, "reason": "Error"}},
        restartCount=3,
    )
    assert available_for(crashing) == (
        "PodNotReady",
        "pod files-0: container dittofs is CrashLoopBackOff (last exit code 1, Error): back-off",
    )
    restarted = live_pod(
        state={"running": {"startedAt": STARTED}},
        lastState={"terminated": {"exitCode": 2, "reason": "Error"}},
        restartCount=1,
    )
    assert available_for(restarted) == (
        "PodNotReady",
        "pod files-0: container dittofs has restarted (last exit code 2, Error)",
    )
    unscheduled = live_pod(
        conditions=({"type": "PodScheduled", "status": "False", "message": "0/3 nodes"},)
    )
    assert available_for(unscheduled) == (
        "PodNotReady",
        "pod files-0 is not scheduled: 0/3 nodes",
    )
    image = live_pod(state={"waiting": {"reason": "ImagePullBackOff"}})
    assert available_for(image) == (
        "PodNotReady",
        "pod files-0: container dittofs is ImagePullBackOff",
    )
    failed = live_pod()
    failed["status"].update(phase="Failed", reason="Evicted")
    assert available_for(failed) == ("PodNotReady", "pod files-0 is Failed: Evicted")


def test_a_pod_that_served_and_stopped_answering_is_not_ready() -> None:
    served = live_pod(
        state={"running": {"startedAt": STARTED}},
        started=True,
        conditions=(ready_turned_false("2026-01-01T11:59:50+00:00"),),
    )
    assert available_for(served) == (
        "PodNotReady",
        "pod files-0: container dittofs runs but its readiness probe fails",
    )


def test_a_pod_not_started_within_the_startup_allowance_is_not_ready() -> None:
    allowance = datetime.timedelta(seconds=build.STARTUP_ALLOWANCE_SECONDS)
    creating = {"waiting": {"reason": "ContainerCreating"}}
    within = (NOW - allowance + datetime.timedelta(seconds=1)).isoformat()
    assert available_for(live_pod(created=within, state=creating))[0] == "Starting"
    beyond = (NOW - allowance - datetime.timedelta(seconds=1)).isoformat()
    assert available_for(live_pod(created=beyond, state=creating)) == (
        "PodNotReady",
        "pod files-0 has not started within 10 minutes: "
        "pod files-0 is Pending: container dittofs is ContainerCreating",
    )


def test_replicas_zero_is_stopped_then_stopping_until_the_pod_is_gone() -> None:
    available, progressing = build.rollout(sts(replicas=0, updatedReplicas=0), 0, None, NOW)
    assert (available.reason, progressing.status, progressing.reason) == (
        "Stopped",
        "False",
        "Stopped",
    )
    available, progressing = build.rollout(sts(replicas=1, readyReplicas=1), 0, None, NOW)
    assert (available.status, available.reason) == ("False", "Stopped")
    assert (progressing.status, progressing.reason) == ("True", "Stopping")


def test_only_the_startup_allowance_running_out_wakes_the_server_up() -> None:
    """Every change of the pod comes through its watch: no polling, one wake-up at the moment a
    pod on its way up turns PodNotReady by time alone."""
    now = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)
    allowance = build.STARTUP_ALLOWANCE_SECONDS

    def created(seconds_ago: int, **status: Any) -> dict[str, Any]:
        stamp = now - datetime.timedelta(seconds=seconds_ago)
        meta = {"name": "files-0", "creationTimestamp": stamp.strftime("%Y-%m-%dT%H:%M:%SZ")}
        return {"metadata": meta, "status": status}

    assert build.startup_deadline_seconds(None, now) is None
    assert build.startup_deadline_seconds(created(5), now) == allowance - 5
    assert build.startup_deadline_seconds(created(allowance + 60), now) is None  # already late
    failed = created(5, phase="Failed", reason="Evicted")
    assert build.startup_deadline_seconds(failed, now) is None  # in trouble: nothing to wait for


# --- stopping the pod, and draining its uploads first ---------------------------------------


def applied(desired: Obj) -> Obj:
    """`desired` as the API server holds it once applied (replicas as given)."""
    return copy.deepcopy(desired)


def test_a_change_stops_the_pod_when_it_scales_to_zero_or_changes_its_template() -> None:
    spec = spec_of()
    running = applied(build.statefulset(SERVER, spec, HASH))
    assert build.stopping(running, build.statefulset(SERVER, spec, HASH)) is None
    assert build.stopping(running, build.statefulset(SERVER, spec, "e" * 64)) == "Restart"
    stopped = spec_of(replicas=0)
    assert build.stopping(running, build.statefulset(SERVER, stopped, HASH)) == "Stop"
    assert build.stopping(None, build.statefulset(SERVER, spec, HASH)) is None
    # Starting a stopped server stops nothing, whatever else changes with it.
    idle = applied(build.statefulset(SERVER, stopped, HASH))
    assert build.stopping(idle, build.statefulset(SERVER, spec, "e" * 64)) is None
    # A field the spec stops setting changes the template hash: a restart, seen before applying.
    scheduled = applied(build.statefulset(SERVER, spec_of(pod={"nodeSelector": {"a": "b"}}), HASH))
    assert build.stopping(scheduled, build.statefulset(SERVER, spec, HASH)) == "Restart"


def test_a_statefulset_applied_before_the_template_hash_is_compared_field_by_field() -> None:
    spec = spec_of()
    older = applied(build.statefulset(SERVER, spec, HASH))
    del older["metadata"]["annotations"][names.TEMPLATE_HASH_ANNOTATION]
    assert build.stopping(older, build.statefulset(SERVER, spec, HASH)) is None
    assert build.stopping(older, build.statefulset(SERVER, spec, "e" * 64)) == "Restart"


def test_only_a_started_pod_that_is_not_being_deleted_is_asked_to_drain() -> None:
    running = {"running": {"startedAt": STARTED}}
    assert build.serving(live_pod(state=running, started=True))
    assert not build.serving(None)
    assert not build.serving(live_pod())
    assert not build.serving(live_pod(state=running, started=False))  # startup probe pending
    crashing = {"waiting": {"reason": "CrashLoopBackOff"}}
    assert not build.serving(live_pod(state=crashing, started=False))
    terminating = live_pod(state=running, started=True)
    terminating["metadata"]["deletionTimestamp"] = CREATED
    assert not build.serving(terminating)


def test_uploads_are_drained_for_remote_block_stores_a_serving_pod_and_a_timeout() -> None:
    serving = live_pod(state={"running": {"startedAt": STARTED}}, started=True)
    s3 = sample("s3-cubbit.yaml")
    assert s3.control_plane.upload_drain_timeout == 600
    assert build.drain_wanted(SERVER, s3, serving)
    assert not build.drain_wanted(SERVER, s3, live_pod())
    assert not build.drain_wanted(SERVER, spec_of(), serving)  # nothing remote
    # A remote store the spec dropped is still on the server until it is converged away.
    published = {**SERVER, "status": {"server": {"remoteBlockStores": [{"name": "s3"}]}}}
    assert build.drain_wanted(published, spec_of(), serving)
    document = yaml.safe_load((VALID / "s3-cubbit.yaml").read_text())["spec"]
    document["controlPlane"] = {"uploadDrainTimeout": 0}
    assert not build.drain_wanted(SERVER, parse(DittoServerSpec, document), serving)
    assert sample("s3-upload-drain-timeout.yaml").control_plane.upload_drain_timeout == 1800


def test_a_drain_reports_its_end_in_status_and_where_undrained_bytes_went() -> None:
    clock = [100.0]
    drains = drain.Drains(clock=lambda: clock[0])
    key = ObjectKey("team", "files")
    started = drains.start(key, "Restart", 600)
    assert drains.get(key) is started and not started.done
    assert not drains.overdue(started)
    clock[0] += 600 + drain.ANSWER_GRACE + 1
    assert drains.overdue(started)  # the drainer never answered
    started.finish("TimedOut", "DittoFS was still uploading", 4096, clock[0])
    started.finish("Drained", "too late", 0, clock[0])  # the first answer stays
    assert drains.usable(started)
    assert started.status() == {
        "outcome": "TimedOut",
        "cause": "Restart",
        "startedAt": started.started_at,
        "finishedAt": started.finished_at,
        "message": "DittoFS was still uploading",
        "unsyncedBytes": 4096,
    }
    note = started.warning("files-0", "Retain")
    assert note.startswith("pod files-0 stops (its pod template changed) with 4096 bytes")
    assert "uploaded when a server starts again" in note
    started.cause = "Deletion"
    assert "lost with the local block store volumes" in started.warning("files-0", "Delete")
    clock[0] += drain.FRESH_SECONDS
    assert not drains.usable(started)  # the next stop drains again
    unknown = drains.start(key, "Stop", 600)
    unknown.finish("Failed", "the pod has no IP address", None, clock[0])
    assert "unsyncedBytes" not in unknown.status()
    assert "an unknown number of bytes" in unknown.warning("files-0", "Retain")
    drains.forget(key)
    assert drains.get(key) is None
