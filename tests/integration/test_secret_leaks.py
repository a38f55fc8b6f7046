"""The Secret leak check that runs when every test's namespace goes (tests/support/leaks.py)
finds a planted value wherever it looks; what redaction removes from a log line is no leak;
a digest of a value that a reader can recompute is a leak, a keyed one is not."""

from __future__ import annotations

import base64
import hashlib
import logging

import structlog

from dittofs_controller.kube.client import KubeClient
from dittofs_controller.kube.resources import CONFIGMAPS, EVENTS, SECRETS
from dittofs_controller.operator.serverconfig import credentials
from tests.support import leaks

PLANTED = "planted-Secret-value-42"


def secret(name: str, **data: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data}


async def test_a_planted_value_is_found_in_a_config_map_an_event_and_a_log_line(
    kube: KubeClient, namespace: str
) -> None:
    await kube.create(SECRETS, secret("keys", token=PLANTED, port="5432"), namespace)
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "leaky"},
        "data": {"config.yaml": f"token: {PLANTED}\nport: 5432\n"},
    }
    await kube.create(CONFIGMAPS, config_map, namespace)
    event = {
        "apiVersion": EVENTS.api_version,
        "kind": "Event",
        "metadata": {"name": "leaky.1"},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "tests/leaks",
        "reportingInstance": "tests",
        "action": "Plant",
        "reason": "Planted",
        "note": f"the token is {PLANTED}",
        "type": "Warning",
        "regarding": {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "name": "leaky",
            "namespace": namespace,
        },
    }
    await kube.create(EVENTS, event, namespace)
    # A logger of its own, so the check at teardown does not see these lines: the namespace
    # fixture has configured logging as the operator's and captures everything else.
    separate = logging.getLogger("dittofs_controller.tests.leaks")
    captured = leaks.LogCapture()
    separate.addHandler(captured)
    separate.propagate = False
    try:
        log = structlog.get_logger("dittofs_controller.tests.leaks")
        log.info("redacted by key", password=PLANTED)
        log.info("not redacted", detail=f"said {PLANTED}")
    finally:
        separate.removeHandler(captured)
        separate.propagate = True

    found = await leaks.check_namespace(kube, namespace, captured.lines)

    places = sorted(leak.where.split(" ")[0] for leak in found)
    # The Event is seen through both Event APIs; the short port is not looked for.
    assert places == ["ConfigMap", "Event", "Event", "operator"], found
    assert {leak.secret for leak in found} == {"keys/token"}
    (logged,) = [leak for leak in found if leak.where.startswith("operator")]
    assert "not redacted" in logged.where
    # Leave nothing behind for the check at teardown.
    await kube.delete(CONFIGMAPS, "leaky", namespace)
    await kube.delete(EVENTS, "leaky.1", namespace)


def test_what_is_looked_for_and_in_which_forms() -> None:
    value = 'pa"ss\\word-long'
    values = leaks.secret_values(
        [
            {
                "metadata": {"name": "s"},
                "data": {
                    "k": _b64(value),
                    "short": _b64("abc"),
                    "host": _b64("postgres.example.com"),
                    "ca.pem": _b64("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"),
                },
            }
        ]
    )
    assert values == {value: "s/k"}
    texts = [
        ("json", '{"note": "pa\\"ss\\\\word-long"}'),
        ("base64", f"data: {_b64(value)}"),
        ("clean", "nothing here"),
    ]
    assert [leak.where for leak in leaks.find_leaks(values, texts)] == ["json", "base64"]


def test_unkeyed_digests_in_status_are_leaks_keyed_ones_are_not() -> None:
    secrets = [
        {"metadata": {"name": "alice"}, "data": {"password": _b64("Alice-Passw0rd")}},
        {"metadata": {"name": "s3"}, "data": {"id": _b64("AKIA"), "secret": _b64("s3-secret")}},
        {"metadata": {"name": "files-digest-key"}, "data": {"key": _b64("k" * 43)}},
    ]

    def server(applied: dict[str, str]) -> dict[str, object]:
        return {
            "metadata": {"name": "files", "uid": "u-1"},
            "status": {"server": {"applied": applied}},
        }

    def sha(*parts: str) -> str:
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]

    former = server(
        {
            "user/alice": sha("u-1", "user/alice", "Alice-Passw0rd"),
            "remote/s3": sha("remote/s3", "AKIA", "s3-secret"),
        }
    )
    found = leaks.unkeyed_digests([former], secrets)
    assert sorted(leak.secret for leak in found) == ["alice/password", "s3/id", "s3/secret"]
    assert "status.server.applied[user/alice]" in str(found[0])
    keyed = server({"user/alice": credentials.digest("k" * 43, "user/alice", ["Alice-Passw0rd"])})
    assert leaks.unkeyed_digests([keyed], secrets) == []


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
