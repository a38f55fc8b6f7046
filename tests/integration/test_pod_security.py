"""Pod Security Admission on the real API server: a DittoServer cannot make its pod less safe than
the restricted Pod Security Standard.

The operator creates the pod with its own rights, so the CRD must refuse what the namespace's
Pod Security Admission would: every sample, admitted by the API server and rendered as the
operator renders it, passes `enforce=restricted`; and every security context the admission
corpus refuses is one that Pod Security Admission would refuse too, so the CEL rules guard
exactly the standard. Pods are created with dryRun=All: admission runs, nothing is stored.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from dittofs_controller.kube.client import ApiError, KubeClient
from dittofs_controller.kube.resources import DITTOSERVERS, NAMESPACES, PODS
from dittofs_controller.operator import render
from tests.support.crds import install_crd

ROOT = Path(__file__).resolve().parents[2]
# The DittoServer of each sample (the Secrets beside it play no part in the pod's security).
SAMPLES = {
    path.name: next(d for d in yaml.safe_load_all(path.read_text()) if d["kind"] == "DittoServer")
    for path in sorted(ROOT.glob("samples/*.yaml"))
}
# Refused by CEL, and by Pod Security Admission once CEL is bypassed. Not listed:
# pod-host-network (no such field: render refuses it as the API server does), and what Pod
# validation refuses before Pod Security sees it: pod-seccomp-localhost-without-profile (a
# malformed profile) and pod-proc-mount-unmasked (needs hostUsers false, never set).
ESCALATIONS = {
    path.stem: yaml.safe_load(path.read_text())
    for path in sorted((ROOT / "tests/unit/api/invalid").glob("pod-*.yaml"))
    if path.stem
    not in ("pod-host-network", "pod-seccomp-localhost-without-profile", "pod-proc-mount-unmasked")
}
# Pod validation refuses a privileged container that cannot escalate, so ask for both.
ESCALATIONS["pod-privileged"]["spec"]["pod"]["containerSecurityContext"] |= {
    "allowPrivilegeEscalation": True
}
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


@pytest.fixture
async def restricted(kube: KubeClient, namespace: str) -> str:
    """The test's namespace, enforcing the restricted standard, with the CRD installed."""
    await install_crd(kube)
    await kube.merge_patch(NAMESPACES, namespace, {"metadata": {"labels": RESTRICTED}})
    return namespace


async def dry_run_pod(kube: KubeClient, namespace: str, sts: dict[str, Any]) -> None:
    """Create a Pod from the StatefulSet's template: Pod Security enforces on Pods only."""
    template = copy.deepcopy(sts["spec"]["template"])
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {**template["metadata"], "name": sts["metadata"]["name"]},
        "spec": template["spec"],
    }
    await kube.request(
        "POST", PODS.path(namespace), query={"dryRun": "All", "fieldValidation": "Strict"}, body=pod
    )


def statefulset(server: dict[str, Any], namespace: str) -> dict[str, Any]:
    """The StatefulSet `render` prints for a DittoServer, as the server reconciler builds it."""
    obj, spec = render.load_server(server, namespace)
    (sts,) = [r.obj for r in render.children(obj, spec, namespace) if r.kind == "StatefulSet"]
    return sts


async def test_every_sample_runs_under_the_restricted_standard(
    kube: KubeClient, restricted: str
) -> None:
    for name, sample in SAMPLES.items():
        document = copy.deepcopy(sample)
        document["metadata"]["namespace"] = restricted
        stored = await kube.request(
            "POST",
            DITTOSERVERS.path(restricted),
            query={"fieldValidation": "Strict"},
            body=document,
        )
        sts = statefulset(stored, restricted)
        assert sts["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
        try:
            await dry_run_pod(kube, restricted, sts)
        except ApiError as error:
            pytest.fail(f"samples/{name}: {error.message}")


@pytest.mark.parametrize("case", ESCALATIONS)
async def test_what_the_crd_refuses_pod_security_refuses_too(
    kube: KubeClient, restricted: str, case: str
) -> None:
    # render checks the schema's structure, not its CEL rules: this is the pod the operator
    # would have created if the API server had admitted the DittoServer.
    sts = statefulset(ESCALATIONS[case], restricted)
    with pytest.raises(ApiError) as refused:
        await dry_run_pod(kube, restricted, sts)
    assert refused.value.status == 403, refused.value
    assert "violates PodSecurity" in refused.value.message
