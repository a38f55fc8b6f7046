"""`dittofs-controller render`: every sample renders to a consistent set of objects with no
secret in it, and invalid input exits 2 with the API server's words and no traceback."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from dittofs_controller.cli import main
from dittofs_controller.operator import render
from dittofs_controller.operator.children import (
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    MANAGED_BY,
)

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = sorted((ROOT / "samples").glob("*.yaml"))
VALID_DIR = ROOT / "tests/unit/api/valid"
VALID = sorted(VALID_DIR.glob("*.yaml"))
INVALID = sorted((ROOT / "tests/unit/api/invalid").glob("*.yaml"))
# The API server's own schema errors, as opposed to CEL messages (see test_v1alpha1.py).
SCHEMA_ERROR = re.compile(
    r"Unsupported value|Required value|should be (greater|less) than or equal to|should match|"
    r"should have at least|must have at most|Duplicate value|Too long|unknown field"
)
# The header line naming a generated Secret that render leaves out.
NOT_PRINTED = re.compile(r"^# - Secret (\S+) \(key (\S+)\)", re.MULTILINE)
Obj = dict[str, Any]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["render", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def rendered(capsys: pytest.CaptureFixture[str], *argv: str) -> list[Obj]:
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    return [doc for doc in yaml.safe_load_all(out) if doc]


def servers(path: Path) -> list[Obj]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] == "DittoServer"]


def by_kind(objects: list[Obj], kind: str) -> list[Obj]:
    return [obj for obj in objects if obj["kind"] == kind]


@pytest.mark.parametrize("sample", SAMPLES + VALID, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_manifest_renders_a_consistent_set(
    capsys: pytest.CaptureFixture[str], sample: Path
) -> None:
    (server,) = servers(sample)
    name = server["metadata"]["name"]
    objects = rendered(capsys, "-f", str(sample))
    assert len({(obj["kind"], obj["metadata"]["name"]) for obj in objects}) == len(objects)
    for obj in objects:
        meta = obj["metadata"]
        assert meta["namespace"] == "default"
        assert meta["labels"][LABEL_MANAGED_BY] == MANAGED_BY
        assert meta["labels"][LABEL_INSTANCE] == name
        (owner,) = meta["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"]) == (
            "DittoServer",
            name,
            render.PLACEHOLDER_UID,
        )
    (sts,) = by_kind(objects, "StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    # Every claim the pod mounts is rendered, and every rendered claim is mounted.
    mounted = {
        v["persistentVolumeClaim"]["claimName"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert mounted == {c["metadata"]["name"] for c in by_kind(objects, "PersistentVolumeClaim")}
    (config_map,) = by_kind(objects, "ConfigMap")
    assert {"configMap": {"name": config_map["metadata"]["name"]}, "name": "config"} in pod[
        "volumes"
    ]
    # No Secret is printed; the generated ones are named in the header instead, every one the
    # pod reads among them (the digest key is the operator's own).
    assert not by_kind(objects, "Secret")
    generated = set(NOT_PRINTED.findall(run(capsys, "-f", str(sample))[1]))
    assert (f"{name}-digest-key", "key") in generated
    env_refs = {
        (ref["name"], ref["key"])
        for var in pod["containers"][0]["env"]
        if (ref := var.get("valueFrom", {}).get("secretKeyRef"))
    }
    assert {ref for ref in env_refs if ref[0] in (f"{name}-jwt", f"{name}-admin")} <= generated
    # Services select the pod; the Ingress points at a rendered Service.
    services = {s["metadata"]["name"]: s for s in by_kind(objects, "Service")}
    labels = sts["spec"]["template"]["metadata"]["labels"]
    for service in services.values():
        assert service["spec"]["selector"].items() <= labels.items()
    for ingress in by_kind(objects, "Ingress"):
        backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
        assert backend["name"] in services
    assert bool(by_kind(objects, "PerconaPGCluster")) == ("percona" in str(server["spec"]))


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.stem)
def test_no_secret_of_the_input_is_printed(
    capsys: pytest.CaptureFixture[str], sample: Path
) -> None:
    """The credentials in the sample's Secrets (the host or user name may well appear)."""
    values = [
        value
        for doc in yaml.safe_load_all(sample.read_text())
        if doc and doc["kind"] == "Secret"
        for key, value in (doc.get("stringData") or {}).items()
        if re.search("password|secret|key", key, re.IGNORECASE)
    ]
    code, out, _ = run(capsys, "-f", str(sample))
    assert code == 0
    assert not [value for value in values if value in out]


def test_generated_secrets_are_named_never_printed(capsys: pytest.CaptureFixture[str]) -> None:
    """Applied through GitOps, a printed value would seed a known admin password."""
    code, out, _ = run(capsys, "-f", str(VALID_DIR / "minimal.yaml"))
    assert code == 0
    assert NOT_PRINTED.findall(out) == [
        ("minimal-jwt", "secret"),
        ("minimal-admin", "password"),
        ("minimal-digest-key", "key"),
    ]
    assert "or set spec.controlPlane.adminPasswordSecretRef" in out
    assert not [doc for doc in yaml.safe_load_all(out) if doc and doc["kind"] == "Secret"]
    assert "PLACEHOLDER-generated" not in out and "stringData" not in out
    # Referenced Secrets are the user's: only the digest key is left to generate.
    code, out, _ = run(capsys, "-f", str(VALID_DIR / "api-loadbalancer-tls.yaml"))
    assert NOT_PRINTED.findall(out) == [("public-api-digest-key", "key")]


def test_percona_cluster_and_its_delete_finalizer(capsys: pytest.CaptureFixture[str]) -> None:
    sample = ROOT / "samples/postgres-s3.yaml"
    (cluster,) = by_kind(rendered(capsys, "-f", str(sample)), "PerconaPGCluster")
    assert cluster["metadata"]["name"] == "postgres-s3-pg"
    assert cluster["spec"]["users"][0]["name"] == "dittofs"
    policy = servers(sample)[0]["spec"].get("deletionPolicy", "Retain")
    assert ("percona.com/delete-pvc" in cluster["metadata"].get("finalizers", [])) == (
        policy == "Delete"
    )


def test_stdin_with_several_servers_namespace_and_uid(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    documents = [*servers(SAMPLES[0]), *servers(SAMPLES[1])]
    documents[0]["metadata"]["uid"] = "7d3c1c3e-1111-2222-3333-444455556666"
    text = yaml.safe_dump_all([{"kind": "Secret", "apiVersion": "v1"}, *documents])
    monkeypatch.setattr("sys.stdin", io.StringIO(text))
    code, out, err = run(capsys, "-f", "-", "-n", "team")
    assert code == 0, err
    assert "skipped document 1 (kind Secret)" in err
    objects = [doc for doc in yaml.safe_load_all(out) if doc]
    instances = {obj["metadata"]["labels"][LABEL_INSTANCE] for obj in objects}
    assert instances == {d["metadata"]["name"] for d in documents}
    assert {obj["metadata"]["namespace"] for obj in objects} == {"team"}
    first = documents[0]["metadata"]["name"]
    uids = {
        obj["metadata"]["ownerReferences"][0]["uid"]
        for obj in objects
        if obj["metadata"]["labels"][LABEL_INSTANCE] == first
    }
    assert uids == {"7d3c1c3e-1111-2222-3333-444455556666"}


def test_operator_namespace_is_admitted_by_the_api_policy(
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = ROOT / "tests/unit/api/valid/network-policy.yaml"
    objects = rendered(capsys, "-f", str(path), "--operator-namespace", "ops")
    (api,) = [
        p for p in by_kind(objects, "NetworkPolicy") if p["metadata"]["name"].endswith("-api")
    ]
    peers = api["spec"]["ingress"][0]["from"]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ops"}}} in peers


def expected_message(path: Path) -> str:
    return path.read_text().splitlines()[0].removeprefix("# expect: ")


SCHEMA_INVALID = [path for path in INVALID if SCHEMA_ERROR.search(expected_message(path))]


@pytest.mark.parametrize("path", SCHEMA_INVALID, ids=lambda p: p.stem)
def test_schema_violations_exit_2_with_the_api_servers_words(
    capsys: pytest.CaptureFixture[str], path: Path
) -> None:
    code, out, err = run(capsys, "-f", str(path))
    assert (code, out) == (2, "")
    assert expected_message(path) in err
    assert "Traceback" not in err


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_cel_only_violations_never_crash(capsys: pytest.CaptureFixture[str], path: Path) -> None:
    """CEL rules are the API server's; render either renders or refuses, never raises."""
    code, _, err = run(capsys, "-f", str(path))
    assert code in (0, 2), err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: [", "not valid YAML"),
        ("apiVersion: v1\nkind: Secret\n", "no DittoServer in"),
        (
            "apiVersion: dittofs.io/v9\nkind: DittoServer\nmetadata: {name: x}\nspec: {}\n",
            "apiVersion: Unsupported value",
        ),
        (
            "apiVersion: dittofs.io/v1alpha1\nkind: DittoServer\nmetadata: {name: Bad_Name}\n",
            "metadata.name: Invalid value",
        ),
        ("- just\n- a list\n", "no DittoServer in"),
    ],
)
def test_bad_input_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "in.yaml"
    path.write_text(text)
    code, out, err = run(capsys, "-f", str(path))
    assert (code, out) == (2, "")
    assert message in err


def test_missing_file_and_missing_flag(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "-f", str(tmp_path / "absent.yaml"))
    assert code == 2 and "No such file" in err
    for argv in (["render"], ["render", "-f", str(SAMPLES[0]), "-n", "Not_A_Namespace"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
