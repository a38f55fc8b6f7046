"""Desired PersistentVolumeClaims and the verdicts on live ones."""

from __future__ import annotations

import copy
import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from dittofs_controller.api.schema import parse
from dittofs_controller.api.v1alpha1 import DittoServerSpec
from dittofs_controller.operator.storage import build
from dittofs_controller.operator.storage.build import Claim, Verdict

VALID = Path(__file__).resolve().parents[1] / "api" / "valid"
SERVER = {"metadata": {"name": "files", "namespace": "team", "uid": "u-1"}}
NOW = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)
GRACE = 120.0
EXPANDABLE = {"metadata": {"name": "fast"}, "provisioner": "csi.x", "allowVolumeExpansion": True}
FIXED = {"metadata": {"name": "fast"}, "provisioner": "csi.x"}
WFFC = {
    "metadata": {"name": "fast"},
    "provisioner": "csi.x",
    "volumeBindingMode": "WaitForFirstConsumer",
}


def sample(name: str) -> DittoServerSpec:
    return parse(DittoServerSpec, yaml.safe_load((VALID / name).read_text())["spec"])


def claim_of(spec: DittoServerSpec, name: str) -> Claim:
    return next(c for c in build.claims("files", spec) if c.name == name)


def blocks(size: str = "10Gi", **storage: Any) -> Claim:
    spec = parse(
        DittoServerSpec,
        {
            "metadataStores": [{"name": "meta", "type": "memory"}],
            "localBlockStores": [
                {
                    "name": "data",
                    "type": "filesystem",
                    "filesystem": {"storage": {"size": size, **storage}},
                }
            ],
        },
    )
    return claim_of(spec, "files-blocks-data")


def live(
    claim: Claim,
    *,
    phase: str = "Bound",
    requested: str | None = None,
    capacity: str | None = None,
    storage_class: str | None = "fast",
    age: float = 3600,
    **status: Any,
) -> dict[str, Any]:
    """The claim as the API server would show it."""
    desired = build.claim_manifest(SERVER, claim, None, None)
    obj = copy.deepcopy(desired)
    size = requested or claim.storage.size
    obj["spec"]["resources"]["requests"]["storage"] = size
    obj["spec"]["volumeMode"] = "Filesystem"
    if storage_class:
        obj["spec"]["storageClassName"] = storage_class
    created = NOW - datetime.timedelta(seconds=age)
    obj["metadata"]["creationTimestamp"] = created.strftime("%Y-%m-%dT%H:%M:%SZ")
    obj["status"] = {"phase": phase, **status}
    if phase == "Bound":
        obj["spec"]["volumeName"] = "pv-1"
        obj["status"]["capacity"] = {"storage": capacity or size}
    return obj


def judge(claim: Claim, obj: dict[str, Any], storage_class: dict[str, Any] | None) -> Verdict:
    return build.judge(claim, obj, storage_class, now=NOW, grace=GRACE)


# --- which claims ---------------------------------------------------------------------------


def test_minimal_server_gets_a_metadata_and_a_blocks_claim_of_the_default_size() -> None:
    claims = build.claims("files", sample("minimal.yaml"))
    assert [(c.name, c.storage.size) for c in claims] == [
        ("files-controlplane", "1Gi"),
        ("files-meta-meta", "10Gi"),
        ("files-blocks-blocks", "10Gi"),
    ]


def test_sizes_classes_and_access_modes_come_from_the_spec() -> None:
    spec = sample("storage-options.yaml")
    manifests = {
        c.name: build.claim_manifest(SERVER, c, None, None)["spec"]
        for c in build.claims("files", spec)
    }
    assert manifests == {
        "files-controlplane": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "512Mi"}},
            "storageClassName": "standard",
        },
        "files-meta-meta": {
            "accessModes": ["ReadWriteOncePod"],
            "resources": {"requests": {"storage": "5Gi"}},
            "storageClassName": "fast-ssd",
        },
        "files-blocks-blocks": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Ti"}},
            "storageClassName": "bulk-hdd",
        },
    }


def test_postgres_control_plane_and_postgres_or_memory_stores_need_no_claim() -> None:
    assert [c.name for c in build.claims("files", sample("percona.yaml"))] == ["files-blocks-cache"]
    memory_only = parse(
        DittoServerSpec,
        {
            "controlPlane": {"database": {"type": "postgres"}},
            "postgres": {"external": {"secretName": "pg"}},
            "metadataStores": [{"name": "meta", "type": "memory"}],
            "localBlockStores": [{"name": "blocks", "type": "memory"}],
        },
    )
    assert build.claims("files", memory_only) == []


def test_claims_are_owned_and_labelled_children() -> None:
    manifest = build.claim_manifest(SERVER, blocks(), None, None)
    meta = manifest["metadata"]
    assert (manifest["apiVersion"], manifest["kind"]) == ("v1", "PersistentVolumeClaim")
    assert (meta["name"], meta["namespace"]) == ("files-blocks-data", "team")
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "dittofs-operator"
    assert meta["labels"]["app.kubernetes.io/instance"] == "files"
    assert meta["ownerReferences"][0]["uid"] == "u-1"
    assert meta["ownerReferences"][0]["controller"] is True
    assert "storageClassName" not in manifest["spec"]  # the cluster's default class


# --- sizes ----------------------------------------------------------------------------------


def requested_size(claim: Claim, obj: dict[str, Any], sc: dict[str, Any] | None) -> str:
    manifest = build.claim_manifest(SERVER, claim, obj, sc)
    return str(manifest["spec"]["resources"]["requests"]["storage"])


def test_a_bound_claim_grows_when_its_class_allows_expansion() -> None:
    claim = blocks("20Gi", storageClassName="fast")
    assert requested_size(claim, live(claim, requested="10Gi"), EXPANDABLE) == "20Gi"


def test_a_claim_does_not_grow_when_its_class_forbids_it_or_it_is_not_bound() -> None:
    claim = blocks("20Gi", storageClassName="fast")
    assert requested_size(claim, live(claim, requested="10Gi"), FIXED) == "10Gi"
    assert requested_size(claim, live(claim, requested="10Gi"), None) == "10Gi"
    pending = live(claim, phase="Pending", requested="10Gi")
    assert requested_size(claim, pending, EXPANDABLE) == "10Gi"


def test_a_claim_expanded_by_hand_is_never_shrunk() -> None:
    claim = blocks("10Gi")
    assert requested_size(claim, live(claim, requested="15Gi"), EXPANDABLE) == "15Gi"
    # the same quantity spelt differently is no change
    assert requested_size(claim, live(claim, requested="10240Mi"), EXPANDABLE) == "10Gi"


def test_access_modes_in_another_order_keep_the_live_order() -> None:
    claim = blocks(accessModes=["ReadWriteOnce", "ReadWriteMany"])
    obj = live(claim)
    obj["spec"]["accessModes"] = ["ReadWriteMany", "ReadWriteOnce"]
    manifest = build.claim_manifest(SERVER, claim, obj, None)
    assert manifest["spec"]["accessModes"] == ["ReadWriteMany", "ReadWriteOnce"]
    assert build.immutable_changes(claim, obj, class_was_set=True) == []


# --- what a claim cannot change -------------------------------------------------------------


def test_changed_access_modes_are_an_immutable_change() -> None:
    claim = blocks(accessModes=["ReadWriteOncePod"])
    obj = live(blocks())
    assert build.immutable_changes(claim, obj, class_was_set=False) == [
        "accessModes ['ReadWriteOnce'] -> ['ReadWriteOncePod']"
    ]


def test_a_class_the_operator_set_cannot_change_but_one_set_later_is_for_new_volumes() -> None:
    claim = blocks(storageClassName="fast-ssd")
    obj = live(claim, storage_class="standard")
    assert build.immutable_changes(claim, obj, class_was_set=True) == [
        "storageClassName standard -> fast-ssd"
    ]
    assert build.immutable_changes(claim, obj, class_was_set=False) == []
    manifest = build.claim_manifest(SERVER, claim, obj, None)
    assert "storageClassName" not in manifest["spec"]  # applying it would be rejected
    verdict = judge(claim, obj, None)
    assert verdict.reason == "Bound"
    assert "keeps StorageClass standard" in verdict.message


def test_managed_fields_tell_whether_the_operator_set_the_class() -> None:
    def with_fields(manager: str, spec_fields: dict[str, Any]) -> dict[str, Any]:
        entry = {"manager": manager, "operation": "Apply", "fieldsV1": {"f:spec": spec_fields}}
        return {"metadata": {"managedFields": [entry]}}

    mine = "dittofs-operator/storage"
    assert build.manages_class(with_fields(mine, {"f:storageClassName": {}}), mine)
    assert not build.manages_class(with_fields(mine, {"f:accessModes": {}}), mine)
    assert not build.manages_class(with_fields("kube-apiserver", {"f:storageClassName": {}}), mine)


# --- verdicts -------------------------------------------------------------------------------


def test_a_bound_claim_of_the_requested_size_is_bound() -> None:
    claim = blocks()
    verdict = judge(claim, live(claim), EXPANDABLE)
    assert (verdict.reason, verdict.ready, verdict.message) == ("Bound", True, "files-blocks-data")


def test_a_claim_larger_than_asked_is_bound_and_says_so() -> None:
    claim = blocks("10Gi")
    verdict = judge(claim, live(claim, requested="15Gi"), EXPANDABLE)
    assert verdict.reason == "Bound"
    assert "kept at 15Gi, more than the 10Gi asked for" in verdict.message


@pytest.mark.parametrize(
    "status",
    [
        {"capacity": {"storage": "10Gi"}},
        {"conditions": [{"type": "FileSystemResizePending", "status": "True"}]},
        {"conditions": [{"type": "Resizing", "status": "True"}]},
    ],
)
def test_an_expansion_in_progress_is_resizing(status: dict[str, Any]) -> None:
    claim = blocks("20Gi")
    obj = live(claim, requested="20Gi", capacity="20Gi")
    obj["status"].update(status)
    verdict = judge(claim, obj, EXPANDABLE)
    assert (verdict.reason, verdict.ready) == ("Resizing", True)


def test_an_infeasible_expansion_fails() -> None:
    claim = blocks("20Gi")
    obj = live(claim, requested="20Gi", capacity="10Gi")
    obj["status"]["allocatedResourceStatuses"] = {"storage": "ControllerResizeInfeasible"}
    verdict = judge(claim, obj, EXPANDABLE)
    assert (verdict.reason, verdict.ready) == ("ClaimResizeFailed", False)
    assert "ControllerResizeInfeasible" in verdict.message


def test_a_class_without_expansion_blocks_growth_and_is_rechecked() -> None:
    claim = blocks("20Gi", storageClassName="fast")
    verdict = judge(claim, live(claim, requested="10Gi"), FIXED)
    assert (verdict.reason, verdict.ready) == ("ClaimExpansionNotSupported", False)
    assert "cannot grow from 10Gi to 20Gi" in verdict.message
    assert "allowVolumeExpansion" in verdict.message
    assert verdict.recheck_after == build.EXPANSION_RECHECK


def test_a_lost_claim_fails() -> None:
    claim = blocks()
    verdict = judge(claim, live(claim, phase="Lost"), None)
    assert (verdict.reason, verdict.ready) == ("ClaimLost", False)
    assert "files-blocks-data" in verdict.message


def test_a_claim_waiting_for_its_first_consumer_is_ready() -> None:
    claim = blocks()
    verdict = judge(claim, live(claim, phase="Pending", age=86400), WFFC)
    assert (verdict.reason, verdict.ready) == ("WaitingForFirstConsumer", True)


def test_once_a_node_is_selected_a_pending_claim_is_provisioning() -> None:
    claim = blocks()
    obj = live(claim, phase="Pending", age=10)
    obj["metadata"]["annotations"] = {build.SELECTED_NODE_ANNOTATION: "node-1"}
    assert judge(claim, obj, WFFC).reason == "Provisioning"


def test_a_young_pending_claim_is_provisioning_and_rechecked_after_the_grace() -> None:
    claim = blocks()
    verdict = judge(claim, live(claim, phase="Pending", age=20), FIXED)
    assert (verdict.reason, verdict.ready) == ("Provisioning", True)
    assert verdict.recheck_after == pytest.approx(GRACE - 20 + 1)


@pytest.mark.parametrize(
    ("storage_class", "sc", "hint"),
    [
        ("fast", FIXED, "StorageClass fast (provisioner csi.x) has not provided a volume"),
        ("fast", None, "its StorageClass fast does not exist"),
        (None, None, "it has no StorageClass"),
    ],
)
def test_a_claim_pending_past_the_grace_fails_with_a_hint(
    storage_class: str | None, sc: dict[str, Any] | None, hint: str
) -> None:
    claim = blocks()
    obj = live(claim, phase="Pending", age=600, storage_class=storage_class)
    verdict = judge(claim, obj, sc)
    assert (verdict.reason, verdict.ready) == ("ClaimPending", False)
    assert hint in verdict.message
    assert "Pending since " in verdict.message
    assert "kubectl describe pvc files-blocks-data -n team" in verdict.message


def test_a_pending_claim_asked_to_grow_says_it_grows_once_bound() -> None:
    claim = blocks("20Gi")
    verdict = judge(claim, live(claim, phase="Pending", requested="10Gi"), WFFC)
    assert verdict.reason == "WaitingForFirstConsumer"
    assert "expanded to 20Gi once bound" in verdict.message


# --- the condition --------------------------------------------------------------------------


def verdict(name: str, reason: str, ready: bool, recheck: float | None = None) -> Verdict:
    return Verdict(name, reason, ready, f"{name}: {reason}", recheck)


def test_every_claim_bound_is_bound() -> None:
    outcome, requeue = build.summarise(
        [verdict("a", "Bound", True), verdict("b", "Bound", True)], []
    )
    assert (outcome.status, outcome.reason) == ("True", "Bound")
    assert outcome.message == "PersistentVolumeClaims bound: a: Bound, b: Bound"
    assert requeue is None


def test_the_least_settled_ready_reason_wins_and_names_the_claims() -> None:
    outcome, requeue = build.summarise(
        [
            verdict("a", "Bound", True),
            verdict("b", "WaitingForFirstConsumer", True),
            verdict("c", "Provisioning", True, 30),
        ],
        [],
    )
    assert (outcome.status, outcome.reason) == ("True", "Provisioning")
    assert outcome.message == "b: WaitingForFirstConsumer; c: Provisioning"
    assert requeue == 30


def test_the_most_urgent_failure_gives_the_reason_and_all_failures_are_listed() -> None:
    outcome, _ = build.summarise(
        [
            verdict("a", "ClaimPending", False),
            verdict("b", "Bound", True),
            verdict("c", "ClaimLost", False),
        ],
        [],
    )
    assert (outcome.status, outcome.reason) == ("False", "ClaimLost")
    assert outcome.message == "c: ClaimLost; a: ClaimPending"


def test_claims_of_removed_stores_are_kept_and_mentioned() -> None:
    outcome, _ = build.summarise([verdict("a", "Bound", True)], ["files-meta-old"])
    assert outcome.status == "True"
    assert "Kept PersistentVolumeClaims no longer in the spec: files-meta-old" in outcome.message


def test_no_claims_is_not_required() -> None:
    outcome, _ = build.summarise([], [])
    assert (outcome.status, outcome.reason) == ("True", "NotRequired")
