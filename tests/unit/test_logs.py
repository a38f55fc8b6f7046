"""Log output shape, level routing, exception rendering and secret redaction."""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from dittofs_controller.logs import REDACTED, configure_logging, is_secret_key


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state; give other tests theirs back."""
    root = logging.getLogger()
    project = logging.getLogger("dittofs_controller")
    saved = (list(root.handlers), root.level, project.level, structlog.get_config())
    yield
    handlers, root_level, project_level, config = saved
    root.handlers[:] = handlers
    root.setLevel(root_level)
    project.setLevel(project_level)
    structlog.configure(**config)


def lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_json_line_shape(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "json")
    log = structlog.get_logger("dittofs_controller.reconciler")
    with structlog.contextvars.bound_contextvars(reconcile_id="r-1"):
        log.info("reconciled", name="fs-a", generation=3)
    [line] = lines(capsys)
    assert line.pop("timestamp").endswith("Z")
    assert line == {
        "event": "reconciled",
        "level": "info",
        "logger": "dittofs_controller.reconciler",
        "reconcile_id": "r-1",
        "name": "fs-a",
        "generation": 3,
    }


def test_timestamp_is_iso_utc(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "json")
    structlog.get_logger("dittofs_controller").info("tick")
    [line] = lines(capsys)
    stamp = datetime.datetime.fromisoformat(line["timestamp"])
    assert stamp.utcoffset() == datetime.timedelta(0)


def test_project_level_filters_own_logs(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "json")
    log = structlog.get_logger("dittofs_controller.x")
    log.debug("hidden")
    log.warning("shown")
    assert [line["event"] for line in lines(capsys)] == ["shown"]
    configure_logging("debug", "json")
    log.debug("now shown")
    assert [line["event"] for line in lines(capsys)] == ["now shown"]


def test_stdlib_logs_use_same_renderer_at_warning_and_above(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("debug", "json")
    library = logging.getLogger("aiohttp.client")
    library.info("chatty")
    with structlog.contextvars.bound_contextvars(reconcile_id="r-2"):
        library.warning("connection reset by %s", "peer")
    [line] = lines(capsys)
    assert line["event"] == "connection reset by peer"
    assert line["level"] == "warning"
    assert line["logger"] == "aiohttp.client"
    assert line["reconcile_id"] == "r-2"


def test_error_level_also_quiets_library_warnings(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("error", "json")
    logging.getLogger("kubernetes_asyncio").warning("quiet")
    structlog.get_logger("dittofs_controller").warning("quiet too")
    assert capsys.readouterr().out == ""


def test_exceptions_are_rendered_as_text(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "json")
    try:
        raise ValueError("boom")
    except ValueError:
        structlog.get_logger("dittofs_controller").exception("reconcile failed")
        logging.getLogger("aiohttp.server").exception("handler failed")
    ours, theirs = lines(capsys)
    for line in (ours, theirs):
        assert line["level"] == "error"
        assert line["exception"].startswith("Traceback (most recent call last):")
        assert "ValueError: boom" in line["exception"]
        assert "exc_info" not in line


def test_secrets_are_redacted_anywhere(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "json")
    log = structlog.get_logger("dittofs_controller")
    with structlog.contextvars.bound_contextvars(token="t0k3n"):
        log.info(
            "connecting",
            password="hunter2",
            api_key="k",
            Authorization="Bearer abc",
            key="default/fs-a",
            headers={"X-Api-Key": "k", "Content-Type": "json"},
            users=[{"name": "alice", "client_secret": "s", "ssh-private-key": "-----BEGIN"}],
        )
    [line] = lines(capsys)
    assert line["token"] == REDACTED
    assert line["password"] == REDACTED
    assert line["api_key"] == REDACTED
    assert line["Authorization"] == REDACTED
    assert line["key"] == "default/fs-a"
    assert line["headers"] == {"X-Api-Key": REDACTED, "Content-Type": "json"}
    assert line["users"] == [
        {"name": "alice", "client_secret": REDACTED, "ssh-private-key": REDACTED}
    ]
    assert "hunter2" not in json.dumps(line)


def test_redaction_does_not_mutate_the_caller_objects(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "json")
    spec = {"password": "hunter2"}
    structlog.get_logger("dittofs_controller").info("spec", spec=spec)
    assert spec == {"password": "hunter2"}
    assert lines(capsys)[0]["spec"] == {"password": REDACTED}


def test_console_format(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "console")
    structlog.get_logger("dittofs_controller.cli").info("started", token="t0k3n", workers=2)
    try:
        raise ValueError("boom")
    except ValueError as error:
        failure = error
    # Outside the except block: the renderer must use the record's exc_info, not sys.exc_info().
    logging.getLogger("aiohttp.server").error("handler failed", exc_info=failure)
    out = capsys.readouterr().out
    assert not out.startswith("{")
    assert "started" in out
    assert "workers=2" in out
    assert "t0k3n" not in out
    assert "handler failed" in out
    assert "ValueError: boom" in out


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("password", True),
        ("db_passwd", True),
        ("accessToken", True),
        ("client-secret", True),
        ("authorization", True),
        ("Proxy-Authorization", True),
        ("tls_key", True),
        ("private-key", True),
        ("apikey", True),
        ("credentials", True),
        ("key", False),
        ("keyring_path", False),
        ("name", False),
        ("namespace", False),
    ],
)
def test_secret_key_patterns(key: str, secret: bool) -> None:
    assert is_secret_key(key) is secret


def test_configure_is_idempotent(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "json")
    configure_logging("info", "json")
    structlog.get_logger("dittofs_controller").info("once")
    logging.getLogger("aiohttp").warning("once too")
    assert [line["event"] for line in lines(capsys)] == ["once", "once too"]


def test_unknown_level_or_format_is_rejected() -> None:
    with pytest.raises(ValueError, match="log level"):
        configure_logging("loud", "json")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="log format"):
        configure_logging("info", "xml")  # type: ignore[arg-type]
