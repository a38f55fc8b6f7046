"""Secrets never leak: every Secret value of a test namespace is looked for in what the
operator publishes there (ConfigMaps, Events of both APIs, DittoServers with their status,
StatefulSets, Pods) and in every log line the operator printed during the test.

tests/conftest.py runs `check_namespace` when a test's namespace is torn down, so every test
that uses the control plane is checked, whatever it was written to test.

Values are looked for as they are, JSON-escaped (how they would sit in a rendered object or a
JSON log line) and base64-encoded (how they would sit in an object's `data`). Two kinds of
Secret values are not looked for:
- values shorter than MIN_LENGTH characters: a port, "true", a user name such as "dittofs"
  appear in published objects for reasons of their own, and a match on them says nothing;
- keys that hold connection settings or public certificates (PUBLIC_KEYS), and certificates
  under any key (PEM CERTIFICATE blocks without a private key): a database host or user name
  lives in the same Secret as its password, a CA bundle is published on purpose (the
  namespace's kube-root-ca.crt ConfigMap), and neither is a secret.
Every password, token, key and generated secret is long enough (the operator generates 48- and
24-character values; the tests use values of 16 characters and more).

A digest of a Secret value that a reader can recompute leaks the value too, to a dictionary
attack: every digest in a DittoServer's status.server.applied is checked against unkeyed
sha256s of public data (uid, item) and one or two of the namespace's Secret values, every value
this time, short ones and connection settings included.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import structlog

from dittofs_controller import logs
from dittofs_controller.kube.client import ApiError, KubeClient
from dittofs_controller.kube.resources import (
    CONFIGMAPS,
    DITTOSERVERS,
    EVENTS,
    PODS,
    SECRETS,
    STATEFULSETS,
    Resource,
)

Obj = dict[str, Any]

MIN_LENGTH = 8
PUBLIC_KEYS = frozenset(
    {
        # Connection settings next to a password (external PostgreSQL, Percona's user Secret).
        "host",
        "port",
        "user",
        "username",
        "dbname",
        "database",
        "pgbouncer-host",
        "pgbouncer-port",
        # Public halves of TLS material.
        "tls.crt",
        "ca.crt",
    }
)
CORE_EVENTS = Resource("", "v1", "events", "Event")
PUBLISHED = (CONFIGMAPS, CORE_EVENTS, EVENTS, DITTOSERVERS, STATEFULSETS, PODS)

# Log files of operator processes (tests/support/process.py) started since the last check.
_process_logs: list[Path] = []


def watch_log(path: Path) -> None:
    """Have the next namespace check read this operator process's log file too."""
    _process_logs.append(path)


@attrs.frozen
class Leak:
    secret: str  # "<secret name>/<key>"
    where: str

    def __str__(self) -> str:
        return f"the value of Secret {self.secret} appears in {self.where}"


def secret_values(secrets: Iterable[Obj]) -> dict[str, str]:
    """Every value worth looking for -> the Secret key it comes from."""
    values = {}
    for secret in secrets:
        name = secret["metadata"]["name"]
        for key, encoded in (secret.get("data") or {}).items():
            if key in PUBLIC_KEYS:
                continue
            value = base64.b64decode(encoded).decode("utf-8", "replace")
            if len(value) >= MIN_LENGTH and not _certificate(value):
                values[value] = f"{name}/{key}"
    return values


def _certificate(value: str) -> bool:
    return value.lstrip().startswith("-----BEGIN CERTIFICATE-----") and "PRIVATE" not in value


def needles(value: str) -> set[str]:
    return {value, json.dumps(value)[1:-1], base64.b64encode(value.encode()).decode()}


def find_leaks(values: dict[str, str], texts: Iterable[tuple[str, str]]) -> list[Leak]:
    """Each (Secret key, place) where a value shows up; `texts` are (place, text) pairs."""
    searched = [(value, needles(value)) for value in values]
    found = []
    for where, text in texts:
        for value, forms in searched:
            if any(form in text for form in forms):
                found.append(Leak(values[value], where))
    return found


def unkeyed_digests(servers: Iterable[Obj], secrets: Iterable[Obj]) -> list[Leak]:
    """Each status.server.applied digest equal (on its first 16 characters) to an unkeyed
    sha256 a reader could compute from the DittoServer and a guess: the operator's former
    uid-salted scheme, or the same without the uid."""
    values = {
        base64.b64decode(encoded).decode("utf-8", "replace"): f"{secret['metadata']['name']}/{key}"
        for secret in secrets
        for key, encoded in (secret.get("data") or {}).items()
    }
    guesses = [combo for count in (1, 2) for combo in itertools.permutations(values, count)]
    found = []
    for server in servers:
        uid = server["metadata"].get("uid", "")
        applied = ((server.get("status") or {}).get("server") or {}).get("applied") or {}
        for item, digest in applied.items():
            for combo in guesses:
                texts = ("\0".join([uid, item, *combo]), "\0".join([item, *combo]))
                if any(_sha256(text)[:16] == str(digest)[:16] for text in texts):
                    where = (
                        f"an unkeyed digest, DittoServer {server['metadata']['name']} "
                        f"status.server.applied[{item}]"
                    )
                    found += [Leak(values[value], where) for value in combo]
    return found


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def published_texts(kube: KubeClient, namespace: str) -> list[tuple[str, str]]:
    """Every object the checks cover, one JSON text per object, named by kind and name."""
    listed = await asyncio.gather(*(_items(kube, resource, namespace) for resource in PUBLISHED))
    return [
        (f"{resource.kind} {item['metadata']['name']}", json.dumps(item))
        for resource, items in zip(PUBLISHED, listed, strict=True)
        for item in items
    ]


async def _items(kube: KubeClient, resource: Resource, namespace: str) -> list[Obj]:
    try:
        listed = await kube.request("GET", resource.path(namespace))
    except ApiError as error:
        if error.not_found:  # a CRD this test never installed
            return []
        raise
    return list(listed.get("items") or ())


async def check_namespace(kube: KubeClient, namespace: str, log_lines: Iterable[str]) -> list[Leak]:
    """Every leak of the namespace's Secret values into published objects (unkeyed digests
    included) or `log_lines`, and into the log files of the operator processes started since
    the last check."""
    secrets = (await kube.request("GET", SECRETS.path(namespace))).get("items") or ()
    values = secret_values(secrets)
    files, _process_logs[:] = list(_process_logs), []
    if not values:
        return []
    digests = unkeyed_digests(await _items(kube, DITTOSERVERS, namespace), secrets)
    texts = await published_texts(kube, namespace)
    texts += [(f"operator log line {line[:200]}", line) for line in log_lines]
    for path in files:
        if path.exists():
            texts += [
                (f"{path.name}: {line[:200]}", line) for line in path.read_text().splitlines()
            ]
    return digests + find_leaks(values, texts)


class LogCapture(logging.Handler):
    """Keeps every line the operator's logging would print, rendered by its own formatter
    (so what its redaction removes does not count)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logs.formatter("json"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@contextmanager
def capturing_logs() -> Iterator[LogCapture]:
    """Configure the operator's logging as it runs in production (JSON, debug level so every
    line is seen) for the duration, and capture what it prints; restore the previous state."""
    root = logging.getLogger()
    project = logging.getLogger(logs.PROJECT_LOGGER)
    saved = (list(root.handlers), root.level, project.level, structlog.get_config())
    logs.configure_logging("debug", "json")
    capture = LogCapture()
    root.addHandler(capture)
    try:
        yield capture
    finally:
        handlers, root_level, project_level, config = saved
        root.handlers[:] = handlers
        root.setLevel(root_level)
        project.setLevel(project_level)
        structlog.configure(**config)
