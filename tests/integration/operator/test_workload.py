"""The server reconciler on the real API server: the StatefulSet, its gates, drift, admission.

There is no scheduler or kubelet: the StatefulSet controller creates the pod, which stays
Pending. StorageReady and DatabaseReady are published by these tests themselves (a field
manager of their own) with the real storage and database reconcilers left out of the operator,
so the simulation never races them; one test runs them for real when they exist.
"""

from __future__ import annotations

import copy
import datetime
import importlib.util
from pathlib import Path
from typing import Any

import pytest
import yaml

from dittofs_controller.api import v1alpha1
from dittofs_controller.api.schema import parse
from dittofs_controller.kube.client import ApiError, KubeClient
from dittofs_controller.kube.resources import (
    CONFIGMAPS,
    DITTOSERVERS,
    NAMESPACES,
    PODS,
    PVCS,
    STATEFULSETS,
    ObjectKey,
    Resource,
)
from dittofs_controller.operator import conditions, names
from dittofs_controller.operator.children import needs_apply
from dittofs_controller.operator.workload import build
from dittofs_controller.runtime.controller import Controller
from dittofs_controller.runtime.manager import Manager
from tests.integration.operator.conftest import (
    RunningOperator,
    StartOperator,
    condition,
    load_manifest,
    wait_for,
)
from tests.testbed import ControlPlane

VALID = Path(__file__).resolve().parents[2] / "unit" / "api" / "valid"
MINIMAL = VALID / "minimal.yaml"
SIMULATED = (conditions.STORAGE_READY, conditions.DATABASE_READY)
SIMULATOR = "tests/simulated-dependencies"
PVS = Resource("", "v1", "persistentvolumes", "PersistentVolume", namespaced=False)
Obj = dict[str, Any]


@pytest.fixture
async def server_operator(
    monkeypatch: pytest.MonkeyPatch, start_operator: StartOperator
) -> RunningOperator:
    """The operator without the reconcilers whose conditions the tests simulate."""
    add = Manager.add

    def without_simulated(self: Manager, controller: Controller) -> Controller:
        if getattr(controller.reconciler, "condition", None) in SIMULATED:
            return controller
        return add(self, controller)

    monkeypatch.setattr(Manager, "add", without_simulated)
    return await start_operator()


async def create(kube: KubeClient, namespace: str, **spec: Any) -> ObjectKey:
    server = load_manifest(MINIMAL, namespace)
    server["spec"].update(copy.deepcopy(spec))
    await kube.create(DITTOSERVERS, server, namespace)
    return ObjectKey(namespace, server["metadata"]["name"])


async def simulate(
    kube: KubeClient, key: ObjectKey, storage: str | None = "True", database: str | None = "True"
) -> None:
    """Publish StorageReady/DatabaseReady for the current generation, as their owners would.

    Both in every apply (None leaves one out): an apply drops the entries its manager owned
    and did not send again.
    """
    server = await kube.get(DITTOSERVERS, key.name, key.namespace)
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    statuses = {conditions.STORAGE_READY: storage, conditions.DATABASE_READY: database}
    entries = [
        {
            "type": kind,
            "status": status,
            "reason": "Simulated" if status == "True" else "SimulatedOutage",
            "message": "published by the test",
            "observedGeneration": server["metadata"]["generation"],
            "lastTransitionTime": now,
        }
        for kind, status in statuses.items()
        if status is not None
    ]
    body = {
        "apiVersion": v1alpha1.API_VERSION,
        "kind": v1alpha1.KIND,
        "metadata": {"name": key.name, "namespace": key.namespace},
        "status": {"conditions": entries},
    }
    await kube.apply(DITTOSERVERS, body, field_manager=SIMULATOR, subresource="status")


async def current(kube: KubeClient, key: ObjectKey, kind: str) -> Obj | None:
    """The condition when it was computed for the DittoServer's current generation."""
    server = await kube.get(DITTOSERVERS, key.name, key.namespace)
    found = await condition(kube, key, kind)
    generation = server["metadata"]["generation"]
    return found if found and found.get("observedGeneration") == generation else None


async def until(kube: KubeClient, key: ObjectKey, kind: str, reason: str) -> Obj:
    async def check() -> Obj | None:
        found = await current(kube, key, kind)
        return found if found and found["reason"] == reason else None

    found: Obj = await wait_for(check, f"{kind} reason {reason}")
    return found


async def statefulset(kube: KubeClient, key: ObjectKey) -> Obj | None:
    return await kube.get_or_none(STATEFULSETS, names.statefulset(key.name), key.namespace)


async def running(kube: KubeClient, namespace: str, **spec: Any) -> tuple[ObjectKey, Obj]:
    """A DittoServer whose dependencies are ready, and its StatefulSet."""
    key = await create(kube, namespace, **spec)
    await until(kube, key, conditions.CONFIG_READY, "Rendered")
    await simulate(kube, key)
    sts: Obj = await wait_for(lambda: statefulset(kube, key), "the StatefulSet")
    return key, sts


async def settled(kube: KubeClient, key: ObjectKey, patch: Obj) -> None:
    """Apply a spec change, let the dependencies catch up and the server reconciler judge it."""
    await kube.merge_patch(DITTOSERVERS, key.name, {"spec": patch}, key.namespace)
    await until(kube, key, conditions.CONFIG_READY, "Rendered")
    await simulate(kube, key)

    async def judged() -> bool:
        progressing = await current(kube, key, conditions.PROGRESSING)
        return bool(progressing and progressing["reason"] != "WaitingForDependencies")

    await wait_for(judged, "the server reconciler to act on the new generation")


async def template_hash(kube: KubeClient, key: ObjectKey) -> str | None:
    sts = await statefulset(kube, key)
    annotations = (sts or {}).get("spec", {}).get("template", {}).get("metadata", {})
    value: str | None = (annotations.get("annotations") or {}).get(names.RESTART_HASH_ANNOTATION)
    return value


async def config_map_hash(kube: KubeClient, key: ObjectKey) -> str:
    config_map = await kube.get(CONFIGMAPS, names.config_map(key.name), key.namespace)
    value: str = config_map["metadata"]["annotations"][names.RESTART_HASH_ANNOTATION]
    return value


# --- gating ---------------------------------------------------------------------------------


async def test_statefulset_appears_only_once_config_storage_and_database_are_ready(
    kube: KubeClient, namespace: str, server_operator: RunningOperator
) -> None:
    key = await create(kube, namespace)
    await until(kube, key, conditions.CONFIG_READY, "Rendered")
    waiting = await until(kube, key, conditions.AVAILABLE, "WaitingForDependencies")
    assert "StorageReady" in waiting["message"] and "DatabaseReady" in waiting["message"]
    progressing = await current(kube, key, conditions.PROGRESSING)
    assert progressing and (progressing["status"], progressing["reason"]) == (
        "True",
        "WaitingForDependencies",
    )
    assert await statefulset(kube, key) is None

    await simulate(kube, key, database=None)

    async def only_database() -> bool:
        found = await current(kube, key, conditions.AVAILABLE)
        return bool(found and "StorageReady" not in found["message"])

    await wait_for(only_database, "Available to wait for DatabaseReady alone")
    found = await current(kube, key, conditions.AVAILABLE)
    assert found and "DatabaseReady" in found["message"]
    assert await statefulset(kube, key) is None

    await simulate(kube, key)
    sts: Obj = await wait_for(lambda: statefulset(kube, key), "the StatefulSet")
    server = await kube.get(DITTOSERVERS, key.name, namespace)
    assert sts["metadata"]["ownerReferences"][0]["uid"] == server["metadata"]["uid"]
    assert "volumeClaimTemplates" not in sts["spec"]
    assert await template_hash(kube, key) == await config_map_hash(kube, key)

    # No kubelet: the pod the StatefulSet controller creates stays Pending, on its way up as
    # far as the operator can tell (the message says it looked at the pod).
    await wait_for(lambda: kube.get_or_none(PODS, f"{key.name}-0", namespace), "the pod")

    async def pod_looked_at() -> bool:
        found = await current(kube, key, conditions.AVAILABLE)
        return bool(found) and (found["reason"], found["message"]) == (
            "Starting",
            f"pod {key.name}-0 is Pending",
        )

    await wait_for(pod_looked_at, "Available to say where the pod is")
    rolling = await current(kube, key, conditions.PROGRESSING)
    assert rolling and (rolling["status"], rolling["reason"]) == ("True", "RollingOut")


async def test_with_the_real_storage_and_database_reconcilers(
    kube: KubeClient, namespace: str, operator: RunningOperator
) -> None:
    absent = [
        module
        for module in ("storage", "database")
        if importlib.util.find_spec(f"dittofs_controller.operator.{module}") is None
    ]
    if absent:
        pytest.skip("needs storage/database reconcilers")
    key = await create(kube, namespace)
    created: list[str] = []
    try:

        async def bound_and_present() -> Obj | None:
            await bind_claims(kube, namespace, created)
            return await statefulset(kube, key)

        sts: Obj = await wait_for(bound_and_present, "the StatefulSet", timeout=90)
        for kind in (conditions.CONFIG_READY, *SIMULATED):
            found = await current(kube, key, kind)
            assert found and found["status"] == "True", (kind, found)
        claims = {
            volume["persistentVolumeClaim"]["claimName"]
            for volume in sts["spec"]["template"]["spec"]["volumes"]
            if "persistentVolumeClaim" in volume
        }
        for claim in claims:
            assert await kube.get_or_none(PVCS, claim, namespace), claim
    finally:
        for name in created:
            await kube.delete(PVS, name)


async def bind_claims(kube: KubeClient, namespace: str, created: list[str]) -> None:
    """A tiny provisioner: one pre-bound hostPath PersistentVolume per pending claim."""
    claims = await kube.request("GET", PVCS.path(namespace))
    for claim in claims.get("items") or ():
        meta, spec = claim["metadata"], claim["spec"]
        name = f"{namespace}-{meta['name']}"[:253]
        if spec.get("volumeName") or name in created:
            continue
        volume = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": name},
            "spec": {
                "capacity": {"storage": spec["resources"]["requests"]["storage"]},
                "accessModes": spec["accessModes"],
                "hostPath": {"path": f"/tmp/{name}"},
                "claimRef": {"namespace": namespace, "name": meta["name"]},
                "storageClassName": spec.get("storageClassName") or "",
                # Nothing to reclaim: the test deletes the volume; the path is never used.
                "persistentVolumeReclaimPolicy": "Retain",
            },
        }
        await kube.create(PVS, volume)
        created.append(name)


# --- admission ------------------------------------------------------------------------------


async def dry_run_pod(kube: KubeClient, namespace: str, template: Obj) -> None:
    """Create a Pod from a pod template with dryRun=All: admission runs, nothing is stored."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {**copy.deepcopy(template["metadata"]), "name": "dry-run"},
        "spec": copy.deepcopy(template["spec"]),
    }
    await kube.request(
        "POST",
        PODS.path(namespace),
        query={"dryRun": "All", "fieldValidation": "Strict"},
        body=pod,
    )


async def test_pod_template_passes_the_restricted_pod_security_standard(
    kube: KubeClient, namespace: str, server_operator: RunningOperator
) -> None:
    labels = {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }
    await kube.merge_patch(NAMESPACES, namespace, {"metadata": {"labels": labels}})
    _, sts = await running(
        kube, namespace, pod={"labels": {"team": "storage"}, "annotations": {"a": "b"}}
    )
    template = sts["spec"]["template"]
    await dry_run_pod(kube, namespace, template)

    # The check has teeth: one relaxed field and the namespace refuses the pod.
    relaxed = copy.deepcopy(template)
    relaxed["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    with pytest.raises(ApiError) as refused:
        await dry_run_pod(kube, namespace, relaxed)
    assert refused.value.status == 403 and "PodSecurity" in refused.value.message

    # Every sample's template is admitted too (pod-scheduling names a ServiceAccount it expects
    # to exist, and a system priority class only kube-system may use).
    await kube.create(
        Resource("", "v1", "serviceaccounts", "ServiceAccount"),
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "dittofs"}},
        namespace,
    )
    for path in sorted(VALID.glob("*.yaml")):
        spec = parse(v1alpha1.DittoServerSpec, yaml.safe_load(path.read_text())["spec"])
        sample = build.pod_template(path.stem, spec, "0" * 64)
        sample["spec"].pop("priorityClassName", None)
        await dry_run_pod(kube, namespace, sample)


# --- drift and change -----------------------------------------------------------------------


async def test_statefulset_drift_is_restored(
    kube: KubeClient, namespace: str, server_operator: RunningOperator
) -> None:
    key, sts = await running(kube, namespace)
    original = sts["spec"]["template"]
    patch = {
        "spec": {
            "replicas": 0,
            "template": {"metadata": {"annotations": {names.RESTART_HASH_ANNOTATION: "x"}}},
        }
    }
    await kube.merge_patch(STATEFULSETS, sts["metadata"]["name"], patch, namespace)

    async def restored() -> bool:
        live = await statefulset(kube, key)
        return bool(
            live
            and live["spec"]["replicas"] == 1
            and live["spec"]["template"]["metadata"] == original["metadata"]
        )

    await wait_for(restored, "the edited StatefulSet to be restored")
    await kube.delete(STATEFULSETS, sts["metadata"]["name"], namespace)

    async def recreated() -> bool:
        live = await statefulset(kube, key)
        return bool(live and live["metadata"]["uid"] != sts["metadata"]["uid"]) and (
            await restored()
        )

    await wait_for(recreated, "the deleted StatefulSet to be re-created")


async def test_share_edits_leave_the_pod_alone_and_log_level_restarts_it(
    kube: KubeClient, namespace: str, server_operator: RunningOperator
) -> None:
    key, sts = await running(kube, namespace)
    shares = [{"name": "/other", "metadataStore": "meta", "localBlockStore": "blocks"}]
    await settled(kube, key, {"shares": shares})
    after = await statefulset(kube, key)
    assert after is not None
    assert after["metadata"]["generation"] == sts["metadata"]["generation"]
    assert after["spec"]["template"] == sts["spec"]["template"]

    before = await template_hash(kube, key)
    await settled(kube, key, {"controlPlane": {"logLevel": "DEBUG"}})

    async def rolled() -> str | None:
        value = await template_hash(kube, key)
        return value if value != before and value == await config_map_hash(kube, key) else None

    await wait_for(rolled, "the pod template to carry the new restart hash")


async def test_replicas_zero_stops_the_server_even_while_a_dependency_fails(
    kube: KubeClient, namespace: str, server_operator: RunningOperator
) -> None:
    key, _ = await running(kube, namespace)
    await kube.merge_patch(DITTOSERVERS, key.name, {"spec": {"replicas": 0}}, namespace)
    await simulate(kube, key, database="False")

    async def stopped() -> bool:
        live = await statefulset(kube, key)
        return bool(live and live["spec"]["replicas"] == 0)

    await wait_for(stopped, "the StatefulSet to scale to 0")
    available = await until(kube, key, conditions.AVAILABLE, "Stopped")
    assert available["status"] == "False"

    async def outage_reported() -> bool:
        progressing = await current(kube, key, conditions.PROGRESSING)
        return bool(
            progressing
            and progressing["reason"] == "WaitingForDependencies"
            and "DatabaseReady (SimulatedOutage" in progressing["message"]
        )

    await wait_for(outage_reported, "Progressing to name the failing dependency")
    live = await statefulset(kube, key)
    assert live and live["spec"]["replicas"] == 0


async def test_applied_statefulsets_match_their_desired_state_so_nothing_is_rewritten(
    kube: KubeClient, namespace: str
) -> None:
    """The API server's defaults and canonical forms must not make every pass write again."""
    await kube.create(
        Resource("", "v1", "serviceaccounts", "ServiceAccount"),
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "dittofs"}},
        namespace,
    )
    for path in sorted(VALID.glob("*.yaml")):
        spec = parse(v1alpha1.DittoServerSpec, yaml.safe_load(path.read_text())["spec"])
        server = {"metadata": {"name": path.stem, "namespace": namespace, "uid": "none"}}
        desired = build.statefulset(server, spec, "0" * 64)
        del desired["metadata"]["ownerReferences"]  # no such owner: keep the collector away
        desired["spec"]["template"]["spec"].pop("priorityClassName", None)
        live = await kube.apply(STATEFULSETS, desired, field_manager="tests")
        assert not needs_apply(desired, live), path.name


async def test_a_pod_made_again_over_a_stale_status_starts_from_the_latest_template(
    kube: KubeClient, namespace: str, local_control_plane: ControlPlane
) -> None:
    """The StatefulSet controller makes a missing pod from the old revision while its status
    still counts a current replica, unless the update strategy names a partition; it then
    deletes that pod for the rolling update, fails to write currentReplicas -1, and does it all
    again, forever (kubernetes#58347). Its own scale-down leaves such a status: it counts the
    pod it deletes. Here the pod is gone, that status is written for it, and the scale back up
    comes with a new template before the controller's next sync, as when the operator restores
    a StatefulSet scaled to 0 by hand and a regenerated Secret restarts the pod.
    """
    server = {"metadata": {"name": "stale", "namespace": namespace, "uid": "none"}}
    spec = parse(v1alpha1.DittoServerSpec, yaml.safe_load(MINIMAL.read_text())["spec"])
    desired = build.statefulset(server, spec, "0" * 64)
    del desired["metadata"]["ownerReferences"]  # no such owner: keep the collector away
    name = desired["metadata"]["name"]

    async def observed() -> Obj | None:
        """The StatefulSet, once its controller has seen its latest generation."""
        sts = await kube.get(STATEFULSETS, name, namespace)
        status = sts.get("status") or {}
        return sts if status.get("observedGeneration") == sts["metadata"]["generation"] else None

    async def pod_of_latest_template() -> Obj | None:
        sts, pod = await observed(), await kube.get_or_none(PODS, f"{name}-0", namespace)
        if sts is None or pod is None:
            return None
        revision, status = pod["metadata"]["labels"].get("controller-revision-hash"), sts["status"]
        made = revision == status.get("updateRevision") and status.get("updatedReplicas") == 1
        return pod if made else None

    await kube.apply(STATEFULSETS, desired, field_manager="tests")
    first = await wait_for(pod_of_latest_template, "the first pod")
    stopped = copy.deepcopy(desired)
    stopped["spec"]["replicas"] = 0
    await kube.apply(STATEFULSETS, stopped, field_manager="tests")

    async def scaled_down() -> bool:
        sts = await observed()
        return bool(sts and not sts["status"].get("replicas"))

    await wait_for(scaled_down, "the scale-down")
    changed = copy.deepcopy(desired)
    changed["spec"]["template"]["metadata"]["annotations"][names.RESTART_HASH_ANNOTATION] = "1" * 64
    counted = {"status": {"replicas": 1, "currentReplicas": 1, "updatedReplicas": 1}}
    with local_control_plane.controller_manager_paused():
        await kube.merge_patch(STATEFULSETS, name, counted, namespace, subresource="status")
        await kube.apply(STATEFULSETS, changed, field_manager="tests")

    async def remade() -> Obj | None:
        pod = await pod_of_latest_template()
        return pod if pod and pod["metadata"]["uid"] != first["metadata"]["uid"] else None

    await wait_for(remade, "a pod of the latest template, and the status caught up", 60)
