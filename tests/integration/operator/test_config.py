"""The config reconciler on the real API server: ConfigMap, restart hash, generated Secrets."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

from dittofs_controller.kube.client import KubeClient
from dittofs_controller.kube.resources import CONFIGMAPS, DITTOSERVERS, SECRETS, ObjectKey
from dittofs_controller.operator import names
from tests.integration.operator.conftest import (
    RunningOperator,
    condition,
    load_manifest,
    wait_for,
)

VALID = Path(__file__).resolve().parents[2] / "unit" / "api" / "valid"
MINIMAL = VALID / "minimal.yaml"
# The garbage collector learns a new CRD kind only every ~30 s.
GC_TIMEOUT = 90.0


def manifest(namespace: str, **spec: Any) -> dict[str, Any]:
    server = load_manifest(MINIMAL, namespace)
    server["spec"].update(copy.deepcopy(spec))
    return server


async def create(kube: KubeClient, server: dict[str, Any]) -> ObjectKey:
    await kube.create(DITTOSERVERS, server, server["metadata"]["namespace"])
    return ObjectKey(server["metadata"]["namespace"], server["metadata"]["name"])


async def config_ready(kube: KubeClient, key: ObjectKey, status: str = "True") -> dict[str, Any]:
    """ConfigReady with `status` for the DittoServer's current generation."""

    async def check() -> dict[str, Any] | None:
        server = await kube.get(DITTOSERVERS, key.name, key.namespace)
        found = await condition(kube, key, "ConfigReady")
        if found is None or found["observedGeneration"] != server["metadata"]["generation"]:
            return None
        return found if found["status"] == status else None

    found: dict[str, Any] = await wait_for(check, f"ConfigReady={status}")
    return found


async def secret_data(kube: KubeClient, name: str, namespace: str) -> dict[str, str]:
    secret = await kube.get(SECRETS, name, namespace)
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


async def put_secret(kube: KubeClient, namespace: str, name: str, data: dict[str, str]) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "stringData": data,
    }
    await kube.apply(SECRETS, body, field_manager="tests")


async def restart_hash(kube: KubeClient, key: ObjectKey) -> str:
    config_map = await kube.get(CONFIGMAPS, names.config_map(key.name), key.namespace)
    digest: str = config_map["metadata"]["annotations"][names.RESTART_HASH_ANNOTATION]
    return digest


async def test_renders_the_config_map_and_generates_the_secrets(
    kube: KubeClient, namespace: str, operator: RunningOperator
) -> None:
    key = await create(kube, manifest(namespace))
    ready = await config_ready(kube, key)
    assert ready["reason"] == "Rendered"
    server = await kube.get(DITTOSERVERS, key.name, namespace)
    assert "dittofs.io/config" in server["metadata"]["finalizers"]

    config_map = await kube.get(CONFIGMAPS, names.config_map(key.name), namespace)
    assert "host: 0.0.0.0" in config_map["data"][names.CONFIG_KEY]
    assert len(config_map["metadata"]["annotations"][names.RESTART_HASH_ANNOTATION]) == 64
    assert config_map["metadata"]["ownerReferences"][0]["uid"] == server["metadata"]["uid"]

    jwt = await secret_data(kube, names.jwt_secret(key.name), namespace)
    admin = await secret_data(kube, names.admin_secret(key.name), namespace)
    assert len(jwt[names.GENERATED_JWT_KEY]) == 48
    assert len(admin[names.GENERATED_ADMIN_KEY]) >= 16
    digest_key = await secret_data(kube, names.digest_key_secret(key.name), namespace)
    assert len(digest_key[names.GENERATED_DIGEST_KEY]) == 43
    for name in generated(key.name):
        owners = (await kube.get(SECRETS, name, namespace))["metadata"]["ownerReferences"]
        assert [o["uid"] for o in owners] == [server["metadata"]["uid"]]
    text = json.dumps(config_map) + json.dumps(server)
    for value in (jwt, admin, digest_key):
        assert next(iter(value.values())) not in text


async def test_missing_referenced_secret_recovers_when_created(
    kube: KubeClient, namespace: str, operator: RunningOperator
) -> None:
    key = await create(
        kube, manifest(namespace, controlPlane={"jwtSecretRef": {"name": "my-jwt", "key": "k"}})
    )
    missing = await config_ready(kube, key, "False")
    assert missing["reason"] == "SecretNotFound"
    assert "my-jwt" in missing["message"]
    assert await kube.get_or_none(CONFIGMAPS, names.config_map(key.name), namespace) is None
    assert await kube.get_or_none(SECRETS, names.jwt_secret(key.name), namespace) is None

    await put_secret(kube, namespace, "my-jwt", {"other": "x"})
    no_key = await wait_for(lambda: _reason_is(kube, key, "SecretKeyNotFound"), "SecretKeyNotFound")
    assert "'k'" in no_key["message"]
    await put_secret(kube, namespace, "my-jwt", {"k": "too-short"})
    short = await wait_for(lambda: _reason_is(kube, key, "SecretValueInvalid"), "too short")
    assert "too-short" not in short["message"]  # names the key, never shows the value
    await put_secret(kube, namespace, "my-jwt", {"k": "a-long-enough-signing-secret-for-dittofs"})
    assert (await config_ready(kube, key))["reason"] == "Rendered"
    config_map = await kube.get(CONFIGMAPS, names.config_map(key.name), namespace)
    assert "a-long-enough" not in json.dumps(config_map)


async def _reason_is(kube: KubeClient, key: ObjectKey, reason: str) -> dict[str, Any] | None:
    found = await condition(kube, key, "ConfigReady")
    return found if found and found["reason"] == reason else None


async def test_missing_tls_secret_key_is_reported(
    kube: KubeClient, namespace: str, operator: RunningOperator
) -> None:
    await put_secret(kube, namespace, "api-tls", {"tls.crt": "cert"})
    key = await create(kube, manifest(namespace, controlPlane={"tls": {"secretName": "api-tls"}}))
    found = await config_ready(kube, key, "False")
    assert (found["reason"], "'tls.key'" in found["message"]) == ("SecretKeyNotFound", True)
    await put_secret(kube, namespace, "api-tls", {"tls.crt": "cert", "tls.key": "key"})
    await config_ready(kube, key)


async def test_an_encryption_key_of_the_users_needs_both_keys_and_its_passphrase_restarts(
    kube: KubeClient, namespace: str, operator: RunningOperator
) -> None:
    await put_secret(kube, namespace, "master-key", {"passphrase": "first"})
    sealed = [{"name": "r", "type": "memory", "encryption": {}}]
    server = manifest(
        namespace, remoteBlockStores=sealed, encryptionKey={"secretName": "master-key"}
    )
    key = await create(kube, server)
    found = await config_ready(kube, key, "False")
    assert (found["reason"], "'key.pem'" in found["message"]) == ("SecretKeyNotFound", True)
    await put_secret(kube, namespace, "master-key", {"passphrase": "first", "key.pem": "k"})
    await config_ready(kube, key)
    first = await restart_hash(kube, key)
    # The passphrase is read at start only: a new one must restart the server.
    await put_secret(kube, namespace, "master-key", {"passphrase": "second", "key.pem": "k"})
    await wait_for(lambda: _changed(restart_hash(kube, key), first), "a hash for the passphrase")
    generated = await kube.get_or_none(SECRETS, names.encryption_key_secret(key.name), namespace)
    assert generated is None  # the user's key, not a generated one


async def test_restart_hash_follows_the_config_and_the_jwt_secret_not_the_shares(
    kube: KubeClient, namespace: str, operator: RunningOperator
) -> None:
    key = await create(kube, manifest(namespace))
    await config_ready(kube, key)
    first = await restart_hash(kube, key)
    version = (await kube.get(CONFIGMAPS, names.config_map(key.name), namespace))["metadata"][
        "resourceVersion"
    ]

    shares = [{"name": "/other", "metadataStore": "meta", "localBlockStore": "blocks"}]
    await kube.merge_patch(DITTOSERVERS, key.name, {"spec": {"shares": shares}}, namespace)
    await config_ready(kube, key)
    config_map = await kube.get(CONFIGMAPS, names.config_map(key.name), namespace)
    assert config_map["metadata"]["resourceVersion"] == version  # not even rewritten

    patch = {"spec": {"controlPlane": {"logLevel": "DEBUG"}}}
    await kube.merge_patch(DITTOSERVERS, key.name, patch, namespace)
    await config_ready(kube, key)
    second = await wait_for(lambda: _changed(restart_hash(kube, key), first), "a new restart hash")
    assert (
        "level: DEBUG"
        in (await kube.get(CONFIGMAPS, names.config_map(key.name), namespace))["data"][
            names.CONFIG_KEY
        ]
    )

    # Rotating the JWT secret must restart the server too (it is read at start only).
    await put_secret(kube, namespace, names.jwt_secret(key.name), {"secret": "r" * 48})
    await wait_for(lambda: _changed(restart_hash(kube, key), second), "a hash for the new JWT")


async def _changed(current: Any, previous: str) -> str | None:
    value: str = await current
    return value if value != previous else None


async def test_config_map_drift_is_restored(
    kube: KubeClient, namespace: str, operator: RunningOperator
) -> None:
    key = await create(kube, manifest(namespace))
    await config_ready(kube, key)
    name = names.config_map(key.name)
    original = await kube.get(CONFIGMAPS, name, namespace)
    await kube.merge_patch(CONFIGMAPS, name, {"data": {names.CONFIG_KEY: "tampered"}}, namespace)

    async def restored() -> bool:
        live = await kube.get_or_none(CONFIGMAPS, name, namespace)
        return live is not None and live["data"] == original["data"]

    await wait_for(restored, "the edited ConfigMap to be restored")
    await kube.delete(CONFIGMAPS, name, namespace)
    await wait_for(restored, "the deleted ConfigMap to be re-created")


async def test_generated_secrets_survive_deletion_under_retain_and_are_adopted(
    kube: KubeClient, namespace: str, operator: RunningOperator
) -> None:
    server = manifest(namespace, deletionPolicy="Retain")
    key = await create(kube, copy.deepcopy(server))
    await config_ready(kube, key)
    old_uid = (await kube.get(DITTOSERVERS, key.name, namespace))["metadata"]["uid"]
    before = {name: await secret_data(kube, name, namespace) for name in generated(key.name)}

    await kube.delete(DITTOSERVERS, key.name, namespace)
    await wait_for(lambda: _gone(kube, DITTOSERVERS, key.name, namespace), "the DittoServer to go")
    # The owned ConfigMap going proves the garbage collector has handled the deletion.
    await wait_for(
        lambda: _gone(kube, CONFIGMAPS, names.config_map(key.name), namespace),
        "garbage collection of the ConfigMap",
        timeout=GC_TIMEOUT,
    )
    for name, data in before.items():
        kept = await kube.get(SECRETS, name, namespace)
        assert not kept["metadata"].get("ownerReferences")
        assert await secret_data(kube, name, namespace) == data

    await create(kube, copy.deepcopy(server))
    await config_ready(kube, key)
    new_uid = (await kube.get(DITTOSERVERS, key.name, namespace))["metadata"]["uid"]
    assert new_uid != old_uid
    for name, data in before.items():
        adopted = await kube.get(SECRETS, name, namespace)
        assert [o["uid"] for o in adopted["metadata"]["ownerReferences"]] == [new_uid]
        assert await secret_data(kube, name, namespace) == data


async def test_generated_secrets_go_with_the_server_under_delete(
    kube: KubeClient, namespace: str, operator: RunningOperator
) -> None:
    key = await create(kube, manifest(namespace, deletionPolicy="Delete"))
    await config_ready(kube, key)
    await kube.delete(DITTOSERVERS, key.name, namespace)

    async def all_gone() -> bool:
        return all([await _gone(kube, SECRETS, name, namespace) for name in generated(key.name)])

    await wait_for(all_gone, "garbage collection of the generated Secrets", timeout=GC_TIMEOUT)


async def test_a_foreign_secret_with_the_generated_name_is_not_taken_over(
    kube: KubeClient, namespace: str, operator: RunningOperator
) -> None:
    await put_secret(kube, namespace, "minimal-jwt", {"secret": "x" * 48})
    key = await create(kube, manifest(namespace))
    found = await config_ready(kube, key, "False")
    assert found["reason"] == "NameConflict" and "minimal-jwt" in found["message"]
    foreign = await kube.get(SECRETS, "minimal-jwt", namespace)
    assert not foreign["metadata"].get("ownerReferences")


def generated(server: str) -> tuple[str, ...]:
    """The Secrets the operator generates for a spec that references none."""
    return (names.jwt_secret(server), names.admin_secret(server), names.digest_key_secret(server))


async def _gone(kube: KubeClient, resource: Any, name: str, namespace: str) -> bool:
    return await kube.get_or_none(resource, name, namespace) is None
